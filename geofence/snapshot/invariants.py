"""Structural invariants of a snapshot's range tables, checked before any search runs.

The checksum proves that the bytes are the ones that were hashed, not that whoever
wrote them (or recomputed the checksum) wrote consistent tables. A lookup bisects
the starts between the two index entries of its /16 bucket and indexes the id
column, so a table out of order, an index pointing at the wrong segment or an id
naming no record answers wrong without failing. :func:`table_problem` checks, for
each family:

1. the starts are strictly increasing (IPv6: the ``(high, low)`` pairs);
2. every id is a record id (``0 <= id < records``), :data:`GAP`, a special-range
   id or (IPv6 only) a tunnel id;
3. every /16 index entry is the segment holding the last address before its
   bucket (``index16`` of the starts), so a bucket's bisect sees its segments.

Length, origin and index-range checks come first (in the reader) so these run on
well-formed columns. There are three implementations with one contract, tried in
this order: the compiled core's one pass per column (``partition_problem`` in
``geofence/_core.c``; about a millisecond for the bundled snapshot, and nothing
to import), numpy's vectorised comparisons when numpy is installed (also about
a millisecond, but a fresh process first pays numpy's import, 65 ms or more),
else single C-level passes of the standard library (``map`` over ``operator``
functions). The tests run all three over the same cases.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable
from itertools import islice
from operator import le, lt
from typing import Any, Final, Literal

from geofence.snapshot.partition import GAP, SPECIAL_IDS, TUNNEL_IDS, Column, typecode
from geofence.snapshot.search import core_function

__all__ = ["IMPLEMENTATIONS", "Implementation", "available", "offsets_ok", "table_problem"]

#: Names of the implementations (see the module docs).
Implementation = Literal["compiled", "numpy", "stdlib"]
IMPLEMENTATIONS: Final[tuple[Implementation, ...]] = ("compiled", "numpy", "stdlib")

#: Negative ids an IPv4 segment may carry; IPv6 segments may also carry tunnel ids.
_V4_NEGATIVE: Final = frozenset({GAP, *SPECIAL_IDS.values()})
_V6_NEGATIVE: Final = _V4_NEGATIVE | frozenset(TUNNEL_IDS.values())
_GAP_ONLY: Final = frozenset({GAP})
_BUCKETS: Final = 1 << 16


#: What each check of a family finds broken, in the order the checks run
#: (the codes of ``partition_problem`` in ``geofence/_core.c``).
_SHAPE, _WITHIN, _ORDER, _IDS, _INDEX = 1, 2, 3, 4, 5
_MESSAGES: Final = {
    _SHAPE: "{family} columns have inconsistent lengths",
    _WITHIN: "a /16 index entry points past the end of its starts",
    _ORDER: "{family} starts are not strictly increasing",
    _IDS: "{family} ids name records or special ranges that do not exist",
    _INDEX: "{family} /16 index does not match the starts",
}


def table_problem(
    v4: tuple[Column, Column, Column],
    v6: tuple[Column, Column, Column, Column],
    records: int,
    *,
    specials: bool = True,
    implementation: Implementation | None = None,
) -> str | None:
    """The first broken invariant of the tables, in words, or ``None`` when all hold.

    Args:
        v4: IPv4 starts, ids and /16 index (``V4ST``, ``V4ID``, ``V4IX``): equal
            lengths, 65537 index entries.
        v6: IPv6 high and low halves of the starts, ids and index (``V6HI``,
            ``V6LO``, ``V6ID``, ``V6IX``), shaped likewise.
        records: Number of records (ids ``0 .. records - 1`` are valid).
        specials: Whether special-range and tunnel ids may occur (the record
            partitions); without, the only negative id is :data:`GAP` (the
            ASN partitions, whose ids index the ASN entries).
        implementation: Force one implementation (``ModuleNotFoundError`` when
            it is not available); default: the first available of
            :data:`IMPLEMENTATIONS`.
    """
    check = _checks(implementation)
    starts, ids4, index4 = v4
    hi, lo, ids6, index6 = v6
    negative4, negative6 = (_V4_NEGATIVE, _V6_NEGATIVE) if specials else (_GAP_ONLY, _GAP_ONLY)
    codes = (
        (check.family(starts, None, ids4, index4, records, negative4, 16), "IPv4"),
        (check.family(hi, lo, ids6, index6, records, negative6, 48), "IPv6"),
    )
    # The first broken rule in check order, IPv4 before IPv6 for the same rule.
    broken = sorted((code, family) for code, family in codes if code)
    if not broken:
        return None
    code, family = broken[0]
    return _MESSAGES[code].format(family=family)


def offsets_ok(offsets: Column, size: int, *, implementation: Implementation | None = None) -> bool:
    """Whether ``offsets`` go from 0 to ``size`` without stepping back (``ORGO`` of the format).

    Args:
        offsets: The offsets (at least one).
        size: The length of the bytes they index.
        implementation: As for :func:`table_problem`.
    """
    check = _checks(implementation)
    return offsets[0] == 0 and offsets[-1] == size and check.non_decreasing(offsets)


def available() -> tuple[Implementation, ...]:
    """The implementations that can run here, in the order they are preferred."""
    return tuple(name for name in IMPLEMENTATIONS if _checker(name) is not None)


def _checks(implementation: Implementation | None) -> _Checks:
    for name in (implementation,) if implementation else IMPLEMENTATIONS:
        checker = _checker(name)
        if checker is not None:
            return checker
    raise ModuleNotFoundError(f"the {implementation} invariant checks are not available")


def _checker(name: Implementation) -> _Checks | None:
    """The checks of one implementation, or ``None`` where it cannot run."""
    if name == "compiled":
        # None too for an extension built before the checks existed.
        problem, ordered = core_function("partition_problem"), core_function("non_decreasing")
        return _CompiledChecks(problem, ordered) if problem and ordered else None
    if name == "numpy":
        try:
            return _NumpyChecks(importlib.import_module("numpy"))
        except ImportError:
            return None
    return _PlainChecks()


class _CompiledChecks:
    """The compiled core's checks: one pass over each column, without the GIL."""

    def __init__(
        self, problem: Callable[..., int], non_decreasing: Callable[[Column], bool]
    ) -> None:
        self._problem = problem
        self._non_decreasing = non_decreasing

    def family(
        self,
        starts: Column,
        low: Column | None,
        ids: Column,
        index: Column,
        records: int,
        negative: frozenset[int],
        shift: int,
    ) -> int:
        mask = sum(1 << -i for i in negative)
        return self._problem(starts, low, ids, index, records, mask, shift)

    def non_decreasing(self, values: Column) -> bool:
        return bool(self._non_decreasing(values))


class _FamilyChecks(ABC):
    """One family's checks, in the order the codes are numbered, from the per-rule checks."""

    def family(
        self,
        starts: Column,
        low: Column | None,
        ids: Column,
        index: Column,
        records: int,
        negative: frozenset[int],
        shift: int,
    ) -> int:
        n = len(starts)
        if not n or len(ids) != n or (low is not None and len(low) != n):
            return _SHAPE
        if len(index) != _BUCKETS + 1:
            return _SHAPE
        if not self.within(index, n):
            return _WITHIN
        ordered = self.increasing(starts) if low is None else self.increasing_pairs(starts, low)
        if not ordered:
            return _ORDER
        if not self.ids(ids, records, negative):
            return _IDS
        if not self.index(starts, index, shift):
            return _INDEX
        return 0

    @abstractmethod
    def within(self, index: Column, count: int) -> bool:
        """Whether every index entry is a segment number (``0 <= entry < count``)."""

    @abstractmethod
    def increasing(self, values: Column) -> bool:
        """Whether the values are strictly increasing."""

    @abstractmethod
    def non_decreasing(self, values: Column) -> bool:
        """Whether the values never step back."""

    @abstractmethod
    def increasing_pairs(self, hi: Column, lo: Column) -> bool:
        """Whether the ``(hi, lo)`` pairs (128-bit starts) are strictly increasing."""

    @abstractmethod
    def ids(self, ids: Column, records: int, negative: frozenset[int]) -> bool:
        """Whether every id is a record id or one of ``negative``."""

    @abstractmethod
    def index(self, starts: Column, index: Column, shift: int) -> bool:
        """Whether the /16 index matches the starts (see the module docs)."""


class _PlainChecks(_FamilyChecks):
    """Standard-library checks: each a pass of ``map`` over ``operator`` functions."""

    @staticmethod
    def within(index: Column, count: int) -> bool:
        return min(index) >= 0 and max(index) < count

    @staticmethod
    def increasing(values: Column) -> bool:
        return all(map(lt, values, islice(values, 1, None)))

    @staticmethod
    def non_decreasing(values: Column) -> bool:
        return all(map(le, values, islice(values, 1, None)))

    @staticmethod
    def increasing_pairs(hi: Column, lo: Column) -> bool:
        # Tuples compare high half first, then low half: the order of 128-bit starts.
        pairs = zip(hi, lo, strict=True)
        return all(map(lt, pairs, islice(zip(hi, lo, strict=True), 1, None)))

    @staticmethod
    def ids(ids: Column, records: int, negative: frozenset[int]) -> bool:
        # Few distinct ids repeat over many segments: bound the set, not the column.
        return all(0 <= i < records or i in negative for i in set(ids))

    @staticmethod
    def index(starts: Column, index: Column, shift: int) -> bool:
        # Entry p (0 < p < 65536) must be the segment holding address (p << shift) - 1:
        # its start is below the bucket, the next start is not. The largest value of
        # the column's type stands in for "no next start": it is above every bucket.
        if index[0] != 0 or index[_BUCKETS] != len(starts) - 1:
            return False
        inner = index[1:_BUCKETS]
        bounds = range(1 << shift, _BUCKETS << shift, 1 << shift)
        following = array(typecode(starts), starts[1:])
        following.append((1 << (8 * starts.itemsize)) - 1)
        return all(map(lt, map(starts.__getitem__, inner), bounds)) and all(
            map(le, bounds, map(following.__getitem__, inner))
        )


class _NumpyChecks(_FamilyChecks):
    """The same checks over zero-copy numpy views of the columns."""

    def __init__(self, np: Any) -> None:
        self.np = np

    def view(self, values: Column) -> Any:
        dtypes = {"I": "uint32", "i": "int32", "Q": "uint64"}
        return self.np.frombuffer(values, dtype=dtypes[typecode(values)])

    def within(self, index: Column, count: int) -> bool:
        v = self.view(index)
        return int(v.min()) >= 0 and int(v.max()) < count

    def increasing(self, values: Column) -> bool:
        v = self.view(values)
        return bool((v[1:] > v[:-1]).all())

    def non_decreasing(self, values: Column) -> bool:
        v = self.view(values)
        return bool((v[1:] >= v[:-1]).all())

    def increasing_pairs(self, hi: Column, lo: Column) -> bool:
        h, low = self.view(hi), self.view(lo)
        step = (h[1:] > h[:-1]) | ((h[1:] == h[:-1]) & (low[1:] > low[:-1]))
        return bool(step.all())

    def ids(self, ids: Column, records: int, negative: frozenset[int]) -> bool:
        v = self.view(ids)
        if int(v.max()) >= records:
            return False
        neg = v[v < 0]
        return not neg.size or set(self.np.unique(neg).tolist()) <= negative

    def index(self, starts: Column, index: Column, shift: int) -> bool:
        np = self.np
        s, ix = self.view(starts), self.view(index)
        if int(ix[0]) != 0 or int(ix[_BUCKETS]) != len(s) - 1:
            return False
        bounds = np.arange(1, _BUCKETS, dtype=np.uint64) << np.uint64(shift)
        expected = np.searchsorted(s, bounds.astype(s.dtype), side="left") - 1
        return bool((expected == ix[1:_BUCKETS]).all())


_Checks = _CompiledChecks | _NumpyChecks | _PlainChecks

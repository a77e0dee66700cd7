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
well-formed columns. There are two implementations with one contract: numpy's
vectorised comparisons when numpy is installed (about a millisecond on the
bundled snapshot), else single C-level passes of the standard library (``map``
over ``operator`` functions); the tests run both over the same cases.
"""

from __future__ import annotations

import importlib
from array import array
from itertools import islice
from operator import le, lt
from typing import Any, Final

from geofence.snapshot.partition import GAP, SPECIAL_IDS, TUNNEL_IDS

__all__ = ["offsets_ok", "table_problem"]

#: Negative ids an IPv4 segment may carry; IPv6 segments may also carry tunnel ids.
_V4_NEGATIVE: Final = frozenset({GAP, *SPECIAL_IDS.values()})
_V6_NEGATIVE: Final = _V4_NEGATIVE | frozenset(TUNNEL_IDS.values())
_GAP_ONLY: Final = frozenset({GAP})
_BUCKETS: Final = 1 << 16


def table_problem(
    v4: tuple[array[int], array[int], array[int]],
    v6: tuple[array[int], array[int], array[int], array[int]],
    records: int,
    *,
    specials: bool = True,
    vectorised: bool | None = None,
) -> str | None:
    """The first broken invariant of the tables, in words, or ``None`` when all hold.

    Args:
        v4: IPv4 starts, ids and /16 index (``V4ST``, ``V4ID``, ``V4IX``): equal
            lengths, 65537 index entries, each index entry within the starts.
        v6: IPv6 high and low halves of the starts, ids and index (``V6HI``,
            ``V6LO``, ``V6ID``, ``V6IX``), shaped likewise.
        records: Number of records (ids ``0 .. records - 1`` are valid).
        specials: Whether special-range and tunnel ids may occur (the record
            partitions); without, the only negative id is :data:`GAP` (the
            ASN partitions, whose ids index the ASN entries).
        vectorised: Force (``True``) or avoid (``False``) numpy; default: numpy
            when it is installed.
    """
    np = _numpy() if vectorised is not False else None
    if vectorised and np is None:
        raise ModuleNotFoundError("numpy is not installed")
    check = _NumpyChecks(np) if np is not None else _PlainChecks()
    starts, ids4, index4 = v4
    hi, lo, ids6, index6 = v6
    if not check.within(index4, len(starts)) or not check.within(index6, len(hi)):
        return "a /16 index entry points past the end of its starts"
    if not check.increasing(starts):
        return "IPv4 starts are not strictly increasing"
    if not check.increasing_pairs(hi, lo):
        return "IPv6 starts are not strictly increasing"
    negative4, negative6 = (_V4_NEGATIVE, _V6_NEGATIVE) if specials else (_GAP_ONLY, _GAP_ONLY)
    if not check.ids(ids4, records, negative4):
        return "IPv4 ids name records or special ranges that do not exist"
    if not check.ids(ids6, records, negative6):
        return "IPv6 ids name records or special ranges that do not exist"
    if not check.index(starts, index4, 16):
        return "IPv4 /16 index does not match the starts"
    if not check.index(hi, index6, 48):
        return "IPv6 /16 index does not match the starts"
    return None


def offsets_ok(offsets: array[int], size: int, *, vectorised: bool | None = None) -> bool:
    """Whether ``offsets`` go from 0 to ``size`` without stepping back (``ORGO`` of the format).

    Args:
        offsets: The offsets (at least one).
        size: The length of the bytes they index.
        vectorised: As for :func:`table_problem`.
    """
    np = _numpy() if vectorised is not False else None
    check = _NumpyChecks(np) if np is not None else _PlainChecks()
    return offsets[0] == 0 and offsets[-1] == size and check.non_decreasing(offsets)


def _numpy() -> Any:
    try:
        return importlib.import_module("numpy")
    except ImportError:
        return None


class _PlainChecks:
    """Standard-library checks: each a pass of ``map`` over ``operator`` functions."""

    @staticmethod
    def within(index: array[int], count: int) -> bool:
        return min(index) >= 0 and max(index) < count

    @staticmethod
    def increasing(values: array[int]) -> bool:
        return all(map(lt, values, islice(values, 1, None)))

    @staticmethod
    def non_decreasing(values: array[int]) -> bool:
        return all(map(le, values, islice(values, 1, None)))

    @staticmethod
    def increasing_pairs(hi: array[int], lo: array[int]) -> bool:
        # Tuples compare high half first, then low half: the order of 128-bit starts.
        pairs = zip(hi, lo, strict=True)
        return all(map(lt, pairs, islice(zip(hi, lo, strict=True), 1, None)))

    @staticmethod
    def ids(ids: array[int], records: int, negative: frozenset[int]) -> bool:
        # Few distinct ids repeat over many segments: bound the set, not the column.
        return all(0 <= i < records or i in negative for i in set(ids))

    @staticmethod
    def index(starts: array[int], index: array[int], shift: int) -> bool:
        # Entry p (0 < p < 65536) must be the segment holding address (p << shift) - 1:
        # its start is below the bucket, the next start is not. The largest value of
        # the column's type stands in for "no next start": it is above every bucket.
        if index[0] != 0 or index[_BUCKETS] != len(starts) - 1:
            return False
        inner = index[1:_BUCKETS]
        bounds = range(1 << shift, _BUCKETS << shift, 1 << shift)
        following = starts[1:]
        following.append((1 << (8 * starts.itemsize)) - 1)
        return all(map(lt, map(starts.__getitem__, inner), bounds)) and all(
            map(le, bounds, map(following.__getitem__, inner))
        )


class _NumpyChecks:
    """The same checks over zero-copy numpy views of the arrays."""

    def __init__(self, np: Any) -> None:
        self.np = np

    def view(self, values: array[int]) -> Any:
        dtypes = {"I": "uint32", "i": "int32", "Q": "uint64"}
        return self.np.frombuffer(values, dtype=dtypes[values.typecode])

    def within(self, index: array[int], count: int) -> bool:
        v = self.view(index)
        return int(v.min()) >= 0 and int(v.max()) < count

    def increasing(self, values: array[int]) -> bool:
        v = self.view(values)
        return bool((v[1:] > v[:-1]).all())

    def non_decreasing(self, values: array[int]) -> bool:
        v = self.view(values)
        return bool((v[1:] >= v[:-1]).all())

    def increasing_pairs(self, hi: array[int], lo: array[int]) -> bool:
        h, low = self.view(hi), self.view(lo)
        step = (h[1:] > h[:-1]) | ((h[1:] == h[:-1]) & (low[1:] > low[:-1]))
        return bool(step.all())

    def ids(self, ids: array[int], records: int, negative: frozenset[int]) -> bool:
        v = self.view(ids)
        if int(v.max()) >= records:
            return False
        neg = v[v < 0]
        return not neg.size or set(self.np.unique(neg).tolist()) <= negative

    def index(self, starts: array[int], index: array[int], shift: int) -> bool:
        np = self.np
        s, ix = self.view(starts), self.view(index)
        if int(ix[0]) != 0 or int(ix[_BUCKETS]) != len(s) - 1:
            return False
        bounds = np.arange(1, _BUCKETS, dtype=np.uint64) << np.uint64(shift)
        expected = np.searchsorted(s, bounds.astype(s.dtype), side="left") - 1
        return bool((expected == ix[1:_BUCKETS]).all())

"""Streaming merge of sources into one partition per address family (build time only).

The precedence rules are stated in :mod:`geofence.snapshot.build`. This module
holds the data structures that keep a large build small and linear:

* :class:`SourceRanges` stores one source's ranges of one family in compact
  arrays (IPv6 as two 64-bit halves), with a local record id per range; a
  source whose entries arrive sorted and disjoint (MMDB trees, most feeds)
  needs no further work, any other is made disjoint by :func:`flatten`
  (narrowest range wins, later entry wins ties);
* :class:`Merger` sweeps the boundaries of all sources at once
  (``heapq.merge`` of per-source event streams), looks each combination of
  per-source records up once, and writes the merged partition straight into
  arrays.
"""

from __future__ import annotations

import functools
import heapq
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import fields

from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord

__all__ = [
    "MERGED_FIELDS",
    "Column",
    "Merger",
    "SourceRanges",
    "flatten",
    "merge_record",
]

_MASK64 = (1 << 64) - 1
_LOCATION_DEPENDENT = ("subdivision", "city", "latitude", "longitude", "accuracy_km")
MERGED_FIELDS = tuple(f.name for f in fields(NetworkRecord) if f.name not in ("kinds", "sources"))
"""Fields merged by per-field priority (``kinds`` are unioned, ``sources`` are provenance)."""


class Column:
    """Unsigned integers of one family in arrays: IPv4 as 32-bit, IPv6 as two 64-bit halves."""

    __slots__ = ("hi", "lo", "wide")

    def __init__(self, wide: bool) -> None:
        """Create an empty column (``wide`` for 128-bit IPv6 values)."""
        self.wide = wide
        self.lo = array("Q" if wide else "I")
        self.hi = array("Q")

    def append(self, value: int) -> None:
        """Add ``value`` at the end."""
        if self.wide:
            self.hi.append(value >> 64)
            self.lo.append(value & _MASK64)
        else:
            self.lo.append(value)

    def __len__(self) -> int:
        return len(self.lo)

    def __iter__(self) -> Iterator[int]:
        if self.wide:
            return ((h << 64) | low for h, low in zip(self.hi, self.lo, strict=True))
        return iter(self.lo)


class SourceRanges:
    """One source's ranges of one family, as they arrive: ``first``, ``last``, local id."""

    __slots__ = ("_end", "firsts", "lasts", "ordered", "values")

    def __init__(self, version: int) -> None:
        """Create an empty store for IPv4 (``version=4``) or IPv6 ranges."""
        self.firsts = Column(version == 6)
        self.lasts = Column(version == 6)
        self.values = array("i")
        self.ordered = True
        self._end = -1

    def add(self, first: int, last: int, value: int) -> None:
        """Store ``first..last`` (inclusive, ``first <= last``) with local id ``value``."""
        if first <= self._end:
            self.ordered = False
        self._end = last
        self.firsts.append(first)
        self.lasts.append(last)
        self.values.append(value)

    def __len__(self) -> int:
        return len(self.values)

    def disjoint(self) -> Iterable[tuple[int, int, int]]:
        """The ranges made disjoint, sorted: ``(first, last, value)``."""
        triples = zip(self.firsts, self.lasts, self.values, strict=True)
        if self.ordered:
            return triples
        return flatten(list(triples))


def flatten(entries: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Make one source's entries disjoint: the narrowest covering range wins.

    Args:
        entries: ``(first, last, value)`` in input order (later wins ties).

    Returns:
        Sorted, disjoint ``(first, last, value)``; adjacent pieces with the
        same value are joined.
    """
    order = sorted(range(len(entries)), key=lambda i: (entries[i][0], i))
    points = sorted({entries[i][0] for i in order} | {entries[i][1] + 1 for i in order})
    out: list[tuple[int, int, int]] = []
    # Sweep over boundaries with a heap of active ranges keyed by (size, -input order).
    active: list[tuple[int, int, int, int]] = []  # (size, -index, last, value)
    pos = 0
    for k, point in enumerate(points):
        while pos < len(order) and entries[order[pos]][0] == point:
            first, last, value = entries[order[pos]]
            heapq.heappush(active, (last - first, -order[pos], last, value))
            pos += 1
        while active and active[0][2] < point:
            heapq.heappop(active)
        if not active or k + 1 == len(points):
            continue
        end = points[k + 1] - 1
        value = active[0][3]
        if out and out[-1][2] == value and out[-1][1] + 1 == point:
            out[-1] = (out[-1][0], end, value)
        else:
            out.append((point, end, value))
    return out


def merge_record(
    parts: Sequence[tuple[int, NetworkRecord]],
    names: Sequence[str],
    priority: Mapping[str, Sequence[int]],
) -> NetworkRecord:
    """Combine the records of several sources for one segment (rules 2-5 of the builder).

    Args:
        parts: ``(source index, record)`` in default priority order.
        names: Source names by index.
        priority: Per-field source order (indexes) overriding the default order.
    """
    by_source = dict(parts)
    default_order = [s for s, _ in parts]
    values: dict[str, object] = {}
    for name in MERGED_FIELDS:
        # Listed sources first, then the others in default order: the override
        # reorders, it never silences a source it does not name.
        listed = [s for s in priority.get(name, ()) if s in by_source]
        order = listed + [s for s in default_order if s not in listed]
        for s in order:
            rec = by_source[s]
            value = getattr(rec, name)
            if value is None:
                continue
            if name in _LOCATION_DEPENDENT:
                # A subdivision code names its country ("UA-43"): count it as stated.
                own = rec.country or (rec.subdivision[:2] if rec.subdivision else None)
                if own is not None and values.get("country") not in (None, own):
                    continue
            values[name] = value
            break
    kinds = NetworkKind.UNKNOWN
    for _, rec in parts:
        kinds |= rec.kinds
    return NetworkRecord(
        kinds=kinds,
        sources=_shared(tuple(names[s] for s in default_order)),
        **values,  # type: ignore[arg-type]  # keys are NetworkRecord field names
    )


@functools.lru_cache(maxsize=1024)
def _shared(sources: tuple[str, ...]) -> tuple[str, ...]:
    """One tuple object per provenance: hundreds of thousands of records share a few."""
    return sources


def _events(
    j: int, ranges: Iterable[tuple[int, int, int]], top: int
) -> Iterator[tuple[int, int, int]]:
    """``(point, j, value)`` where source ``j`` changes its value (-1: covers nothing)."""
    end = 0
    for first, last, value in ranges:
        if 0 < end < first:
            yield end, j, -1
        yield first, j, value
        end = last + 1
    if 0 < end <= top:
        yield end, j, -1


class Merger:
    """Merges the families of one build: record ids are shared by IPv4 and IPv6."""

    def __init__(
        self,
        records: list[list[NetworkRecord | None]],
        names: Sequence[str],
        priority: Mapping[str, Sequence[int]],
    ) -> None:
        """Prepare a merge.

        Args:
            records: Local records per source index. With a single source they
                are released (set to ``None``) as soon as each is merged, so
                the local and the merged records never all exist at once.
            names: Source names by index.
            priority: Per-field source order (indexes) overriding the default order.
        """
        self._records = records
        self._names = names
        self._priority = priority
        self.intern: dict[NetworkRecord, int] = {}
        """Merged records by id (insertion order is the id)."""
        self._solo = len(records) == 1
        # Per source: merged record id of each local id (-2: not merged yet).
        self._rid_of = [array("i", [-2]) * len(local) for local in records]

    def family(
        self, sources: Sequence[tuple[int, Iterable[tuple[int, int, int]]]], top: int
    ) -> tuple[Column, array[int]]:
        """Merge the disjoint ranges of the sources of one family into a partition.

        Args:
            sources: ``(source index, sorted disjoint (first, last, local id))``,
                in default priority order.
            top: The last address of the family.

        Returns:
            ``(starts, ids)``: starts begin at 0 and strictly increase; ids are
            merged record ids or -1 where no source speaks.
        """
        starts = Column(top > _MASK64)
        ids = array("i", [-1])
        starts.append(0)
        if len(sources) == 1:
            self._one(sources[0], top, starts, ids)
        elif sources:
            self._many(sources, top, starts, ids)
        return starts, ids

    def _merged_id(self, parts: Sequence[tuple[int, int]]) -> int:
        """The id of the merged record of ``(source, local id)`` parts (-1 for none)."""
        if not parts:
            return -1
        pairs: list[tuple[int, NetworkRecord]] = []
        for s, v in parts:
            record = self._records[s][v]
            if record is None:  # pragma: no cover - released records are never looked up
                raise AssertionError("a released record was needed again")
            pairs.append((s, record))
        merged = merge_record(pairs, self._names, self._priority)
        return self.intern.setdefault(merged, len(self.intern))

    def _one(
        self,
        source: tuple[int, Iterable[tuple[int, int, int]]],
        top: int,
        starts: Column,
        ids: array[int],
    ) -> None:
        """One source: a record id per local id, no combinations."""
        s, ranges = source
        rid_of = self._rid_of[s]
        local = self._records[s]
        for point, _j, value in _events(0, ranges, top):
            if value < 0:
                _append(starts, ids, point, -1)
                continue
            rid = rid_of[value]
            if rid == -2:
                rid = rid_of[value] = self._merged_id(((s, value),))
                if self._solo:
                    local[value] = None
            _append(starts, ids, point, rid)

    def _many(
        self,
        sources: Sequence[tuple[int, Iterable[tuple[int, int, int]]]],
        top: int,
        starts: Column,
        ids: array[int],
    ) -> None:
        """Several sources: one sweep over all boundaries, each combination merged once."""
        combos: dict[tuple[int, ...], int] = {}
        current = [-1] * len(sources)
        index = [s for s, _ in sources]

        def record_id(key: tuple[int, ...]) -> int:
            rid = combos.get(key)
            if rid is None:
                parts = [(index[j], v) for j, v in enumerate(key) if v >= 0]
                rid = combos[key] = self._merged_id(parts)
            return rid

        streams = [_events(j, ranges, top) for j, (_s, ranges) in enumerate(sources)]
        pending = -1
        for point, j, value in heapq.merge(*streams):
            if point != pending:
                if pending >= 0:
                    _append(starts, ids, pending, record_id(tuple(current)))
                pending = point
            current[j] = value
        if pending >= 0:
            _append(starts, ids, pending, record_id(tuple(current)))


def _append(starts: Column, ids: array[int], point: int, rid: int) -> None:
    if ids[-1] == rid:
        return  # contiguous with the same record: the segment goes on
    if point == 0:
        ids[0] = rid  # replaces the initial gap
        return
    starts.append(point)
    ids.append(rid)

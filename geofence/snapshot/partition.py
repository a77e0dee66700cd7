"""Partition arithmetic shared by the snapshot builder, reader and policy compiler.

A partition is a set of parallel arrays (start columns plus an id column) whose
segments cover an address space without gaps or overlaps (see
:mod:`geofence.snapshot.format`).
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from itertools import compress
from operator import ne
from typing import Final, NamedTuple, TypeAlias

from geofence.addr import SPECIAL_RANGES, TUNNEL_RANGES, TunnelKind
from geofence.kinds import SpecialRange

__all__ = [
    "GAP",
    "MASK64",
    "SPECIAL_BY_ID",
    "SPECIAL_IDS",
    "SPECIAL_TABLE",
    "TUNNEL_BY_ID",
    "TUNNEL_IDS",
    "V4_TOP",
    "V6_TOP",
    "Column",
    "Partitions",
    "apply_special_ranges",
    "coalesce",
    "index16",
    "locate6",
    "locate6_indexed",
    "overlay",
    "relabel_runs",
    "segment",
    "typecode",
]

V4_TOP: Final = (1 << 32) - 1
V6_TOP: Final = (1 << 128) - 1
MASK64: Final = (1 << 64) - 1

#: Segment id of addresses no source covers.
GAP: Final = -1
#: Segment ids of special-purpose ranges.
SPECIAL_IDS: Final = {cat: -2 - i for i, cat in enumerate(SpecialRange)}
SPECIAL_BY_ID: Final = {v: k for k, v in SPECIAL_IDS.items()}
#: Segment ids of IPv6 tunnel prefixes that embed an IPv4 address.
TUNNEL_IDS: Final = {kind: -16 - i for i, kind in enumerate(TunnelKind)}
TUNNEL_BY_ID: Final = {v: k for k, v in TUNNEL_IDS.items()}

#: Version of the special-range and tunnel table (recorded in snapshots).
SPECIAL_TABLE: Final = hashlib.sha256(
    repr((SPECIAL_RANGES, [(k.value, f, la) for k, f, la in TUNNEL_RANGES])).encode()
).hexdigest()[:16]


#: A column of fixed-size integers: an ``array`` (built or carved in memory) or a
#: read-only ``memoryview`` over the bytes of an opened snapshot file (no copy).
#: Both index like sequences and export the buffer the compiled core reads.
Column: TypeAlias = "array[int] | memoryview"


def typecode(column: Column) -> str:
    """The ``array`` type code of a column's items (``"I"``, ``"i"`` or ``"Q"``)."""
    return column.typecode if isinstance(column, array) else column.format


class Partitions(NamedTuple):
    """The searchable columns of both partitions (the ``V4*``/``V6*`` sections of a file).

    A snapshot has one; a compiled policy has its own (the snapshot's, carved at the
    policy's CIDR boundaries). :func:`segment` searches it, and so does the compiled
    core (``geofence/_core.c``), over the very same arrays.
    """

    v4_starts: Column
    """First address of each IPv4 segment, strictly increasing (``'I'`` items)."""
    v4_ids: Column
    """Id of each IPv4 segment (``'i'`` items)."""
    v4_index: Column
    """The ``/16`` bucket index of ``v4_starts`` (65,537 entries, see :func:`index16`)."""
    v6_hi: Column
    """High 64 bits of the first address of each IPv6 segment (``'Q'`` items)."""
    v6_lo: Column
    """Low 64 bits of the same (``'Q'`` items)."""
    v6_ids: Column
    """Id of each IPv6 segment (``'i'`` items)."""
    v6_index: Column
    """The ``/16`` bucket index of ``v6_hi`` (top 16 bits of the high halves)."""


def segment(parts: Partitions, version: int, value: int) -> int:
    """Index of the segment of ``parts`` that contains an address: THE range search.

    The top 16 bits of the address pick a bucket of the ``/16`` index, which
    bounds a binary search over the starts. Every lookup of the pure-Python path
    goes through here; the compiled core is its twin (the parity tests hold them
    to the same answers).

    Args:
        parts: The partitions to search.
        version: 4 or 6.
        value: The address as an integer (IPv6: all 128 bits).
    """
    if version == 4:
        index = parts.v4_index
        p = value >> 16
        return bisect_right(parts.v4_starts, value, index[p], index[p + 1] + 1) - 1
    return locate6_indexed(parts.v6_hi, parts.v6_lo, parts.v6_index, value >> 64, value & MASK64)


def coalesce(parts: Partitions, relabel: array[int], runs: Runs | None = None) -> Partitions:
    """The partitions with every id ``i`` replaced by ``relabel[i]`` and equal neighbours merged.

    A compiled policy's verdict partitions come from here: relabelled by verdict,
    the data's hundreds of thousands of segments shrink to the few thousand places
    where the verdict changes, and :func:`segment` (or the compiled core) searches
    them like any other partitions.

    Args:
        parts: The partitions to coalesce.
        relabel: New id per old id (``array('i')``); negative old ids index from the
            end, as in a compiled policy's table.
        runs: :func:`relabel_runs` or its compiled twin
            (:data:`geofence.snapshot.search.relabel_runs`).
    """
    runs = runs or relabel_runs
    heads4, v4_ids = runs(parts.v4_ids, relabel)
    v4_starts = array("I", map(parts.v4_starts.__getitem__, heads4))
    heads6, v6_ids = runs(parts.v6_ids, relabel)
    v6_hi = array("Q", map(parts.v6_hi.__getitem__, heads6))
    return Partitions(
        v4_starts=v4_starts,
        v4_ids=v4_ids,
        v4_index=index16(v4_starts),
        v6_hi=v6_hi,
        v6_lo=array("Q", map(parts.v6_lo.__getitem__, heads6)),
        v6_ids=v6_ids,
        v6_index=index16(v6_hi, 48),
    )


#: ``relabel_runs(ids, relabel) -> (heads, labels)``, see :func:`relabel_runs`.
Runs: TypeAlias = "Callable[[Column, array[int]], tuple[array[int], array[int]]]"


def relabel_runs(ids: Column, relabel: array[int]) -> tuple[array[int], array[int]]:
    """Relabel an id column and find its runs.

    Args:
        ids: Segment ids (``array('i')``).
        relabel: New id per old id; a negative old id indexes from the end.

    Returns:
        ``(heads, labels)``: the positions where the new id differs from the one
        before (position 0 always), and the new id at each of them.

    Raises:
        IndexError: An id has no entry in ``relabel``.
    """
    new = array("i", map(relabel.__getitem__, ids))
    heads = array("i", [0, *compress(range(1, len(new)), map(ne, new[1:], new))][: len(new)])
    return heads, array("i", map(new.__getitem__, heads))


def overlay(
    columns: tuple[Column, ...],
    key_at: Callable[[int], int],
    split: Callable[[int], tuple[int, ...]],
    locate: Callable[[int], int],
    overrides: list[tuple[int, int, int]],
    top: int,
    relabel: Callable[[int, int], int] | None = None,
) -> tuple[array[int], ...]:
    """Return new parallel columns with ``overrides`` (first, last, value) carved in.

    ``columns`` are a partition's start columns followed by its id column;
    ``locate(a)`` gives the index of the segment containing address ``a``,
    ``key_at(i)`` the start of segment ``i`` and ``split(a)`` the start-column
    values of address ``a``. Overrides must be sorted and disjoint.

    Without ``relabel``, each override becomes one segment whose id is its
    value (the special ranges of a snapshot). With ``relabel``, the segments
    inside an override keep their own boundaries and each gets the id
    ``relabel(old_id, value)`` (a policy's CIDRs carved into the data).
    """
    n = len(columns[-1])
    ids = columns[-1]
    out = tuple(array(typecode(c)) for c in columns)
    tail: list[int | None] = [None]  # start of the last segment written to ``out``

    def copy(a: int, b: int) -> None:
        if b > a:
            for col, src in zip(out, columns, strict=True):
                col.extend(src[a:b])
            tail[0] = key_at(b - 1)

    def push(start: int, seg_id: int) -> None:
        if tail[0] == start:  # replaces a segment that started at the same address
            for col in out:
                col.pop()
        for col, value in zip(out, (*split(start), seg_id), strict=True):
            col.append(value)
        tail[0] = start

    done = 0  # segments [0, done) of the input are written or superseded
    for first, last, value in overrides:
        i = locate(first)
        if i >= done:
            copy(done, i + 1)
            done = i + 1
        if relabel is None:
            push(first, value)
        else:
            push(first, relabel(ids[i], value))
            j = locate(last)
            for k in range(max(i + 1, done), j + 1):
                push(key_at(k), relabel(ids[k], value))
            done = max(done, j + 1)
        if last >= top:
            done = n
            continue
        j = locate(last + 1)
        if key_at(j) == last + 1:
            done = max(done, j)
        else:
            push(last + 1, ids[j])
            done = max(done, j + 1)
    copy(done, n)
    return out


def index16(starts: Column, shift: int = 16) -> array[int]:
    """The /16 bucket index of a sorted start column (``V4IX``/``V6IX`` in the format).

    Entry ``p`` is the position of the last start below bucket ``p`` (0 when there is
    none): the bisect for an address in bucket ``p`` starts there. The index is
    constant between the buckets that hold starts, so it is filled one such bucket
    at a time (one bisect and one repeated block each), not one entry at a time.

    Args:
        starts: IPv4 starts (``shift=16``) or the high halves of IPv6 starts
            (``shift=48``): the bucket of a start is its top 16 bits.
        shift: How far to shift a start to get its bucket.
    """
    out = array("i")
    n = len(starts)
    k = 0  # starts[:k] lie in the buckets filled so far
    filled = 0  # entries written
    while k < n:
        top = starts[k] >> shift
        out.extend(array("i", [max(k - 1, 0)]) * (top + 1 - filled))
        filled = top + 1
        k = bisect_left(starts, filled << shift, k)
    out.extend(array("i", [max(n - 1, 0)]) * (65537 - filled))
    return out


def locate6_indexed(hi: Column, lo: Column, index: Column, h: int, low: int) -> int:
    """Index of the IPv6 segment containing the address ``(h << 64) | low``, via ``V6IX``.

    The /16 bucket of ``h`` bounds the bisect (fewer probes of 64-bit values, the
    dominant cost of an IPv6 decision); see :func:`locate6` for the low-half step.
    """
    p = h >> 48
    first = index[p]
    i = bisect_right(hi, h, first, index[p + 1] + 1) - 1
    if lo[i] > low and hi[i] == h:
        j = bisect_left(hi, h, first, i + 1)
        i = bisect_right(lo, low, j, i + 1) - 1
        if i < j:
            i = j - 1
    return i


def apply_special_ranges(
    v4: tuple[Column, Column], v6: tuple[Column, Column, Column]
) -> tuple[tuple[array[int], array[int]], tuple[array[int], array[int], array[int]]]:
    """Carve the special-purpose ranges and tunnel prefixes into both partitions."""
    v4s, v4i = v4
    overrides4 = [(f, la, SPECIAL_IDS[c]) for v, f, la, c in SPECIAL_RANGES if v == 4]
    new4 = overlay(
        (v4s, v4i),
        v4s.__getitem__,
        lambda a: (a,),
        lambda a: bisect_right(v4s, a) - 1,
        overrides4,
        V4_TOP,
    )
    v6h, v6l, v6i = v6
    overrides6 = sorted(
        [(f, la, SPECIAL_IDS[c]) for v, f, la, c in SPECIAL_RANGES if v == 6]
        + [(f, la, TUNNEL_IDS[k]) for k, f, la in TUNNEL_RANGES]
    )
    new6 = overlay(
        (v6h, v6l, v6i),
        lambda i: (v6h[i] << 64) | v6l[i],
        lambda a: (a >> 64, a & MASK64),
        lambda a: locate6(v6h, v6l, a),
        overrides6,
        V6_TOP,
    )
    return (new4[0], new4[1]), (new6[0], new6[1], new6[2])


def locate6(hi: Column, lo: Column, value: int) -> int:
    """Index of the IPv6 segment containing ``value`` (see the module docs)."""
    h = value >> 64
    i = bisect_right(hi, h) - 1
    if lo[i] > (value & MASK64):
        # Starts sharing the high half are ordered by the low half: search among them.
        j = bisect_right(hi, h - 1) if h else 0
        i = bisect_right(lo, value & MASK64, j, i + 1) - 1
        if i < j:
            i = j - 1
    return i

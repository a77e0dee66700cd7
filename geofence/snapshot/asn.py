"""The ASN table of a snapshot: AS number and organisation per address, apart from the records.

ASN sources draw far more boundaries than country sources; merged into the
records they would multiply them. So a snapshot keeps them in a second
partition of each address space (the ``A4*``/``A6*`` sections of
:mod:`geofence.snapshot.format`) whose ids index a small table of
``(AS number, organisation)`` entries. Lookups search it with the same
:func:`~geofence.snapshot.partition.segment` as the records, and fill the
record's ``asn``/``as_org`` from it; a policy with ASN rules overlays it onto
the record partition when it is compiled (:func:`with_asns`).
"""

from __future__ import annotations

import dataclasses
from array import array
from bisect import bisect_right
from collections.abc import Collection, Sequence

from geofence.records import NetworkRecord
from geofence.snapshot.partition import (
    GAP,
    MASK64,
    V4_TOP,
    V6_TOP,
    Column,
    Partitions,
    index16,
    locate6_indexed,
    overlay,
    segment,
)

__all__ = ["AsnTable", "empty_partitions", "encode_entries", "with_asns"]

#: Filled records an :class:`AsnTable` keeps for repeated lookups.
_FILLED_MAX = 1 << 16


def empty_partitions() -> Partitions:
    """Partitions with one gap segment per family (a snapshot without ASN sources)."""
    zero4, zero6 = array("I", [0]), array("Q", [0])
    return Partitions(
        zero4, array("i", [GAP]), index16(zero4), zero6, array("Q", [0]), array("i", [GAP]),
        index16(zero6, 48),
    )  # fmt: skip


def encode_entries(
    entries: Sequence[tuple[int, str | None]],
) -> tuple[array[int], array[int], bytes]:
    """The ``ASNS``, ``ORGO`` and ``ORGS`` sections of ``(AS number, organisation)`` entries."""
    asns = array("I", (asn for asn, _org in entries))
    offsets = array("I", [0])
    names = bytearray()
    for _asn, org in entries:
        names += (org or "").encode()
        offsets.append(len(names))
    return asns, offsets, bytes(names)


class AsnTable:
    """The ASN partitions and entries of an open snapshot (immutable, shared by threads)."""

    __slots__ = ("_filled", "asns", "offsets", "orgs", "partitions")

    def __init__(
        self, partitions: Partitions, asns: Column, offsets: Column, orgs: bytes | memoryview
    ) -> None:
        """Wrap validated columns (the reader checks them first)."""
        self.partitions = partitions
        self.asns = asns
        self.offsets = offsets
        self.orgs = orgs
        # Filled records by (id of the record, entry), with the record itself to check
        # that the id is still that record's; bounded (cleared when full).
        self._filled: dict[tuple[int, int], tuple[NetworkRecord, NetworkRecord]] = {}

    def __len__(self) -> int:
        return len(self.asns)

    def entry(self, k: int) -> tuple[int, str | None]:
        """AS number and organisation (``None`` when not stated) of entry ``k``."""
        # The reader checked that ORGS is UTF-8 as a whole; an offset inside a
        # character (a buggy writer) gives a replacement character, not an error.
        org = str(self.orgs[self.offsets[k] : self.offsets[k + 1]], "utf-8", "replace")
        return self.asns[k], org or None

    def find(self, version: int, value: int) -> tuple[int, str | None] | None:
        """AS number and organisation of an address, or ``None`` where no ASN source speaks."""
        parts = self.partitions
        ids = parts.v4_ids if version == 4 else parts.v6_ids
        k = ids[segment(parts, version, value)]
        return None if k < 0 else self.entry(k)

    def fill(self, record: NetworkRecord, version: int, value: int) -> NetworkRecord:
        """``record`` with ``asn``/``as_org`` from the table (unless it states them itself)."""
        if record.asn is not None or not self.asns:
            return record
        parts = self.partitions
        k = (parts.v4_ids if version == 4 else parts.v6_ids)[segment(parts, version, value)]
        if k < 0:
            return record
        hit = self._filled.get((id(record), k))
        if hit is not None and hit[0] is record:
            return hit[1]
        asn, org = self.entry(k)
        filled = dataclasses.replace(record, asn=asn, as_org=org)
        if len(self._filled) >= _FILLED_MAX:
            self._filled.clear()
        self._filled[(id(record), k)] = (record, filled)
        return filled


def with_asns(
    parts: Partitions,
    records: Sequence[NetworkRecord],
    table: AsnTable,
    wanted: Collection[int] | None = None,
) -> tuple[Partitions, list[NetworkRecord]]:
    """Overlay the ASN partition onto a record partition (what a policy with ASN rules needs).

    Inside every ASN segment, each record segment gets the id of a record
    that is the original with the segment's AS number and organisation
    (:meth:`AsnTable.fill`); ids of gaps and special ranges stay as they are.
    With ``wanted``, only the segments of those AS numbers are overlaid: a
    policy's ASN conditions match only the numbers they name, and an address
    of any other AS matches them exactly as one without an AS number does.

    Returns:
        The new partitions and the records their ids index (the originals
        first, then the filled ones).
    """
    out = list(records)
    made: dict[tuple[int, int], int] = {}

    def relabel(old: int, k: int) -> int:
        if old < 0:
            return old
        rid = made.get((old, k))
        if rid is None:
            record = records[old]
            if record.asn is None:
                asn, org = table.entry(k)
                record = dataclasses.replace(record, asn=asn, as_org=org)
            rid = made[(old, k)] = len(out)
            out.append(record)
        return rid

    a = table.partitions
    keep = None if wanted is None else {k for k, asn in enumerate(table.asns) if asn in wanted}
    v4s, v4i = overlay(
        (parts.v4_starts, parts.v4_ids),
        parts.v4_starts.__getitem__,
        lambda x: (x,),
        lambda x: bisect_right(parts.v4_starts, x) - 1,
        _overrides(a.v4_starts, a.v4_ids, V4_TOP, keep),
        V4_TOP,
        relabel,
    )
    starts6 = [(h << 64) | low for h, low in zip(a.v6_hi, a.v6_lo, strict=True)]
    v6h, v6l, v6i = overlay(
        (parts.v6_hi, parts.v6_lo, parts.v6_ids),
        lambda i: (parts.v6_hi[i] << 64) | parts.v6_lo[i],
        lambda x: (x >> 64, x & MASK64),
        lambda x: locate6_indexed(parts.v6_hi, parts.v6_lo, parts.v6_index, x >> 64, x & MASK64),
        _overrides(starts6, a.v6_ids, V6_TOP, keep),
        V6_TOP,
        relabel,
    )
    return Partitions(v4s, v4i, index16(v4s), v6h, v6l, v6i, index16(v6h, 48)), out


def _overrides(
    starts: Sequence[int], ids: Sequence[int], top: int, keep: Collection[int] | None
) -> list[tuple[int, int, int]]:
    """``(first, last, entry)`` of the ASN partition's segments with an entry (in ``keep``)."""
    n = len(starts)
    return [
        (starts[i], (starts[i + 1] - 1) if i + 1 < n else top, ids[i])
        for i in range(n)
        if ids[i] >= 0 and (keep is None or ids[i] in keep)
    ]

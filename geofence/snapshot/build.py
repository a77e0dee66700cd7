"""Merge sources into disjoint ranges and write a snapshot (build time only).

Precedence, explicit and documented (``docs/format.md``):

1. **Within one source, the narrowest range wins.** Where a source states
   overlapping ranges (a /16 and a /24 inside it), each address takes the
   record of the smallest range that covers it; ties go to the later entry.
2. **Between sources, per-field priority.** Sources are given in priority order
   (first = highest). ``field_priority`` may override the order for single
   fields, e.g. ``{"asn": ["ipinfo-lite", "dbip-asn"]}``; sources it does not
   name follow in the default order. For each field, the first source in that
   order that states a value wins.
3. **Location fields stay consistent.** ``subdivision``, ``city``, ``latitude``,
   ``longitude`` and ``accuracy_km`` are only taken from a source whose country
   is unset or equal to the merged country (a source's subdivision code counts
   as stating its country), so a record never says ``country=RU,
   subdivision=UA-43`` by mixing two sources.
4. **Network kinds are unioned** over every source covering the address.
5. **Provenance**: each record names every source that covered it, in priority order.

Nothing here is imported on the request path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from geofence import __version__
from geofence.errors import SnapshotError, SourceError
from geofence.records import NetworkRecord
from geofence.snapshot.asn import empty_partitions, encode_entries
from geofence.snapshot.format import (
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    RECORD_FIELDS,
    SECTION,
    SECTION_TAGS,
    align8,
)
from geofence.snapshot.merge import MERGED_FIELDS, Column, Merger, SourceRanges
from geofence.snapshot.partition import (
    SPECIAL_TABLE,
    Partitions,
    apply_special_ranges,
    index16,
    typecode,
)
from geofence.sources.base import Source, SourceInfo
from geofence.sources.problems import SkipLog, ValueProblem, collecting, report
from geofence.sources.regions import RegionStats
from geofence.sources.regions import collecting as collecting_regions

__all__ = [
    "BuildResult",
    "BuildStats",
    "build_snapshot",
    "compile_snapshot",
    "encode_snapshot",
    "write_atomic",
]

_V4_MAX = (1 << 32) - 1
_V6_MAX = (1 << 128) - 1
_MASK64 = (1 << 64) - 1


class BuildStats:
    """Counts of a build, for progress reports and the shrink guard."""

    __slots__ = ("records", "v4_addresses", "v4_ranges", "v6_ranges", "v6_slash64s")

    def __init__(self) -> None:
        self.records = 0
        self.v4_ranges = 0
        self.v6_ranges = 0
        self.v4_addresses = 0
        self.v6_slash64s = 0

    def as_dict(self) -> dict[str, int]:
        """JSON-ready mapping."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildResult:
    """What :func:`compile_snapshot` made, with the counts a build report needs."""

    data: bytes
    """The snapshot file's bytes, ready for :func:`write_atomic`."""

    stats: BuildStats
    """Records, ranges and coverage of the merged snapshot."""

    source_entries: dict[str, dict[str, int]]
    """Per source: ``{"v4": ranges, "v6": ranges}`` it stated (after skips)."""

    skipped: SkipLog
    """Entries skipped for malformed values, per source and field, with examples."""

    regions: RegionStats
    """Region names met in the sources and how many were mapped to ISO 3166-2, per country."""


def _check_record(rec: NetworkRecord, where: str) -> None:
    for name in ("country", "registered_country"):
        value = getattr(rec, name)
        if value is not None and not (len(value) == 2 and value.isascii() and value.isupper()):
            raise ValueProblem(
                f"{where}: {name} {value!r} is not an ISO 3166-1 alpha-2 code", field=name
            )
    sub = rec.subdivision
    if sub is not None and (len(sub) < 4 or sub[2] != "-" or not sub[:2].isupper()):
        raise ValueProblem(
            f"{where}: subdivision {sub!r} is not a full ISO 3166-2 code", field="subdivision"
        )


def _record_row(rec: NetworkRecord, source_index: Mapping[str, int]) -> list[object]:
    row: list[object] = []
    for name in RECORD_FIELDS:
        value = getattr(rec, name)
        if name == "kinds":
            value = int(value)
        elif name == "sources":
            value = [source_index[s] for s in value]
        row.append(value)
    return row


def encode_snapshot(
    *,
    meta: Mapping[str, object],
    records: Sequence[NetworkRecord],
    v4: tuple[Sequence[int], Sequence[int]],
    v6: tuple[Sequence[int], Sequence[int]],
) -> bytes:
    """Serialise a partition into snapshot bytes (see :mod:`geofence.snapshot.format`).

    Args:
        meta: The META object; must contain ``"sources"`` (list of source dicts).
        records: Interned records; ids in the range sections index this list.
        v4: IPv4 ``(starts, ids)``; starts begin at 0 and strictly increase; ids
            are record ids or -1 (the special ranges are carved in here).
        v6: IPv6 ``(starts, ids)`` with 128-bit integer starts.

    Returns:
        The file's bytes.
    """
    recs_bytes = _records_json(records, meta)
    mask = (1 << 64) - 1
    carved4, carved6 = apply_special_ranges(
        (array("I", v4[0]), array("i", v4[1])),
        (
            array("Q", (s >> 64 for s in v6[0])),
            array("Q", (s & mask for s in v6[0])),
            array("i", v6[1]),
        ),
    )
    return _encode(meta, recs_bytes, carved4, carved6, _AsnSections.empty())


def _records_json(records: Sequence[NetworkRecord], meta: Mapping[str, object]) -> bytearray:
    """The RECS section: one JSON array of record rows (see :mod:`geofence.snapshot.format`)."""
    sources = meta.get("sources")
    if not isinstance(sources, list):
        raise SnapshotError("meta['sources'] must be a list")
    source_index = {str(s["name"]): i for i, s in enumerate(sources)}
    out = bytearray(b"[")
    for k, record in enumerate(records):
        if k:
            out += b","
        out += json.dumps(_record_row(record, source_index), separators=(",", ":")).encode()
    out += b"]"
    return out


def _encode(
    meta: Mapping[str, object],
    recs_bytes: bytearray,
    v4: tuple[array[int], array[int]],
    v6: tuple[array[int], array[int], array[int]],
    asn: _AsnSections,
) -> bytes:
    """Encode partitions whose special ranges are carved in (:func:`apply_special_ranges`).

    The columns are IPv4 starts and ids, IPv6 high halves, low halves and ids;
    ``asn`` holds the ASN table's sections.
    Sections are joined once into the result, never copied section by section.
    """
    meta = {**meta, "special_table": SPECIAL_TABLE}
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    (v4_starts, v4_ids), (v6_hi, v6_lo, v6_ids) = v4, v6
    blobs: list[bytes | bytearray | array[int] | memoryview] = [meta_bytes, recs_bytes]
    for column in (
        v4_starts,
        v4_ids,
        index16(v4_starts),
        v6_hi,
        v6_lo,
        v6_ids,
        index16(v6_hi, 48),
        *asn.partitions,
        asn.asns,
        asn.offsets,
    ):
        blobs.append(column if sys.byteorder == "little" else _little_endian(column))
    blobs.append(asn.orgs)
    offset = align8(HEADER.size + SECTION.size * len(SECTION_TAGS))
    table = bytearray()
    parts: list[bytes | bytearray | array[int] | memoryview] = []
    for tag, blob in zip(SECTION_TAGS, blobs, strict=True):
        size = len(memoryview(blob).cast("B"))
        table += SECTION.pack(tag, 0, offset, size)
        parts.append(blob)
        parts.append(bytes(align8(size) - size))
        offset += align8(size)
    table += bytes(align8(HEADER.size + len(table)) - HEADER.size - len(table))
    parts.insert(0, bytes(table))
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    header = HEADER.pack(
        MAGIC, FORMAT_VERSION, 0, HEADER.size, len(SECTION_TAGS), 0, offset, digest.digest()
    )
    return b"".join([header, *parts])


def _little_endian(column: array[int] | memoryview) -> array[int]:
    """A byte-swapped copy of a column (big-endian hosts; the caller's column stays as it is)."""
    swapped = array(typecode(column), column)
    swapped.byteswap()
    return swapped


@dataclass(frozen=True, slots=True)
class _AsnSections:
    """The ASN table as it is written (see :mod:`geofence.snapshot.asn`)."""

    partitions: Partitions
    asns: array[int]
    offsets: array[int]
    orgs: bytes

    @classmethod
    def empty(cls) -> _AsnSections:
        return cls(empty_partitions(), *encode_entries([]))


def _asn_sections(
    records: Sequence[NetworkRecord], merged: Mapping[int, tuple[Column, array[int]]]
) -> _AsnSections:
    """The ASN table of the merged ASN sources: one entry per ``(asn, as_org)``.

    Segments whose entries are equal once the records are reduced to their
    AS number and organisation are joined.
    """
    entries: dict[tuple[int, str | None], int] = {}
    entry_of = array(
        "i",
        (
            -1 if r.asn is None else entries.setdefault((r.asn, r.as_org), len(entries))
            for r in records
        ),
    )
    columns: list[tuple[Column, array[int]]] = []
    for version in (4, 6):
        starts, ids = merged[version]
        out_starts, out_ids = Column(version == 6), array("i")
        for start, rid in zip(starts, ids, strict=True):
            k = -1 if rid < 0 else entry_of[rid]
            if not out_ids or out_ids[-1] != k:
                out_starts.append(start)
                out_ids.append(k)
        columns.append((out_starts, out_ids))
    (s4, i4), (s6, i6) = columns
    parts = Partitions(s4.lo, i4, index16(s4.lo), s6.hi, s6.lo, i6, index16(s6.hi, 48))
    return _AsnSections(parts, *encode_entries(list(entries)))


def write_atomic(data: bytes, path: str | os.PathLike[str]) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename).

    Readers that have the old file open (or mapped) keep a valid view of it;
    a new open sees either the old or the new file, never a torn one.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _coverage(starts: Iterable[int], ids: Iterable[int], top: int, shift: int) -> tuple[int, int]:
    """Segments with a record, and the addresses (IPv4) or /64s (IPv6, ``shift=64``) they cover."""
    count = covered = 0
    begin = 0
    rid = -1
    for start, next_rid in zip(starts, ids, strict=True):
        if rid >= 0:
            count += 1
            covered += ((start - 1 - begin) >> shift) + 1
        begin = start
        rid = next_rid
    if rid >= 0:
        count += 1
        covered += ((top - begin) >> shift) + 1
    return count, covered


def _stats_of(
    records: Sequence[NetworkRecord],
    v4: tuple[Column, array[int]],
    v6: tuple[Column, array[int]],
) -> BuildStats:
    stats = BuildStats()
    stats.records = len(records)
    stats.v4_ranges, stats.v4_addresses = _coverage(*v4, _V4_MAX, 0)
    stats.v6_ranges, stats.v6_slash64s = _coverage(*v6, _V6_MAX, 64)
    return stats


def build_snapshot(
    sources: Sequence[Source],
    *,
    field_priority: Mapping[str, Sequence[str]] | None = None,
    previous: str | os.PathLike[str] | None = None,
    max_shrink: float = 0.5,
    force: bool = False,
    strict: bool = False,
    progress: Callable[[str], None] | None = None,
    name: str = "",
    built_at: dt.datetime | None = None,
) -> bytes:
    """Merge ``sources`` into a snapshot and return the file's bytes.

    The same as :func:`compile_snapshot` (which documents the arguments), for
    callers that need only the bytes.
    """
    return compile_snapshot(
        sources,
        field_priority=field_priority,
        previous=previous,
        max_shrink=max_shrink,
        force=force,
        strict=strict,
        progress=progress,
        name=name,
        built_at=built_at,
    ).data


def compile_snapshot(
    sources: Sequence[Source],
    *,
    field_priority: Mapping[str, Sequence[str]] | None = None,
    previous: str | os.PathLike[str] | None = None,
    max_shrink: float = 0.5,
    force: bool = False,
    strict: bool = False,
    progress: Callable[[str], None] | None = None,
    name: str = "",
    built_at: dt.datetime | None = None,
) -> BuildResult:
    """Merge ``sources`` into a snapshot; return its bytes and the build's counts.

    Args:
        sources: Sources in priority order (first = highest); names must be unique.
        field_priority: Per-field source order overriding the default order.
        previous: A previous snapshot file; the build is refused when it covers
            less than ``1 - max_shrink`` of what the previous one did (ranges or
            addresses), or a source speaks for less than ``1 - max_shrink`` of
            the addresses it spoke for then (by the records' provenance),
            unless ``force``.
        max_shrink: Largest tolerated relative shrink against ``previous``.
        force: Write even an empty or sharply shrunk build.
        strict: Refuse a source with a malformed value (raise) instead of
            skipping and counting the entry (:mod:`geofence.sources.problems`).
        progress: Called with short progress messages.
        name: Free-text name stored in the metadata.
        built_at: Build timestamp to record (default now, UTC); pass a fixed
            value for reproducible builds.

    Returns:
        The snapshot bytes, the merged counts, and what each source stated
        and had skipped.

    Raises:
        SourceError: A source cannot be read, states an invalid range, or (with
            ``strict``) a malformed value.
        SnapshotError: The build is empty or shrank sharply (without ``force``),
            or ``field_priority`` names unknown sources or fields.
    """
    say = progress or (lambda _msg: None)
    all_names = [s.info.name for s in sources]
    if len(set(all_names)) != len(all_names):
        raise SnapshotError(f"source names must be unique, got {all_names}")
    names = [s.info.name for s in sources if not s.asn_table]
    index = {n: i for i, n in enumerate(names)}
    priority: dict[str, list[int]] = {}
    for fname, order in (field_priority or {}).items():
        if fname not in MERGED_FIELDS:
            raise SnapshotError(
                f"field_priority names unknown field {fname!r}; fields: {', '.join(MERGED_FIELDS)}"
            )
        unknown = [n for n in order if n not in index]
        if unknown:
            raise SnapshotError(
                f"field_priority[{fname!r}] names unknown sources {unknown} "
                "(ASN-table sources are ordered by their place in the list)"
            )
        priority[fname] = [index[n] for n in order]

    skipped = SkipLog(strict=strict)
    # Two groups merged apart: the record sources and the ASN-table sources.
    groups: dict[bool, _Group] = {False: _Group(), True: _Group()}
    source_entries: dict[str, dict[str, int]] = {}
    regions = RegionStats()
    with collecting(skipped), collecting_regions(regions):
        for src in sources:
            say(f"reading {src.info.name} ({src.info.format})")
            local, ranges = _read_source(src, say)
            source_entries[src.info.name] = {"v4": len(ranges[4]), "v6": len(ranges[6])}
            groups[src.asn_table].add(src.info.name, local, ranges)
    for line in [*skipped.summary(), *regions.summary()]:
        say(line)
    asn_records, asn_merged = groups.pop(True).merge({}, say, "ASN ")
    asn = _asn_sections(asn_records, asn_merged)
    del asn_records, asn_merged
    records, merged = groups.pop(False).merge(priority, say, "")
    stats = _stats_of(records, merged[4], merged[6])
    say(
        f"merged: {stats.records:,} records, {stats.v4_ranges:,} IPv4 and "
        f"{stats.v6_ranges:,} IPv6 ranges"
    )
    if not force:
        if stats.v4_ranges + stats.v6_ranges == 0:
            raise SnapshotError(
                "refusing to write an empty snapshot (no source covered any "
                "address); check the sources, or pass force=True"
            )
        if previous is not None:
            _check_shrink(stats, names, records, merged, previous, max_shrink)
    when = (built_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    infos: list[SourceInfo] = [s.info for s in sources]
    dates = [i.data_date for i in infos if i.data_date is not None]
    meta: dict[str, object] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "built_at": when.isoformat(),
        "built_by": f"geofence {__version__}",
        "data_date": min(dates).isoformat() if dates else None,
        "sources": [i.as_dict() for i in infos],
        "field_priority": {k: list(v) for k, v in (field_priority or {}).items()},
        "stats": stats.as_dict(),
    }
    if skipped.counts:
        meta["skipped"] = skipped.as_dict()
    if regions.countries:
        meta["subdivision_names"] = regions.as_dict()
    if len(asn.asns):
        meta["asn"] = _asn_stats(asn)
    say("encoding")
    recs_bytes = _records_json(records, meta)
    del records  # the rows are encoded: the record objects can go
    (v4_starts, v4_ids), (v6_starts, v6_ids) = merged.pop(4), merged.pop(6)
    carved4, carved6 = apply_special_ranges(
        (v4_starts.lo, v4_ids), (v6_starts.hi, v6_starts.lo, v6_ids)
    )
    del v4_starts, v4_ids, v6_starts, v6_ids  # only the carved copies are encoded
    data = _encode(meta, recs_bytes, carved4, carved6, asn)
    return BuildResult(
        data=data, stats=stats, source_entries=source_entries, skipped=skipped, regions=regions
    )


class _Group:
    """Sources merged together: their names, local records and ranges, in priority order."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.records: list[list[NetworkRecord | None]] = []
        self.stored: dict[int, list[tuple[int, SourceRanges]]] = {4: [], 6: []}

    def add(
        self, name: str, local: list[NetworkRecord | None], ranges: Mapping[int, SourceRanges]
    ) -> None:
        s = len(self.names)
        self.names.append(name)
        self.records.append(local)
        for version in (4, 6):
            if len(ranges[version]):
                self.stored[version].append((s, ranges[version]))

    def merge(
        self, priority: Mapping[str, Sequence[int]], say: Callable[[str], None], what: str
    ) -> tuple[list[NetworkRecord], dict[int, tuple[Column, array[int]]]]:
        """Merge the group (releasing its sources as it goes): records and partitions."""
        merger = Merger(self.records, self.names, priority)
        self.records = []  # the merger releases them as it goes
        merged: dict[int, tuple[Column, array[int]]] = {}
        for version, top in ((4, _V4_MAX), (6, _V6_MAX)):
            if self.names:
                say(f"merging {what}IPv{version}")
            family = [(s, ranges.disjoint()) for s, ranges in self.stored.pop(version)]
            merged[version] = merger.family(family, top)
            del family  # the source columns are not needed any more
        return list(merger.intern), merged


def _asn_stats(asn: _AsnSections) -> dict[str, int]:
    """Entries, segments with an entry and what they cover (IPv4 addresses, IPv6 /64s)."""
    p = asn.partitions
    starts6 = ((h << 64) | low for h, low in zip(p.v6_hi, p.v6_lo, strict=True))
    v4_ranges, v4_addresses = _coverage(p.v4_starts, p.v4_ids, _V4_MAX, 0)
    v6_ranges, v6_slash64s = _coverage(starts6, p.v6_ids, _V6_MAX, 64)
    return {
        "entries": len(asn.asns),
        "v4_ranges": v4_ranges,
        "v4_addresses": v4_addresses,
        "v6_ranges": v6_ranges,
        "v6_slash64s": v6_slash64s,
    }


def _read_source(
    src: Source, say: Callable[[str], None]
) -> tuple[list[NetworkRecord | None], dict[int, SourceRanges]]:
    """Read one source into compact per-family ranges and its distinct records."""
    name = src.info.name
    local: dict[NetworkRecord, int] = {}
    # Records by identity: the MMDB adapter hands out one object per distinct
    # record, stated for thousands of ranges, so most entries skip hashing the
    # record. The dict holds each record, so an id cannot be reused while it is
    # in the map. Adapters that make a new object per entry (text formats) would
    # only fill it: it is dropped when fewer than half the entries hit it.
    seen: dict[int, tuple[NetworkRecord, int | ValueProblem]] | None = {}
    hits = 0
    ranges = {4: SourceRanges(4), 6: SourceRanges(6)}
    count = 0
    for entry in src.entries():
        count += 1
        version = entry.version
        first = entry.first
        last = entry.last
        if version not in (4, 6) or not 0 <= first <= last <= (
            _V4_MAX if version == 4 else _V6_MAX
        ):
            raise SourceError(
                f"{name}: entry {count} has an invalid range "
                f"(version={version}, first={first}, last={last})"
            )
        rec = entry.record
        hit = seen.get(id(rec)) if seen is not None else None
        if hit is None:
            value = _local_id(rec, local, f"{name}: entry {count}")
            if seen is not None:
                seen[id(rec)] = (rec, value)
                if len(seen) == _IDENTITY_TRIAL and hits < count // 2:
                    seen = None
        else:
            value = hit[1]
            hits += 1
        if isinstance(value, ValueProblem):
            report(name, value)
            continue
        ranges[version].add(first, last, value)
        if count % 1_000_000 == 0:
            say(f"  {name}: {count:,} entries")
    say(f"  {name}: {count:,} entries, {len(local):,} distinct records")
    records: list[NetworkRecord | None] = list(local)
    return records, ranges


_IDENTITY_TRIAL = 1 << 16


def _local_id(
    rec: NetworkRecord, local: dict[NetworkRecord, int], where: str
) -> int | ValueProblem:
    """The local id of a record (added if new), or the problem that rejects it."""
    if rec.sources:
        rec = rec.with_sources(())
    value = local.get(rec)
    if value is None:
        try:
            _check_record(rec, where)
        except ValueProblem as problem:
            return problem
        value = local[rec] = len(local)
    return value


def _segments(starts: Column, ids: array[int], top: int) -> Iterator[tuple[int, int, int]]:
    """``(first, last, id)`` of a merged partition."""
    first = -1
    rid = -1
    for start, next_rid in zip(starts, ids, strict=True):
        if first >= 0:
            yield first, start - 1, rid
        first, rid = start, next_rid
    if first >= 0:
        yield first, top, rid


def _coverage_by_source(
    segments: Iterable[tuple[int, int, int]], records: Sequence[NetworkRecord], shift: int
) -> Counter[str]:
    """Addresses (IPv4) or /64s (IPv6, ``shift=64``) each source spoke for, by provenance."""
    per_record: Counter[int] = Counter()
    for first, last, rid in segments:
        if rid >= 0:
            per_record[rid] += ((last - first) >> shift) + 1
    covered: Counter[str] = Counter()
    for rid, size in per_record.items():
        for name in records[rid].sources:
            covered[name] += size
    return covered


def _check_shrink(
    stats: BuildStats,
    names: Sequence[str],
    records: Sequence[NetworkRecord],
    merged: Mapping[int, tuple[Column, array[int]]],
    previous: str | os.PathLike[str],
    max_shrink: float,
) -> None:
    """Refuse a build that covers much less than ``previous``, in total or for one source.

    A source's coverage is read from the records' provenance (which sources
    spoke for each range), in the previous snapshot and in this build alike.
    """
    from geofence.snapshot.reader import Snapshot

    old_snap = Snapshot.open(previous)
    old = old_snap.meta.get("stats")
    shown = os.fspath(previous)
    if isinstance(old, dict):
        for key in ("v4_ranges", "v6_ranges", "v4_addresses", "v6_slash64s"):
            _refuse_shrink(key, old.get(key), getattr(stats, key), max_shrink, shown)
    for version, top, shift, unit in ((4, _V4_MAX, 0, "IPv4 addresses"), (6, _V6_MAX, 64, "/64s")):
        before = _coverage_by_source(old_snap.ranges(version), old_snap.records, shift)
        now = _coverage_by_source(_segments(*merged[version], top), records, shift)
        for name in names:
            what = f"{unit} from {name}"
            _refuse_shrink(what, before.get(name), now.get(name, 0), max_shrink, shown)


def _refuse_shrink(what: str, before: object, now: int, max_shrink: float, shown: str) -> None:
    if isinstance(before, int) and before > 0 and now < before * (1 - max_shrink):
        raise SnapshotError(
            f"refusing a build that shrank sharply: {what} {before:,} -> {now:,} "
            f"(more than {max_shrink:.0%} less than {shown}); "
            "check the sources, or pass force=True"
        )

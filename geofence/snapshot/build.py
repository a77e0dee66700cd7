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
import heapq
import json
import os
import tempfile
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from geofence import __version__
from geofence.errors import SnapshotError, SourceError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.snapshot.format import (
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    RECORD_FIELDS,
    SECTION,
    SECTION_TAGS,
    align8,
)
from geofence.snapshot.partition import SPECIAL_TABLE, apply_special_ranges, index16
from geofence.sources.base import Source, SourceInfo

__all__ = ["BuildStats", "build_snapshot", "encode_snapshot", "write_atomic"]

_V4_MAX = (1 << 32) - 1
_V6_MAX = (1 << 128) - 1
_LOCATION_DEPENDENT = ("subdivision", "city", "latitude", "longitude", "accuracy_km")
_MERGED_FIELDS = tuple(f.name for f in fields(NetworkRecord) if f.name not in ("kinds", "sources"))

# A flattened source: parallel lists of first, last and a local value id.
_Flat = tuple[list[int], list[int], list[int]]


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


def _flatten(entries: list[tuple[int, int, int]]) -> _Flat:
    """Make one source's entries disjoint: the narrowest covering range wins.

    Args:
        entries: ``(first, last, value)`` in input order (later wins ties).
    """
    order = sorted(range(len(entries)), key=lambda i: (entries[i][0], i))
    firsts: list[int] = []
    lasts: list[int] = []
    values: list[int] = []
    # Fast path: already disjoint after sorting (MMDB trees, most feeds).
    prev_last = -1
    disjoint = True
    for i in order:
        first, last, _ = entries[i]
        if first <= prev_last:
            disjoint = False
            break
        prev_last = last
    if disjoint:
        for i in order:
            first, last, value = entries[i]
            firsts.append(first)
            lasts.append(last)
            values.append(value)
        return firsts, lasts, values
    # Sweep over boundaries with a heap of active ranges keyed by (size, -input order).
    points = sorted({entries[i][0] for i in order} | {entries[i][1] + 1 for i in order})
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
        if values and values[-1] == value and lasts[-1] + 1 == point:
            lasts[-1] = end
        else:
            firsts.append(point)
            lasts.append(end)
            values.append(value)
    return firsts, lasts, values


def _merge_record(
    parts: Sequence[tuple[int, NetworkRecord]],
    names: Sequence[str],
    priority: Mapping[str, Sequence[int]],
) -> NetworkRecord:
    """Combine the records of several sources for one segment (see module docs)."""
    by_source = dict(parts)
    default_order = [s for s, _ in parts]
    values: dict[str, object] = {}
    for name in _MERGED_FIELDS:
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
        sources=tuple(names[s] for s in default_order),
        **values,  # type: ignore[arg-type]  # keys are NetworkRecord field names
    )


def _check_record(rec: NetworkRecord, where: str) -> None:
    for name in ("country", "registered_country"):
        value = getattr(rec, name)
        if value is not None and not (len(value) == 2 and value.isascii() and value.isupper()):
            raise SourceError(f"{where}: {name} {value!r} is not an ISO 3166-1 alpha-2 code")
    sub = rec.subdivision
    if sub is not None and (len(sub) < 4 or sub[2] != "-" or not sub[:2].isupper()):
        raise SourceError(f"{where}: subdivision {sub!r} is not a full ISO 3166-2 code")


def _merge_version(
    flats: list[tuple[int, _Flat]],
    records: list[list[NetworkRecord]],
    names: Sequence[str],
    priority: Mapping[str, Sequence[int]],
    intern: dict[NetworkRecord, int],
    top: int,
) -> tuple[list[int], list[int]]:
    """Merge the flattened sources of one address family into a partition."""
    segments: list[tuple[int, int, int]] = []  # (first, last, record id)
    if len(flats) == 1:
        s, (firsts, lasts, values) = flats[0]
        cache: dict[int, int] = {}
        for first, last, value in zip(firsts, lasts, values, strict=True):
            rid = cache.get(value)
            if rid is None:
                merged = _merge_record([(s, records[s][value])], names, priority)
                rid = cache[value] = intern.setdefault(merged, len(intern))
            segments.append((first, last, rid))
    elif flats:
        points = sorted(
            {p for _, (f, _l, _v) in flats for p in f}
            | {p + 1 for _, (_f, la, _v) in flats for p in la}
        )
        ptr = [0] * len(flats)
        combos: dict[tuple[tuple[int, int], ...], int] = {}
        for k in range(len(points) - 1):
            point = points[k]
            key_parts: list[tuple[int, int]] = []
            for j, (s, (firsts, lasts, values)) in enumerate(flats):
                p = ptr[j]
                while p < len(lasts) and lasts[p] < point:
                    p += 1
                ptr[j] = p
                if p < len(lasts) and firsts[p] <= point:
                    key_parts.append((s, values[p]))
            if not key_parts:
                continue
            key = tuple(key_parts)
            rid = combos.get(key)
            if rid is None:
                merged = _merge_record([(s, records[s][v]) for s, v in key], names, priority)
                rid = combos[key] = intern.setdefault(merged, len(intern))
            end = points[k + 1] - 1
            if segments and segments[-1][2] == rid and segments[-1][1] + 1 == point:
                segments[-1] = (segments[-1][0], end, rid)
            else:
                segments.append((point, end, rid))
    starts: list[int] = []
    ids: list[int] = []
    cursor = 0
    for first, last, rid in segments:
        if first > cursor:
            starts.append(cursor)
            ids.append(-1)
        elif ids and ids[-1] == rid:
            cursor = last + 1  # contiguous with the same record: extend it
            continue
        starts.append(first)
        ids.append(rid)
        cursor = last + 1
    if not starts:
        starts.append(0)
        ids.append(-1)
    elif cursor <= top:
        starts.append(cursor)
        ids.append(-1)
    return starts, ids


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
    sources = meta.get("sources")
    if not isinstance(sources, list):
        raise SnapshotError("meta['sources'] must be a list")
    source_index = {str(s["name"]): i for i, s in enumerate(sources)}
    meta = {**meta, "special_table": SPECIAL_TABLE}
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    recs_bytes = json.dumps(
        [_record_row(r, source_index) for r in records], separators=(",", ":")
    ).encode()
    mask = (1 << 64) - 1
    (v4_starts, v4_ids), (v6_hi, v6_lo, v6_ids) = apply_special_ranges(
        (array("I", v4[0]), array("i", v4[1])),
        (
            array("Q", (s >> 64 for s in v6[0])),
            array("Q", (s & mask for s in v6[0])),
            array("i", v6[1]),
        ),
    )
    v4_index = index16(v4_starts)
    v6_index = index16(v6_hi, 48)
    blobs = [meta_bytes, recs_bytes]
    for arr in (v4_starts, v4_ids, v4_index, v6_hi, v6_lo, v6_ids, v6_index):
        if not _little_endian():
            arr.byteswap()
        blobs.append(arr.tobytes())
    table_size = SECTION.size * len(SECTION_TAGS)
    offset = align8(HEADER.size + table_size)
    table = bytearray()
    body = bytearray(offset - HEADER.size)
    for tag, blob in zip(SECTION_TAGS, blobs, strict=True):
        table += SECTION.pack(tag, 0, offset, len(blob))
        padded = align8(len(blob))
        offset += padded
    body[: len(table)] = table
    for blob in blobs:
        body += blob + bytes(align8(len(blob)) - len(blob))
    digest = hashlib.sha256(body).digest()
    header = HEADER.pack(
        MAGIC, FORMAT_VERSION, 0, HEADER.size, len(SECTION_TAGS), 0, HEADER.size + len(body), digest
    )
    return header + bytes(body)


def _little_endian() -> bool:
    import sys

    return sys.byteorder == "little"


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


def _stats_of(
    records: Sequence[NetworkRecord],
    v4: tuple[Sequence[int], Sequence[int]],
    v6: tuple[Sequence[int], Sequence[int]],
) -> BuildStats:
    stats = BuildStats()
    stats.records = len(records)
    for (starts, ids), top, attr_r, attr_a, shift in (
        (v4, _V4_MAX, "v4_ranges", "v4_addresses", 0),
        (v6, _V6_MAX, "v6_ranges", "v6_slash64s", 64),
    ):
        count = 0
        covered = 0
        for i, rid in enumerate(ids):
            if rid < 0:
                continue
            end = starts[i + 1] - 1 if i + 1 < len(starts) else top
            count += 1
            covered += ((end - starts[i]) >> shift) + 1 if shift else end - starts[i] + 1
        setattr(stats, attr_r, count)
        setattr(stats, attr_a, covered)
    return stats


def build_snapshot(
    sources: Sequence[Source],
    *,
    field_priority: Mapping[str, Sequence[str]] | None = None,
    previous: str | os.PathLike[str] | None = None,
    max_shrink: float = 0.5,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    name: str = "",
    built_at: dt.datetime | None = None,
) -> bytes:
    """Merge ``sources`` into a snapshot and return the file's bytes.

    Args:
        sources: Sources in priority order (first = highest); names must be unique.
        field_priority: Per-field source order overriding the default order.
        previous: A previous snapshot file; the build is refused when it covers
            less than ``1 - max_shrink`` of what the previous one did (ranges or
            addresses), unless ``force``.
        max_shrink: Largest tolerated relative shrink against ``previous``.
        force: Write even an empty or sharply shrunk build.
        progress: Called with short progress messages.
        name: Free-text name stored in the metadata.
        built_at: Build timestamp to record (default now, UTC); pass a fixed
            value for reproducible builds.

    Returns:
        The snapshot file bytes, ready for :func:`write_atomic`.

    Raises:
        SourceError: A source cannot be read or states invalid values.
        SnapshotError: The build is empty or shrank sharply (without ``force``),
            or ``field_priority`` names unknown sources or fields.
    """
    say = progress or (lambda _msg: None)
    names = [s.info.name for s in sources]
    if len(set(names)) != len(names):
        raise SnapshotError(f"source names must be unique, got {names}")
    index = {n: i for i, n in enumerate(names)}
    priority: dict[str, list[int]] = {}
    for fname, order in (field_priority or {}).items():
        if fname not in _MERGED_FIELDS:
            raise SnapshotError(
                f"field_priority names unknown field {fname!r}; fields: {', '.join(_MERGED_FIELDS)}"
            )
        unknown = [n for n in order if n not in index]
        if unknown:
            raise SnapshotError(f"field_priority[{fname!r}] names unknown sources {unknown}")
        priority[fname] = [index[n] for n in order]

    flats: dict[int, list[tuple[int, _Flat]]] = {4: [], 6: []}
    per_source_records: list[list[NetworkRecord]] = []
    for s, src in enumerate(sources):
        say(f"reading {src.info.name} ({src.info.format})")
        local: dict[NetworkRecord, int] = {}
        entries: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}
        count = 0
        for entry in src.entries():
            count += 1
            top = _V4_MAX if entry.version == 4 else _V6_MAX
            if entry.version not in (4, 6) or not 0 <= entry.first <= entry.last <= top:
                raise SourceError(
                    f"{src.info.name}: entry {count} has an invalid range "
                    f"(version={entry.version}, first={entry.first}, last={entry.last})"
                )
            rec = entry.record
            if rec.sources:
                rec = rec.with_sources(())
            value = local.get(rec)
            if value is None:
                _check_record(rec, f"{src.info.name}: entry {count}")
                value = local[rec] = len(local)
            entries[entry.version].append((entry.first, entry.last, value))
            if count % 1_000_000 == 0:
                say(f"  {src.info.name}: {count:,} entries")
        say(f"  {src.info.name}: {count:,} entries, {len(local):,} distinct records")
        per_source_records.append(list(local))
        for version in (4, 6):
            if entries[version]:
                flats[version].append((s, _flatten(entries[version])))
        del entries
    intern: dict[NetworkRecord, int] = {}
    say("merging IPv4")
    v4 = _merge_version(flats[4], per_source_records, names, priority, intern, _V4_MAX)
    say("merging IPv6")
    v6 = _merge_version(flats[6], per_source_records, names, priority, intern, _V6_MAX)
    records = list(intern)
    stats = _stats_of(records, v4, v6)
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
            _check_shrink(stats, previous, max_shrink)
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
    say("encoding")
    return encode_snapshot(meta=meta, records=records, v4=v4, v6=v6)


def _check_shrink(stats: BuildStats, previous: str | os.PathLike[str], max_shrink: float) -> None:
    from geofence.snapshot.reader import Snapshot

    old = Snapshot.open(previous).meta.get("stats")
    if not isinstance(old, dict):
        return
    for key in ("v4_ranges", "v6_ranges", "v4_addresses", "v6_slash64s"):
        before = old.get(key)
        now = getattr(stats, key)
        if isinstance(before, int) and before > 0 and now < before * (1 - max_shrink):
            raise SnapshotError(
                f"refusing a build that shrank sharply: {key} {before:,} -> {now:,} "
                f"(more than {max_shrink:.0%} less than {os.fspath(previous)}); "
                "check the sources, or pass force=True"
            )

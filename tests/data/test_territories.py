"""Tests of the territory table (``data/territories.toml``) and its build step.

The MMDB fixtures are written here with ``mmdb-writer`` in DB-IP City Lite's
shape (English region names only, no subdivision codes), with Crimea filed
under RU as DB-IP files most of it.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path
from typing import Any

import pycountry
import pytest

from geofence.engine import Geofence
from geofence.errors import SourceError
from geofence.records import NetworkRecord
from geofence.snapshot.build import build_snapshot
from geofence.snapshot.reader import Snapshot
from geofence.snapshot.territories import (
    TerritoryTable,
    mmdb_raw_networks,
    normalise_name,
    territory_source,
)
from geofence.sources.base import RangeEntry, Source, SourceInfo
from tests.sources._helpers import write_mmdb

TABLE = TerritoryTable.load()


def _city(country: str, region: str | None, city: str = "") -> dict[str, Any]:
    """A record shaped like DB-IP City Lite's (names only, no codes for regions)."""
    rec: dict[str, Any] = {"country": {"iso_code": country, "names": {"en": country}}}
    if region is not None:
        rec["subdivisions"] = [{"names": {"en": region}}]
    if city:
        rec["city"] = {"names": {"en": city}}
    return rec


CITY_NETWORKS = [
    ("91.217.78.0/24", _city("RU", "Crimea", "Feodosiya")),
    ("109.110.64.0/24", _city("RU", "Sebastopol City", "Sevastopol")),
    ("5.105.0.0/24", _city("UA", "Crimea", "Simferopol")),
    ("5.105.1.0/24", _city("UA", "Sebastopol City")),
    ("5.105.2.0/24", _city("UA", "Kyiv City", "Kyiv")),
    ("5.105.3.0/24", _city("RU", "Moscow", "Moscow")),
    ("5.105.4.0/24", _city("RU", "Luhansk")),
    ("5.105.5.0/24", _city("UA", "Zaporizhzhya Oblast")),
    ("5.105.6.0/24", _city("UA", None)),
    ("2a02:2378::/32", _city("RU", "Crimea")),
]


@pytest.fixture(scope="module")
def city_mmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A City-shaped MMDB with territories under RU and UA."""
    path = tmp_path_factory.mktemp("territories") / "city.mmdb"
    return write_mmdb(path, CITY_NETWORKS, database_type="DBIP-City-Lite")


def _info(name: str) -> SourceInfo:
    return SourceInfo(name=name, format="test")


def _by_network(source: Source) -> dict[str, NetworkRecord]:
    out = {}
    for e in source.entries():
        net = next(
            ipaddress.summarize_address_range(
                ipaddress.ip_address(e.first if e.version == 4 else e.first.to_bytes(16, "big")),
                ipaddress.ip_address(e.last if e.version == 4 else e.last.to_bytes(16, "big")),
            )
        )
        out[str(net)] = e.record
    return out


# --- the table ----------------------------------------------------------------------


def test_every_territory_is_a_real_iso_subdivision_of_its_country() -> None:
    """Each code exists in ISO 3166-2 (pycountry) and belongs to the stated country."""
    for terr in TABLE.territories:
        sub = pycountry.subdivisions.get(code=terr.code)  # type: ignore[no-untyped-call]
        assert sub is not None, terr.code
        assert sub.country_code == terr.country
        assert normalise_name(sub.name) in {normalise_name(n) for n in (terr.name, *terr.names)}


def test_table_covers_what_the_presets_name() -> None:
    """Crimea, Sevastopol and the four oblasts of the EU/UK preset are in the table."""
    assert {"UA-43", "UA-40", "UA-14", "UA-09", "UA-23", "UA-65"} <= TABLE.codes
    assert not TABLE.get("UA-43").partial  # type: ignore[union-attr]
    assert TABLE.get("UA-14").partial  # type: ignore[union-attr]


def test_every_territory_is_cited() -> None:
    """Every row cites at least one instrument with a URL."""
    for terr in TABLE.territories:
        assert terr.instruments
        assert all(i.url.startswith("http") for i in terr.instruments)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("Crimea", "UA-43"),
        ("Autonomous Republic of Crimea", "UA-43"),
        ("Sebastopol City", "UA-40"),
        ("SEVASTOPOL", "UA-40"),
        ("Zaporizhzhya Oblast", "UA-23"),
        ("Luhansk", "UA-09"),
        ("Kherson Oblast", "UA-65"),
        ("Kyiv City", None),
        ("Moscow", None),
        ("", None),
    ],
)
def test_match_by_name_under_any_country(name: str, code: str | None) -> None:
    """Region names match whatever their spelling of 'oblast' or 'city'."""
    terr = TABLE.match(name)
    assert (terr.code if terr else None) == code


def test_match_by_code() -> None:
    """A source's ISO code matches too, e.g. UA-43 filed under another country."""
    assert TABLE.match(None, "UA-43") is TABLE.get("UA-43")
    assert TABLE.match("Moscow", "ua-40") is TABLE.get("UA-40")
    assert TABLE.match(None, "RU-MOW") is None


_GOOD_ROW: dict[str, Any] = {
    "code": "UA-43",
    "country": "UA",
    "name": "Avtonomna Respublika Krym",
    "names": ["Crimea"],
    "filed_under": ["RU"],
    "partial": False,
    "instrument": [
        {"regime": "US", "instrument": "EO", "covers": "it", "url": "https://x.example"}
    ],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"code": "Crimea"}, "not an ISO 3166-2 code"),
        ({"country": "RU"}, "is not the prefix"),
        ({"filed_under": ["Russia"]}, "not an ISO 3166-1"),
        ({"partial": "no"}, "'partial' must be true or false"),
        ({"instrument": []}, "must cite it"),
        (
            {"instrument": [{"regime": "US", "instrument": "EO", "covers": "x", "url": "ftp://x"}]},
            "url",
        ),
        ({"names": "Crimea"}, "list of strings"),
        ({"name": ""}, "'name' must be a non-empty string"),
    ],
)
def test_table_rejects_bad_rows(change: dict[str, Any], message: str) -> None:
    """A malformed row is refused with a message naming the field."""
    row = {**_GOOD_ROW, **change}
    with pytest.raises(SourceError, match=message):
        TerritoryTable.from_mapping({"schema": 1, "reviewed": TABLE.reviewed, "territory": [row]})


def test_table_rejects_a_name_claimed_twice() -> None:
    """Two territories may not share a region name (the match would be ambiguous)."""
    other = {**_GOOD_ROW, "code": "UA-40", "name": "Sevastopol"}
    with pytest.raises(SourceError, match="claimed by UA-43 and UA-40"):
        TerritoryTable.from_mapping(
            {"schema": 1, "reviewed": TABLE.reviewed, "territory": [_GOOD_ROW, other]}
        )


def test_table_rejects_missing_schema_and_date() -> None:
    """The header fields are checked."""
    with pytest.raises(SourceError, match="schema"):
        TerritoryTable.from_mapping({"reviewed": TABLE.reviewed, "territory": [_GOOD_ROW]})
    with pytest.raises(SourceError, match="reviewed"):
        TerritoryTable.from_mapping({"schema": 1, "territory": [_GOOD_ROW]})


# --- the build step -----------------------------------------------------------------


def test_raw_networks_keep_the_source_answer(city_mmdb: Path) -> None:
    """The MMDB reader yields country and region name before any mapping."""
    raw = {(n.country, n.region) for n in mmdb_raw_networks(city_mmdb)}
    assert ("RU", "Crimea") in raw
    assert ("UA", "Kyiv City") in raw
    assert ("UA", None) in raw


def test_territory_source_overrides_under_ru_and_ua(city_mmdb: Path) -> None:
    """Crimea under RU and under UA both become UA / UA-43, naming the source's answer."""
    counts: Counter[tuple[str, str, str]] = Counter()
    src = territory_source(
        lambda: mmdb_raw_networks(city_mmdb),
        TABLE,
        of="dbip-city-lite",
        info=_info("territories"),
        counts=counts,
    )
    got = _by_network(src)
    assert got["91.217.78.0/24"] == NetworkRecord(
        country="UA", subdivision="UA-43", territory="dbip-city-lite: RU / Crimea -> UA-43"
    )
    assert got["109.110.64.0/24"].subdivision == "UA-40"
    assert got["109.110.64.0/24"].territory == "dbip-city-lite: RU / Sebastopol City -> UA-40"
    assert got["5.105.0.0/24"].territory == "dbip-city-lite: UA / Crimea -> UA-43"
    assert got["5.105.4.0/24"].subdivision == "UA-09"
    assert got["5.105.5.0/24"].subdivision == "UA-23"
    assert got["2a02:2378::/32"].subdivision == "UA-43"
    assert "5.105.2.0/24" not in got  # Kyiv is not a territory
    assert "5.105.3.0/24" not in got
    assert counts[("RU", "Crimea", "UA-43")] == 2  # one IPv4 and one IPv6 network


def test_territory_source_needs_its_own_name() -> None:
    """The derived source cannot take the checked source's name."""
    with pytest.raises(SourceError, match="its own name"):
        territory_source(lambda: [], TABLE, of="x", info=_info("x"))


def _country_source(name: str, rows: list[tuple[str, str]]) -> Source:
    entries = []
    for cidr, country in rows:
        net = ipaddress.ip_network(cidr)
        entries.append(
            RangeEntry(
                net.version,
                int(net.network_address),
                int(net.broadcast_address),
                NetworkRecord(country=country),
            )
        )
    return Source(info=_info(name), read=lambda: entries)


@pytest.fixture(scope="module")
def territory_snapshot(city_mmdb: Path) -> Snapshot:
    """Territories first, then a country source that files Crimea under RU."""
    terr = territory_source(
        lambda: mmdb_raw_networks(city_mmdb), TABLE, of="dbip-city-lite", info=_info("territories")
    )
    country = _country_source(
        "dbip-country",
        [
            ("91.217.78.0/24", "RU"),
            ("109.110.64.0/24", "RU"),
            ("5.105.0.0/21", "UA"),
            ("5.105.3.0/24", "RU"),
        ],
    )
    return Snapshot.from_bytes(build_snapshot([terr, country], force=True))


def test_ofac_preset_denies_crimea_filed_under_ru(territory_snapshot: Snapshot) -> None:
    """With the territory step, us-ofac-comprehensive denies Crimea and Sevastopol under RU."""
    fence = Geofence(territory_snapshot, "us-ofac-comprehensive")
    feodosiya = fence.decide("91.217.78.1")
    assert feodosiya.action.value == "deny"
    assert feodosiya.subdivision == "UA-43"
    assert "territory:dbip-city-lite: RU / Crimea -> UA-43" in feodosiya.reasons
    assert "source dbip-city-lite: RU / Crimea -> UA-43" in feodosiya.explain()
    assert fence.decide("109.110.64.1").action.value == "deny"
    assert fence.decide("5.105.3.1").action.value == "allow"  # Moscow
    assert fence.decide("5.105.2.1").action.value == "challenge"  # UA without a mapped oblast


def test_eu_preset_treats_partial_oblasts_as_unresolved(territory_snapshot: Snapshot) -> None:
    """Luhansk filed under RU becomes UA-09, which the EU/UK preset cannot decide."""
    fence = Geofence(territory_snapshot, "eu-uk-occupied-territories")
    luhansk = fence.decide("5.105.4.1")
    assert luhansk.subdivision == "UA-09"
    assert luhansk.outcome == "unresolved"
    assert "unresolved:partial:UA-09" in luhansk.reasons

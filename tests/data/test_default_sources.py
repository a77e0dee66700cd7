"""Tests of the default snapshot's jurisdiction-grade sources (``data/default_sources.py``)."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pycountry
import pytest

from geofence.errors import SourceError
from geofence.records import NetworkRecord
from geofence.snapshot.territories import TerritoryTable
from geofence.sources.base import SourceInfo
from tests.sources._helpers import write_mmdb

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    """Import ``data/default_sources.py`` (beside a script, not in a package) by path."""
    name = "geofence_data_default_sources"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "data" / "default_sources.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ds = _load()
TABLE = TerritoryTable.load(ROOT / "data" / "territories.toml")


def test_region_names_are_real_codes_of_their_country() -> None:
    """Every code in region_names.toml exists in ISO 3166-2 (pycountry) for its country."""
    names = ds.RegionNames.load(ROOT / "data" / "region_names.toml")
    assert len(names.by_country["UA"]) >= 30
    for country, table in names.by_country.items():
        for region, code in table.items():
            sub = pycountry.subdivisions.get(code=code)  # type: ignore[no-untyped-call]
            assert sub is not None, (region, code)
            assert sub.country_code == country


def test_region_names_leave_territories_to_the_territory_table() -> None:
    """No name in the region table is a territory name (those go through territories.toml)."""
    names = ds.RegionNames.load(ROOT / "data" / "region_names.toml")
    for table in names.by_country.values():
        for region in table:
            assert TABLE.match(region) is None, region


def test_region_names_reject_codes_of_another_country(tmp_path: Path) -> None:
    """A code must belong to the country it is listed under."""
    bad = tmp_path / "names.toml"
    bad.write_text('schema = 1\n[UA]\n"Moscow" = "RU-MOW"\n', encoding="utf-8")
    with pytest.raises(SourceError, match="is not a UA- code"):
        ds.RegionNames.load(bad)


def _city(country: str, region: str | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"country": {"iso_code": country}}
    if region is not None:
        rec["subdivisions"] = [{"names": {"en": region}}]
    return rec


def test_scan_and_subdivisions_from_a_city_file(tmp_path: Path) -> None:
    """One walk keeps UA and territory networks; UA names map, unknown names stay empty."""
    path = write_mmdb(
        tmp_path / "city.mmdb",
        [
            ("91.200.0.0/24", _city("UA", "Kyiv City")),
            ("194.44.0.0/24", _city("UA", "Lviv")),
            ("5.105.0.0/24", _city("UA", "Atlantis Oblast")),
            ("91.217.78.0/24", _city("RU", "Crimea")),
            ("5.105.1.0/24", _city("RU", "Moscow")),
            ("5.105.2.0/24", _city("UA", "Donetsk")),
        ],
        database_type="DBIP-City-Lite",
    )
    names = ds.RegionNames.load(ROOT / "data" / "region_names.toml")
    scan = ds.CityScan(path, TABLE, frozenset({"UA"}))
    kept = {(n.country, n.region) for n in scan.networks()}
    assert ("RU", "Moscow") not in kept
    assert ("RU", "Crimea") in kept
    counts: Counter[tuple[str, bool]] = Counter()
    src = ds.subdivision_source(
        scan, names, info=SourceInfo(name="dbip-city-lite", format="t"), counts=counts
    )
    records = {e.first: e.record for e in src.entries()}
    assert records[(91 << 24) | (200 << 16)] == NetworkRecord(country="UA", subdivision="UA-30")
    assert records[(194 << 24) | (44 << 16)] == NetworkRecord(country="UA", subdivision="UA-46")
    assert records[(5 << 24) | (105 << 16)] == NetworkRecord(country="UA")  # unmapped: no guess
    assert len(records) == 3  # Crimea and Donetsk are the territory source's
    assert counts == Counter({("UA", True): 2, ("UA", False): 1})
    terr = ds.territories_of(
        scan, of="dbip-city-lite", info=SourceInfo(name="t", format="t"), counts=Counter()
    )
    assert {e.record.subdivision for e in terr.entries()} == {"UA-43", "UA-14"}

"""Tests of the default snapshot's jurisdiction-grade sources (``data/default_sources.py``)."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

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


def test_subdivision_countries_are_what_the_presets_name() -> None:
    """The default keeps subdivisions of exactly the countries whose codes presets name."""
    import tomllib

    named = set()
    for path in (ROOT / "data" / "policies").glob("*.toml"):
        for rule in tomllib.loads(path.read_text(encoding="utf-8")).get("rules", []):
            for key in ("jurisdictions", "partial_jurisdictions"):
                named |= {c[:2] for c in rule.get(key, []) if "-" in c}
    assert named == ds.SUBDIVISION_COUNTRIES


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
    scan = ds.CityScan(path, TABLE, ds.SUBDIVISION_COUNTRIES)
    kept = {(n.country, n.region) for n in scan.networks()}
    assert ("RU", "Moscow") not in kept
    assert ("RU", "Crimea") in kept
    counts: Counter[tuple[str, bool]] = Counter()
    src = ds.subdivision_source(
        scan, info=SourceInfo(name="dbip-city-lite", format="t"), counts=counts
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


def test_scan_keeps_the_subdivisions_of_the_countries_asked_for(tmp_path: Path) -> None:
    """``--subdivisions UA,RU``: RU networks keep their codes; territories stay UA."""
    path = write_mmdb(
        tmp_path / "city.mmdb",
        [
            ("91.200.0.0/24", _city("UA", "Kyiv City")),
            ("91.217.78.0/24", _city("RU", "Crimea")),
            ("5.105.1.0/24", _city("RU", "Moscow")),
            ("5.105.3.0/24", _city("RU", "Altai")),
            ("5.105.4.0/24", _city("GE", "Tbilisi")),
        ],
        database_type="DBIP-City-Lite",
    )
    scan = ds.CityScan(path, TABLE, frozenset({"UA", "RU"}))
    assert ("GE", "Tbilisi") not in {(n.country, n.region) for n in scan.networks()}
    counts: Counter[tuple[str, bool]] = Counter()
    src = ds.subdivision_source(
        scan, info=SourceInfo(name="dbip-city-lite", format="t"), counts=counts
    )
    records = {e.first: e.record for e in src.entries()}
    assert records[(5 << 24) | (105 << 16) | (1 << 8)] == NetworkRecord(
        country="RU", subdivision="RU-MOW"
    )
    # "Altai" could be RU-AL or RU-ALT: left without a code, never guessed.
    assert records[(5 << 24) | (105 << 16) | (3 << 8)] == NetworkRecord(country="RU")
    assert (91 << 24) | (217 << 16) | (78 << 8) not in records  # the territory source's
    assert counts == Counter({("UA", True): 1, ("RU", True): 1, ("RU", False): 1})

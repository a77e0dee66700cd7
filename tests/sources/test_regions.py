"""Tests of geofence.sources.regions: region names to ISO 3166-2 codes."""

from __future__ import annotations

import pycountry
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.errors import SourceError
from geofence.sources import regions
from geofence.sources.regions import (
    RegionResolver,
    RegionStats,
    fold_name,
    load_overrides,
    normalize_name,
    subdivision_for_name,
)


@pytest.mark.parametrize(
    ("country", "name", "code"),
    [
        # pycountry's own names, matched after normalising.
        ("UA", "Kyiv City", "UA-30"),
        ("US", "California", "US-CA"),
        ("GE", "T'bilisi", "GE-TB"),
        ("MD", "Chișinău Municipality", "MD-CU"),
        ("MD", "Bender Municipality", "MD-BD"),
        ("MD", "Soroca District", "MD-SO"),
        ("RU", "Tatarstan Republic", "RU-TA"),
        ("RU", "Leningradskaya Oblast'", "RU-LEN"),
        # The reviewed override table.
        ("UA", "Kyiv Oblast", "UA-32"),
        ("UA", "Kyiv", "UA-32"),
        ("UA", "Lviv", "UA-46"),
        ("UA", "Kharkivs’ka Oblast’", "UA-63"),  # noqa: RUF001  # DB-IP's own apostrophes
        ("UA", "ODESSA", "UA-51"),
        ("UA", "Crimea", "UA-43"),
        ("UA", "Sebastopol City", "UA-40"),
        ("RU", "Moscow", "RU-MOW"),
        ("RU", "Moscow Oblast", "RU-MOS"),
        ("RU", "Altay Kray", "RU-ALT"),
        ("GE", "Adjara", "GE-AJ"),
        ("MD", "Transnistria", "MD-SN"),
        # DB-IP's Belarus: "Minsk" is the region around the city, "Minsk City" the city.
        ("BY", "Minsk", "BY-MI"),
        ("BY", "Minsk City", "BY-HM"),
        ("BY", "Homyel’ Voblasc’", "BY-HO"),  # noqa: RUF001  # DB-IP's own apostrophes
        ("BY", "Grodnenskaya", "BY-HR"),
    ],
)
def test_names_map_to_codes(country: str, name: str, code: str) -> None:
    """Source spellings of regions give the ISO 3166-2 code of that region."""
    assert subdivision_for_name(country, name) == code


@pytest.mark.parametrize(
    ("country", "name"),
    [
        ("RU", "Crimea"),  # ISO 3166-2 has no RU code: the territory step decides
        ("RU", "Sebastopol City"),
        ("RU", "Altai"),  # republic or krai: not guessed
        ("UA", "Atlantis"),
        ("ZZ", "Anywhere"),
        ("UA", ""),
    ],
)
def test_unmatched_names_give_none(country: str, name: str) -> None:
    """A name that matches nothing (or two things) gives None, never a guess."""
    assert subdivision_for_name(country, name) is None


def test_kind_words_must_agree() -> None:
    """'X Oblast' is not the city X, and 'X City' is not the oblast (kinds disagree)."""
    assert subdivision_for_name("UA", "Kyiv City") == "UA-30"
    resolver = RegionResolver()
    # Without the override entries, the kind check alone keeps these apart.
    assert regions._pycountry_index("UA")["kyiv"][0] == "UA-30"
    assert resolver("UA", "Sevastopol City") == "UA-40"
    assert resolver("UA", "Sevastopol Oblast") is None


def test_extra_entries_come_first_and_may_cross_countries() -> None:
    """A resolver's extra entries (the territory table) map RU/Crimea to UA-43."""
    resolver = RegionResolver({("RU", "Crimea"): "UA-43", ("RU", "sebastopol city"): "UA-40"})
    assert resolver("RU", "CRIMEA") == "UA-43"
    assert resolver("RU", "Sebastopol City") == "UA-40"
    assert resolver("RU", "Moscow") == "RU-MOW"


def test_normalisation() -> None:
    """Case, accents, apostrophes, punctuation and kind words are folded away."""
    assert normalize_name("Kharkivs'ka Oblast'") == "kharkivska"
    assert normalize_name("Chișinău Municipality") == "chisinau"
    assert normalize_name("St.-Petersburg") == "st petersburg"
    assert fold_name("Kyiv  Oblast") == "kyiv oblast"


@given(st.text(max_size=40))
def test_fold_and_normalise_are_idempotent(name: str) -> None:
    """Folding a folded name changes nothing; normalising twice equals normalising once."""
    assert fold_name(fold_name(name)) == fold_name(name)
    assert normalize_name(normalize_name(name)) == normalize_name(name)


def test_bundled_overrides_are_reviewed() -> None:
    """Every bundled entry has a reason and a code of its own country (checked when loaded)."""
    table = regions._bundled_overrides()
    assert len(table) > 100
    for (country, _name), code in table.items():
        sub = pycountry.subdivisions.get(code=code)  # type: ignore[no-untyped-call]
        assert sub is not None
        assert sub.country_code == country


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[UA]\n"Lviv" = { code = "UA-46" }', "must be"),
        ('[UA]\n"Lviv" = { code = "UA-46", why = " " }', "no reason"),
        ('[UA]\n"Lviv" = { code = "RU-MOW", why = "x" }', "not an ISO 3166-2 code of UA"),
        ('[UA]\n"Lviv" = { code = "UA-99", why = "x" }', "not an ISO 3166-2 code of UA"),
        ('UA = "x"', "not a table"),
        ("[UA", "not valid TOML"),
    ],
)
def test_malformed_override_tables_are_refused(text: str, message: str) -> None:
    """An override without a reason, with a foreign or unknown code, or bad TOML is refused."""
    with pytest.raises(SourceError, match=message):
        load_overrides(text, "t.toml")


def test_region_stats_count_rates_and_examples() -> None:
    """Stats count ranges and IPv4 addresses per country, and name the unmapped regions."""
    stats = RegionStats()
    stats.add("UA", "Lviv", "UA-46", 300)
    stats.add("UA", "Nowhere", None, 100)
    stats.add("RU", "Crimea", None, 50)
    stats.add("RU", "Crimea", None, 0)  # an IPv6 range
    assert stats.rate("UA") == pytest.approx(0.75)
    assert stats.rate("RU") == 0.0
    assert stats.rate("DE") == 1.0
    assert stats.as_dict() == {"RU": [0, 2, 0, 50], "UA": [1, 2, 300, 400]}
    lines = stats.summary()
    assert lines[0].startswith("subdivisions: 300 of 450 named IPv4 addresses mapped (66.7%)")
    assert any("UA: 75.0% mapped; unmapped: 'Nowhere' (100)" in line for line in lines)
    assert any("RU: 0.0% mapped; unmapped: 'Crimea' (51)" in line for line in lines)

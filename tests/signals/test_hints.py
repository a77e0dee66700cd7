"""Tests for geofence.signals.hints: time zone, language, declared country and distance."""

from __future__ import annotations

import math
import threading
from importlib import import_module, resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.errors import PolicyError
from geofence.signals import hints
from geofence.signals.hints import (
    EARTH_RADIUS_KM,
    SIGNAL_WEIGHTS,
    countries_for_timezone,
    country_centroid,
    declared_country_signal,
    distance_signal,
    haversine_km,
    language_regions,
    language_signal,
    tz_data_version,
    tz_signal,
)

BERLIN = (52.52, 13.405)
PARIS = (48.8566, 2.3522)


def _tab(name: str) -> list[list[str]]:
    text = (resources.files("tzdata") / "zoneinfo" / name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line and line[0] != "#"]


# --------------------------------------------------------------------------- time zones


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("Europe/Kyiv", {"UA"}),
        ("Europe/Kiev", {"UA"}),  # backward link
        ("America/New_York", {"US"}),
        ("US/Eastern", {"US"}),  # backward link
        ("Asia/Calcutta", {"IN"}),  # backward link
        ("Asia/Kolkata", {"IN"}),
    ],
)
def test_single_country_zones(tz: str, expected: set[str]) -> None:
    """Zones and their backward links map to the country that uses them."""
    assert countries_for_timezone(tz) == expected


def test_shared_zone_lists_every_country() -> None:
    """zone1970.tab shares Europe/Berlin between countries whose clocks agree since 1970."""
    berlin = countries_for_timezone("Europe/Berlin")
    assert "DE" in berlin
    assert {"DK", "NO", "SE"} <= berlin
    assert "FR" not in berlin


def test_link_keeps_its_own_country() -> None:
    """Europe/Oslo is a link to Europe/Berlin but zone.tab still gives it Norway."""
    oslo = countries_for_timezone("Europe/Oslo")
    assert "NO" in oslo
    assert countries_for_timezone("Europe/Berlin") <= oslo


@pytest.mark.parametrize(
    "tz",
    [
        "UTC",
        "Etc/UTC",
        "Etc/GMT+5",
        "GMT",
        "Factory",
        "CET",
        "EST5EDT",
        "",
        "Mars/Olympus",
        "x" * 500,
    ],
)
def test_placeless_or_unknown_zones_are_empty(tz: str) -> None:
    """UTC, Etc/*, rule names such as CET and unknown names name no country."""
    assert countries_for_timezone(tz) == frozenset()


def test_case_insensitive_fallback() -> None:
    """A lower-cased name still resolves."""
    assert countries_for_timezone("europe/kyiv") == {"UA"}
    assert countries_for_timezone(" america/new_york ") == {"US"}


def test_kosovo_follows_belgrade() -> None:
    """XK, Kosovo's user-assigned code, is accepted for Europe/Belgrade."""
    assert {"RS", "XK"} <= countries_for_timezone("Europe/Belgrade")


def test_every_zone1970_zone_resolves() -> None:
    """Each zone1970.tab row maps to at least the countries it lists."""
    for row in _tab("zone1970.tab"):
        assert set(row[0].split(",")) <= countries_for_timezone(row[2]), row[2]


def test_every_zone_tab_name_resolves() -> None:
    """Each zone.tab name (including those that are links today) includes its country."""
    for row in _tab("zone.tab"):
        assert row[0] in countries_for_timezone(row[2]), row[2]


def test_tz_data_version_matches_package() -> None:
    """The version read from tzdata.zi is the installed tzdata's IANA release."""
    assert tz_data_version() == import_module("tzdata").IANA_VERSION


@given(st.text(max_size=80))
def test_countries_for_timezone_never_raises(tz: str) -> None:
    """Arbitrary text gives a set of two-letter upper-case codes, possibly empty."""
    found = countries_for_timezone(tz)
    assert all(len(cc) == 2 and cc.isupper() for cc in found)


def test_tables_load_once_across_threads() -> None:
    """Concurrent first use gives every thread the same answers."""
    hints._tables.cache_clear()
    results: list[frozenset[str]] = []

    def work() -> None:
        results.append(countries_for_timezone("Europe/Kyiv"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [frozenset({"UA"})] * 8


def test_tz_signal() -> None:
    """tz_mismatch fires only when both sides are known and disagree."""
    signal = tz_signal("Europe/Berlin", "US")
    assert signal is not None
    assert signal.code == "tz_mismatch"
    assert signal.weight == SIGNAL_WEIGHTS["tz_mismatch"]
    assert "Europe/Berlin" in signal.detail
    assert tz_signal("Europe/Berlin", "de") is None
    assert tz_signal("Europe/Berlin", "NO") is None
    assert tz_signal("Europe/Kiev", "UA") is None
    assert tz_signal("UTC", "US") is None
    assert tz_signal(None, "US") is None
    assert tz_signal("Europe/Berlin", None) is None
    assert tz_signal("Europe/Berlin", "USA") is None
    overridden = tz_signal("Asia/Tokyo", "KR", weight=2.0)
    assert overridden is not None
    assert overridden.weight == 2.0


# --------------------------------------------------------------------------- Accept-Language


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("en-GB,en;q=0.9,en-US;q=0.8", ("GB", "US")),
        ("en-US;q=0.5, de-DE", ("DE", "US")),
        ("en", ()),
        ("*", ()),
        ("", ()),
        ("es-419", ()),  # UN M.49 numeric region: no single country
        ("zh-Hant-TW", ("TW",)),  # script before region
        ("zh-yue-HK", ("HK",)),  # extlang before region
        ("sr-Latn-RS;q=0.9", ("RS",)),
        ("de-DE;q=0, fr-FR", ("FR",)),  # q=0 means "not acceptable"
        ("de-DE;q=1.5, fr-FR;q=abc, it-IT;q=0.1234, pt-PT", ("PT",)),  # malformed weights
        ("de-DE;Q=0.5", ("DE",)),  # the weight name is case-insensitive
        ("de-DE;level=1", ()),  # Accept-Language has no other parameters
        ("en-UK", ("GB",)),  # common mistake for GB
        ("de-DD", ("DE",)),  # deprecated region subtag
        ("en-XA, ar-XB", ()),  # private-use pseudo-locales
        ("sq-XK", ("XK",)),  # Kosovo
        ("en_US, en-", ()),  # not BCP 47
        ("x-klingon, i-navajo", ()),  # private use, grandfathered
        ("de-CH-1996", ("CH",)),  # variant after region
        ("de-1996", ()),  # variant, no region
        ("  fr-CA ;  q=0.7 ,\ten-CA", ("CA",)),  # whitespace, dedupe
        ("en-us", ("US",)),  # case-insensitive subtags
        ("de-DE, en-US, de-AT", ("DE", "US", "AT")),  # header order on equal weight
        ("abcdefghi-DE", ()),  # subtag longer than 8
    ],
)
def test_language_regions(header: str, expected: tuple[str, ...]) -> None:
    """Regions are read per RFC 9110 §12.5.4 and BCP 47, most preferred first."""
    assert language_regions(header) == expected


def test_language_regions_bytes_and_none() -> None:
    """Bytes decode as Latin-1; None gives nothing."""
    assert language_regions(b"fr-FR,\xff") == ("FR",)
    assert language_regions(None) == ()


def test_language_regions_caps_length() -> None:
    """Only the first 4096 characters and 32 ranges are read."""
    long = ",".join(["en"] * 2000) + ",de-DE"
    assert language_regions(long) == ()
    many = ",".join(["en"] * 32 + ["de-DE"])
    assert language_regions(many) == ()
    assert language_regions(",".join(["en"] * 31 + ["de-DE"])) == ("DE",)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_language_regions_never_raises(header: str | bytes) -> None:
    """Arbitrary input gives distinct two-letter upper-case codes."""
    regions = language_regions(header)
    assert len(set(regions)) == len(regions)
    assert all(len(r) == 2 and r.isascii() and r.isupper() for r in regions)


def test_language_signal() -> None:
    """language_region_mismatch fires when regions are named and none is the IP country."""
    signal = language_signal("en-US,en;q=0.9", "DE")
    assert signal is not None
    assert signal.code == "language_region_mismatch"
    assert signal.weight == SIGNAL_WEIGHTS["language_region_mismatch"]
    assert signal.weight < SIGNAL_WEIGHTS["tz_mismatch"]
    assert language_signal("en-US, de-DE;q=0.1", "DE") is None
    assert language_signal("en", "DE") is None
    assert language_signal("es-419", "MX") is None
    assert language_signal("en-US", None) is None
    assert language_signal(None, "DE") is None


# --------------------------------------------------------------------------- declared country


def test_declared_country_signal() -> None:
    """declared_country_mismatch compares normalised two-letter codes."""
    signal = declared_country_signal("de", "FR")
    assert signal is not None
    assert signal.code == "declared_country_mismatch"
    assert signal.weight == SIGNAL_WEIGHTS["declared_country_mismatch"]
    assert "DE" in signal.detail
    assert declared_country_signal(" us ", "US") is None
    assert declared_country_signal(None, "US") is None
    assert declared_country_signal("US", None) is None
    assert declared_country_signal("USA", "FR") is None
    assert declared_country_signal("", "FR") is None


# --------------------------------------------------------------------------- distance


def test_haversine_known_values() -> None:
    """Zero, a degree of latitude, half the circumference, and Berlin-Paris."""
    assert haversine_km(BERLIN, BERLIN) == 0.0
    assert haversine_km((0.0, 0.0), (1.0, 0.0)) == pytest.approx(111.195, abs=0.01)
    assert haversine_km((0.0, 0.0), (0.0, 180.0)) == pytest.approx(math.pi * EARTH_RADIUS_KM)
    assert haversine_km((90.0, 0.0), (-90.0, 0.0)) == pytest.approx(math.pi * EARTH_RADIUS_KM)
    assert haversine_km(BERLIN, PARIS) == pytest.approx(878, abs=5)
    assert haversine_km((0.0, 179.5), (0.0, -179.5)) == pytest.approx(111.195, abs=0.01)


@given(
    st.tuples(st.floats(-90, 90), st.floats(-180, 180)),
    st.tuples(st.floats(-90, 90), st.floats(-180, 180)),
)
def test_haversine_is_a_bounded_symmetric_distance(
    a: tuple[float, float], b: tuple[float, float]
) -> None:
    """Symmetric, non-negative, at most half the circumference."""
    d = haversine_km(a, b)
    assert d == pytest.approx(haversine_km(b, a), abs=1e-6)
    assert 0.0 <= d <= math.pi * EARTH_RADIUS_KM + 1e-6


def test_country_centroid() -> None:
    """Centroids are representative points from zone.tab coordinates."""
    fr = country_centroid("FR")
    assert fr == pytest.approx((48 + 52 / 60, 2 + 20 / 60))  # Paris, FR's only zone
    de = country_centroid("de")
    assert de is not None
    assert 47 < de[0] < 53
    assert 8 < de[1] < 14  # between Büsingen and Berlin
    assert fr is not None
    assert 400 < haversine_km(de, fr) < 1000
    assert country_centroid("ZZ") is None
    assert country_centroid(None) is None
    assert country_centroid("Germany") is None


def test_centroid_across_the_date_line() -> None:
    """Kiribati straddles the date line; its mean stays in the Pacific, not near Africa."""
    ki = country_centroid("KI")
    assert ki is not None
    assert abs(ki[1]) > 150


def test_every_zone_tab_country_has_a_centroid() -> None:
    """Every country in zone.tab gets a valid point."""
    for cc in {row[0] for row in _tab("zone.tab")}:
        point = country_centroid(cc)
        assert point is not None, cc
        assert -90 <= point[0] <= 90
        assert -180 <= point[1] <= 180


def test_distance_signal() -> None:
    """location_distance fires beyond the threshold, with points or country codes."""
    signal = distance_signal(BERLIN, PARIS, 500)
    assert signal is not None
    assert signal.code == "location_distance"
    assert signal.weight == SIGNAL_WEIGHTS["location_distance"]
    assert "877 km" in signal.detail
    assert distance_signal(BERLIN, PARIS, 1000) is None
    assert distance_signal("DE", "BR", 500) is not None
    assert distance_signal("DE", BERLIN, 500) is None
    assert distance_signal("DE", "DE", 0) is None
    assert distance_signal("ZZ", BERLIN) is None
    assert distance_signal(None, BERLIN) is None


@pytest.mark.parametrize("bad", [(float("nan"), 0.0), (91.0, 0.0), (0.0, 181.0), (1.0,), "Germany"])
def test_distance_signal_ignores_invalid_points(bad: object) -> None:
    """Invalid coordinates are unknown, not an error."""
    assert distance_signal(bad, BERLIN, 1) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [-1.0, float("inf"), float("nan"), "500", True])
def test_distance_signal_rejects_bad_threshold(threshold: object) -> None:
    """A bad threshold is a configuration error."""
    with pytest.raises(PolicyError):
        distance_signal(BERLIN, PARIS, threshold)  # type: ignore[arg-type]

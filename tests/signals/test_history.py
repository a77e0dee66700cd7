"""Tests of the account-history model and the history signals."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.kinds import NetworkKind
from geofence.signals.base import Signal
from geofence.signals.history import (
    HistoryConfig,
    HistoryView,
    Observation,
    decode_observations,
    history_signals,
)

BERLIN = (52.52, 13.40)
NEW_YORK = (40.71, -74.01)
PARIS = (48.86, 2.35)
HOUR = 3600.0
DAY = 86400.0

CENTROIDS = {"DE": (51.2, 10.4), "US": (39.8, -98.6), "FR": (46.6, 2.2), "JP": (36.2, 138.3)}


def obs(
    at: float,
    country: str | None = "DE",
    where: tuple[float, float] | None = None,
    **fields: object,
) -> Observation:
    """Shorthand for an observation of subject ``s1``."""
    values: dict[str, object] = {
        "subject": "s1",
        "at": at,
        "address": "203.0.113.7",
        "country": country,
        "latitude": where[0] if where else None,
        "longitude": where[1] if where else None,
    }
    values.update(fields)
    return Observation(**values)  # type: ignore[arg-type]  # test shorthand


def view(*earlier: Observation, egress: int = 1) -> HistoryView:
    """A healthy view with ``earlier`` observations, newest first."""
    return HistoryView(observations=earlier, egress_subjects=egress)


def codes(signals: tuple[Signal, ...]) -> list[str]:
    return [s.code for s in signals]


# ---------------------------------------------------------------- strategies

countries = st.sampled_from(["DE", "US", "FR", "JP", "UA", "CU"])
coordinates = st.tuples(
    st.floats(min_value=-90, max_value=90, allow_nan=False),
    st.floats(min_value=-180, max_value=180, allow_nan=False),
)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@st.composite
def observations(
    draw: st.DrawFn, country: st.SearchStrategy[str | None] | None = None
) -> Observation:
    where = draw(st.none() | coordinates)
    return Observation(
        subject=draw(st.text(max_size=20)),
        at=draw(times),
        address=draw(st.text(max_size=40)),
        country=draw(country if country is not None else st.none() | countries),
        subdivision=draw(st.none() | st.sampled_from(["UA-43", "UA-30", "US-CA"])),
        latitude=where[0] if where else None,
        longitude=where[1] if where else None,
        kinds=draw(st.integers(min_value=0, max_value=255)),
        denied=draw(st.booleans()),
        jurisdiction_denied=draw(st.none() | st.sampled_from(["CU", "UA-43"])),
    )


# ---------------------------------------------------------------- Observation


def test_observation_is_frozen_and_keyword_only() -> None:
    """Observations are immutable records built from keywords."""
    o = obs(0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.at = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        Observation("s", 0.0, "a")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "fields",
    [
        {"at": math.nan},
        {"at": math.inf},
        {"latitude": 10.0},
        {"longitude": 10.0},
        {"latitude": 91.0, "longitude": 0.0},
        {"latitude": 0.0, "longitude": -181.0},
        {"latitude": math.nan, "longitude": 0.0},
        {"kinds": -1},
    ],
)
def test_observation_rejects_bad_values(fields: dict[str, object]) -> None:
    """Non-finite times, half or out-of-range coordinates and negative kinds are errors."""
    values: dict[str, object] = {"subject": "s", "at": 0.0, "address": "a"}
    values.update(fields)
    with pytest.raises(ValueError, match=r"finite|together|within|kinds"):
        Observation(**values)  # type: ignore[arg-type]


@given(observations())
def test_serialisation_round_trips(o: Observation) -> None:
    """to_bytes/from_bytes is lossless, from bytes and from text."""
    data = o.to_bytes()
    assert Observation.from_bytes(data) == o
    assert Observation.from_bytes(data.decode("ascii")) == o


def test_serialisation_is_compact() -> None:
    """A typical observation is a short JSON array."""
    o = obs(1_700_000_000.25, "UA", (44.95, 34.1), subdivision="UA-43", kinds=2, denied=True)
    data = o.to_bytes()
    assert len(data) < 120
    assert json.loads(data)[0] == 1


def test_serialisation_keeps_lone_surrogates() -> None:
    """Subject ids that are not valid UTF-8 still round-trip."""
    o = dataclasses.replace(obs(0.0), subject="bad\udcff")
    assert Observation.from_bytes(o.to_bytes()) == o


MALFORMED: list[bytes | str] = [
    b"",
    b"not json",
    b"\xff\xfe",
    b"{}",
    b"[]",
    b'[2,"s",0,"a",null,null,null,null,0,0,null]',
    b'[1,"s",0,"a",null,null,null,null,0,0]',
    b'[1,5,0,"a",null,null,null,null,0,0,null]',
    b'[1,"s","0","a",null,null,null,null,0,0,null]',
    b'[1,"s",true,"a",null,null,null,null,0,0,null]',
    b'[1,"s",NaN,"a",null,null,null,null,0,0,null]',
    b'[1,"s",0,"a",7,null,null,null,0,0,null]',
    b'[1,"s",0,"a",null,null,10,null,0,0,null]',
    b'[1,"s",0,"a",null,null,95,0,0,0,null]',
    b'[1,"s",0,"a",null,null,"1","2",0,0,null]',
    b'[1,"s",0,"a",null,null,null,null,true,0,null]',
    b'[1,"s",0,"a",null,null,null,null,-4,0,null]',
    b'[1,"s",0,"a",null,null,null,null,0,2,null]',
    '[1,"s",0,"a",null,null,null,null,0,0,[]]',
    b'[1,"s",1e999,"a",null,null,null,null,0,0,null]',
    b'[1,"s",1' + b"0" * 400 + b',"a",null,null,null,null,0,0,null]',
    b"[" * 100_000,
]


@pytest.mark.parametrize("data", MALFORMED, ids=[f"case{i}" for i in range(len(MALFORMED))])
def test_malformed_stored_data_is_a_value_error(data: bytes | str) -> None:
    """from_bytes raises ValueError (never anything else) for malformed input."""
    with pytest.raises(ValueError, match="stored observation"):
        Observation.from_bytes(data)


def test_decode_observations_skips_malformed_entries() -> None:
    """Corrupt entries are dropped; good ones keep their order."""
    a, b = obs(2.0), obs(1.0, "US")
    decoded = decode_observations([a.to_bytes(), *MALFORMED, b.to_bytes().decode()])
    assert decoded == (a, b)


# ---------------------------------------------------------------- HistoryConfig


@pytest.mark.parametrize(
    "fields",
    [
        {"max_speed_kmh": 0},
        {"hop_window_s": -1},
        {"hop_threshold": 0},
        {"egress_subject_threshold": 0},
        {"max_observations_per_subject": 0},
        {"max_subjects_per_egress": 0},
        {"ttl_s": math.inf},
        {"min_travel_km": -1},
        {"shared_egress_weight": math.nan},
    ],
)
def test_config_rejects_bad_values(fields: dict[str, float]) -> None:
    """Windows, bounds and thresholds must be positive; weights finite."""
    with pytest.raises(ValueError, match="HistoryConfig"):
        HistoryConfig(**fields)  # type: ignore[arg-type]


def test_config_defaults() -> None:
    """The documented defaults."""
    c = HistoryConfig()
    assert (c.max_speed_kmh, c.hop_window_s, c.hop_threshold) == (1000.0, DAY, 3)
    assert (c.denied_lookback_s, c.egress_window_s, c.egress_subject_threshold) == (
        30 * DAY,
        HOUR,
        20,
    )
    assert (c.max_observations_per_subject, c.ttl_s) == (50, 30 * DAY)


# ---------------------------------------------------------------- impossible_travel


def test_impossible_travel_fires_for_a_transatlantic_hop() -> None:
    """Berlin to New York in ten minutes is impossible."""
    current = obs(600.0, "US", NEW_YORK)
    (signal,) = history_signals(current, view(obs(0.0, "DE", BERLIN)))
    assert signal.code == "impossible_travel"
    assert signal.weight == 3.0
    assert "DE to US" in signal.detail
    assert "km/h" in signal.detail


def test_impossible_travel_respects_the_speed_limit() -> None:
    """Berlin to New York in ten hours is a flight."""
    current = obs(10 * HOUR, "US", NEW_YORK)
    assert history_signals(current, view(obs(0.0, "DE", BERLIN))) == ()


def test_impossible_travel_handles_simultaneous_and_out_of_order_requests() -> None:
    """Zero or negative elapsed time does not divide by zero and still fires."""
    for at in (0.0, -30.0):
        current = obs(at, "US", NEW_YORK)
        assert codes(history_signals(current, view(obs(0.0, "DE", BERLIN)))) == [
            "impossible_travel"
        ]


def test_impossible_travel_ignores_same_country_pairs() -> None:
    """Geolocation inside one country is too coarse to judge speed."""
    current = obs(60.0, "US", NEW_YORK)
    assert history_signals(current, view(obs(0.0, "US", (34.05, -118.24)))) == ()


def test_impossible_travel_ignores_short_moves() -> None:
    """Neighbouring countries closer than min_travel_km do not count."""
    current = obs(60.0, "FR", PARIS)
    assert history_signals(current, view(obs(0.0, "BE", (50.85, 4.35)))) == ()
    config = HistoryConfig(min_travel_km=100)
    assert codes(history_signals(current, view(obs(0.0, "BE", (50.85, 4.35))), config)) == [
        "impossible_travel"
    ]


def test_impossible_travel_ignores_relays() -> None:
    """A relay on either side of the pair is skipped."""
    relay = int(NetworkKind.RELAY)
    earlier = obs(0.0, "DE", BERLIN)
    assert history_signals(obs(60.0, "US", NEW_YORK, kinds=relay), view(earlier)) == ()
    # A relay observation in between is skipped, so the older one is compared.
    between = obs(30.0, "JP", (35.68, 139.69), kinds=relay)
    signals = history_signals(obs(60.0, "US", NEW_YORK), view(between, earlier))
    assert "impossible_travel" in codes(signals)
    assert "DE to US" in signals[0].detail


def test_impossible_travel_compares_with_the_most_recent_positioned_observation() -> None:
    """Only the latest observation with a position is the other end of the pair."""
    old_far = obs(0.0, "JP", (35.68, 139.69))
    recent_near = obs(HOUR, "US", (34.05, -118.24))
    current = obs(HOUR + 60, "US", NEW_YORK)
    assert history_signals(current, view(recent_near, old_far)) == ()


def test_impossible_travel_uses_locate_for_country_only_observations() -> None:
    """Country centroids stand in for missing coordinates when ``locate`` is given."""
    current = obs(600.0, "US")
    earlier = view(obs(0.0, "DE"))
    assert history_signals(current, earlier) == ()
    assert codes(history_signals(current, earlier, locate=CENTROIDS.get)) == ["impossible_travel"]


# ---------------------------------------------------------------- country_hopping


def test_country_hopping_counts_distinct_countries_in_the_window() -> None:
    """Three countries within 24 hours (current included) fire; older ones do not count."""
    current = obs(20 * HOUR, "JP")
    earlier = view(obs(10 * HOUR, "FR"), obs(0.0, "DE"), obs(0.0, "FR"))
    (signal,) = history_signals(current, earlier)
    assert signal.code == "country_hopping"
    assert signal.weight == 2.0
    assert "DE, FR, JP" in signal.detail
    late = obs(25 * HOUR, "JP")
    assert history_signals(late, earlier) == ()


def test_country_hopping_ignores_unknown_countries() -> None:
    """Observations without a country do not count as a country."""
    current = obs(2.0, None)
    assert history_signals(current, view(obs(1.0, None), obs(0.0, "DE"))) == ()


# ---------------------------------------------------------------- denied_then_evasion


def denied_in(country: str, at: float = 0.0, jurisdiction: str | None = None) -> Observation:
    return obs(at, country, denied=True, jurisdiction_denied=jurisdiction or country)


def test_denied_then_vpn_is_evasion() -> None:
    """Denied in Cuba, then arriving through a VPN exit."""
    current = obs(HOUR, "CU", kinds=int(NetworkKind.VPN | NetworkKind.HOSTING))
    (signal,) = history_signals(current, view(denied_in("CU")))
    assert signal.code == "denied_then_evasion"
    assert signal.weight == 5.0
    assert "denied for CU" in signal.detail
    assert "through vpn" in signal.detail


def test_denied_then_another_country_is_evasion() -> None:
    """Denied in Cuba, then arriving from a permitted country."""
    signals = history_signals(obs(HOUR, "US"), view(denied_in("CU")))
    assert codes(signals) == ["denied_then_evasion"]
    assert "from US" in signals[0].detail


def test_denied_subdivision_then_another_subdivision_is_evasion() -> None:
    """Denied in Crimea (UA-43), then arriving from Kyiv (UA-30)."""
    earlier = view(denied_in("UA", jurisdiction="UA-43"))
    assert codes(history_signals(obs(HOUR, "UA", subdivision="UA-30"), earlier)) == [
        "denied_then_evasion"
    ]
    assert history_signals(obs(HOUR, "UA", subdivision=None), earlier) == ()


def test_no_evasion_without_a_change() -> None:
    """Same place, no anonymiser, or still denied, or a denial too old: nothing."""
    earlier = view(denied_in("CU"))
    assert history_signals(obs(HOUR, "CU"), earlier) == ()
    assert history_signals(obs(HOUR, None), earlier) == ()
    still_denied = obs(HOUR, "US", kinds=int(NetworkKind.TOR), denied=True)
    assert history_signals(still_denied, earlier) == ()
    assert history_signals(obs(31 * DAY, "US"), earlier) == ()
    hosting_only = obs(HOUR, "CU", kinds=int(NetworkKind.HOSTING | NetworkKind.RELAY))
    assert history_signals(hosting_only, earlier) == ()


# ---------------------------------------------------------------- shared_egress


def test_shared_egress_is_informational_by_default() -> None:
    """Twenty subjects behind one address yield a zero-weight signal."""
    current = obs(0.0)
    assert history_signals(current, view(egress=19)) == ()
    (signal,) = history_signals(current, view(egress=20))
    assert signal.code == "shared_egress"
    assert signal.weight == 0.0
    assert "20 subjects behind 203.0.113.7" in signal.detail


# ---------------------------------------------------------------- degraded views


def test_degraded_view_fails_open_or_closed() -> None:
    """Fail-open adds nothing; fail-closed adds a heavy history_unavailable."""
    current = obs(0.0)
    assert history_signals(current, HistoryView.unavailable("boom", "open")) == ()
    (signal,) = history_signals(current, HistoryView.unavailable("boom", "closed"))
    assert signal.code == "history_unavailable"
    assert signal.weight == 5.0
    assert "boom" in signal.detail


def test_signal_order_and_custom_weights() -> None:
    """All signals at once, in the documented order, with configured weights."""
    config = HistoryConfig(
        impossible_travel_weight=1,
        country_hopping_weight=2,
        denied_then_evasion_weight=3,
        shared_egress_weight=4,
    )
    current = obs(600.0, "US", NEW_YORK, kinds=int(NetworkKind.VPN))
    earlier = view(obs(300.0, "FR", PARIS), denied_in("CU"), egress=50)
    signals = history_signals(current, earlier, config)
    assert codes(signals) == [
        "impossible_travel",
        "country_hopping",
        "denied_then_evasion",
        "shared_egress",
    ]
    assert [s.weight for s in signals] == [1, 2, 3, 4]


# ---------------------------------------------------------------- properties


@given(
    observations(),
    st.lists(observations(), max_size=8),
    st.integers(min_value=0, max_value=40),
)
def test_history_signals_is_deterministic(
    current: Observation, earlier: list[Observation], egress: int
) -> None:
    """The same inputs give the same signals, and known codes only."""
    v = HistoryView(observations=tuple(earlier), egress_subjects=egress)
    first = history_signals(current, v, locate=CENTROIDS.get)
    assert first == history_signals(current, v, locate=CENTROIDS.get)
    known = {"impossible_travel", "country_hopping", "denied_then_evasion", "shared_egress"}
    assert set(codes(first)) <= known
    assert len(set(codes(first))) == len(first)


@given(st.data(), countries, st.integers(min_value=1, max_value=10))
def test_impossible_travel_never_fires_within_one_country(
    data: st.DataObject, country: str, n: int
) -> None:
    """However far and fast the coordinates move, one country is never impossible travel."""
    same = observations(country=st.just(country))
    current = data.draw(same)
    earlier = tuple(data.draw(st.lists(same, min_size=n, max_size=n)))
    signals = history_signals(current, HistoryView(observations=earlier), locate=CENTROIDS.get)
    assert "impossible_travel" not in codes(signals)
    assert "country_hopping" not in codes(signals)

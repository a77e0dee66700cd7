"""Tests of source agreement: disagreement marks and the policies' ``on_disputed``."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.errors import PolicyError, SourceError
from geofence.policy import parse_policy
from geofence.records import NetworkRecord
from geofence.snapshot.agreement import (
    CountryRange,
    country_ranges,
    disagreement_source,
    overlay,
    restricted_countries,
)
from geofence.snapshot.build import build_snapshot
from geofence.snapshot.reader import Snapshot
from geofence.snapshot.territories import TerritoryTable
from geofence.sources.base import RangeEntry, Source, SourceInfo
from geofence.testing import make_geofence

ROOT = Path(__file__).resolve().parents[2]
TABLE = TerritoryTable.load()


def _source(name: str, rows: list[tuple[str, NetworkRecord]]) -> Source:
    entries = []
    for cidr, rec in rows:
        net = ipaddress.ip_network(cidr)
        entries.append(
            RangeEntry(net.version, int(net.network_address), int(net.broadcast_address), rec)
        )
    return Source(info=SourceInfo(name=name, format="test"), read=lambda: entries)


def _countries(name: str, rows: list[tuple[str, str]]) -> Source:
    return _source(name, [(c, NetworkRecord(country=v)) for c, v in rows])


# --- overlay ----------------------------------------------------------------------------


@st.composite
def _layer(draw: st.DrawFn) -> list[CountryRange]:
    cuts = sorted(draw(st.sets(st.integers(0, 200), max_size=12)))
    out = []
    for a, b in zip(cuts[::2], cuts[1::2], strict=False):
        out.append(CountryRange(4, a, b, draw(st.sampled_from(["RU", "UA", "KP", "CN"]))))
    return out


@given(st.lists(_layer(), min_size=1, max_size=3))
def test_overlay_matches_a_pointwise_oracle(layers: list[list[CountryRange]]) -> None:
    """Every address gets exactly each layer's value; pieces are disjoint and sorted."""
    pieces = list(overlay(layers))
    seen: dict[int, tuple[str | None, ...]] = {}
    prev = -1
    for first, last, values in pieces:
        assert prev < first <= last
        prev = last
        for a in range(first, last + 1):
            seen[a] = values
    for a in range(0, 202):
        want = tuple(
            next((r.value for r in layer if r.first <= a <= r.last), None) for layer in layers
        )
        if any(v is not None for v in want):
            assert seen.get(a) == want, a
        else:
            assert a not in seen


def test_country_ranges_refuses_overlaps() -> None:
    """The agreement step needs one value per address."""
    src = _countries("x", [("10.0.0.0/8", "US"), ("10.1.0.0/16", "CA")])
    with pytest.raises(SourceError, match="overlap"):
        country_ranges(src)


# --- marks ------------------------------------------------------------------------------

PRIMARY = [
    ("175.45.176.0/24", "CN"),  # the second source says KP: marked
    ("175.45.177.0/24", "FR"),  # DE: neither restricted, not marked
    ("175.45.178.0/24", "KP"),  # agrees
    ("91.217.78.0/24", "RU"),  # Crimea by the territory table, second says RU: agrees
    ("91.217.79.0/24", "RU"),  # Crimea, second says TR: marked
    ("5.105.0.0/24", "UA"),  # second source has no answer
    ("2001:db9::/32", "IR"),  # second says AE: marked (IPv6)
]
SECOND = [
    ("175.45.176.0/24", "KP"),
    ("175.45.177.0/24", "DE"),
    ("175.45.178.0/24", "KP"),
    ("91.217.78.0/24", "RU"),
    ("91.217.79.0/24", "TR"),
    ("2001:db9::/32", "AE"),
]


def _marks(counts: Counter[tuple[str, str]] | None = None) -> Source:
    primary = _countries("dbip", PRIMARY)
    second = _countries("rir", SECOND)
    terr = _source(
        "territories",
        [("91.217.78.0/23", NetworkRecord(country="UA", subdivision="UA-43"))],
    )
    return disagreement_source(
        lambda: country_ranges(primary),
        lambda: country_ranges(second),
        names=("dbip", "rir"),
        restricted=frozenset({"KP", "IR", "UA", "RU", "CU"}),
        info=SourceInfo(name="agreement", format="derived"),
        territories=(TABLE, lambda: country_ranges(terr, "subdivision")),
        counts=counts,
    )


def test_disagreements_about_restricted_countries_are_marked() -> None:
    """Only disagreements naming a restricted country are marked, with both answers."""
    counts: Counter[tuple[str, str]] = Counter()
    got = {(e.version, e.first): e.record for e in _marks(counts).entries()}
    cn = got[(4, int(ipaddress.ip_address("175.45.176.0")))]
    assert cn == NetworkRecord(alt_country="KP", dispute="dbip says CN, rir says KP")
    crimea_tr = got[(4, int(ipaddress.ip_address("91.217.79.0")))]
    assert crimea_tr.alt_country == "TR"
    assert crimea_tr.dispute == "dbip says RU (UA-43 by the territory table), rir says TR"
    assert got[(6, int(ipaddress.ip_address("2001:db9::")))].alt_country == "AE"
    assert len(got) == 3  # FR/DE, KP/KP, Crimea RU/RU and UA/none are not marked
    assert counts == Counter({("CN", "KP"): 1, ("UA", "TR"): 1, ("IR", "AE"): 1})


def test_restricted_countries_of_the_bundled_presets() -> None:
    """The presets restrict CU, IR, KP, UA (by subdivision), RU and BY; not the domestic list."""
    found = restricted_countries(sorted((ROOT / "data" / "policies").glob("*.toml")))
    assert {"CU", "IR", "KP", "UA", "RU", "BY"} <= found
    assert "US" not in found


# --- on_disputed ------------------------------------------------------------------------

WORLD = {
    "175.45.176.0/24": NetworkRecord(
        country="CN", alt_country="KP", dispute="dbip says CN, rir says KP"
    ),
    "175.45.177.0/24": NetworkRecord(
        country="FR", alt_country="DE", dispute="dbip says FR, rir says DE"
    ),
    "175.45.178.0/24": NetworkRecord(
        country="KP", alt_country="CN", dispute="dbip says KP, rir says CN"
    ),
    "5.105.0.0/24": NetworkRecord(
        country="UA", subdivision="UA-30", alt_country="RU", dispute="dbip says UA, rir says RU"
    ),
    "5.105.1.0/24": NetworkRecord(
        country="RU", alt_country="UA", dispute="dbip says RU, rir says UA"
    ),
}


def test_disputed_address_gets_on_unresolved_by_default() -> None:
    """Without on_disputed, the policy's on_unresolved applies, with both answers."""
    fence = make_geofence(WORLD, "us-ofac-comprehensive", max_age=None)
    d = fence.decide("175.45.176.1")
    assert d.action.value == "challenge"
    assert d.outcome == "disputed"
    assert d.reasons[0] == "disputed:dbip says CN, rir says KP"
    assert d.rule_id == "ofac-north-korea"
    assert "Sources disagree: dbip says CN, rir says KP." in d.explain()
    # The recorded answer is the denied one: the dispute applies as well.
    assert fence.decide("175.45.178.1").outcome == "disputed"


def test_disagreement_with_equal_verdicts_changes_nothing() -> None:
    """FR vs DE, and Kyiv (UA-30) vs RU, decide alike: no dispute."""
    fence = make_geofence(WORLD, "us-ofac-comprehensive", max_age=None)
    assert fence.decide("175.45.177.1").outcome == "default"
    kyiv = fence.decide("5.105.0.1")
    assert kyiv.action.value == "allow"
    assert kyiv.outcome == "default"


def test_ru_against_ua_without_subdivision_is_disputed() -> None:
    """RU by one source, UA (no oblast) by the other: the UA answer could be Crimea."""
    fence = make_geofence(WORLD, "us-ofac-comprehensive", max_age=None)
    d = fence.decide("5.105.1.1")
    assert d.outcome == "disputed"
    assert d.rule_id == "ofac-crimea"


POLICY = """
[policy]
id = "p"
default = "allow"
on_unresolved = "review"
{extra}

[[rules]]
id = "kp"
action = "deny"
jurisdictions = ["KP"]
"""


def test_on_disputed_overrides_on_unresolved() -> None:
    """An explicit on_disputed applies instead of on_unresolved."""
    fence = make_geofence(WORLD, POLICY.format(extra='on_disputed = "deny"'), max_age=None)
    assert fence.decide("175.45.176.1").action.value == "deny"
    fence = make_geofence(
        WORLD, POLICY.format(extra='on_disputed = "route:fallback"'), max_age=None
    )
    d = fence.decide("175.45.176.1")
    assert (d.action.value, d.route) == ("route", "fallback")
    fence = make_geofence(WORLD, POLICY.format(extra=""), max_age=None)
    assert fence.decide("175.45.176.1").action.value == "review"


def test_on_disputed_is_validated_and_digested() -> None:
    """A bad on_disputed is a PolicyError; setting it changes the digest, omitting it does not."""
    with pytest.raises(PolicyError, match="on_disputed"):
        parse_policy(POLICY.format(extra='on_disputed = "maybe"'))
    plain = parse_policy(POLICY.format(extra=""))
    assert plain.on_disputed is None
    assert "on_disputed" not in plain.canonical()
    set_ = parse_policy(POLICY.format(extra='on_disputed = "deny"'))
    assert set_.digest != plain.digest
    assert set_.disputed_action[0].value == "deny"


def test_disputes_survive_the_snapshot_round_trip() -> None:
    """The new record fields are written and read back."""
    src = _source("x", [("175.45.176.0/24", WORLD["175.45.176.0/24"])])
    snap = Snapshot.from_bytes(build_snapshot([src], force=True))
    rec = snap.get("175.45.176.1")
    assert rec is not None
    assert (rec.alt_country, rec.dispute) == ("KP", "dbip says CN, rir says KP")

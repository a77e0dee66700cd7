"""Tests of the signal pipeline wired into the engine: signals reach decisions and rules.

A small hand-made world (countries, one record with coordinates, one network of each
kind) is compiled against policies that name signal codes and risk thresholds. Every
test goes through :meth:`Geofence.decide` / :meth:`Geofence.adecide`, so what is checked
is what an application sees: the action, the deciding rule, the signals, the risk, the
``degraded`` flag and ``explain()``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Final

import pytest

from geofence.context import Context, Subject
from geofence.decision import Action, Decision
from geofence.engine import Geofence
from geofence.kinds import NetworkKind
from geofence.policy import Policy, parse_policy
from geofence.records import NetworkRecord
from geofence.signals.base import Signal
from geofence.signals.history import HistoryConfig, HistoryView, Observation
from geofence.signals.pipeline import NETWORK_WEIGHTS, SignalConfig, SignalPipeline
from geofence.signals.stores import (
    AsyncRedisHistoryStore,
    MemoryHistoryStore,
    RedisHistoryStore,
)
from geofence.snapshot.build import build_snapshot
from geofence.snapshot.reader import Snapshot
from geofence.sources.base import RangeEntry
from tests.strategies import make_source

K = NetworkKind
TODAY: Final = dt.date(2026, 11, 27)
T0: Final = 1_795_000_000.0  # 2026-11-19, a fixed request time
HOUR: Final = 3600.0

#: name -> (network, record). One record (us) has coordinates (New York).
WORLD: Final[dict[str, tuple[str, NetworkRecord]]] = {
    "us": ("1.0.0.0/24", NetworkRecord(country="US", latitude=40.71, longitude=-74.01)),
    "de": ("1.0.1.0/24", NetworkRecord(country="DE")),
    "gb": ("1.0.2.0/24", NetworkRecord(country="GB")),
    "fr": ("1.0.3.0/24", NetworkRecord(country="FR")),
    "jp": ("1.0.4.0/24", NetworkRecord(country="JP")),
    "ir": ("1.0.5.0/24", NetworkRecord(country="IR")),
    "us_vpn": ("1.0.6.0/24", NetworkRecord(country="US", kinds=K.VPN, provider="TestVPN")),
    "de_tor": ("1.0.7.0/24", NetworkRecord(country="DE", kinds=K.TOR, provider="Tor")),
    "de_relay": (
        "1.0.8.0/24",
        NetworkRecord(country="DE", kinds=K.RELAY, provider="Apple Private Relay"),
    ),
    "nl_hosting": ("1.0.9.0/24", NetworkRecord(country="NL", kinds=K.HOSTING)),
    "gb_proxy": ("1.0.10.0/24", NetworkRecord(country="GB", kinds=K.PUBLIC_PROXY)),
    "br_resproxy": ("1.0.11.0/24", NetworkRecord(country="BR", kinds=K.RESIDENTIAL_PROXY)),
    "se_vpn_hosting": ("1.0.12.0/24", NetworkRecord(country="SE", kinds=K.VPN | K.HOSTING)),
}


def _host(network: str) -> str:
    return str(ipaddress.ip_network(network).network_address + 1)


ADDR: Final[dict[str, str]] = {name: _host(net) for name, (net, _) in WORLD.items()}


def mapped(ipv4: str) -> str:
    """IPv4-mapped IPv6 form (``::ffff:a.b.c.d``)."""
    return str(ipaddress.IPv6Address((0xFFFF << 32) | int(ipaddress.IPv4Address(ipv4))))


def sixtofour(ipv4: str) -> str:
    """A 6to4 address (RFC 3056) of the site with this IPv4 address."""
    return str(
        ipaddress.IPv6Address((0x2002 << 112) | (int(ipaddress.IPv4Address(ipv4)) << 80) | 1)
    )


@pytest.fixture(scope="module")
def world() -> Snapshot:
    entries = []
    for net, record in WORLD.values():
        n = ipaddress.ip_network(net)
        entries.append(
            RangeEntry(n.version, int(n.network_address), int(n.broadcast_address), record)
        )
    data = build_snapshot(
        [make_source("pipeline-test", entries)],
        built_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
        name="pipeline-test-world",
    )
    return Snapshot.from_bytes(data, origin="<pipeline-test-world>")


def policy(text: str) -> Policy:
    return parse_policy(textwrap.dedent(text), source="test.toml")


#: Jurisdiction first (so the IP-only verdict records the denial), then signal rules.
EVASION_TEXT: Final = """
    [policy]
    id = "evasion-test"
    default = "allow"
    on_unresolved = "review"

    [[rules]]
    id = "deny-ir"
    action = "deny"
    jurisdictions = ["IR"]

    [[rules]]
    id = "deny-evasion"
    action = "deny"
    signals = ["denied_then_evasion"]

    [[rules]]
    id = "challenge-travel"
    action = "challenge"
    signals = ["impossible_travel"]

    [[rules]]
    id = "challenge-hopping"
    action = "challenge"
    signals = ["country_hopping"]

    [[rules]]
    id = "challenge-history-unknown"
    action = "challenge"
    signals = ["history_unavailable"]

    [[rules]]
    id = "review-risk"
    action = "review"
    min_risk = 2.5
    """
EVASION: Final = policy(EVASION_TEXT)


def engine(world: Snapshot, pol: Policy, pipeline: SignalPipeline | None = None) -> Geofence:
    return Geofence(world, pol, signals=pipeline or SignalPipeline(), today=lambda: TODAY)


def ctx(subject: str | None = None, at: float = T0, **kw: Any) -> Context:
    account = kw.pop("account_country", None)
    who = Subject(id=subject, account_country=account) if subject or account else None
    return Context(subject=who, at=at, **kw)


def codes(d: Decision) -> list[str]:
    return [s.code for s in d.signals]


def weights(d: Decision) -> dict[str, float]:
    return {s.code: s.weight for s in d.signals}


def key(d: Decision) -> tuple[object, ...]:
    """What policy and signals determine (no free-text details)."""
    return (d.action, d.rule_id, d.outcome, tuple(codes(d)), round(d.risk, 6), d.degraded)


# -------------------------------------------------------------------------- network signals

NETWORK_CASES: Final = [
    ("us_vpn", "network_vpn", 2.0),
    ("de_tor", "network_tor", 3.0),
    ("gb_proxy", "network_public_proxy", 2.0),
    ("br_resproxy", "network_residential_proxy", 2.0),
    ("nl_hosting", "network_hosting", 0.5),
    ("de_relay", "network_relay", 0.0),
]


@pytest.mark.parametrize(("name", "code", "weight"), NETWORK_CASES)
def test_network_signal_per_kind(world: Snapshot, name: str, code: str, weight: float) -> None:
    """Each network kind yields its code with the default weight, and a rule can name it."""
    pol = policy(
        f"""
        [policy]
        id = "net"
        default = "allow"

        [[rules]]
        id = "flag"
        action = "challenge"
        signals = ["{code}"]
        """
    )
    gf = engine(world, pol)
    d = gf.decide(ADDR[name], ctx())
    assert codes(d) == [code]
    assert weights(d)[code] == weight == NETWORK_WEIGHTS[code]
    assert d.risk == weight
    assert (d.action, d.rule_id) == (Action.CHALLENGE, "flag")
    # Any other kind's rule does not match it; a plain address carries no network signal.
    assert codes(gf.decide(ADDR["de"], ctx())) == []
    assert gf.decide(ADDR["de"], ctx()).action is Action.ALLOW


def test_several_kinds_give_several_signals_with_provider(world: Snapshot) -> None:
    gf = engine(world, EVASION)
    d = gf.decide(ADDR["se_vpn_hosting"], ctx())
    assert codes(d) == ["network_vpn", "network_hosting"]
    assert d.risk == 2.5
    assert (d.action, d.rule_id) == (Action.REVIEW, "review-risk")
    vpn = gf.decide(ADDR["us_vpn"], ctx())
    assert "(TestVPN)" in vpn.signals[0].detail


def test_relay_trusted_by_default_and_untrusted_on_request(world: Snapshot) -> None:
    """A location-preserving relay weighs 0 unless relay_trusted is off."""
    pol = policy(
        """
        [policy]
        id = "relay"
        default = "allow"

        [[rules]]
        id = "review-risk"
        action = "review"
        min_risk = 1.0
        """
    )
    trusted = engine(world, pol).decide(ADDR["de_relay"], ctx())
    assert codes(trusted) == ["network_relay"]
    assert trusted.risk == 0.0
    assert "trusted" in trusted.signals[0].detail
    assert trusted.action is Action.ALLOW

    pipeline = SignalPipeline(SignalConfig(relay_trusted=False))
    untrusted = engine(world, pol, pipeline).decide(ADDR["de_relay"], ctx())
    assert weights(untrusted) == {"network_relay": 2.0}
    assert "not trusted" in untrusted.signals[0].detail
    assert (untrusted.action, untrusted.rule_id) == (Action.REVIEW, "review-risk")

    custom = SignalPipeline(SignalConfig(relay_trusted=False, relay_weight=0.7))
    assert engine(world, pol, custom).decide(ADDR["de_relay"], ctx()).risk == 0.7


def test_relay_does_not_make_impossible_travel(world: Snapshot) -> None:
    """A relay's egress region is coarse: moving to or from it is not travel evidence."""
    gf = engine(world, EVASION)
    assert gf.decide(ADDR["us"], ctx("r1", T0)).action is Action.ALLOW
    d = gf.decide(ADDR["de_relay"], ctx("r1", T0 + 60))
    assert "impossible_travel" not in codes(d)
    assert d.action is Action.ALLOW


@pytest.mark.parametrize("form", [mapped, sixtofour])
def test_tunnelled_address_signal(world: Snapshot, form: Any) -> None:
    """IPv4 carried in IPv6 decides like the IPv4 and adds tunnelled_address (0.2)."""
    gf = engine(world, EVASION)
    d = gf.decide(form(ADDR["us_vpn"]), ctx())
    assert codes(d) == ["network_vpn", "tunnelled_address"]
    assert weights(d)["tunnelled_address"] == 0.2
    assert d.risk == pytest.approx(2.2)
    assert d.country == "US"
    assert d.tunnel is not None
    assert f"tunnel:{d.tunnel}" in d.reasons
    plain = gf.decide(ADDR["us_vpn"], ctx())
    assert "tunnelled_address" not in codes(plain)


# -------------------------------------------------------------------------- client hints


def test_hint_signals_reach_decision_and_explain(world: Snapshot) -> None:
    """Time zone, language, declared country and distance all show up, with details."""
    gf = engine(world, EVASION)
    d = gf.decide(
        ADDR["us"],
        ctx(
            timezone="Europe/Berlin",
            accept_language="de-DE,de;q=0.9",
            account_country="DE",
            declared_location=(52.52, 13.40),  # Berlin, far from the record's New York
        ),
    )
    assert codes(d) == [
        "tz_mismatch",
        "language_region_mismatch",
        "declared_country_mismatch",
        "location_distance",
    ]
    assert d.risk == pytest.approx(0.5 + 0.2 + 0.5 + 0.5)
    assert d.action is Action.ALLOW  # below review-risk's 2.5: hints alone are weak
    text = gf.explain(ADDR["us"], ctx(timezone="Europe/Berlin", account_country="DE"))
    assert "Signal tz_mismatch (weight 0.5): time zone 'Europe/Berlin'" in text
    assert "Signal declared_country_mismatch (weight 0.5): declared country DE; IP country US" in (
        text
    )
    assert "Risk score: 1." in text
    assert "Address: 1.0.0.1 in US" in text
    assert d.to_json().count('"code":') == 4


def test_matching_hints_give_no_signal(world: Snapshot) -> None:
    gf = engine(world, EVASION)
    d = gf.decide(
        ADDR["us"],
        ctx(
            timezone="America/New_York",
            accept_language="en-US",
            account_country="US",
            declared_location=(40.6, -73.9),
        ),
    )
    assert d.signals == ()
    assert d.risk == 0.0
    assert d.action is Action.ALLOW


def test_distance_uses_record_coordinates_then_country_centroid(world: Snapshot) -> None:
    """The record's coordinates are used where present; otherwise the country's point."""
    gf = engine(world, EVASION)
    # Los Angeles is ~3,900 km from the New York coordinates of the "us" record.
    far = gf.decide(ADDR["us"], ctx(declared_location=(34.05, -118.24)))
    assert codes(far) == ["location_distance"]
    assert "3,9" in far.signals[0].detail
    # "de" has no coordinates: Berlin is near Germany's representative point.
    assert codes(gf.decide(ADDR["de"], ctx(declared_location=(52.52, 13.40)))) == []
    assert codes(gf.decide(ADDR["de"], ctx(declared_location=(-33.9, 151.2)))) == [
        "location_distance"
    ]


def test_caller_signals_are_kept_and_weighted(world: Snapshot) -> None:
    """Signals the caller computed (spoofed headers) join the pipeline's in the risk."""
    gf = engine(world, EVASION)
    spoof = Signal(code="forwarded_conflict", weight=1.0, detail="two headers disagree")
    d = gf.decide(ADDR["nl_hosting"], Context(signals=(spoof,), timezone="Asia/Tokyo"))
    assert codes(d) == ["forwarded_conflict", "network_hosting", "tz_mismatch"]
    assert d.risk == 2.0


# -------------------------------------------------------------------------- weights, min_risk


def test_signal_weights_override_changes_risk_and_min_risk(world: Snapshot) -> None:
    base = """
        [policy]
        id = "weights"
        default = "allow"

        [[rules]]
        id = "review-risk"
        action = "review"
        min_risk = 1.0
        """
    hints = ctx(timezone="Asia/Tokyo", accept_language="ja-JP")
    plain = engine(world, policy(base)).decide(ADDR["de"], hints)
    assert plain.risk == pytest.approx(0.7)
    assert plain.action is Action.ALLOW

    heavier = policy(base + "\n[signal_weights]\ntz_mismatch = 1.5\nnetwork_hosting = 0\n")
    d = engine(world, heavier).decide(ADDR["de"], hints)
    assert weights(d) == {"tz_mismatch": 1.5, "language_region_mismatch": 0.2}
    assert d.risk == pytest.approx(1.7)
    assert (d.action, d.rule_id) == (Action.REVIEW, "review-risk")
    # A zeroed weight keeps the signal (explainable) but takes it out of the risk.
    host = engine(world, heavier).decide(ADDR["nl_hosting"], ctx())
    assert weights(host) == {"network_hosting": 0.0}
    assert host.risk == 0.0
    # History weights are overridden the same way.
    zero_hops = policy(base + "\n[signal_weights]\ncountry_hopping = 0\nimpossible_travel = 0\n")
    gf = engine(world, zero_hops)
    for i, name in enumerate(("us", "jp", "de")):
        d = gf.decide(ADDR[name], ctx("w1", T0 + i * 60))
    assert codes(d) == ["impossible_travel", "country_hopping"]
    assert d.risk == 0.0
    assert d.action is Action.ALLOW


def test_min_risk_is_inclusive(world: Snapshot) -> None:
    gf = engine(world, EVASION)
    d = gf.decide(ADDR["se_vpn_hosting"], ctx())  # 2.0 + 0.5 = exactly 2.5
    assert d.risk == 2.5
    assert d.rule_id == "review-risk"
    assert gf.decide(ADDR["us_vpn"], ctx()).action is Action.ALLOW  # 2.0 < 2.5


# -------------------------------------------------------------------------- account history


def test_denied_then_evasion_through_vpn_fires_the_rule(world: Snapshot) -> None:
    """Denied in IR, then through a VPN ten minutes later: the evasion rule denies."""
    gf = engine(world, EVASION)
    first = gf.decide(ADDR["ir"], ctx("evader", T0, timezone="Asia/Tehran"))
    assert (first.action, first.rule_id) == (Action.DENY, "deny-ir")
    d = gf.decide(ADDR["us_vpn"], ctx("evader", T0 + 600, timezone="Asia/Tehran"))
    assert "denied_then_evasion" in codes(d)
    assert "network_vpn" in codes(d)
    assert (d.action, d.rule_id, d.outcome) == (Action.DENY, "deny-evasion", "rule")
    detail = next(s.detail for s in d.signals if s.code == "denied_then_evasion")
    assert "denied for IR 10 min ago" in detail
    assert "through vpn" in detail
    assert "Signal denied_then_evasion (weight 5)" in d.explain()
    assert d.risk >= 5.0 + 2.0


def test_denied_then_evasion_from_a_permitted_country(world: Snapshot) -> None:
    """Days later from a plain address elsewhere: still evasion evidence (moved away)."""
    gf = engine(world, EVASION)
    gf.decide(ADDR["ir"], ctx("e2", T0))
    d = gf.decide(ADDR["de"], ctx("e2", T0 + 3 * 24 * HOUR))
    assert codes(d) == ["denied_then_evasion"]
    assert d.rule_id == "deny-evasion"


def test_still_denied_is_not_evasion_and_other_subjects_are_clean(world: Snapshot) -> None:
    gf = engine(world, EVASION)
    gf.decide(ADDR["ir"], ctx("e3", T0))
    again = gf.decide(ADDR["ir"], ctx("e3", T0 + 60))
    assert codes(again) == []
    assert again.rule_id == "deny-ir"
    other = gf.decide(ADDR["us_vpn"], ctx("someone-else", T0 + 120))
    assert "denied_then_evasion" not in codes(other)
    # Without a subject id there is no history at all.
    gf.decide(ADDR["ir"], ctx(None, T0))
    anon = gf.decide(ADDR["us_vpn"], ctx(None, T0 + 60))
    assert codes(anon) == ["network_vpn"]


def test_denial_is_recorded_only_when_the_jurisdiction_rule_precedes_signal_rules(
    world: Snapshot,
) -> None:
    """The history records the IP-only verdict: with a signal rule first, it is unresolved.

    This documents a policy-writing rule (docs/signals.md): put jurisdiction rules before
    rules that need a context, or a denial is never remembered.
    """
    late = policy(
        """
        [policy]
        id = "late"
        default = "allow"
        on_unresolved = "review"

        [[rules]]
        id = "deny-evasion"
        action = "deny"
        signals = ["denied_then_evasion"]

        [[rules]]
        id = "deny-ir"
        action = "deny"
        jurisdictions = ["IR"]
        """
    )
    gf = engine(world, late)
    assert gf.decide(ADDR["ir"]).outcome == "unresolved"  # IP-only: context rule first
    assert gf.decide(ADDR["ir"], ctx("e4", T0)).rule_id == "deny-ir"
    assert "denied_then_evasion" not in codes(gf.decide(ADDR["us_vpn"], ctx("e4", T0 + 60)))


def test_only_jurisdiction_denials_are_remembered(world: Snapshot) -> None:
    """A denial for the network kind is not a jurisdiction denial (regression).

    A developer denied for calling from a cloud VM, or a Tor user denied for Tor, who then
    comes from home is complying with the policy, not evading a jurisdiction rule. Before the
    fix every rule denial was remembered, so the home request got ``denied_then_evasion``
    ("denied for NL ...; now arriving from DE") and was denied as an evader.
    """
    pol = policy(
        """
        [policy]
        id = "kinds-and-places"
        default = "allow"

        [[rules]]
        id = "deny-hosting"
        action = "deny"
        kinds = ["hosting", "tor"]

        [[rules]]
        id = "domestic-only"
        action = "deny"
        not_jurisdictions = ["US"]
        kinds = ["vpn", "public_proxy"]

        [[rules]]
        id = "deny-ir"
        action = "deny"
        jurisdictions = ["IR"]

        [[rules]]
        id = "deny-evasion"
        action = "deny"
        signals = ["denied_then_evasion"]
        """
    )
    gf = engine(world, pol)
    for name in ("nl_hosting", "de_tor"):
        subject = f"dev-{name}"
        assert gf.decide(ADDR[name], ctx(subject, T0)).rule_id == "deny-hosting"
        home = gf.decide(ADDR["de"], ctx(subject, T0 + 600))
        assert "denied_then_evasion" not in codes(home)
        assert home.action is Action.ALLOW
    # Jurisdiction rules still count, including "not in" rules combined with kinds.
    assert gf.decide(ADDR["gb_proxy"], ctx("p1", T0)).rule_id == "domestic-only"
    d = gf.decide(ADDR["us_vpn"], ctx("p1", T0 + 600))
    assert d.rule_id == "deny-evasion"
    assert "denied for GB" in d.signals[-1].detail
    gf.decide(ADDR["ir"], ctx("p2", T0))
    assert gf.decide(ADDR["de"], ctx("p2", T0 + 600)).rule_id == "deny-evasion"


def test_provider_sees_the_denied_jurisdiction(world: Snapshot) -> None:
    """The IP-only decision handed to a signal provider names the jurisdiction denied."""
    seen: list[tuple[str, ...]] = []

    def provider(
        addr: Any, record: Any, context: Context, ip: Decision
    ) -> tuple[list[Signal], bool]:
        seen.append(ip.reasons)
        return [], False

    gf = Geofence(world, EVASION, signals=provider, today=lambda: TODAY)
    final = gf.decide(ADDR["ir"], ctx("x", T0))
    gf.decide(ADDR["de"], ctx("x", T0))
    assert seen == [
        ("rule:deny-ir", "jurisdiction:IR"),
        ("unresolved:context", "rule:deny-evasion"),
    ]
    assert final.reasons == ("rule:deny-ir",)  # the decision itself is unchanged
    assert gf.decide(ADDR["ir"]).reasons == ("rule:deny-ir",)


def test_impossible_travel(world: Snapshot) -> None:
    """New York (record coordinates) then Japan an hour later: ~10,800 km/h."""
    gf = engine(world, EVASION)
    assert gf.decide(ADDR["us"], ctx("t1", T0)).action is Action.ALLOW
    d = gf.decide(ADDR["jp"], ctx("t1", T0 + HOUR))
    assert codes(d) == ["impossible_travel"]
    assert (d.action, d.rule_id) == (Action.CHALLENGE, "challenge-travel")
    assert "km/h > 1000 km/h" in d.signals[0].detail
    # The same trip by plane (14 h) is plausible.
    gf.decide(ADDR["us"], ctx("t2", T0))
    ok = gf.decide(ADDR["jp"], ctx("t2", T0 + 14 * HOUR))
    assert codes(ok) == []
    assert ok.action is Action.ALLOW


def test_country_hopping(world: Snapshot) -> None:
    """Three countries within 24 h at plausible speeds: country_hopping only."""
    gf = engine(world, EVASION)
    gf.decide(ADDR["us"], ctx("h1", T0))
    gf.decide(ADDR["gb"], ctx("h1", T0 + 9 * HOUR))
    d = gf.decide(ADDR["fr"], ctx("h1", T0 + 18 * HOUR))
    assert codes(d) == ["country_hopping"]
    assert "3 countries" in d.signals[0].detail
    assert (d.action, d.rule_id) == (Action.CHALLENGE, "challenge-hopping")
    # Two days later the window has moved on.
    later = gf.decide(ADDR["de"], ctx("h1", T0 + 60 * HOUR))
    assert "country_hopping" not in codes(later)


def test_shared_egress_is_informational(world: Snapshot) -> None:
    """The 20th subject behind one address raises shared_egress, weight 0, allowed."""
    gf = engine(world, EVASION)
    for i in range(19):
        assert "shared_egress" not in codes(gf.decide(ADDR["gb"], ctx(f"office-{i}", T0 + i)))
    d = gf.decide(ADDR["gb"], ctx("office-19", T0 + 19))
    assert codes(d) == ["shared_egress"]
    assert weights(d) == {"shared_egress": 0.0}
    assert d.action is Action.ALLOW
    assert "20 subjects behind 1.0.2.1" in d.signals[0].detail
    # A policy may act on it explicitly.
    strict = policy(
        """
        [policy]
        id = "one-account-per-address"
        default = "allow"

        [[rules]]
        id = "review-shared"
        action = "review"
        signals = ["shared_egress"]
        """
    )
    gf2 = engine(world, strict)
    for i in range(20):
        d = gf2.decide(ADDR["gb"], ctx(f"office-{i}", T0 + i))
    assert d.rule_id == "review-shared"


def test_history_can_be_turned_off(world: Snapshot) -> None:
    gf = engine(world, EVASION, SignalPipeline(history=False))
    gf.decide(ADDR["ir"], ctx("off", T0))
    d = gf.decide(ADDR["us_vpn"], ctx("off", T0 + 60))
    assert codes(d) == ["network_vpn"]


def test_pipeline_history_config_is_used(world: Snapshot) -> None:
    """Thresholds come from SignalConfig.history (here: two countries are hopping)."""
    config = SignalConfig(history=HistoryConfig(hop_threshold=2, min_travel_km=100_000))
    gf = engine(world, EVASION, SignalPipeline(config))
    gf.decide(ADDR["de"], ctx("c1", T0))
    assert codes(gf.decide(ADDR["fr"], ctx("c1", T0 + 60))) == ["country_hopping"]


def test_context_decisions_do_not_rehash_the_policy(
    world: Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy digest is computed once, not per request (regression).

    ``Policy.digest`` serialised and hashed the whole policy on every access, and every
    decision with a context read it: almost half of the cost of such a decision
    (benchmarks/bench_signals.py). Counted, not timed.
    """
    gf = engine(world, EVASION)
    digest = gf.decide(ADDR["us"], ctx("d0")).policy_digest
    calls = 0
    original = Policy.canonical

    def counting(self: Policy) -> dict[str, object]:
        nonlocal calls
        calls += 1
        return original(self)

    monkeypatch.setattr(Policy, "canonical", counting)
    for i in range(10):
        assert gf.decide(ADDR["de"], ctx(f"d{i}", T0 + i)).policy_digest == digest
    assert calls == 0
    assert EVASION.digest == digest
    # Equal policies still have equal digests; a changed one gets its own.
    monkeypatch.setattr(Policy, "canonical", original)
    assert policy(EVASION_TEXT).digest == digest
    assert policy(EVASION_TEXT.replace("2.5", "3.5")).digest != digest


# -------------------------------------------------------------------------- no context


class ExplodingStore:
    """A store that fails the test if it is ever used."""

    calls = 0

    def record(self, obs: Observation) -> HistoryView:
        ExplodingStore.calls += 1
        raise AssertionError("the store must not be touched without a context")

    def close(self) -> None:
        pass


class ExplodingAsyncStore:
    async def record(self, obs: Observation) -> HistoryView:
        raise AssertionError("the async store must not be touched without a context")

    async def close(self) -> None:
        pass


async def test_no_context_never_touches_the_store(world: Snapshot) -> None:
    ip_only = policy(
        """
        [policy]
        id = "ip-only"
        default = "allow"

        [[rules]]
        id = "deny-ir"
        action = "deny"
        jurisdictions = ["IR"]
        """
    )
    pipeline = SignalPipeline(store=ExplodingStore(), async_store=ExplodingAsyncStore())
    gf = engine(world, ip_only, pipeline)
    for name in ("ir", "us_vpn", "de_tor", "de_relay"):
        d = gf.decide(ADDR[name])
        assert d.signals == ()
        assert d.risk == 0.0
        assert not d.degraded
        assert (await gf.adecide(ADDR[name])) is d  # the shared precomputed decision
    assert gf.decide(mapped(ADDR["ir"])).action is Action.DENY
    assert [d.action for d in gf.decide_many([ADDR["ir"], ADDR["us"]])] == [
        Action.DENY,
        Action.ALLOW,
    ]
    assert "Signal" not in gf.explain(ADDR["us_vpn"])
    assert ExplodingStore.calls == 0
    # A context without a subject id gathers signals but still records nothing.
    assert codes(gf.decide(ADDR["us_vpn"], Context(timezone="Asia/Tokyo"))) == [
        "network_vpn",
        "tz_mismatch",
    ]
    assert codes(await gf.adecide(ADDR["us_vpn"], Context(subject=Subject()))) == ["network_vpn"]
    assert ExplodingStore.calls == 0


# -------------------------------------------------------------------------- threads


def _requests(thread: int, per_subject: int) -> list[tuple[str, str, float]]:
    """A thread's (address, subject, time) sequence; each subject belongs to one thread."""
    names = ("us", "de", "ir", "us_vpn", "gb", "de_relay", "jp", "nl_hosting")
    out = []
    for step in range(per_subject):
        for s in range(5):
            subject = f"t{thread}-s{s}"
            name = names[(thread + s * 3 + step) % len(names)]
            if step % 4 == 3:
                name = "gb"  # everyone passes the shared "office" address now and then
            out.append((ADDR[name], subject, T0 + step * 1800.0 + s))
    return out


def test_threads_share_one_engine_and_memory_store(world: Snapshot) -> None:
    """8 threads deciding with context: no exception, and per-subject results as serial."""
    threads, per_subject = 8, 30

    def run(gf: Geofence, thread: int, out: dict[int, list[tuple[object, ...]]]) -> None:
        out[thread] = [
            (subject, *key(gf.decide(ip, ctx(subject, at))))
            for ip, subject, at in _requests(thread, per_subject)
        ]

    # shared_egress depends on interleaving; weight 0 keeps risk and actions independent of it.
    def strip(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        result: list[tuple[object, ...]] = []
        for subject, action, rule, outcome, sig, risk, degraded in rows:
            kept = tuple(c for c in sig if c != "shared_egress")  # type: ignore[attr-defined]
            result.append((subject, action, rule, outcome, kept, risk, degraded))
        return result

    store = MemoryHistoryStore()
    gf = engine(world, EVASION, SignalPipeline(store=store))
    results: dict[int, list[tuple[object, ...]]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(thread: int) -> None:
        try:
            barrier.wait()
            run(gf, thread, results)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    assert errors == []
    assert sorted(results) == list(range(threads))

    serial_gf = engine(world, EVASION)
    serial: dict[int, list[tuple[object, ...]]] = {}
    for i in range(threads):
        run(serial_gf, i, serial)
    for i in range(threads):
        assert strip(results[i]) == strip(serial[i])
    flagged = sum(1 for rows in results.values() for row in rows if row[1] is not Action.ALLOW)
    assert flagged > 0  # the sequences do exercise the rules

    # Counts: every subject holds exactly its own requests, in its own order.
    assert store.subject_count == threads * 5
    last = T0 + per_subject * 1800.0
    # The shared address counts at least the subjects seen there within the hour (records
    # arriving out of time order may be counted a little longer; docs/history.md).
    everything = [r for i in range(threads) for r in _requests(i, per_subject)]
    probe_at = max(at for ip, _, at in everything if ip == ADDR["gb"]) + 1
    recent = {s for ip, s, at in everything if ip == ADDR["gb"] and at >= probe_at - HOUR}
    shared = store.record(Observation(subject="probe", at=probe_at, address=ADDR["gb"]))
    assert len(recent) + 1 <= shared.egress_subjects <= threads * 5 + 1
    for i in range(threads):
        for s in range(5):
            view = store.record(Observation(subject=f"t{i}-s{s}", at=last, address="192.0.2.9"))
            assert len(view.observations) == per_subject


# -------------------------------------------------------------------------- Redis


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def new_prefix() -> str:
    return f"geofence-pipeline-test:{uuid.uuid4().hex}:"


def delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


#: (address name, subject, seconds after T0, time zone) — evasion, travel, hopping, relay.
SCRIPT: Final = [
    ("ir", "a", 0, "Asia/Tehran"),
    ("us_vpn", "a", 600, "Asia/Tehran"),
    ("de", "a", 7200, "Europe/Berlin"),
    ("us", "b", 0, "America/New_York"),
    ("jp", "b", 1800, "Asia/Tokyo"),
    ("gb", "c", 0, "Europe/London"),
    ("fr", "c", 9 * 3600, "Europe/Paris"),
    ("de", "c", 18 * 3600, "Europe/Berlin"),
    ("de_relay", "d", 0, "Europe/Berlin"),
    ("de_tor", "d", 60, "Europe/Berlin"),
    ("se_vpn_hosting", "d", 120, "Europe/Berlin"),
]


def _script_context(subject: str, offset: float, tz: str) -> Context:
    return ctx(subject, T0 + offset, timezone=tz, accept_language="en")


@pytest.mark.redis
async def test_adecide_with_async_redis_matches_sync_redis_and_memory(
    world: Snapshot, redis_url: str
) -> None:
    """The same requests give the same decisions with every store and both call styles."""
    p_sync, p_async = new_prefix(), new_prefix()
    sync_store = RedisHistoryStore(redis_url, prefix=p_sync, socket_timeout=2)
    async_store = AsyncRedisHistoryStore(redis_url, prefix=p_async, socket_timeout=2)
    try:
        gf_sync = engine(world, EVASION, SignalPipeline(store=sync_store))
        gf_async = engine(
            world, EVASION, SignalPipeline(store=ExplodingStore(), async_store=async_store)
        )
        gf_memory = engine(world, EVASION)
        got_sync, got_async, got_memory = [], [], []
        for name, subject, offset, tz in SCRIPT:
            c = _script_context(subject, offset, tz)
            got_sync.append(key(gf_sync.decide(ADDR[name], c)))
            got_async.append(key(await gf_async.adecide(ADDR[name], c)))
            got_memory.append(key(gf_memory.decide(ADDR[name], c)))
        assert got_async == got_sync == got_memory
        actions = [k[0] for k in got_sync]
        assert actions.count(Action.DENY) == 3  # IR, VPN evasion, evasion from DE
        assert any("impossible_travel" in k[3] for k in got_sync)  # type: ignore[operator]
        assert any("country_hopping" in k[3] for k in got_sync)  # type: ignore[operator]
        assert not any(k[5] for k in got_sync)  # nothing degraded
        assert ExplodingStore.calls == 0
    finally:
        sync_store.close()
        await async_store.close()
        delete_prefix(redis_url, p_sync)
        delete_prefix(redis_url, p_async)


class RedisProcess:
    """A redis-server of one test's own, to freeze and kill."""

    def __init__(self, workdir: str) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.skip("redis-server not available")
        import redis

        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        # fmt: off
        command = [
            executable, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", workdir,
        ]
        # fmt: on
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.RedisError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.kill()
                        pytest.skip("dedicated redis-server did not start")
                    time.sleep(0.05)
        finally:
            client.close()

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def kill(self) -> None:
        if self.process.poll() is None:
            if sys.platform != "win32":
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Any) -> Iterator[RedisProcess]:
    server = RedisProcess(str(tmp_path))
    yield server
    server.kill()


#: Store timeouts of the outage tests, and the most one decision may take.
CONNECT_TIMEOUT: Final = 0.05
COMMAND_TIMEOUT: Final = 0.1
BUDGET: Final = CONNECT_TIMEOUT + COMMAND_TIMEOUT + 0.35  # generous margin for slow CI


def _outage_requests(start: int, n: int) -> list[tuple[str, Context]]:
    names = ("ir", "us", "us_vpn", "de_tor", "de")
    return [
        (ADDR[names[i % len(names)]], ctx(f"o{i % 3}", T0 + (start + i) * 60.0)) for i in range(n)
    ]


def _check_degraded(d: Decision, ip: str, gf_ip: Geofence) -> None:
    assert d.degraded
    assert "degraded" in d.reasons
    assert "Degraded:" in d.explain()
    # History is missing, the address still decides (fail open: no history signal).
    assert not {"history_unavailable", "denied_then_evasion"} & set(codes(d))
    if gf_ip.decide(ip).action is Action.DENY:
        assert d.action is Action.DENY


@pytest.mark.redis
@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGSTOP")
def test_redis_frozen_then_killed_mid_run(world: Snapshot, own_redis: RedisProcess) -> None:
    """Decisions keep coming within the timeout, degraded, and never raise."""
    store = RedisHistoryStore(
        own_redis.url,
        prefix=new_prefix(),
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        retry_after_s=0.3,
    )
    gf = engine(world, EVASION, SignalPipeline(store=store))
    for ip, c in _outage_requests(0, 6):
        assert not gf.decide(ip, c).degraded

    own_redis.signal(signal.SIGSTOP)  # frozen: the command times out
    slowest = 0.0
    for ip, c in _outage_requests(6, 30):
        started = time.monotonic()
        d = gf.decide(ip, c)
        slowest = max(slowest, time.monotonic() - started)
        _check_degraded(d, ip, gf)
    assert slowest < BUDGET
    assert "Timeout" in store.last_error or "skipping" in store.last_error

    own_redis.signal(signal.SIGCONT)  # back: after retry_after_s decisions are whole again
    deadline = time.monotonic() + 5
    recovered = False
    i = 36
    while time.monotonic() < deadline and not recovered:
        ip, c = _outage_requests(i, 1)[0]
        recovered = not gf.decide(ip, c).degraded
        i += 1
        time.sleep(0.02)
    assert recovered

    own_redis.kill()  # gone for good: connection errors, then the breaker
    started_all = time.monotonic()
    for ip, c in _outage_requests(i, 50):
        started = time.monotonic()
        d = gf.decide(ip, c)
        assert time.monotonic() - started < BUDGET
        _check_degraded(d, ip, gf)
    assert time.monotonic() - started_all < 50 * BUDGET
    store.close()


@pytest.mark.redis
@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGSTOP")
async def test_async_redis_frozen_then_killed_mid_run(
    world: Snapshot, own_redis: RedisProcess
) -> None:
    """`adecide` degrades the same way with AsyncRedisHistoryStore."""
    store = AsyncRedisHistoryStore(
        own_redis.url,
        prefix=new_prefix(),
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        retry_after_s=0.3,
    )
    gf = engine(world, EVASION, SignalPipeline(store=ExplodingStore(), async_store=store))
    for ip, c in _outage_requests(0, 6):
        assert not (await gf.adecide(ip, c)).degraded
    own_redis.signal(signal.SIGSTOP)
    for ip, c in _outage_requests(6, 20):
        started = time.monotonic()
        d = await gf.adecide(ip, c)
        assert time.monotonic() - started < BUDGET
        _check_degraded(d, ip, gf)
    own_redis.kill()
    await _sleep(0.35)  # past retry_after_s: the next call tries Redis and finds it gone
    for ip, c in _outage_requests(26, 30):
        started = time.monotonic()
        d = await gf.adecide(ip, c)
        assert time.monotonic() - started < BUDGET
        _check_degraded(d, ip, gf)
    assert store.last_error
    assert ExplodingStore.calls == 0
    await store.close()


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_fail_closed_adds_history_unavailable(world: Snapshot) -> None:
    """With failure_mode="closed", an unreachable store adds history_unavailable (5.0)."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    store = RedisHistoryStore(url, failure_mode="closed", socket_connect_timeout=CONNECT_TIMEOUT)
    gf = engine(world, EVASION, SignalPipeline(store=store))
    d = gf.decide(ADDR["us"], ctx("fc", T0))
    assert codes(d) == ["history_unavailable"]
    assert weights(d) == {"history_unavailable": 5.0}
    assert (d.action, d.rule_id) == (Action.CHALLENGE, "challenge-history-unknown")
    assert d.degraded
    assert "degraded" in d.reasons
    # A jurisdiction denial comes first regardless.
    assert gf.decide(ADDR["ir"], ctx("fc", T0 + 1)).rule_id == "deny-ir"
    # Fail open (the default): degraded, no signal, the address decides.
    open_store = RedisHistoryStore(url, socket_connect_timeout=CONNECT_TIMEOUT)
    d_open = engine(world, EVASION, SignalPipeline(store=open_store)).decide(ADDR["us"], ctx("fo"))
    assert (d_open.action, d_open.signals, d_open.degraded) == (Action.ALLOW, (), True)
    store.close()
    open_store.close()


async def test_async_fail_closed(world: Snapshot) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = AsyncRedisHistoryStore(url, failure_mode="closed", retry_after_s=0)
    gf = engine(world, EVASION, SignalPipeline(async_store=store))
    d = await gf.adecide(ADDR["de"], ctx("afc", T0))
    assert codes(d) == ["history_unavailable"]
    assert d.rule_id == "challenge-history-unknown"
    assert d.degraded
    await store.close()

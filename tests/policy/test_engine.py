"""Tests of Geofence decisions against hand-written policies over the test world."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from geofence._batch import VECTOR_MIN
from geofence.addr import parse_address
from geofence.context import Context, Subject
from geofence.decision import Action, Decision
from geofence.engine import Geofence
from geofence.errors import InvalidAddressError, PolicyError
from geofence.policy import load_policy
from geofence.signals.base import Signal
from geofence.snapshot.reader import Snapshot
from tests.policy.conftest import (
    ADDR,
    RESERVED,
    TUNNELS,
    UNKNOWN,
    UNKNOWN6,
    mapped,
    policy,
)
from tests.strategies import addresses

MakeGf = Callable[..., Geofence]

ACTIONS = policy(
    """
    [policy]
    id = "actions"
    default = "allow"
    on_unresolved = "review"

    [[rules]]
    id = "deny-ir"
    action = "deny"
    jurisdictions = ["IR"]

    [[rules]]
    id = "challenge-cu"
    action = "challenge"
    jurisdictions = ["CU"]

    [[rules]]
    id = "review-gb"
    action = "review"
    jurisdictions = ["GB"]

    [[rules]]
    id = "route-ru"
    action = "route:eu-tier"
    jurisdictions = ["RU"]

    [[rules]]
    id = "allow-de-hosting"
    action = "allow"
    asns = [16509]
    """
)


def _all_addresses() -> list[str]:
    """Every interesting address of the world: named, tunnelled, unknown, reserved."""
    out = [*ADDR.values(), UNKNOWN, UNKNOWN6, *RESERVED]
    out += [make(ADDR[name]) for name in ("ir", "us", "ua_nosub") for make in TUNNELS.values()]
    return out


def _key(d: Decision) -> tuple[object, ...]:
    """The parts of a decision that policy evaluation determines."""
    return (d.action, d.route, d.rule_id, d.outcome, d.reasons, d.shadow_action, d.tunnel)


# -- actions and precedence ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "action", "route", "rule_id"),
    [
        ("ir", Action.DENY, None, "deny-ir"),
        ("cu", Action.CHALLENGE, None, "challenge-cu"),
        ("gb", Action.REVIEW, None, "review-gb"),
        ("ru", Action.ROUTE, "eu-tier", "route-ru"),
        ("de_hosting", Action.ALLOW, None, "allow-de-hosting"),
        ("us", Action.ALLOW, None, None),
    ],
)
def test_every_action(
    make_gf: MakeGf, name: str, action: Action, route: str | None, rule_id: str | None
) -> None:
    """Each action is enforced as written, with its route target and the deciding rule."""
    d = make_gf(ACTIONS).decide(ADDR[name])
    assert (d.action, d.route, d.rule_id) == (action, route, rule_id)
    assert d.outcome == ("rule" if rule_id else "default")
    assert d.reasons == ((f"rule:{rule_id}",) if rule_id else ("default",))


def test_decision_properties(make_gf: MakeGf) -> None:
    """Review and allow count as allowed; only deny counts as blocked."""
    gf = make_gf(ACTIONS)
    assert gf.decide(ADDR["gb"]).allowed
    assert not gf.decide(ADDR["gb"]).blocked
    assert gf.decide(ADDR["ir"]).blocked
    assert not gf.decide(ADDR["ir"]).allowed
    assert not gf.decide(ADDR["cu"]).allowed
    assert not gf.decide(ADDR["ru"]).allowed


def test_decision_records_the_data(make_gf: MakeGf, world: Snapshot) -> None:
    """A decision carries the record's location, kinds, ASN, sources and the identities."""
    d = make_gf(ACTIONS).decide(ADDR["ru_vpn"])
    assert (d.country, d.asn) == ("RU", 64521)
    assert d.kinds == d.kinds.VPN | d.kinds.HOSTING
    assert d.sources == ("test-geo", "test-kinds")
    assert d.snapshot_id == world.snapshot_id
    assert (d.policy_id, d.policy_digest) == ("actions", ACTIONS.digest)


def test_exception_beats_rules(make_gf: MakeGf) -> None:
    """An exception's CIDR allow-list wins over a rule that denies the same address."""
    p = policy(
        """
        [policy]
        id = "exc"
        [[exceptions]]
        id = "lab"
        cidrs = ["1.0.3.0/28"]
        [[rules]]
        id = "deny-ir"
        action = "deny"
        jurisdictions = ["IR"]
        """
    )
    gf = make_gf(p)
    inside = gf.decide("1.0.3.1")
    assert (inside.action, inside.outcome, inside.rule_id) == (Action.ALLOW, "exception", "lab")
    assert inside.reasons == ("exception:lab",)
    assert gf.decide("1.0.3.16").rule_id == "deny-ir"


def test_subject_exception_needs_a_context(make_gf: MakeGf) -> None:
    """A subject allow-list applies with a matching subject; without one it is skipped."""
    p = policy(
        """
        [policy]
        id = "exc-subject"
        [[exceptions]]
        id = "partner-org"
        action = "review"
        subject = { org_ids = ["org-1"] }
        [[rules]]
        id = "deny-ir"
        action = "deny"
        jurisdictions = ["IR"]
        """
    )
    gf = make_gf(p)
    partner = Context(subject=Subject(id="u1", org_id="org-1"))
    other = Context(subject=Subject(id="u2", org_id="org-2"))
    assert gf.decide(ADDR["ir"], partner).rule_id == "partner-org"
    assert gf.decide(ADDR["ir"], partner).action is Action.REVIEW
    assert gf.decide(ADDR["ir"], other).rule_id == "deny-ir"
    assert gf.decide(ADDR["ir"]).rule_id == "deny-ir"


def test_first_match_wins(make_gf: MakeGf) -> None:
    """Of two rules matching an address, the first in file order decides."""
    p = policy(
        """
        [policy]
        id = "order"
        [[rules]]
        id = "challenge-ir-asn"
        action = "challenge"
        asns = [64503]
        [[rules]]
        id = "deny-ir"
        action = "deny"
        jurisdictions = ["IR"]
        """
    )
    d = make_gf(p).decide(ADDR["ir"])
    assert (d.action, d.rule_id) == (Action.CHALLENGE, "challenge-ir-asn")


UNRESOLVED_ORDER = policy(
    """
    [policy]
    id = "unresolved-order"
    default = "allow"
    on_unresolved = "review"
    [[rules]]
    id = "challenge-asn"
    action = "challenge"
    asns = [64511]
    [[rules]]
    id = "deny-crimea"
    action = "deny"
    jurisdictions = ["UA-43"]
    [[rules]]
    id = "route-ua"
    action = "route:ua-tier"
    jurisdictions = ["UA"]
    """
)


UNRESOLVED = policy(
    """
    [policy]
    id = "unresolved"
    on_unresolved = "review"
    [[rules]]
    id = "deny-crimea"
    action = "deny"
    jurisdictions = ["UA-43"]
    [[rules]]
    id = "route-ua"
    action = "route:ua-tier"
    jurisdictions = ["UA"]
    """
)


def test_unresolved_stops_evaluation(make_gf: MakeGf) -> None:
    """A subdivision rule against a record without subdivision stops with on_unresolved."""
    gf = make_gf(UNRESOLVED)
    d = gf.decide(ADDR["ua_nosub"])
    assert (d.action, d.outcome, d.rule_id) == (Action.REVIEW, "unresolved", "deny-crimea")
    assert d.reasons == ("unresolved:subdivision", "rule:deny-crimea")
    # The later rule is not reached for that address, but decides the resolved ones.
    assert gf.decide(ADDR["ua_kyiv"]).route == "ua-tier"
    assert gf.decide(ADDR["ua_crimea"]).action is Action.DENY


def test_rules_before_an_unresolved_one_still_win(make_gf: MakeGf) -> None:
    """A rule that matches before the unresolved rule decides."""
    d = make_gf(UNRESOLVED_ORDER).decide(ADDR["ua_nosub"])
    assert (d.action, d.rule_id, d.outcome) == (Action.CHALLENGE, "challenge-asn", "rule")


def test_unresolved_reasons(make_gf: MakeGf) -> None:
    """Partial jurisdictions and records without a country are unresolved, with the reason."""
    p = policy(
        """
        [policy]
        id = "reasons"
        on_unresolved = "challenge"
        [[rules]]
        id = "dnr"
        action = "deny"
        partial_jurisdictions = ["UA-14"]
        [[rules]]
        id = "not-home"
        action = "deny"
        not_jurisdictions = ["US"]
        """
    )
    gf = make_gf(p)
    assert gf.decide(ADDR["ua_donetsk"]).reasons == ("unresolved:partial:UA-14", "rule:dnr")
    assert gf.decide(ADDR["ua_nosub"]).reasons == ("unresolved:subdivision", "rule:dnr")
    # A record with kinds but no country cannot be placed inside or outside any place.
    d = gf.decide(ADDR["nocountry_vpn"])
    assert (d.outcome, d.rule_id, d.action) == ("unresolved", "dnr", Action.CHALLENGE)
    assert d.reasons == ("unresolved:country", "rule:dnr")
    home = policy(
        """
        [policy]
        id = "home"
        [[rules]]
        id = "not-home"
        action = "deny"
        not_jurisdictions = ["US"]
        """
    )
    assert make_gf(home).decide(ADDR["nocountry_vpn"]).reasons == (
        "unresolved:country",
        "rule:not-home",
    )
    # Kyiv is outside UA-14: the partial rule does not match, the next rule decides.
    assert gf.decide(ADDR["ua_kyiv"]).rule_id == "not-home"
    assert gf.decide(ADDR["us"]).outcome == "default"


def test_unknown_and_reserved_fallbacks(make_gf: MakeGf) -> None:
    """Addresses outside the data get on_unknown; special-purpose ones get on_reserved."""
    p = policy(
        """
        [policy]
        id = "fallbacks"
        default = "allow"
        on_unknown = "challenge"
        on_reserved = "route:internal"
        [[rules]]
        id = "deny-not-us"
        action = "deny"
        not_jurisdictions = ["US"]
        """
    )
    gf = make_gf(p)
    for address in (UNKNOWN, UNKNOWN6):
        d = gf.decide(address)
        assert (d.action, d.outcome, d.reasons) == (
            Action.CHALLENGE,
            "unknown",
            ("unknown_address",),
        )
        assert (d.country, d.rule_id) == (None, None)
    for address, category in RESERVED.items():
        d = gf.decide(address)
        assert (d.action, d.route, d.outcome) == (Action.ROUTE, "internal", "reserved")
        assert d.special == category
        assert d.reasons == (f"reserved:{category}",)


def test_cidr_rules_apply_to_unknown_and_reserved(make_gf: MakeGf) -> None:
    """CIDR conditions hold for addresses the data does not cover and for reserved ones."""
    p = policy(
        """
        [policy]
        id = "cidrs"
        [[rules]]
        id = "deny-block"
        action = "deny"
        cidrs = ["1.0.200.0/24", "10.0.0.0/8", "2a02::/16"]
        [[rules]]
        id = "never-here"
        action = "challenge"
        jurisdictions = ["US"]
        cidrs = ["1.0.200.0/24"]
        """
    )
    gf = make_gf(p)
    for address in (UNKNOWN, UNKNOWN6, "10.1.2.3"):
        assert gf.decide(address).rule_id == "deny-block"
    assert gf.decide("1.0.201.1").outcome == "unknown"
    assert gf.decide("11.0.0.1").outcome == "unknown"
    assert gf.decide("127.0.0.1").outcome == "reserved"


def test_cidr_edges(make_gf: MakeGf) -> None:
    """A CIDR rule covers exactly its network, also when it splits a data range."""
    p = policy(
        """
        [policy]
        id = "edges"
        [[rules]]
        id = "deny-slice"
        action = "deny"
        cidrs = ["1.0.3.64/26", "2a01:1::/48"]
        """
    )
    gf = make_gf(p)
    assert gf.decide("1.0.3.63").outcome == "default"
    assert gf.decide("1.0.3.64").rule_id == "deny-slice"
    assert gf.decide("1.0.3.127").rule_id == "deny-slice"
    assert gf.decide("1.0.3.128").outcome == "default"
    assert gf.decide("2a01:1::").rule_id == "deny-slice"
    assert gf.decide("2a01:1:0:ffff:ffff:ffff:ffff:ffff").rule_id == "deny-slice"
    assert gf.decide("2a01:1:1::").outcome == "default"
    # The carved piece keeps the record's data.
    assert gf.decide("1.0.3.64").country == "IR"


# -- shadow mode ---------------------------------------------------------------------------


def test_shadow_rule_is_recorded_not_enforced(make_gf: MakeGf) -> None:
    """A matching shadow rule is reported and evaluation continues as if it were absent."""
    p = policy(
        """
        [policy]
        id = "shadow-rule"
        on_unresolved = "challenge"
        [[rules]]
        id = "try-deny-ir"
        action = "deny"
        shadow = true
        jurisdictions = ["IR", "UA-43"]
        [[rules]]
        id = "review-ir"
        action = "review"
        jurisdictions = ["IR"]
        """
    )
    gf = make_gf(p)
    d = gf.decide(ADDR["ir"])
    assert (d.action, d.rule_id) == (Action.REVIEW, "review-ir")
    assert (d.shadow, d.shadow_action, d.shadow_rule_id) == (True, Action.DENY, "try-deny-ir")
    assert d.reasons == ("rule:review-ir", "shadow:try-deny-ir")
    # Unresolved for the shadow rule: it reports what on_unresolved would have done.
    nosub = gf.decide(ADDR["ua_nosub"])
    assert (nosub.action, nosub.outcome) == (Action.ALLOW, "default")
    assert nosub.shadow_action is Action.CHALLENGE
    assert "Shadow mode" in gf.explain(ADDR["ir"])
    plain = gf.decide(ADDR["us"])
    assert (plain.shadow, plain.shadow_action) == (False, None)


def test_shadow_policy_enforces_allow(make_gf: MakeGf) -> None:
    """A shadow policy is evaluated fully, its action recorded, and allow enforced."""
    p = policy(
        """
        [policy]
        id = "shadow-policy"
        shadow = true
        on_unresolved = "challenge"
        [[rules]]
        id = "deny-ir"
        action = "deny"
        jurisdictions = ["IR"]
        [[rules]]
        id = "deny-crimea"
        action = "deny"
        jurisdictions = ["UA-43"]
        """
    )
    gf = make_gf(p)
    d = gf.decide(ADDR["ir"])
    assert (d.action, d.shadow, d.shadow_action) == (Action.ALLOW, True, Action.DENY)
    assert (d.rule_id, d.shadow_rule_id, d.outcome) == ("deny-ir", "deny-ir", "rule")
    assert d.reasons == ("rule:deny-ir", "shadow:policy")
    u = gf.decide(ADDR["ua_nosub"])
    assert (u.action, u.shadow_action, u.outcome) == (Action.ALLOW, Action.CHALLENGE, "unresolved")
    assert gf.decide(ADDR["us"]).shadow_action is Action.ALLOW


def test_shadow_exception_is_not_enforced(make_gf: MakeGf) -> None:
    """A shadow exception is reported, and the rules decide as if it were absent."""
    p = policy(
        """
        [policy]
        id = "shadow-exception"
        [[exceptions]]
        id = "try-allow-lab"
        action = "allow"
        shadow = true
        cidrs = ["1.0.3.0/28"]
        [[rules]]
        id = "deny-ir"
        action = "deny"
        jurisdictions = ["IR"]
        """
    )
    d = make_gf(p).decide("1.0.3.1")
    assert (d.action, d.rule_id, d.outcome) == (Action.DENY, "deny-ir", "rule")
    assert (d.shadow_action, d.shadow_rule_id) == (Action.ALLOW, "try-allow-lab")


# -- dates ---------------------------------------------------------------------------------

DATED = policy(
    """
    [policy]
    id = "dated"
    [[rules]]
    id = "deny-ir-2090"
    action = "deny"
    jurisdictions = ["IR"]
    effective_from = 2090-01-01
    effective_to = 2091-01-01
    """
)


@pytest.mark.parametrize(
    ("day", "action"),
    [
        (dt.date(2089, 12, 31), Action.ALLOW),
        (dt.date(2090, 1, 1), Action.DENY),
        (dt.date(2090, 12, 31), Action.DENY),
        (dt.date(2091, 1, 1), Action.ALLOW),
    ],
)
def test_rule_dates(make_gf: MakeGf, day: dt.date, action: Action) -> None:
    """A rule applies from effective_from (inclusive) to effective_to (exclusive)."""
    assert make_gf(DATED, today=lambda: day).decide(ADDR["ir"]).action is action


def test_recompiles_for_the_next_boundary(make_gf: MakeGf) -> None:
    """The compiled policy knows its next boundary; recompiling on that day applies it."""
    clock = [dt.date(2089, 6, 1)]
    gf = make_gf(DATED, today=lambda: clock[0])
    assert gf.compiled.today == dt.date(2089, 6, 1)
    assert gf.compiled.valid_until == dt.date(2090, 1, 1)
    assert gf.decide(ADDR["ir"]).action is Action.ALLOW
    clock[0] = dt.date(2090, 1, 1)
    gf.reload()  # what the date-refresh timer does on the boundary
    assert gf.decide(ADDR["ir"]).action is Action.DENY
    assert gf.compiled.valid_until == dt.date(2091, 1, 1)
    clock[0] = dt.date(2091, 1, 1)
    gf.reload()
    assert gf.compiled.valid_until is None
    assert gf.decide(ADDR["ir"]).action is Action.ALLOW


# -- cache, tunnels, IPv6, batches -------------------------------------------------------------


def test_cache_does_not_change_decisions(make_gf: MakeGf) -> None:
    """Decisions with a cache (large or tiny, hit or miss) equal those without."""
    plain = make_gf(UNRESOLVED_ORDER)
    big = make_gf(UNRESOLVED_ORDER, cache_size=1000)
    tiny = make_gf(UNRESOLVED_ORDER, cache_size=2)
    for _ in range(2):
        for address in _all_addresses():
            expected = _key(plain.decide(address))
            assert _key(big.decide(address)) == expected
            assert _key(tiny.decide(address)) == expected


@pytest.mark.parametrize("tunnel", sorted(TUNNELS))
@pytest.mark.parametrize("name", ["ir", "us", "ua_nosub", "ua_crimea"])
def test_tunnels_decide_like_their_ipv4(make_gf: MakeGf, tunnel: str, name: str) -> None:
    """IPv4-mapped, 6to4, Teredo and NAT64 addresses decide like the IPv4 inside."""
    gf = make_gf(UNRESOLVED_ORDER)
    inner = gf.decide(ADDR[name])
    outer = gf.decide(TUNNELS[tunnel](ADDR[name]))
    assert (outer.action, outer.rule_id, outer.outcome) == (
        inner.action,
        inner.rule_id,
        inner.outcome,
    )
    assert (outer.tunnel, inner.tunnel) == (tunnel, None)
    assert outer.reasons == (*inner.reasons, f"tunnel:{tunnel}")
    assert outer.country == inner.country


def test_tunnels_with_context(make_gf: MakeGf) -> None:
    """With a context, a tunnelled address also decides like its IPv4 and names the tunnel."""
    gf = make_gf(ACTIONS)
    ctx = Context(subject=Subject(id="u"))
    d = gf.decide(mapped(ADDR["ir"]), ctx)
    assert (d.action, d.rule_id, d.tunnel) == (Action.DENY, "deny-ir", "ipv4_mapped")
    assert d.reasons == ("rule:deny-ir", "tunnel:ipv4_mapped")
    assert d.address is not None
    assert ipaddress.ip_address(d.address) == ipaddress.ip_address(mapped(ADDR["ir"]))


def test_unwrapped_later_with_context(make_gf: MakeGf) -> None:
    """A ParsedAddress parsed with unwrap=False decides like its IPv4, with or without context."""
    gf = make_gf(ACTIONS)
    outer = parse_address(mapped(ADDR["ir"]), unwrap=False)
    ctx = Context(subject=Subject(id="u"))
    for d in (gf.decide(outer), gf.decide(outer, ctx)):
        assert (d.action, d.rule_id, d.tunnel) == (Action.DENY, "deny-ir", "ipv4_mapped")
        assert d.reasons == ("rule:deny-ir", "tunnel:ipv4_mapped")


def test_ipv6(make_gf: MakeGf) -> None:
    """Native IPv6 addresses are located and decided like IPv4 ones."""
    gf = make_gf(UNRESOLVED_ORDER)
    assert gf.decide(ADDR["ua_crimea6"]).rule_id == "deny-crimea"
    assert make_gf(ACTIONS).decide(ADDR["ir6"]).action is Action.DENY
    assert gf.decide(ADDR["us6"]).outcome == "default"


def test_other_input_types(make_gf: MakeGf) -> None:
    """Packed bytes, ipaddress objects and parsed addresses decide like strings."""
    gf = make_gf(ACTIONS)
    expected = _key(gf.decide(ADDR["ir"]))
    ip = ipaddress.ip_address(ADDR["ir"])
    assert _key(gf.decide(ip)) == expected
    assert _key(gf.decide(ip.packed)) == expected
    assert _key(gf.decide(parse_address(int(ip), version=4))) == expected
    with pytest.raises(InvalidAddressError):
        gf.decide("1.0.3.01")
    with pytest.raises(InvalidAddressError):
        gf.decide("not an address")


def test_decide_many_strings(make_gf: MakeGf) -> None:
    """decide_many on strings (short and long batches) equals decide, in order."""
    gf = make_gf(UNRESOLVED_ORDER)
    addresses = _all_addresses()
    assert gf.decide_many(addresses) == [gf.decide(a) for a in addresses]
    many = [f"1.0.{i % 40}.{i % 256}" for i in range(300)] + addresses
    assert gf.decide_many(many) == [gf.decide(a) for a in many]
    assert gf.decide_many([]) == []


def test_ipv6_high_half_ties_decide_like_the_parser() -> None:
    """decide(text), its inlined IPv6 search, equals deciding the parsed address."""
    from tests.snapshot.test_reader import _tie_addresses

    with Geofence(None, "us-ofac-comprehensive") as gf:
        texts = _tie_addresses(gf.snapshot)
        assert texts
        for text in texts:
            assert gf.decide(text) is gf.decide(parse_address(text)), text
        assert gf.decide_many(texts * 2) == [gf.decide(t) for t in texts * 2]


def test_decide_many_long_batches_take_the_vector_path(make_gf: MakeGf) -> None:
    """Batches of VECTOR_MIN or more (numpy) equal decide() item by item, in order.

    Mixed in: tunnelled IPv6 text, zone ids, packed bytes, ipaddress objects and
    parsed addresses (these go through the scalar path of the same state).
    """
    gf = make_gf(UNRESOLVED_ORDER)
    texts = [*_all_addresses(), "fe80::1%eth0", "::ffff:1.0.3.7", "64:ff9b::102:304"]
    assert len(texts) < VECTOR_MIN
    long_texts = texts * (VECTOR_MIN // len(texts) + 1)
    assert gf.decide_many(long_texts) == [gf.decide(a) for a in long_texts]
    objects: list[object] = [ipaddress.ip_address(ADDR["ir"]), parse_address(ADDR["us6"])]
    objects += [ipaddress.ip_address(ADDR["ir"]).packed]
    mixed = long_texts + objects + long_texts
    assert gf.decide_many(mixed) == [gf.decide(a) for a in mixed]
    assert gf.decide_many(iter(long_texts)) == [gf.decide(a) for a in long_texts]


def test_decide_many_long_batch_raises_the_first_invalid(make_gf: MakeGf) -> None:
    """An invalid address in a long batch raises InvalidAddressError naming it."""
    gf = make_gf(UNRESOLVED_ORDER)
    good = _all_addresses() * (VECTOR_MIN // len(_all_addresses()) + 1)
    for bad in ("1.0.3.01", "not an address", "1.2.3.4/24", "::g", ""):
        with pytest.raises(InvalidAddressError) as caught:
            gf.decide_many([*good, bad, "also bad", *good])
        assert repr(bad) in str(caught.value)
    with pytest.raises(InvalidAddressError, match="'second::x'"):
        gf.decide_many([*good, "second::x", "first"])


def test_decide_many_numpy_unsorted_large(make_gf: MakeGf) -> None:
    """A large shuffled uint32 array keeps input order (the search sorts internally)."""
    gf = make_gf(UNRESOLVED_ORDER)
    rng = np.random.default_rng(20261127)
    values = rng.integers(0, 2**32, size=5000, dtype=np.uint64).astype(np.uint32)
    expected = [gf.decide(str(ipaddress.IPv4Address(int(v)))) for v in values]
    assert gf.decide_many(values, version=4) == expected


def test_decide_many_numpy(make_gf: MakeGf) -> None:
    """decide_many on a numpy uint32 array of IPv4 addresses equals decide."""
    gf = make_gf(UNRESOLVED_ORDER)
    values = [int(ipaddress.IPv4Address(a)) for a in ADDR.values() if ":" not in a]
    values += [int(ipaddress.IPv4Address(a)) for a in (UNKNOWN, "10.1.2.3", "0.0.0.0")]
    values += [0xFFFFFFFF, 0x01000300 + 255]
    arr = np.array(values, dtype=np.uint32)
    expected = [gf.decide(str(ipaddress.IPv4Address(v))) for v in values]
    assert gf.decide_many(arr, version=4) == expected
    assert gf.decide_many(arr.astype(np.int64), version=4) == expected
    with pytest.raises(InvalidAddressError):
        gf.decide_many(np.array([-1], dtype=np.int64), version=4)


# -- context: subjects and signals ------------------------------------------------------------

SUBJECTS = policy(
    """
    [policy]
    id = "subjects"
    on_unresolved = "challenge"
    [[rules]]
    id = "deny-ir-nationals"
    action = "deny"
    subject = { nationality = ["IR"] }
    [[rules]]
    id = "review-unverified"
    action = "review"
    subject = { verified = false }
    [[rules]]
    id = "route-cu-accounts"
    action = "route:limited"
    subject = { account_country = ["CU"] }
    """
)


@pytest.mark.parametrize(
    ("subject", "action", "rule_id", "reason"),
    [
        (Subject(nationalities=frozenset({"IR"})), Action.DENY, "deny-ir-nationals", None),
        (Subject(nationalities=frozenset({"US", "IR"})), Action.DENY, "deny-ir-nationals", None),
        (
            Subject(nationalities=frozenset({"US"}), verified=False),
            Action.REVIEW,
            "review-unverified",
            None,
        ),
        (
            Subject(nationalities=frozenset({"US"}), verified=True, account_country="CU"),
            Action.ROUTE,
            "route-cu-accounts",
            None,
        ),
        (
            Subject(nationalities=frozenset({"US"}), verified=True, account_country="US"),
            Action.ALLOW,
            None,
            None,
        ),
        (Subject(id="x"), Action.CHALLENGE, "deny-ir-nationals", "unresolved:subject.nationality"),
        (
            Subject(nationalities=frozenset({"US"})),
            Action.CHALLENGE,
            "review-unverified",
            "unresolved:subject.verified",
        ),
        (None, Action.CHALLENGE, "deny-ir-nationals", "unresolved:subject"),
    ],
)
def test_subject_rules(
    make_gf: MakeGf,
    subject: Subject | None,
    action: Action,
    rule_id: str | None,
    reason: str | None,
) -> None:
    """Subject conditions decide with a context; missing attributes are unresolved."""
    d = make_gf(SUBJECTS).decide(ADDR["us"], Context(subject=subject))
    assert (d.action, d.rule_id) == (action, rule_id)
    if reason is not None:
        assert (d.reasons[0], d.outcome) == (reason, "unresolved")
    assert d.address == ADDR["us"]


def test_subject_rules_without_context(make_gf: MakeGf) -> None:
    """Without a context, a subject rule is unresolved for IP-only decisions."""
    d = make_gf(SUBJECTS).decide(ADDR["us"])
    assert (d.action, d.outcome, d.reasons) == (
        Action.CHALLENGE,
        "unresolved",
        ("unresolved:subject", "rule:deny-ir-nationals"),
    )


def test_subject_ids_and_orgs(make_gf: MakeGf) -> None:
    """Subject ids and org_ids match exactly; a subject without them does not match."""
    p = policy(
        """
        [policy]
        id = "ids"
        [[rules]]
        id = "deny-id"
        action = "deny"
        subject = { ids = ["bad-1"] }
        [[rules]]
        id = "route-org"
        action = "route:org-tier"
        subject = { org_ids = ["org-9"] }
        """
    )
    gf = make_gf(p)
    assert gf.decide(ADDR["us"], Context(subject=Subject(id="bad-1"))).rule_id == "deny-id"
    assert gf.decide(ADDR["us"], Context(subject=Subject(org_id="org-9"))).route == "org-tier"
    assert gf.decide(ADDR["us"], Context(subject=Subject(id="ok"))).outcome == "default"


def test_a_failing_condition_beats_a_missing_attribute(make_gf: MakeGf) -> None:
    """A rule with one condition that fails does not match, even if another is unknown."""
    p = policy(
        """
        [policy]
        id = "kleene"
        on_unresolved = "challenge"
        [[rules]]
        id = "ir-nationals-with-cu-accounts"
        action = "deny"
        subject = { nationality = ["IR"], account_country = ["CU"] }
        [[rules]]
        id = "unverified-with-tz-mismatch"
        action = "review"
        subject = { verified = false }
        signals = ["tz_mismatch"]
        """
    )
    gf = make_gf(p)
    # Nationality unknown, but the account is not Cuban: the first rule cannot match.
    d = gf.decide(ADDR["us"], Context(subject=Subject(account_country="US", verified=True)))
    assert (d.action, d.outcome) == (Action.ALLOW, "default")
    # Verification unknown, but no tz_mismatch signal: the second rule cannot match.
    d = gf.decide(ADDR["us"], Context(subject=Subject(nationalities=frozenset({"US"}))))
    assert (d.action, d.outcome) == (Action.ALLOW, "default")
    # No subject at all, and no signal: still cannot match.
    d = gf.decide(ADDR["us"], Context(subject=None, signals=()))
    assert d.rule_id == "ir-nationals-with-cu-accounts"  # unresolved: nothing fails there
    assert d.reasons[0] == "unresolved:subject"
    # Unknown stays unresolved when nothing fails.
    d = gf.decide(ADDR["us"], Context(subject=Subject(account_country="CU")))
    assert (d.action, d.reasons[0]) == (Action.CHALLENGE, "unresolved:subject.nationality")


SIGNALS = policy(
    """
    [policy]
    id = "signals"
    on_unresolved = "review"
    [[rules]]
    id = "challenge-tz"
    action = "challenge"
    signals = ["tz_mismatch"]
    [[rules]]
    id = "deny-risky"
    action = "deny"
    min_risk = 3.0
    [signal_weights]
    header_spoof = 2.5
    """
)


def test_signal_rules(make_gf: MakeGf) -> None:
    """A rule naming a signal code matches when that signal is present in the context."""
    gf = make_gf(SIGNALS)
    sig = Signal(code="tz_mismatch", weight=1.0, detail="Asia/Tehran vs US")
    d = gf.decide(ADDR["us"], Context(signals=(sig,)))
    assert (d.action, d.rule_id, d.risk) == (Action.CHALLENGE, "challenge-tz", 1.0)
    assert d.signals == (sig,)
    assert "Signal tz_mismatch" in d.explain()
    calm = gf.decide(ADDR["us"], Context(signals=(Signal(code="lang_mismatch", weight=0.5),)))
    assert (calm.outcome, calm.risk) == ("default", 0.5)


def test_min_risk_and_signal_weights(make_gf: MakeGf) -> None:
    """min_risk compares the sum of weights; [signal_weights] overrides a signal's weight."""
    gf = make_gf(SIGNALS)
    spoof = Signal(code="header_spoof", weight=0.1)
    travel = Signal(code="impossible_travel", weight=0.5)
    d = gf.decide(ADDR["us"], Context(signals=(spoof, travel)))
    assert (d.action, d.rule_id, d.risk) == (Action.DENY, "deny-risky", 3.0)
    assert d.signals[0].weight == 2.5
    low = gf.decide(ADDR["us"], Context(signals=(travel,)))
    assert (low.outcome, low.risk) == ("default", 0.5)


def test_signal_rules_without_context(make_gf: MakeGf) -> None:
    """Without a context, signal and risk rules are unresolved (reason: context)."""
    d = make_gf(SIGNALS).decide(ADDR["us"])
    assert (d.action, d.reasons) == (Action.REVIEW, ("unresolved:context", "rule:challenge-tz"))


def test_address_rules_decide_before_context_rules(make_gf: MakeGf) -> None:
    """With a context, an address rule before a subject rule still decides first."""
    gf = make_gf(load_policy("domestic-only"))
    us = Context(subject=Subject(nationalities=frozenset({"US"})))
    assert gf.decide(ADDR["gb"], us).rule_id == "domestic-location"
    assert gf.decide(ADDR["us"], us).action is Action.ALLOW


# -- audit: to_json and explain ------------------------------------------------------------


def test_to_json_is_one_audit_line(make_gf: MakeGf, world: Snapshot) -> None:
    """to_json gives one line of valid JSON with the address, snapshot id and policy digest."""
    gf = make_gf(ACTIONS)
    line = gf.decide(ADDR["ir"]).to_json(address=ADDR["ir"], at=1_800_000_000.0, request="r-1")
    assert "\n" not in line
    data = json.loads(line)
    assert data["snapshot_id"] == world.snapshot_id
    assert data["policy_digest"] == ACTIONS.digest
    assert data["policy_id"] == "actions"
    assert (data["action"], data["rule_id"], data["address"]) == ("deny", "deny-ir", ADDR["ir"])
    assert data["reasons"] == ["rule:deny-ir"]
    assert (data["ts"], data["request"]) == (1_800_000_000.0, "r-1")
    routed = json.loads(gf.decide(ADDR["ru"]).to_json())
    assert (routed["action"], routed["route"]) == ("route", "eu-tier")
    ctx = gf.decide(ADDR["us"], Context(signals=(Signal(code="tz_mismatch"),)))
    assert json.loads(ctx.to_json())["signals"][0]["code"] == "tz_mismatch"


def test_explain_names_rule_and_provenance(make_gf: MakeGf, world: Snapshot) -> None:
    """explain() names the action, the rule id, the address, the data and the policy."""
    gf = make_gf(ACTIONS)
    text = gf.explain(ADDR["ir"])
    for part in ("deny", "'deny-ir'", ADDR["ir"], world.snapshot_id, ACTIONS.digest, "test-geo"):
        assert part in text
    tunnelled = gf.explain(mapped(ADDR["ir"]))
    assert "tunnelled (ipv4_mapped)" in tunnelled
    assert "on_unresolved" in make_gf(UNRESOLVED).explain(ADDR["ua_nosub"])


# -- reload and watch ------------------------------------------------------------------------

OTHER = policy(
    """
    [policy]
    id = "other"
    [[rules]]
    id = "deny-gb"
    action = "deny"
    jurisdictions = ["GB"]
    """
)


def test_reload_swaps_policy(make_gf: MakeGf) -> None:
    """reload(policy=...) swaps the policy and clears the cache."""
    gf = make_gf(ACTIONS, cache_size=100)
    assert gf.decide(ADDR["ir"]).action is Action.DENY
    gf.reload(policy=OTHER)
    assert gf.policy is OTHER
    assert gf.decide(ADDR["ir"]).action is Action.ALLOW
    assert gf.decide(ADDR["gb"]).policy_digest == OTHER.digest


def test_reload_swaps_snapshot(make_gf: MakeGf, world: Snapshot) -> None:
    """reload(snapshot=...) swaps the data and keeps the policy."""
    from geofence.records import NetworkRecord
    from geofence.snapshot.build import build_snapshot
    from geofence.sources.base import RangeEntry
    from tests.strategies import make_source

    entry = RangeEntry(4, 0x01000300, 0x010003FF, NetworkRecord(country="GB"))
    other = Snapshot.from_bytes(build_snapshot([make_source("other", [entry])]))
    gf = make_gf(ACTIONS)
    gf.reload(snapshot=other)
    d = gf.decide(ADDR["ir"])
    assert (d.country, d.rule_id, d.snapshot_id) == ("GB", "review-gb", other.snapshot_id)
    assert gf.policy is ACTIONS
    assert gf.snapshot is other


def test_failed_reload_keeps_old_state(make_gf: MakeGf, tmp_path: Path) -> None:
    """A reload with an invalid policy file raises and the old state keeps serving."""
    good = tmp_path / "policy.toml"
    good.write_text(
        '[policy]\nid = "p"\n[[rules]]\nid = "deny-ir"\naction = "deny"\njurisdictions = ["IR"]\n',
        encoding="utf-8",
    )
    gf = make_gf(str(good), cache_size=10)
    before = gf.decide(ADDR["ir"])
    digest = gf.policy.digest
    good.write_text(
        '[policy]\nid = "p"\n[[rules]]\nid = "deny-xx"\naction = "deny"\njurisdictions = ["XX"]\n',
        encoding="utf-8",
    )
    with pytest.raises(PolicyError, match="deny-xx"):
        gf.reload()
    with pytest.raises(PolicyError):
        gf.reload(policy=tmp_path / "missing.toml")
    assert gf.policy.digest == digest
    assert gf.decide(ADDR["ir"]) == before
    assert gf.decide(ADDR["ir"]).action is Action.DENY


def test_reload_keeps_preset_params(make_gf: MakeGf) -> None:
    """Reloading an engine built from a parameterised preset keeps the given params."""
    pol = load_policy("domestic-only", params={"home": ["GB"]})
    gf = make_gf(pol)
    gb = Context(subject=Subject(nationalities=frozenset({"GB"})))
    assert gf.decide(ADDR["gb"], gb).action is Action.ALLOW
    gf.reload()
    assert gf.policy.digest == pol.digest
    assert gf.decide(ADDR["gb"], gb).action is Action.ALLOW


def test_reload_rereads_a_policy_file(make_gf: MakeGf, tmp_path: Path) -> None:
    """An engine built from a Policy loaded from a file re-reads that file on reload."""
    path = tmp_path / "p.toml"
    path.write_text('[policy]\nid = "p"\ndefault = "allow"\n', encoding="utf-8")
    gf = make_gf(load_policy(path))
    path.write_text('[policy]\nid = "p"\ndefault = "review"\n', encoding="utf-8")
    gf.reload()
    assert gf.decide(ADDR["us"]).action is Action.REVIEW


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_watch_reloads_on_file_change(make_gf: MakeGf, tmp_path: Path) -> None:
    """The watcher reloads after the policy file changes, and survives a bad version."""
    path = tmp_path / "watched.toml"
    path.write_text('[policy]\nid = "w"\ndefault = "allow"\n', encoding="utf-8")
    gf = make_gf(str(path))
    gf.watch(interval=0.01)
    first = gf.policy.digest

    def write(text: str) -> None:
        path.write_text(text, encoding="utf-8")
        stamp = time.time_ns() + 10_000_000_000  # a distinct mtime even on coarse clocks
        os.utime(path, ns=(stamp, stamp))

    write('[policy]\nid = "w"\ndefault = "deny"\n')
    assert _wait_for(lambda: gf.policy.digest != first)
    assert gf.decide(ADDR["us"]).action is Action.DENY
    second = gf.policy.digest
    write('[policy]\nid = "w"\ndefault = "bogus"\n')  # invalid: logged, old state kept
    time.sleep(0.1)
    assert gf.policy.digest == second
    write('[policy]\nid = "w"\ndefault = "challenge"\n')
    assert _wait_for(lambda: gf.decide(ADDR["us"]).action is Action.CHALLENGE)
    gf.close()


def test_parsed_addresses_take_the_inline_search(make_gf: MakeGf) -> None:
    """decide(ParsedAddress) (what the middleware passes) equals the general parsed path.

    Also for ``unwrap=False`` parses of tunnel prefixes (table slot None, so the
    general path unwraps) and for text, which must give the very same object.
    """
    gf = make_gf(ACTIONS)
    state = gf._state
    for text in _all_addresses():
        parsed = parse_address(text)
        assert gf.decide(parsed) is gf._decide_parsed(state, parsed), text
        assert gf.decide(parsed) is gf.decide(text), text
        raw = parse_address(text, unwrap=False)
        assert gf.decide(raw) is gf.decide(text), text


@settings(max_examples=300, deadline=None)
@given(addresses())
def test_parsed_inline_search_matches_locate(address: tuple[int, int]) -> None:
    """The inline search of a ParsedAddress picks what the compiled policy's locate() does.

    Over random addresses of both families, edges and tunnels included.
    """
    version, value = address
    gf = _OFAC_ENGINE()
    parsed = parse_address(value, version=version)
    assert gf.decide(parsed) is gf._decide_parsed(gf._state, parsed)
    assert gf.decide(parsed) is gf.decide(parsed.original_text)


def _ofac_engine() -> Callable[[], Geofence]:
    engine: list[Geofence] = []

    def get() -> Geofence:
        if not engine:
            engine.append(Geofence(None, "us-ofac-comprehensive"))
        return engine[0]

    return get


_OFAC_ENGINE = _ofac_engine()


def test_needs_context_follows_the_policy_in_use(make_gf: MakeGf) -> None:
    """Geofence.needs_context says whether the current policy has context rules, after reloads."""
    gf = make_gf(ACTIONS)
    assert gf.needs_context is False
    gf.reload(policy=SUBJECTS)
    assert gf.needs_context is True
    gf.reload(policy=ACTIONS)
    assert gf.needs_context is False

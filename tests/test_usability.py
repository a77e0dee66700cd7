"""What users of geoip2, maxminddb and typed code expect of the core API (issue 15).

Closed vocabularies are ``str`` enums, a snapshot closes like a maxminddb
reader, a lookup without data raises ``AddressNotFoundError`` where geoip2 does,
the policy that decided is always named, and shadow mode is an engine option.
"""

from __future__ import annotations

import io
import ipaddress
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from geofence import AddressNotFoundError, GeofenceError
from geofence.addr import TunnelKind, parse_address
from geofence.cli import main
from geofence.decision import Action, parse_action
from geofence.engine import Geofence
from geofence.errors import SnapshotError
from geofence.kinds import SpecialRange
from geofence.snapshot.reader import Snapshot
from geofence.testing import make_geofence, make_snapshot

NETWORKS = {"1.0.0.0/8": {"country": "US"}, "2.0.0.0/8": {"country": "CU"}}
POLICY = """
[policy]
id = "embargo"
default = "allow"

[[rules]]
id = "deny-cu"
action = "deny"
jurisdictions = ["CU"]
"""


# -- point 6: closed vocabularies are str enums ------------------------------------------------


@pytest.mark.parametrize("enum", [Action, SpecialRange, TunnelKind])
def test_closed_vocabularies_compare_and_print_as_their_values(enum: type) -> None:
    """``str(m)`` is the value, ``m == value`` holds, and lookups by value give the member."""
    for member in enum:  # type: ignore[attr-defined]  # iterating an enum class
        assert str(member) == member.value
        assert member == member.value
        assert f"{member}" == member.value
        assert enum(member.value) is member
        assert isinstance(member, str)


def test_action_in_typed_comparisons() -> None:
    """``decision.action == "deny"`` is True for a deny (no ``.value`` needed)."""
    gf = make_geofence(NETWORKS, POLICY)
    decision = gf.decide("2.3.4.5")
    assert decision.action == "deny"
    assert decision.action == Action.DENY
    assert decision.action is Action.DENY
    assert parse_action("route:eu")[0] == "route"
    assert {"deny": 1}[decision.action] == 1  # hashes like its value


# -- point 13: close(), context manager, AddressNotFoundError -----------------------------------


def test_snapshot_close_and_context_manager(tmp_path: Path) -> None:
    """A closed snapshot refuses lookups; engines built from it go on deciding."""
    snap = make_snapshot(NETWORKS)
    engine = Geofence(snap, policy_path(tmp_path))
    with snap as same:
        assert same is snap
        assert not snap.closed
        assert snap.get("2.3.4.5") is not None
    assert snap.closed
    with pytest.raises(SnapshotError, match="closed"):
        snap.get("2.3.4.5")
    with pytest.raises(SnapshotError, match="closed"):
        snap.lookup("2.3.4.5")
    snap.close()  # twice is harmless
    assert engine.decide("2.3.4.5").action is Action.DENY


def policy_path(tmp_path: Path) -> str:
    path = tmp_path / "embargo.toml"
    path.write_text(POLICY, encoding="utf-8")
    return str(path)


def test_find_raises_address_not_found_with_the_network() -> None:
    """``find`` answers a record or raises AddressNotFoundError naming the empty network."""
    snap = make_snapshot(NETWORKS)
    assert snap.find("1.2.3.4").country == "US"
    with pytest.raises(AddressNotFoundError) as info:
        snap.find("3.4.5.6")
    error = info.value
    assert isinstance(error, LookupError)
    assert isinstance(error, GeofenceError)
    assert error.ip_address == "3.4.5.6"
    assert isinstance(error.network, ipaddress.IPv4Network)
    assert ipaddress.ip_address("3.4.5.6") in error.network
    assert not error.network.overlaps(ipaddress.ip_network("2.0.0.0/8"))
    with pytest.raises(AddressNotFoundError):
        snap.find("10.0.0.1")  # special-purpose: no data either
    assert snap.get("3.4.5.6") is None  # get() keeps maxminddb's None


# -- point 14: which policy applied --------------------------------------------------------------


def test_geofence_without_policy_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """No policy: a warning is logged and explain() names allow-all as the default."""
    snap = make_snapshot(NETWORKS)
    with caplog.at_level(logging.WARNING, logger="geofence"):
        engine = Geofence(snap)
    assert "without a policy" in caplog.text
    text = engine.explain("2.3.4.5")
    assert "Policy: allow-all" in text
    assert "given no policy" in text
    named = Geofence(snap, "allow-all")
    assert "given no policy" not in named.explain("2.3.4.5")


def test_explain_names_the_policy() -> None:
    """Decision.explain has a Policy line with id and digest."""
    gf = make_geofence(NETWORKS, POLICY)
    text = gf.explain("2.3.4.5")
    assert f"Policy: embargo (digest {gf.policy.digest})" in text


def test_cli_decide_names_the_policy_and_warns_without_one(tmp_path: Path) -> None:
    """Every decide line names the policy; without --policy a notice goes to stderr."""
    out, err = io.StringIO(), io.StringIO()
    assert main(["decide", "8.8.8.8"], out=out, err=err) == 0
    assert "[policy allow-all]" in out.getvalue()
    assert "no --policy given" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert main(["decide", "8.8.8.8", "--policy", policy_path(tmp_path)], out=out, err=err) == 0
    assert "[policy embargo]" in out.getvalue()
    assert err.getvalue() == ""


# -- point 9: shadow mode as an engine option ----------------------------------------------------


def test_shadow_option_enforces_allow_and_records_the_action(tmp_path: Path) -> None:
    """Geofence(shadow=True): allow enforced, deny recorded; kept across reloads."""
    snap = make_snapshot(NETWORKS)
    engine = Geofence(snap, policy_path(tmp_path), shadow=True)
    decision = engine.decide("2.3.4.5")
    assert decision.action is Action.ALLOW
    assert decision.shadow
    assert decision.shadow_action is Action.DENY
    assert decision.shadow_rule_id == "deny-cu"
    engine.reload()
    assert engine.decide("2.3.4.5").shadow_action is Action.DENY
    assert engine.decide("2.3.4.5").action is Action.ALLOW
    enforcing = Geofence(snap, policy_path(tmp_path))
    assert enforcing.decide("2.3.4.5").action is Action.DENY


def test_decision_as_shadow_matches_a_shadow_policy(tmp_path: Path) -> None:
    """Decision.as_shadow gives what a shadow-mode policy decides for the same address."""
    snap = make_snapshot(NETWORKS)
    enforcing = Geofence(snap, policy_path(tmp_path)).decide("2.3.4.5")
    shadowed = Geofence(snap, policy_path(tmp_path), shadow=True).decide("2.3.4.5")
    # The same in every field but the digest (a shadow policy is another policy).
    assert replace(enforcing.as_shadow(), policy_digest="") == replace(shadowed, policy_digest="")
    assert shadowed.as_shadow() is shadowed


def test_parsed_address_is_positional_and_keyword() -> None:
    """ParsedAddress builds positionally (the hot path) and by keyword alike."""
    parsed = parse_address("::ffff:1.2.3.4")
    assert parsed.tunnel == "ipv4_mapped"
    assert parsed.tunnel is TunnelKind.IPV4_MAPPED
    assert parse_address("10.0.0.1").special == "private"


def test_snapshot_default_can_be_used_as_a_context_manager() -> None:
    """The bundled snapshot opens and closes like a maxminddb reader."""
    with Snapshot.default() as snap:
        assert snap.get("8.8.8.8") is not None
    assert snap.closed

"""The export API on a small hand-made world.

Headers, formats, what the edge cannot decide, and bad input (clear errors, no
partial files).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest

from geofence.decision import Action
from geofence.engine import Geofence
from geofence.errors import PolicyError
from geofence.export import (
    FORMATS,
    ExportError,
    compile_for_edge,
    explain,
    export,
    export_table,
    verdict_table,
    write_text_atomic,
)
from geofence.policy.model import Policy
from geofence.snapshot.reader import Snapshot
from tests.export.conftest import GENERATED, TODAY, key_of
from tests.policy.conftest import ADDR, build_world, policy, teredo

SANCTIONS = """
    [policy]
    id = "world-sanctions"
    version = "2026-11-01"
    default = "allow"
    on_unresolved = "challenge"
    [[rules]]
    id = "iran"
    action = "deny"
    jurisdictions = ["IR"]
    [[rules]]
    id = "crimea"
    action = "deny"
    jurisdictions = ["UA-43", "UA-40"]
    [[rules]]
    id = "russia-tier"
    action = "route:fallback-tier"
    jurisdictions = ["RU"]
    [[rules]]
    id = "nationals"
    action = "deny"
    jurisdictions = ["GB"]
    subject = { nationality = ["KP"] }
"""


@cache
def world() -> Snapshot:
    """The policy tests' world snapshot."""
    return build_world()


def _sanctions() -> Policy:
    return policy(SANCTIONS)


def test_every_format_has_the_header() -> None:
    """Every output starts with the header.

    It names the snapshot, data date, policy id/version/digest, generation time, the
    counts, the rules the edge cannot decide and the data's attribution.
    """
    pol = _sanctions()
    snap = world()
    for fmt in FORMATS:
        result = export(pol, fmt, snapshot=snap, today=TODAY, generated_at=GENERATED)
        head = result.text[:4000]
        for needed in (
            snap.snapshot_id,
            pol.digest,
            pol.id,
            "2026-11-01",
            "2026-11-27T12:00:00",
            "nationals",
            *(s.attribution or s.name for s in snap.sources),
        ):
            assert needed in head, (fmt, needed)
        assert result.entries, fmt
        assert all(a + b > 0 for a, b in result.entries.values()), fmt
        if fmt == "json":
            data = json.loads(result.text)
            assert data["meta"]["snapshot_id"] == snap.snapshot_id
            assert data["meta"]["context_rules"][0]["rule_id"] == "nationals"
        else:
            assert result.text.startswith("# geofence edge export")


def test_json_ranges_match_decide() -> None:
    """Each JSON range's action, route and rule id are decide()'s for both of its ends."""
    pol = _sanctions()
    result = export(pol, "json", snapshot=world(), today=TODAY, actions=["deny", "route"])
    rows = json.loads(result.text)["ranges"]
    assert {r["rule_id"] for r in rows} >= {"iran", "crimea", "russia-tier"}
    stated = [r for r in rows if r["outcome"] == "stated"]
    assert [(r["first"], r["last"]) for r in stated] == [
        ("2001::", "2001:0:ffff:ffff:ffff:ffff:ffff:ffff")
    ]
    with Geofence(world(), pol, today=lambda: TODAY) as gf:
        for row in rows:
            if row["outcome"] == "stated":
                continue  # stated, not decided per address
            for end in (row["first"], row["last"]):
                d = gf.decide(end)
                assert (d.action.value, d.route, d.rule_id) == (
                    row["action"],
                    row["route"],
                    row["rule_id"],
                ), end


def test_map_default_and_listing() -> None:
    """Without --actions, all values but the one with the most blocks are listed.

    That one is the map's default; with --actions, the rest gets a placeholder
    when it is not one verdict.
    """
    vt = verdict_table(compile_for_edge(_sanctions(), world(), today=TODAY))
    full = export_table(vt, "haproxy")
    assert full.listing.default == "allow"
    assert full.listing.exact_default
    assert set(full.listing.listed) == {"deny", "challenge", "route:fallback-tier"}
    only = export_table(vt, "haproxy", actions=["deny"])
    assert only.listing.listed == ("deny",)
    assert only.listing.default == "other"
    assert not only.listing.exact_default
    routes = export_table(vt, "nginx", actions=["route"])
    assert routes.listing.listed == ("route:fallback-tier",)
    assert "$geofence_route" in routes.text


def test_nginx_style_auto_picks_the_shorter() -> None:
    """``auto`` gives whichever of the CIDR and ``ranges`` styles has fewer lines."""
    vt = verdict_table(compile_for_edge(_sanctions(), world(), today=TODAY))
    styles = {
        s: export_table(vt, "nginx", nginx_style=s, generated_at=GENERATED)
        for s in ("cidr", "ranges")
    }
    auto = export_table(vt, "nginx", generated_at=GENERATED)
    assert auto.lines == min(r.lines for r in styles.values())


def test_nftables_sets_per_action_and_family() -> None:
    """The nftables export replaces one named interval set per listed value and family."""
    vt = verdict_table(compile_for_edge(_sanctions(), world(), today=TODAY))
    text = export_table(vt, "nftables", name="edge").text
    for set_name in ("deny_v4", "deny_v6", "route_fallback_tier_v4", "route_fallback_tier_v6"):
        assert f"add set inet edge {set_name} {{ type ipv" in text
        assert f"flush set inet edge {set_name}" in text


def test_teredo_is_stated() -> None:
    """Teredo gets the most restrictive verdict, or the one asked for; the header says so."""
    pol = _sanctions()
    default = export(pol, "cidr", snapshot=world(), today=TODAY)
    assert default.table.stated.action is Action.DENY
    assert "Teredo 2001::/32: deny" in default.text
    asked = export(pol, "cidr", snapshot=world(), today=TODAY, teredo="allow")
    assert asked.table.stated.action is Action.ALLOW
    body = [line for line in asked.text.splitlines() if not line.startswith("#")]
    assert "2001::/32" in default.text.splitlines()
    assert "2001::/32" not in body
    with Geofence(world(), pol, today=lambda: TODAY) as gf:
        assert key_of(gf.decide(teredo(ADDR["ir"]))) == "deny"  # decided per address in-app
    with pytest.raises(ExportError, match="teredo"):
        export(pol, "cidr", snapshot=world(), today=TODAY, teredo="block")


def test_tunnels_stated_instead_of_expanded() -> None:
    """Tunnels not expanded: 6to4, NAT64 and IPv4-mapped are one stated block each.

    The header says so, and the IPv4 and native IPv6 lines are unchanged.
    """
    pol = _sanctions()
    full = export(pol, "cidr", snapshot=world(), today=TODAY, actions=["deny"])
    short = export(
        pol, "cidr", snapshot=world(), today=TODAY, actions=["deny"], expand_tunnels=False
    )
    body = [line for line in short.text.splitlines() if not line.startswith("#")]
    assert {"2002::/16", "64:ff9b::/96", "::ffff:0.0.0.0/96", "2001::/32"} <= set(body)
    assert "6to4 2002::/16, NAT64 64:ff9b::/96, IPv4-mapped ::ffff:0:0/96: deny" in short.text
    assert short.entries["deny"][0] == full.entries["deny"][0]
    assert short.lines < full.lines
    native = [x for x in body if ":" in x and not x.startswith(("2002:", "64:ff9b:", "::ffff:"))]
    full_native = [
        x
        for x in full.text.splitlines()
        if ":" in x and not x.startswith(("#", "2002:", "64:ff9b:", "::ffff:"))
    ]
    assert native == full_native


def test_explain_names_what_the_edge_cannot_decide() -> None:
    """--explain names each rule that needs a context and where it is reached."""
    vt = verdict_table(compile_for_edge(_sanctions(), world(), today=TODAY))
    text = explain(vt)
    assert "Rule nationals needs subject" in text
    (rule,) = vt.context_rules
    assert rule.rule_id == "nationals"
    assert rule.needs == ("subject",)
    assert rule.ipv4_addresses > 0
    exact = policy(
        """
        [policy]
        id = "ip-only"
        [[rules]]
        id = "iran"
        action = "deny"
        jurisdictions = ["IR"]
        """
    )
    assert "the export is exact" in explain(verdict_table(compile_for_edge(exact, world())))


def test_bad_input_errors() -> None:
    """Unknown formats, styles, names, actions, empty results, context-only policies: errors."""
    pol = _sanctions()
    with pytest.raises(ExportError, match="unknown export format 'iptables'"):
        export(pol, "iptables", snapshot=world())
    vt = verdict_table(compile_for_edge(pol, world(), today=TODAY))
    with pytest.raises(ExportError, match="unknown action 'block'"):
        export_table(vt, "cidr", actions=["block"])
    with pytest.raises(ExportError, match="nginx style"):
        export_table(vt, "nginx", nginx_style="tree")
    with pytest.raises(ExportError, match="name"):
        export_table(vt, "nginx", name="a-b;")
    with pytest.raises(ExportError, match=r"no address gets review.*its verdicts: allow, chal"):
        export_table(vt, "cidr", actions=["review"])
    allow_all = policy('[policy]\nid = "open"')
    with pytest.raises(ExportError, match="every address gets 'allow'"):
        export(allow_all, "nftables", snapshot=world())
    context_only = policy(
        """
        [policy]
        id = "persons"
        [[rules]]
        id = "kp-nationals"
        action = "deny"
        subject = { nationality = ["KP"] }
        """
    )
    with pytest.raises(PolicyError, match="every rule needs a request context"):
        export(context_only, "nginx", snapshot=world())


def test_write_is_atomic(tmp_path: Path) -> None:
    """A write replaces the file whole; a failed write leaves no file and no temp file."""
    target = tmp_path / "geofence.conf"
    write_text_atomic("old\n", target)
    write_text_atomic("new\n", target)
    assert target.read_text() == "new\n"
    assert os.listdir(tmp_path) == ["geofence.conf"]
    missing = tmp_path / "no-such-dir" / "x.conf"
    with pytest.raises(ExportError, match="cannot write"):
        write_text_atomic("x", missing)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores the mode: make the rename fail instead
            (ro / "x.conf").mkdir()
            with pytest.raises(ExportError, match="cannot write"):
                write_text_atomic("x", ro / "x.conf")
            assert os.listdir(ro) == ["x.conf"]
        else:
            with pytest.raises(ExportError, match="cannot write"):
                write_text_atomic("x", ro / "x.conf")
            assert os.listdir(ro) == []
    finally:
        ro.chmod(0o700)

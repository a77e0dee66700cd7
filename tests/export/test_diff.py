"""Policy and data diffs: the address space that changes verdict, per country and action."""

from __future__ import annotations

import ipaddress
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.engine import Geofence
from geofence.export import compile_for_edge, diff, load_compiled
from geofence.records import NetworkRecord
from geofence.snapshot.build import build_snapshot
from geofence.snapshot.reader import Snapshot
from geofence.sources.base import RangeEntry
from tests.export.conftest import TODAY, key_of
from tests.policy.conftest import LOCATIONS, build_world, policy
from tests.policy.test_properties import _cidr_pool, _near, _snapshot, policies
from tests.strategies import addresses, make_source, source_sets

BASE = """
    [policy]
    id = "base"
    version = "1"
    [[rules]]
    id = "iran"
    action = "deny"
    jurisdictions = ["IR"]
"""
WIDER = """
    [policy]
    id = "wider"
    version = "2"
    [[rules]]
    id = "iran"
    action = "deny"
    jurisdictions = ["IR"]
    [[rules]]
    id = "russia"
    action = "route:fallback"
    jurisdictions = ["RU"]
"""


def _size(country: str, version: int) -> int:
    """Addresses the world's location source gives ``country`` in one family."""
    nets = [ipaddress.ip_network(n) for n, rec in LOCATIONS.values() if rec.country == country]
    return sum(n.num_addresses for n in nets if n.version == version)


def test_policy_diff_counts_per_country_and_action() -> None:
    """Adding a Russia rule changes exactly the Russian address space, allow -> route."""
    world = build_world()
    old = compile_for_edge(policy(BASE), world, today=TODAY)
    new = compile_for_edge(policy(WIDER), world, today=TODAY)
    result = diff(old, new)
    assert [(c.country, c.old, c.new) for c in result.changes] == [
        ("RU", "allow", "route:fallback")
    ]
    (change,) = result.changes
    assert change.ipv4_addresses == _size("RU", 4)
    assert change.ipv6_addresses == _size("RU", 6)
    assert change.ranges == 2  # 1.0.18.0/24 and 1.0.21.0/24 are not adjacent
    assert {r.network for r in result.top} == {"1.0.18.0/24", "1.0.21.0/24"}
    data = json.loads(result.to_json())
    assert data["old"]["policy_id"] == "base"
    assert data["new"]["policy_version"] == "2"
    assert data["changes"][0]["ipv4_addresses"] == 512
    table = result.table()
    assert "RU" in table
    assert "allow -> route:fallback" in table
    assert "1.0.18.0/24" in table
    assert not diff(old, old).changed
    assert "no address changes verdict" in diff(old, old).table()


def test_data_diff_names_the_new_country() -> None:
    """Moving a /24 from US to IR in the data shows as IR allow -> deny under one policy."""
    world = build_world()
    moved = ipaddress.ip_network(LOCATIONS["us"][0])
    entries = [
        RangeEntry(
            net.version,
            int(net.network_address),
            int(net.broadcast_address),
            NetworkRecord(country="IR") if net == moved else rec,
        )
        for net, rec in ((ipaddress.ip_network(n), r) for n, r in LOCATIONS.values())
    ]
    changed = Snapshot.from_bytes(build_snapshot([make_source("test-geo", entries)], force=True))
    pol = policy(BASE)
    result = diff(
        compile_for_edge(pol, world, today=TODAY), compile_for_edge(pol, changed, today=TODAY)
    )
    ir = [c for c in result.changes if c.country == "IR"]
    assert [(c.old, c.new, c.ipv4_addresses) for c in ir] == [("allow", "deny", 256)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entry_sets=source_sets(max_sources=2, max_entries=5), data=st.data())
def test_diff_agrees_with_decide(entry_sets: list[list[RangeEntry]], data: st.DataObject) -> None:
    """An address outside tunnel prefixes is in a changed range iff decide() differs."""
    snapshot = _snapshot(entry_sets)
    pool = _cidr_pool(_near(entry_sets))
    pa = data.draw(policies(pool), label="old")
    pb = data.draw(policies(pool), label="new")
    result = diff(
        load_compiled(pa, snapshot, today=TODAY),
        load_compiled(pb, snapshot, today=TODAY),
        top=1_000_000,
    )
    total = {4: 0, 6: 0}
    for c in result.changes:
        total[4] += c.ipv4_addresses
        total[6] += c.ipv6_addresses
    assert total[4] == sum(r.size for r in result.top if r.version == 4)
    assert total[6] == sum(r.size for r in result.top if r.version == 6)
    picked = data.draw(st.lists(addresses(), max_size=12), label="addresses")
    with (
        Geofence(snapshot, pa, today=lambda: TODAY) as ga,
        Geofence(snapshot, pb, today=lambda: TODAY) as gb,
    ):
        for version, value in picked:
            cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            text = str(cls(value))
            if ga.decide(text).tunnel is not None:
                continue
            inside = any(r.version == version and r.first <= value <= r.last for r in result.top)
            assert inside == (key_of(ga.decide(text)) != key_of(gb.decide(text))), text

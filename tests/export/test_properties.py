"""Properties of the verdict table and the CIDR lists made from it, on random snapshots."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.addr import TUNNEL_RANGES, V4_MAX, V6_MAX
from geofence.engine import Geofence
from geofence.export import export_table, verdict_table
from geofence.export.cidr import range_cidrs
from geofence.export.table import compiled_segments
from geofence.policy.compile import compile_policy
from geofence.snapshot.partition import TUNNEL_BY_ID
from geofence.sources.base import RangeEntry
from tests.export.conftest import GENERATED, TEREDO, TODAY, key_of
from tests.policy.test_properties import _cidr_pool, _near, _snapshot, policies
from tests.strategies import addresses, source_sets

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
Intervals = list[tuple[int, int]]


def _normal(intervals: Intervals) -> Intervals:
    """Sorted, with touching intervals joined."""
    out: Intervals = []
    for first, last in sorted(intervals):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def _minus(intervals: Intervals, holes: Intervals) -> Intervals:
    """``intervals`` without the addresses of ``holes`` (both normalised)."""
    out: Intervals = []
    for first, last in intervals:
        start = first
        for lo, hi in holes:
            if hi < start or lo > last:
                continue
            if lo > start:
                out.append((start, lo - 1))
            start = hi + 1
        if start <= last:
            out.append((start, last))
    return out


def _listed(text: str) -> dict[int, Intervals]:
    """The intervals of a CIDR list export, per family."""
    out: dict[int, Intervals] = {4: [], 6: []}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            net = ipaddress.ip_network(line)
            out[net.version].append((int(net.network_address), int(net.broadcast_address)))
    return out


@given(
    first=st.integers(0, V6_MAX),
    width=st.integers(0, 1 << 70) | st.integers(0, 300),
)
def test_range_cidrs_are_the_fewest_blocks(first: int, width: int) -> None:
    """range_cidrs gives exactly the blocks ipaddress.summarize_address_range gives."""
    last = min(first + width, V6_MAX)
    ours = list(range_cidrs(first, last, 128))
    theirs = ipaddress.summarize_address_range(
        ipaddress.IPv6Address(first), ipaddress.IPv6Address(last)
    )
    assert ours == [(int(n.network_address), n.prefixlen) for n in theirs]


@settings(max_examples=40, deadline=None, suppress_health_check=_SLOW)
@given(entry_sets=source_sets(max_sources=2, max_entries=6), data=st.data())
def test_cidr_lists_cover_exactly_each_action(
    entry_sets: list[list[RangeEntry]], data: st.DataObject
) -> None:
    """Each action's merged CIDR list covers exactly the addresses whose verdict it is.

    Outside tunnel prefixes this is checked interval by interval against the compiled
    policy's own segments and decisions; inside them (where the export expands the IPv4
    verdicts), at sampled addresses against decide(). Teredo gets its stated verdict.
    """
    snapshot = _snapshot(entry_sets)
    pol = data.draw(policies(_cidr_pool(_near(entry_sets))), label="policy")
    compiled = compile_policy(pol, snapshot, today=TODAY)
    vt = verdict_table(compiled)
    keys, part4, part6 = vt.by_key()
    for part in (vt.v4, vt.v6, part4, part6):  # merged: no two neighbours share a value
        assert all(a != b for a, b in zip(part.keys, part.keys[1:], strict=False))
        assert part.starts[0] == 0
        assert all(a < b for a, b in zip(part.starts, part.starts[1:], strict=False))
    present = [keys[k] for k in sorted({*part4.keys, *part6.keys})]
    tunnels = _normal([(f, la) for _, f, la in TUNNEL_RANGES])
    expected: dict[tuple[int, str], Intervals] = {}
    for version in (4, 6):
        starts, ids = compiled_segments(compiled, version)
        top = V4_MAX if version == 4 else V6_MAX
        for i, vid in enumerate(ids):
            if vid in TUNNEL_BY_ID:
                continue
            last = starts[i + 1] - 1 if i + 1 < len(starts) else top
            decision = compiled.table[vid]
            assert decision is not None
            expected.setdefault((version, key_of(decision)), []).append((starts[i], last))
    picked = data.draw(st.lists(addresses(), min_size=1, max_size=16), label="addresses")
    with Geofence(snapshot, pol, today=lambda: TODAY) as gf:
        for value in present:
            text = export_table(vt, "cidr", actions=[value], generated_at=GENERATED).text
            listed = _listed(text)
            for version in (4, 6):
                got = _normal(listed[version])
                want = _normal(expected.get((version, value), []))
                if version == 6:
                    got = _minus(got, tunnels)
                assert got == want, (version, value)
            for version, address in picked:
                inside = any(f <= address <= la for f, la in listed[version])
                if version == 6 and TEREDO[0] <= address <= TEREDO[1]:
                    verdict = vt.stated.key
                else:
                    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
                    verdict = key_of(gf.decide(str(cls(address))))
                assert inside == (verdict == value), (version, address, value, verdict)

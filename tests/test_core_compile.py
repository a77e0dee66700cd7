"""Policy compilation: linear in the number of CIDR rules, and the carve it relies on."""

from __future__ import annotations

import ipaddress
from array import array
from bisect import bisect_right

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.addr import parse_address
from geofence.policy import parse_policy
from geofence.policy.compile import compile_policy
from geofence.policy.evaluate import address_candidates, evaluate
from geofence.policy.model import Rule
from geofence.snapshot.partition import SPECIAL_BY_ID, overlay
from tests.policy.conftest import TODAY, build_world


def _cidr_policy(count: int) -> str:
    lines = ['[policy]\nid = "allow-list"\ndefault = "allow"\n']
    for k in range(count):
        net = ipaddress.ip_network(((k * 2654435761) % (1 << 24)) << 8).supernet(new_prefix=24)
        lines.append(f'[[rules]]\nid = "r{k}"\naction = "deny"\ncidrs = ["{net}"]\n')
    return "\n".join(lines)


@pytest.mark.parametrize("count", [50, 400])
def test_each_virtual_id_is_tested_against_the_rules_that_can_match_it(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy of single-CIDR rules costs one rule test per compiled id, not one per rule.

    Testing every rule for every id made compilation quadratic (20,000 such rules
    took minutes); the count is exact, so it does not depend on the machine's speed.
    """
    world = build_world()
    pol = parse_policy(_cidr_policy(count))
    calls = [0]
    original = Rule.test_address

    def counting(rule: Rule, *args: object) -> object:
        calls[0] += 1
        return original(rule, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Rule, "test_address", counting)
    compiled = compile_policy(pol, world, today=TODAY)
    assert calls[0] <= len(compiled.table)


def test_many_cidr_rules_decide_like_the_interpreter() -> None:
    """The compiled table with many CIDR rules equals evaluating every rule per address."""
    world = build_world()
    pol = parse_policy(_cidr_policy(300))
    compiled = compile_policy(pol, world, today=TODAY)
    for k in range(0, 300, 7):
        net = ipaddress.ip_network(((k * 2654435761) % (1 << 24)) << 8).supernet(new_prefix=24)
        first = int(net.network_address)
        for value in (first, int(net.broadcast_address), max(first - 1, 0)):
            addr = parse_address(value, version=4)
            vid = compiled.locate(addr.version, addr.value)
            _i, rid = world.lookup_id(addr.version, addr.value)
            record = world.records[rid] if rid >= 0 else None

            def hit(rule: Rule, at: int = value) -> bool:
                return any(f <= at <= la for v, f, la in rule.cidrs or () if v == 4)

            cands = address_candidates(pol, record, hit, TODAY)
            out = evaluate(
                pol, cands, found=record is not None, special=SPECIAL_BY_ID.get(rid), context=None
            )
            got = compiled.table[vid]
            assert got is not None
            assert (got.action, got.rule_id, got.outcome) == (out.action, out.rule_id, out.outcome)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 254), min_size=0, max_size=12, unique=True),
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 40)), max_size=6),
    st.booleans(),
)
def test_overlay_relabel_keeps_inner_boundaries(
    cuts: list[int], spans: list[tuple[int, int]], relabel: bool
) -> None:
    """overlay() with and without relabel agrees with a per-address model (8-bit space)."""
    top = 255
    starts = array("I", [0, *sorted(cuts)])
    ids = array("i", range(len(starts)))
    pieces: list[tuple[int, int, int]] = []
    taken = -1
    for at, width in sorted(spans):
        first = max(at, taken + 1)
        last = min(first + width, top)
        if first > top:
            break
        pieces.append((first, last, 100 + len(pieces)))
        taken = last

    def label(old: int, value: int) -> int:
        return value * 1000 + old

    out_starts, out_ids = overlay(
        (starts, ids),
        starts.__getitem__,
        lambda a: (a,),
        lambda a: bisect_right(starts, a) - 1,
        pieces,
        top,
        label if relabel else None,
    )
    assert list(out_starts) == sorted(set(out_starts))
    model = [ids[bisect_right(starts, a) - 1] for a in range(top + 1)]
    for first, last, value in pieces:
        for a in range(first, last + 1):
            model[a] = label(model[a], value) if relabel else value
    got = [out_ids[bisect_right(out_starts, a) - 1] for a in range(top + 1)]
    assert got == model
    if relabel:  # every original boundary survives inside the pieces
        assert set(starts) <= set(out_starts)

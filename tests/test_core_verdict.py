"""``Geofence.verdict``: the search over the compiled policy's own ranges.

``verdict(ip)`` must always equal ``Verdict.of(decide(ip))``: the verdict partitions are
the data's partitions relabelled by verdict and merged, searched by the same routine
(compiled core or pure twin). Checked over every boundary of the verdict partitions
(start, start - 1, end, end + 1) and of the data, random addresses, tunnel forms, bad
input, contexts, random policies over random data against the naive oracle of
``tests/policy/test_properties.py``, the ``relabel_runs`` twins, and reloads under load.
The tests comparing the compiled core with the twin skip when it is not active; the
rest run against whichever core is.
"""

from __future__ import annotations

import ipaddress
import threading
from array import array
from collections.abc import Iterator
from functools import partial
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.addr import parse_address
from geofence.context import Context
from geofence.decision import Action, Decision, Verdict
from geofence.engine import Geofence
from geofence.snapshot.partition import V4_TOP, V6_TOP, Partitions, relabel_runs
from geofence.snapshot.search import _CORE, PyLookup, make_lookup
from geofence.snapshot.search import relabel_runs as active_relabel_runs
from tests.policy.conftest import ADDR, RESERVED, TODAY, TUNNELS, UNKNOWN, build_world
from tests.policy.test_properties import _cidr_pool, _near, _snapshot, naive, policies
from tests.strategies import address_texts, addresses, source_sets
from tests.test_core_parity import BAD, _outcome, _tunnel_forms

needs_core = pytest.mark.skipif(
    _CORE is None, reason="the compiled core is not active (not built, or GEOFENCE_PURE_PYTHON=1)"
)


@pytest.fixture(scope="module")
def ofac() -> Iterator[Geofence]:
    with Geofence(None, "us-ofac-comprehensive") as gf:
        yield gf


def _twin(gf: Geofence) -> PyLookup:
    """The pure-Python verdict lookup over the engine's current state."""
    state = gf._state
    c = state.compiled
    fallback = partial(gf._verdict_general, state)
    lookup: PyLookup = make_lookup(
        c.verdict_partitions, c.verdicts, fallback, pure=True, parsed=True
    )
    return lookup


def _text(version: int, value: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value))


def _edges(parts: Partitions) -> list[tuple[int, int]]:
    """start, start - 1 (the end of the range before), end + 1 of the last: every boundary."""
    out = [(4, V4_TOP), (6, V6_TOP)]
    for s in parts.v4_starts:
        out += [(4, s), (4, s - 1)] if s else [(4, s)]
    for h, lo in zip(parts.v6_hi, parts.v6_lo, strict=True):
        s = (h << 64) | lo
        out += [(6, s), (6, s - 1)] if s else [(6, s)]
    return out


# -- the verdict partitions ------------------------------------------------------------------------


def test_verdict_partitions_are_the_merged_runs_of_the_table(ofac: Geofence) -> None:
    """Far fewer ranges than the data, every start a data start, no equal neighbours."""
    c = ofac.compiled
    vp, data = c.verdict_partitions, c.partitions
    assert len(vp.v4_starts) * 20 < len(data.v4_starts)
    assert len(vp.v6_hi) * 20 < len(data.v6_hi)
    assert set(vp.v4_starts) <= set(data.v4_starts)
    assert all(a != b for a, b in zip(vp.v4_ids, vp.v4_ids[1:], strict=False))
    assert all(a != b for a, b in zip(vp.v6_ids, vp.v6_ids[1:], strict=False))
    assert len(set(c.verdicts)) == len(c.verdicts)
    assert {Verdict.of(d) for d in c.table if d is not None} == set(c.verdicts)


def test_verdict_is_the_fast_path_itself_and_follows_reloads(ofac: Geofence) -> None:
    """gf.verdict is the state's lookup (a C callable with the compiled core)."""
    assert ofac.verdict is ofac._state.verdict
    if _CORE is not None:
        assert type(ofac.verdict) is _CORE.Lookup
    before = ofac.verdict
    ofac.reload(policy="us-ofac-comprehensive")
    assert ofac.verdict is ofac._state.verdict
    assert ofac.verdict is not before
    assert ofac.verdict("8.8.8.8") == before("8.8.8.8")


def test_a_subclass_that_overrides_verdict_keeps_its_method() -> None:
    class Counting(Geofence):
        calls = 0

        def verdict(self, ip: Any, context: Context | None = None) -> Verdict:
            Counting.calls += 1
            return super().verdict(ip, context)

    with Counting(None, "allow-all") as engine:
        assert engine.verdict("8.8.8.8").action is Action.ALLOW
        assert Counting.calls == 1
        assert "verdict" not in vars(engine)


def test_every_verdict_boundary_equals_the_decision(ofac: Geofence) -> None:
    """start, start - 1, end, end + 1 of every verdict range: verdict == Verdict.of(decide)."""
    twin = _twin(ofac)
    points = _edges(ofac.compiled.verdict_partitions)
    assert len(points) > 2 * 5_000
    for version, value in points:
        text = _text(version, value)
        want = Verdict.of(ofac.decide(text))
        assert ofac.verdict(text) == want, text
        assert twin(text) == want, text


def test_every_data_boundary_equals_the_decision(ofac: Geofence) -> None:
    """Every boundary of the data's segments, packed: verdicts equal the decisions' verdicts."""
    state = ofac._state
    step = 1 if _CORE is not None else 13  # the pure twin loops in Python
    points = _edges(ofac.compiled.partitions)[::step]
    packed4 = b"".join(v.to_bytes(4, "big") for f, v in points if f == 4)
    packed6 = b"".join(v.to_bytes(16, "big") for f, v in points if f == 6)
    assert state.verdict.many_v4(packed4) == [Verdict.of(d) for d in state.lookup.many_v4(packed4)]
    assert state.verdict.many_v6(packed6) == [Verdict.of(d) for d in state.lookup.many_v6(packed6)]


@settings(max_examples=1500, deadline=None)
@given(addresses())
def test_random_addresses(ofac: Geofence, address: tuple[int, int]) -> None:
    text = _text(*address)
    want = Verdict.of(ofac.decide(text))
    assert ofac.verdict(text) == want
    assert _twin(ofac)(text) == want


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(addresses(), st.booleans())
def test_parsed_addresses(ofac: Geofence, address: tuple[int, int], unwrap: bool) -> None:
    """What the middleware passes: a ParsedAddress, unwrapped or not (tunnel prefixes)."""
    version, value = address
    parsed = parse_address(value, version=version, unwrap=unwrap)
    want = Verdict.of(ofac.decide(parsed))
    assert ofac.verdict(parsed) == want
    assert _twin(ofac)(parsed) == want


def test_tunnel_forms_take_the_verdict_of_the_ipv4_inside(ofac: Geofence) -> None:
    twin = _twin(ofac)
    starts = ofac.compiled.verdict_partitions.v4_starts
    for k in range(0, len(starts), 11):
        for v in (starts[k], max(starts[k] - 1, 0)):
            inside = ofac.verdict(str(ipaddress.IPv4Address(v)))
            for text in _tunnel_forms(v):
                assert ofac.verdict(text) == inside == twin(text), text
                assert ofac.verdict(text) == Verdict.of(ofac.decide(text)), text


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_bad_input_gets_the_answer_decide_gets(ofac: Geofence, value: Any) -> None:
    """NUL, non-ASCII digits, 10 KB text, surrogates, str subclasses, bytes: decide's outcome."""
    kind, got = _outcome(ofac.verdict, value)
    want_kind, want = _outcome(ofac.decide, value)
    assert kind == want_kind
    assert got == (Verdict.of(want) if kind == "ok" else want)
    assert _outcome(_twin(ofac), value) == (kind, got)


def test_context_goes_to_the_general_path(ofac: Geofence) -> None:
    ctx = Context()
    for ip in ("8.8.8.8", "5.62.56.1", "::ffff:5.62.56.1"):
        want = Verdict.of(ofac.decide(ip, ctx))
        assert ofac.verdict(ip, ctx) == want
        assert ofac.verdict(ip, context=ctx) == want
        assert _twin(ofac)(ip, ctx) == want


@needs_core
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(address_texts())
def test_compiled_and_pure_verdicts_agree_on_text(ofac: Geofence, text: str) -> None:
    assert _outcome(ofac.verdict, text) == _outcome(_twin(ofac), text)


# -- random policies over random data --------------------------------------------------------------


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(entry_sets=source_sets(max_sources=3, max_entries=6), data=st.data())
def test_random_policies_against_the_oracle(entry_sets: list[Any], data: st.DataObject) -> None:
    """Every boundary of the data and verdict ranges: verdict == pure twin == naive oracle."""
    snapshot = _snapshot(entry_sets)
    pol = data.draw(policies(_cidr_pool(_near(entry_sets))), label="policy")
    with Geofence(snapshot, pol, today=lambda: TODAY) as gf:
        twin = _twin(gf)
        c = gf.compiled
        picked = _edges(c.partitions) + _edges(c.verdict_partitions)
        picked += data.draw(st.lists(addresses(), max_size=10), label="addresses")
        for version, value in picked:
            text = _text(version, value)
            got = gf.verdict(text)
            want = naive(pol, snapshot, text, TODAY)
            assert (got.action, got.route, got.rule_id, got.outcome) == (
                want.action,
                want.route,
                want.rule_id,
                want.outcome,
            ), text
            assert twin(text) == got == Verdict.of(gf.decide(text)), text
            if version == 4 and value % 5 == 0:
                for form in _tunnel_forms(value):
                    assert gf.verdict(form) == got == twin(form), form


# -- relabel_runs: the compiled twin ---------------------------------------------------------------


@st.composite
def _id_columns(draw: st.DrawFn) -> tuple[array[int], array[int]]:
    size = draw(st.integers(1, 12))
    relabel = array("i", draw(st.lists(st.integers(-3, 3), min_size=size, max_size=size)))
    ids = array("i", draw(st.lists(st.integers(-size, size - 1), max_size=60)))
    return ids, relabel


@settings(max_examples=400, deadline=None)
@given(_id_columns())
def test_relabel_runs_twins_agree(columns: tuple[array[int], array[int]]) -> None:
    """Compiled and pure relabel_runs: the same heads and labels, the runs of relabelled ids."""
    ids, relabel = columns
    heads, labels = relabel_runs(ids, relabel)
    assert active_relabel_runs(ids, relabel) == (heads, labels)
    new = [relabel[i] for i in ids]
    assert [new[k] for k in heads] == list(labels)
    assert all(new[k] == new[k - 1] for k in range(1, len(new)) if k not in set(heads))
    assert all(a != b for a, b in pairwise(labels))
    assert list(heads[:1]) == ([0] if ids else [])


@pytest.mark.parametrize("bad", [5, -6])
def test_relabel_runs_refuses_an_id_without_a_label(bad: int) -> None:
    ids, relabel = array("i", [0, bad]), array("i", [1, 2, 3, 4, 5])
    with pytest.raises(IndexError):
        relabel_runs(ids, relabel)
    with pytest.raises(IndexError):
        active_relabel_runs(ids, relabel)


# -- threads ----------------------------------------------------------------------------------------


def test_verdicts_during_reloads_come_from_one_policy_or_the_other() -> None:
    """Four threads ask for verdicts while the policy is swapped 60 times: no mix, no error."""
    world = build_world()
    first, second = "us-ofac-comprehensive", "domestic-only"
    targets = [*ADDR.values(), UNKNOWN, *RESERVED, *(make(ADDR["ir"]) for make in TUNNELS.values())]
    expected: dict[str, set[Verdict]] = {t: set() for t in targets}
    for pol in (first, second):
        with Geofence(world, pol) as ref:
            for t in targets:
                expected[t].add(ref.verdict(t))
    assert any(len(v) == 2 for v in expected.values())
    gf = Geofence(world, first)
    stop = threading.Event()
    errors: list[str] = []

    def work(offset: int) -> None:
        i = offset
        try:
            while not stop.is_set():
                target = targets[i % len(targets)]
                if gf.verdict(target) not in expected[target]:
                    errors.append(target)
                i += 1
        except Exception as exc:  # any exception is a failure to report
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    try:
        for n in range(60):
            gf.reload(policy=second if n % 2 == 0 else first)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        gf.close()
    assert not errors, errors[:5]


def test_decision_verdict_fields() -> None:
    d = Decision(action=Action.ROUTE, route="eu", rule_id="r1", outcome="rule", country="DE")
    v = Verdict.of(d)
    assert v == Verdict(Action.ROUTE, "eu", "r1", "rule")
    assert (v.key, v.allowed, v.blocked) == ("route:eu", False, False)
    assert Verdict(Action.DENY, None, None, "default").blocked
    assert Verdict(Action.REVIEW, None, None, "default").allowed
    assert hash(v) == hash(Verdict(Action.ROUTE, "eu", "r1", "rule"))

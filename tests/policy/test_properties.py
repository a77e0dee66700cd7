"""Property tests: compiled decisions equal a naive interpreter; reloads are atomic.

The oracle below is written from the semantics documented in ``docs/policy.md`` and
does not use :mod:`geofence.policy.evaluate` or :mod:`geofence.policy.compile`: it
unwraps tunnels with :mod:`ipaddress`, looks the address up in the snapshot, and loops
over the rules testing each condition on the record with three-valued logic.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence._batch import VECTOR_MIN
from geofence.addr import special_range
from geofence.context import Context, Subject
from geofence.decision import Action, Decision
from geofence.engine import Geofence
from geofence.kinds import NetworkKind
from geofence.policy import Policy, Rule, SubjectCondition, load_policy
from geofence.records import NetworkRecord
from geofence.signals.base import Signal
from geofence.snapshot.build import build_snapshot
from geofence.snapshot.reader import Snapshot
from geofence.sources.base import RangeEntry
from tests.policy.conftest import ADDR, RESERVED, TUNNELS, UNKNOWN, build_world
from tests.strategies import (
    COUNTRIES,
    SUBDIVISIONS,
    addresses,
    ipv4_ints,
    make_source,
    networks,
    source_sets,
    top_of,
)

TODAY = dt.date(2030, 6, 15)
_JURISDICTIONS = (*COUNTRIES, *(s for subs in SUBDIVISIONS.values() for s in subs))
_ALL_SUBDIVISIONS = tuple(s for subs in SUBDIVISIONS.values() for s in subs)
_ASNS = (13335, 15169, 16509, 64512, 4_200_000_000)
_FLAGS = tuple(k for k in NetworkKind if k.value)
_ACTIONS = ("allow", "deny", "challenge", "review", "route:alt-tier", "route:other")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


# -- the naive oracle --------------------------------------------------------------------------


class Tri(enum.Enum):
    """Three-valued truth: a condition holds, does not, or cannot be decided."""

    YES = 1
    NO = 2
    UNKNOWN = 3


def _all(values: Sequence[Tri]) -> Tri:
    """Kleene AND: any NO wins, then any UNKNOWN, else YES."""
    if Tri.NO in values:
        return Tri.NO
    if Tri.UNKNOWN in values:
        return Tri.UNKNOWN
    return Tri.YES


def _located_in(record: NetworkRecord, codes: frozenset[str]) -> Tri:
    """Whether the record's place is in a set of country/subdivision codes."""
    if record.country is None:
        return Tri.UNKNOWN
    if record.country in codes:
        return Tri.YES
    if record.subdivision is not None:
        return Tri.YES if record.subdivision in codes else Tri.NO
    if any(code.startswith(record.country + "-") for code in codes):
        return Tri.UNKNOWN  # a subdivision of this country is named, but the data has none
    return Tri.NO


def _held(value: bool) -> Tri:
    return Tri.YES if value else Tri.NO


def _subject_parts(cond: SubjectCondition, subject: Subject | None) -> list[Tri]:
    """One truth value per stated subject condition."""
    if cond.is_empty():
        return []
    if subject is None:
        return [Tri.UNKNOWN]
    nats = subject.nationalities
    parts: list[Tri] = []
    if cond.nationality is not None:
        parts.append(_held(bool(nats & cond.nationality)) if nats else Tri.UNKNOWN)
    if cond.nationality_not is not None:
        parts.append(_held(not nats & cond.nationality_not) if nats else Tri.UNKNOWN)
    if cond.account_country is not None:
        acct = subject.account_country
        parts.append(Tri.UNKNOWN if acct is None else _held(acct in cond.account_country))
    if cond.org_ids is not None:
        parts.append(_held(subject.org_id in cond.org_ids))
    if cond.ids is not None:
        parts.append(_held(subject.id in cond.ids))
    if cond.verified is not None:
        known = subject.verified
        parts.append(Tri.UNKNOWN if known is None else _held(known is cond.verified))
    return parts


def _matches(
    rule: Rule,
    record: NetworkRecord | None,
    ip: ipaddress._BaseAddress,
    context: Context | None = None,
    risk: float = 0.0,
) -> Tri:
    """Test every condition of a rule (AND over three values)."""
    parts: list[Tri] = []
    if rule.cidrs is not None:
        nets = [ipaddress.ip_network(text) for text in rule.cidr_text]
        parts.append(Tri.YES if any(ip in net for net in nets) else Tri.NO)
    about_data = (
        rule.jurisdictions,
        rule.not_jurisdictions,
        rule.partial_jurisdictions,
        rule.kinds,
        rule.asns,
    )
    if any(x is not None for x in about_data):
        if record is None:  # unknown and reserved addresses have no place, kind or ASN
            parts.append(Tri.NO)
        else:
            if rule.kinds is not None:
                parts.append(Tri.YES if record.kinds & rule.kinds else Tri.NO)
            if rule.asns is not None:
                parts.append(Tri.YES if record.asn in rule.asns else Tri.NO)
            if rule.jurisdictions is not None:
                parts.append(_located_in(record, rule.jurisdictions))
            if rule.not_jurisdictions is not None:
                inside = _located_in(record, rule.not_jurisdictions)
                parts.append({Tri.YES: Tri.NO, Tri.NO: Tri.YES}.get(inside, Tri.UNKNOWN))
            if rule.partial_jurisdictions is not None:
                inside = _located_in(record, rule.partial_jurisdictions)
                parts.append(Tri.NO if inside is Tri.NO else Tri.UNKNOWN)
    parts += _subject_parts(rule.subject, context.subject if context else None)
    codes = {s.code for s in context.signals} if context else set()
    if rule.signals is not None:
        parts.append(Tri.UNKNOWN if context is None else _held(bool(rule.signals & codes)))
    if rule.min_risk is not None:
        parts.append(Tri.UNKNOWN if context is None else _held(risk >= rule.min_risk))
    return _all(parts)


def _active(rule: Rule, day: dt.date) -> bool:
    """effective_from <= day < effective_to."""
    if rule.effective_from is not None and day < rule.effective_from:
        return False
    return rule.effective_to is None or day < rule.effective_to


def _unwrap(ip: ipaddress._BaseAddress) -> tuple[ipaddress._BaseAddress, str | None]:
    """The IPv4 address inside an IPv6 tunnel form, with the tunnel's name."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped, "ipv4_mapped"
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "nat64"
        if ip.teredo is not None:
            return ip.teredo[1], "teredo"
        if ip.sixtofour is not None:
            return ip.sixtofour, "6to4"
    return ip, None


@dataclass(frozen=True)
class Expected:
    """What the oracle says about one address."""

    action: Action
    route: str | None
    outcome: str
    rule_id: str | None
    reasons: tuple[str, ...]
    shadow_action: Action | None
    shadow_rule_id: str | None
    tunnel: str | None
    risk: float = 0.0


def naive(
    policy: Policy, snapshot: Snapshot, text: str, day: dt.date, context: Context | None = None
) -> Expected:
    """Evaluate ``policy`` for one address, straight from the documented semantics."""
    weights = dict(policy.signal_weights)
    risk = sum(weights.get(s.code, s.weight) for s in context.signals) if context else 0.0
    ip, tunnel = _unwrap(ipaddress.ip_address(text))
    record = snapshot.lookup(int(ip), version=ip.version).record
    special = special_range(ip.version, int(ip))
    shadow: tuple[Action, str] | None = None
    result: tuple[Action, str | None, str, str | None, tuple[str, ...]] | None = None
    for exc in policy.exceptions:
        if not _active(exc, day) or _matches(exc, record, ip, context, risk) is not Tri.YES:
            continue  # an allow-list that cannot be checked does not apply
        if exc.shadow:
            shadow = shadow or (exc.action, exc.id)
            continue
        result = (exc.action, exc.route, "exception", exc.id, (f"exception:{exc.id}",))
        break
    if result is None:
        for rule in policy.rules:
            if not _active(rule, day):
                continue
            m = _matches(rule, record, ip, context, risk)
            if m is Tri.NO:
                continue
            if rule.shadow:
                would = rule.action if m is Tri.YES else policy.on_unresolved[0]
                shadow = shadow or (would, rule.id)
                continue
            if m is Tri.UNKNOWN:
                act, route = policy.on_unresolved
                result = (act, route, "unresolved", rule.id, ("unresolved", f"rule:{rule.id}"))
            else:
                result = (rule.action, rule.route, "rule", rule.id, (f"rule:{rule.id}",))
            break
    if result is None:
        if special is not None:
            act, route = policy.on_reserved
            result = (act, route, "reserved", None, (f"reserved:{special.value}",))
        elif record is None:
            act, route = policy.on_unknown
            result = (act, route, "unknown", None, ("unknown_address",))
        else:
            act, route = policy.default
            result = (act, route, "default", None, ("default",))
    action, route, outcome, rule_id, reasons = result
    if shadow is not None:
        reasons = (*reasons, f"shadow:{shadow[1]}")
    if policy.shadow:
        reasons = (*reasons, "shadow:policy")
        shadow = (action, rule_id)  # type: ignore[assignment]  # rule_id may be None here
        action, route = Action.ALLOW, None
    if tunnel is not None:
        reasons = (*reasons, f"tunnel:{tunnel}")
    return Expected(
        action=action,
        route=route,
        outcome=outcome,
        rule_id=rule_id,
        reasons=reasons,
        shadow_action=shadow[0] if shadow else None,
        shadow_rule_id=shadow[1] if shadow else None,
        tunnel=tunnel,
        risk=risk,
    )


def observed(d: Decision) -> Expected:
    """The oracle's view of a decision (the detail after "unresolved:" is not compared)."""
    reasons = tuple("unresolved" if r.startswith("unresolved:") else r for r in d.reasons)
    return Expected(
        action=d.action,
        route=d.route,
        outcome=d.outcome,
        rule_id=d.rule_id,
        reasons=reasons,
        shadow_action=d.shadow_action,
        shadow_rule_id=d.shadow_rule_id,
        tunnel=d.tunnel,
        risk=d.risk,
    )


# -- strategies --------------------------------------------------------------------------------


def _parse_action(text: str) -> tuple[Action, str | None]:
    name, _, target = text.partition(":")
    return Action(name), target or None


def _codes(pool: Sequence[str]) -> st.SearchStrategy[frozenset[str] | None]:
    return st.none() | st.frozensets(st.sampled_from(pool), min_size=1, max_size=4)


@st.composite
def _dates(draw: st.DrawFn) -> tuple[dt.date | None, dt.date | None]:
    """Effective dates around TODAY, often absent; effective_to after effective_from."""
    near = st.integers(-3, 3).map(lambda n: TODAY + dt.timedelta(days=n))
    start = draw(st.none() | near)
    end = draw(st.none() | near)
    if start is not None and end is not None and end <= start:
        end = start + dt.timedelta(days=1)
    return start, end


_SIGNALS = ("tz_mismatch", "header_spoof", "impossible_travel")
_ORGS = ("org-1", "org-2")
_IDS = ("u1", "u2")


def _some(pool: Sequence[str]) -> st.SearchStrategy[frozenset[str] | None]:
    return st.none() | st.frozensets(st.sampled_from(pool), min_size=1, max_size=2)


@st.composite
def subject_conditions(draw: st.DrawFn) -> SubjectCondition:
    """Subject conditions over a small vocabulary, at least one of them stated."""
    cond = SubjectCondition(
        nationality=draw(_some(COUNTRIES)),
        nationality_not=draw(_some(COUNTRIES)),
        account_country=draw(_some(COUNTRIES)),
        org_ids=draw(_some(_ORGS)),
        ids=draw(_some(_IDS)),
        verified=draw(st.none() | st.booleans()),
    )
    return cond if not cond.is_empty() else SubjectCondition(ids=frozenset(_IDS[:1]))


@st.composite
def contexts(draw: st.DrawFn) -> Context:
    """Request contexts: maybe a subject with some attributes, and some signals."""
    subject = None
    if draw(st.integers(0, 4)) != 0:
        subject = Subject(
            id=draw(st.none() | st.sampled_from(_IDS)),
            nationalities=draw(st.frozensets(st.sampled_from(COUNTRIES), max_size=2)),
            account_country=draw(st.none() | st.sampled_from(COUNTRIES)),
            org_id=draw(st.none() | st.sampled_from(_ORGS)),
            verified=draw(st.none() | st.booleans()),
        )
    signals = tuple(
        Signal(code=code, weight=draw(st.sampled_from((0.0, 0.5, 1.0, 3.0))))
        for code in draw(st.lists(st.sampled_from(_SIGNALS), max_size=3, unique=True))
    )
    return Context(subject=subject, signals=signals)


@st.composite
def rules(
    draw: st.DrawFn,
    rid: str,
    cidr_pool: st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network],
    *,
    exception: bool = False,
) -> Rule:
    """A random rule (or exception, which takes only CIDR and subject conditions)."""
    action, route = _parse_action(draw(st.sampled_from(_ACTIONS)))
    nets = draw(st.none() | st.lists(cidr_pool, min_size=1, max_size=3))
    subject = draw(subject_conditions()) if draw(st.integers(0, 4)) == 0 else SubjectCondition()
    start, end = draw(_dates())
    fields: dict[str, object] = {}
    if not exception:
        kinds = None
        if draw(st.booleans()):
            kinds = NetworkKind.UNKNOWN
            for flag in draw(st.sets(st.sampled_from(_FLAGS), min_size=1, max_size=3)):
                kinds |= flag
        fields = {
            "jurisdictions": draw(_codes(_JURISDICTIONS)),
            "not_jurisdictions": draw(_codes(_JURISDICTIONS)),
            "partial_jurisdictions": draw(_codes(_ALL_SUBDIVISIONS))
            if draw(st.integers(0, 3)) == 0
            else None,
            "kinds": kinds,
            "asns": draw(st.none() | st.frozensets(st.sampled_from(_ASNS), min_size=1)),
            "signals": draw(st.frozensets(st.sampled_from(_SIGNALS), min_size=1))
            if draw(st.integers(0, 6)) == 0
            else None,
            "min_risk": draw(st.sampled_from((0.0, 1.0, 2.5, 4.0)))
            if draw(st.integers(0, 6)) == 0
            else None,
        }
    return Rule(
        id=rid,
        action=action,
        route=route,
        effective_from=start,
        effective_to=end,
        shadow=draw(st.integers(0, 4)) == 0,
        cidrs=None
        if nets is None
        else tuple((n.version, int(n.network_address), int(n.broadcast_address)) for n in nets),
        cidr_text=() if nets is None else tuple(str(n) for n in nets),
        subject=subject,
        **fields,  # type: ignore[arg-type]  # Rule field names and types
    )


@st.composite
def policies(
    draw: st.DrawFn,
    cidr_pool: st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> Policy:
    """A random policy: up to 2 exceptions, up to 6 rules, random fallbacks."""
    n_exc = draw(st.integers(0, 2))
    n_rules = draw(st.integers(0, 6))
    excs = tuple(draw(rules(f"e{i}", cidr_pool, exception=True)) for i in range(n_exc))
    body = tuple(draw(rules(f"r{i}", cidr_pool)) for i in range(n_rules))

    def fallback() -> tuple[Action, str | None]:
        return _parse_action(draw(st.sampled_from(_ACTIONS)))

    return Policy(
        id="random",
        source="<hypothesis>",
        rules=body,
        exceptions=excs,
        default=fallback(),
        on_unresolved=fallback(),
        on_unknown=fallback(),
        on_reserved=fallback(),
        shadow=draw(st.integers(0, 5)) == 0,
        signal_weights=tuple(
            sorted(draw(st.dictionaries(st.sampled_from(_SIGNALS), st.just(2.0))).items())
        ),
    )


def _snapshot(entry_sets: list[list[RangeEntry]]) -> Snapshot:
    sources = [make_source(f"s{i}", entries) for i, entries in enumerate(entry_sets)]
    return Snapshot.from_bytes(build_snapshot(sources, force=True))


def _near(entry_sets: list[list[RangeEntry]]) -> list[tuple[int, int]]:
    """Addresses on the edges of the data's ranges."""
    out: list[tuple[int, int]] = []
    for entries in entry_sets:
        for e in entries:
            for value in (e.first - 1, e.first, e.last, e.last + 1):
                if 0 <= value <= top_of(e.version):
                    out.append((e.version, value))
    return out


def _cidr_pool(
    edges: list[tuple[int, int]],
) -> st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Networks anywhere, or around an edge of the data (so that CIDRs split ranges)."""

    def around(
        point: tuple[int, int], length: int
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        version, value = point
        bits = 32 if version == 4 else 128
        return ipaddress.ip_network((value, min(length, bits)), strict=False)

    pool: st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network] = networks()
    if edges:
        pool = pool | st.builds(around, st.sampled_from(edges), st.integers(8, 128))
    return pool


def _text(version: int, value: int) -> str:
    return str(ipaddress.ip_address(value) if version == 6 else ipaddress.IPv4Address(value))


def _cidr_edges(policy: Policy) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for rule in (*policy.exceptions, *policy.rules):
        for version, first, last in rule.cidrs or ():
            for value in (first - 1, first, last, last + 1):
                if 0 <= value <= top_of(version):
                    out.append((version, value))
    return out


# -- properties ------------------------------------------------------------------------------

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]


@settings(max_examples=120, deadline=None, suppress_health_check=_SLOW)
@given(entry_sets=source_sets(max_sources=3, max_entries=6), data=st.data())
def test_compiled_equals_naive(entry_sets: list[list[RangeEntry]], data: st.DataObject) -> None:
    """For random data, policies and addresses, decide() equals the naive interpreter."""
    snapshot = _snapshot(entry_sets)
    edges = _near(entry_sets)
    pol = data.draw(policies(_cidr_pool(edges)), label="policy")
    points = edges + _cidr_edges(pol)
    picked = data.draw(st.lists(addresses(), max_size=12), label="addresses")
    if points:
        picked += data.draw(st.lists(st.sampled_from(points), max_size=24), label="edges")
    texts = [_text(v, a) for v, a in picked]
    with Geofence(snapshot, pol, today=lambda: TODAY) as gf:
        for text in texts:
            assert observed(gf.decide(text)) == naive(pol, snapshot, text, TODAY), text
        expected = [gf.decide(t) for t in texts]
        assert gf.decide_many(texts) == expected
        # Long batches take the numpy path: same answers, same order.
        reps = -(-VECTOR_MIN // max(1, len(texts)))
        assert gf.decide_many(texts * reps) == expected * reps


@settings(max_examples=100, deadline=None, suppress_health_check=_SLOW)
@given(entry_sets=source_sets(max_sources=2, max_entries=6), data=st.data())
def test_context_decisions_equal_naive(
    entry_sets: list[list[RangeEntry]], data: st.DataObject
) -> None:
    """With random subjects and signals, decide(ip, context) equals the naive interpreter."""
    snapshot = _snapshot(entry_sets)
    edges = _near(entry_sets)
    pol = data.draw(policies(_cidr_pool(edges)), label="policy")
    points = edges + _cidr_edges(pol)
    picked = data.draw(st.lists(addresses(), max_size=6), label="addresses")
    if points:
        picked += data.draw(st.lists(st.sampled_from(points), max_size=10), label="edges")
    with Geofence(snapshot, pol, today=lambda: TODAY) as gf:
        for version, value in picked:
            text = _text(version, value)
            ctx = data.draw(contexts(), label="context")
            assert observed(gf.decide(text, ctx)) == naive(pol, snapshot, text, TODAY, ctx), text


@settings(max_examples=60, deadline=None, suppress_health_check=_SLOW)
@given(
    entry_sets=source_sets(max_sources=2, max_entries=6),
    values=st.lists(ipv4_ints(), min_size=1, max_size=8),
    data=st.data(),
)
def test_ipv4_and_mapped_ipv6_decide_alike(
    entry_sets: list[list[RangeEntry]], values: list[int], data: st.DataObject
) -> None:
    """An IPv4 address and its IPv4-mapped IPv6 form get the same decision but the tunnel."""
    snapshot = _snapshot(entry_sets)
    pol = data.draw(policies(_cidr_pool(_near(entry_sets))), label="policy")
    v4_edges = [a for v, a in _cidr_edges(pol) + _near(entry_sets) if v == 4]
    values += v4_edges[:16]
    with Geofence(snapshot, pol, today=lambda: TODAY) as gf:
        for value in values:
            v4 = gf.decide(str(ipaddress.IPv4Address(value)))
            v6 = gf.decide(str(ipaddress.IPv6Address((0xFFFF << 32) | value)))
            assert (v6.action, v6.route, v6.rule_id, v6.outcome) == (
                v4.action,
                v4.route,
                v4.rule_id,
                v4.outcome,
            )
            assert (v6.shadow_action, v6.shadow_rule_id) == (v4.shadow_action, v4.shadow_rule_id)
            assert v6.reasons == (*v4.reasons, "tunnel:ipv4_mapped")
            assert (v4.tunnel, v6.tunnel) == (None, "ipv4_mapped")


# -- atomic reload under threads -----------------------------------------------------------------


Expectations = dict[str, dict[tuple[str, bool], tuple[Action, str | None]]]


@dataclass
class _Hammer:
    """Threads deciding continuously, checking every decision against its policy's answers."""

    gf: Geofence
    targets: list[str]
    context: Context
    expected: Expectations
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def work(self, offset: int) -> None:
        """Decide targets round-robin (a third with a context) until stopped."""
        i = offset
        try:
            while not self.stop.is_set():
                target = self.targets[i % len(self.targets)]
                ctx = i % 3 == 0
                d = self.gf.decide(target, self.context if ctx else None)
                table = self.expected.get(d.policy_digest)
                if table is None:
                    self.errors.append(f"unknown digest {d.policy_digest}")
                elif table[(target, ctx)] != (d.action, d.rule_id):
                    self.errors.append(f"{target} ctx={ctx}: {d.action} {d.rule_id}: mixed state")
                self.seen.add(d.policy_digest)
                i += 7
                if i % 50 == 0:
                    time.sleep(0)  # let the reloading thread in now and then
        except Exception as exc:  # any exception is a failure to report
            self.errors.append(repr(exc))


@pytest.mark.parametrize("cache_size", [0, 16])
def test_reload_under_concurrent_decisions(cache_size: int) -> None:
    """Deciding from 4 threads while reloading never raises nor mixes two policies' state."""
    world = build_world()
    first = load_policy("us-ofac-comprehensive")
    second = load_policy("domestic-only")
    subject = Context(subject=Subject(id="s", nationalities=frozenset({"US"})))
    targets = [*ADDR.values(), UNKNOWN, *RESERVED]
    targets += [make(ADDR[n]) for n in ("ir", "us", "ua_nosub") for make in TUNNELS.values()]
    expected: Expectations = {}
    for pol in (first, second):
        with Geofence(world, pol) as ref:
            expected[pol.digest] = {
                (t, ctx): (d.action, d.rule_id)
                for t in targets
                for ctx in (False, True)
                for d in [ref.decide(t, subject if ctx else None)]
            }
    hammer = _Hammer(Geofence(world, first, cache_size=cache_size), targets, subject, expected)
    threads = [threading.Thread(target=hammer.work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        for n in range(100):
            hammer.gf.reload(policy=second if n % 2 == 0 else first)
    finally:
        hammer.stop.set()
        for t in threads:
            t.join(timeout=30)
        hammer.gf.close()
    assert not hammer.errors, hammer.errors[:5]
    assert hammer.seen == set(expected)

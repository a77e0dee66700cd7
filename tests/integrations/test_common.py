"""Tests of geofence.integrations.common: settings, the gate, audit lines and metrics."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from geofence.context import Context, Subject
from geofence.decision import Action, Decision
from geofence.engine import Geofence
from geofence.integrations.audit import AuditLogger
from geofence.integrations.config import GeofenceConfig, GeofenceOptions
from geofence.integrations.gate import DECISION_ERROR, NO_CLIENT_ADDRESS, Gate
from geofence.integrations.metrics import PrometheusMetrics
from geofence.integrations.replies import Reply
from geofence.integrations.request import RequestInfo
from geofence.kinds import NetworkKind
from geofence.policy import parse_policy
from geofence.signals.proxy import TrustedProxies
from geofence.snapshot.reader import Snapshot
from tests.integrations.conftest import ADDR, POLICY, STRICT_POLICY, AuditCapture


def gate(engine: Geofence, **options: Any) -> Gate:
    return Gate(engine, GeofenceConfig.from_options(**options), integration="test")


def check(g: Gate, peer: str | None, path: str = "/", **headers: str) -> Any:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    return g.check(kind="http", method="GET", path=path, peer=peer, headers=pairs, native=None)


# -- configuration -----------------------------------------------------------------------------


def test_options_and_config_fields_agree() -> None:
    """Every GeofenceConfig field is a GeofenceOptions key and vice versa."""
    assert {f.name for f in fields(GeofenceConfig)} == set(GeofenceOptions.__annotations__)


@pytest.mark.parametrize(
    ("value", "trusted"),
    [
        (None, "9.9.9.9"),
        ("10.0.0.0/8, 127.0.0.1", "10.1.2.3"),
        (["10.0.0.0/8"], "10.1.2.3"),
        ({"cidrs": ["10.0.0.0/8"]}, "10.1.2.3"),
        (TrustedProxies(cidrs=["10.0.0.0/8"]), "10.1.2.3"),
    ],
)
def test_trusted_proxies_accepts_convenient_forms(
    engine: Geofence, value: object, trusted: str
) -> None:
    """CIDR strings, lists, mappings and TrustedProxies all configure trust; None trusts nobody."""
    g = gate(engine, trusted_proxies=value)
    verdict = check(g, trusted, x_forwarded_for=ADDR["deny"])
    expected = Action.ALLOW if value is None else Action.DENY
    assert verdict.decision.action is expected


@pytest.mark.parametrize(
    "options",
    [
        {"fail_mode": "sometimes"},
        {"body_format": "xml"},
        {"route_header": "X Route"},
        {"decision_header": "bad:name"},
        {"challenge_type": 'a"b'},
        {"blocked_by": "https://example.com/a b"},
        {"blocked_by": ""},
        {"challenge_redirect": "/x>"},
        {"exempt_paths": ["healthz"]},
        {"exempt_paths": "/healthz"},
        {"exempt_prefixes": [3]},
        {"route_policies": {"api": None}},
        {"route_policies": ["/api"]},
        {"subject": "not callable"},
        {"trusted_proxies": 5},
        {"audit": "geofence.audit"},
        {"metrics": "prometheus"},
        {"no_such_option": 1},
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any]) -> None:
    """Invalid settings raise ValueError naming the setting."""
    with pytest.raises(ValueError, match=r"\w"):
        GeofenceConfig.from_options(**options)


def test_config_requires_trusted_proxies_type() -> None:
    """GeofenceConfig itself takes only a TrustedProxies (from_options converts)."""
    with pytest.raises(ValueError, match="TrustedProxies"):
        GeofenceConfig(trusted_proxies=["10.0.0.0/8"])  # type: ignore[arg-type]


def test_gate_requires_an_engine() -> None:
    """A Gate refuses something that is not an engine."""
    with pytest.raises(ValueError, match="Geofence"):
        Gate(object(), GeofenceConfig(), integration="x")  # type: ignore[arg-type]


def test_metrics_true_uses_global_registry(engine: Geofence) -> None:
    """metrics=True builds PrometheusMetrics; building it twice does not collide."""
    first = GeofenceConfig.from_options(metrics=True)
    second = GeofenceConfig.from_options(metrics=True)
    assert isinstance(first.metrics, PrometheusMetrics)
    assert isinstance(second.metrics, PrometheusMetrics)
    assert GeofenceConfig.from_options(metrics=False).metrics is None


# -- replies -----------------------------------------------------------------------------------


def test_reply_helpers() -> None:
    """Reply builders set content types, redirects and status lines."""
    body = Reply.json(451, {"a": 1})
    assert body.status_line == "451 Unavailable For Legal Reasons"
    assert ("Content-Type", "application/json") in body.headers
    assert json.loads(body.body) == {"a": 1}
    assert Reply.plain(200, "hé").body == "hé".encode()
    redirect = Reply.redirect("/verify")
    assert redirect.status == 303
    assert ("Location", "/verify") in redirect.headers
    assert Reply(status=599).status_line == "599 Unknown"
    assert body.with_headers(()) is body


def test_request_info_headers_are_lowercased_and_joined() -> None:
    """RequestInfo.headers lower-cases names and joins repeated lines, from bytes or str."""
    info = RequestInfo(
        kind="http",
        method="GET",
        path="/",
        client=None,
        headers=[(b"X-A", b"1"), (b"x-a", b"2"), ("Accept", "text/html")],
        native=None,
    )
    assert info.headers == {"x-a": "1, 2", "accept": "text/html"}
    assert "path='/'" in repr(info)


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "exempt"),
    [
        ("/healthz", True),
        ("/healthz/", True),
        ("/healthz/x", True),
        ("/healthzx", False),
        ("/static", True),
        ("/static/app.js", True),
        ("/staticfiles", False),
        ("/assets/x", True),
        ("/assets", False),
        ("/", False),
    ],
)
def test_exempt_paths_exact_and_prefix(engine: Geofence, path: str, exempt: bool) -> None:
    """Exempt paths and prefixes match at segment boundaries ('/' ends a prefix)."""
    g = gate(engine, exempt_paths=["/healthz"], exempt_prefixes=["/static", "/assets/"])
    assert g.is_exempt(path) is exempt
    verdict = check(g, ADDR["deny"], path)
    assert verdict.exempt is exempt
    assert (verdict.decision is None) is exempt


def test_route_policies_longest_prefix_wins(engine: Geofence, strict_engine: Geofence) -> None:
    """The longest matching prefix picks the engine; others get the default engine."""
    g = gate(engine, route_policies={"/api": strict_engine, "/api/open": engine})
    assert g.engine_for("/api/x") is strict_engine
    assert g.engine_for("/api/open/x") is engine
    assert g.engine_for("/apix") is engine
    assert check(g, ADDR["allow"], "/api/x").decision.action is Action.DENY
    assert check(g, ADDR["allow"], "/api/open/x").decision.action is Action.ALLOW


# -- fail mode and hooks -----------------------------------------------------------------------


def test_fail_closed_without_client_address(engine: Geofence) -> None:
    """No usable client address with fail_mode=closed: 451 with a degraded deny."""
    verdict = check(gate(engine), "testclient")
    assert verdict.decision.action is Action.DENY
    assert verdict.decision.reasons[0] == NO_CLIENT_ADDRESS
    assert verdict.decision.degraded
    assert verdict.decision.policy_id == "test-integrations"
    assert verdict.reply is not None
    assert verdict.reply.status == 451


def test_fail_open_without_client_address(engine: Geofence) -> None:
    """No peer at all with fail_mode=open: served, flagged review and degraded."""
    verdict = check(gate(engine, fail_mode="open"), None)
    assert verdict.decision.action is Action.REVIEW
    assert verdict.decision.reasons == (NO_CLIENT_ADDRESS, "fail_open")
    assert verdict.reply is None


def test_engine_error_uses_fail_mode(
    snapshot: Snapshot, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception from the engine is logged and the fail mode decides."""
    broken = Geofence(snapshot, parse_policy(POLICY))

    def boom(ip: object, context: object = None) -> Decision:
        raise RuntimeError("corrupt state")

    monkeypatch.setattr(broken, "decide", boom)
    with caplog.at_level(logging.ERROR, logger="geofence"):
        closed = check(gate(broken), ADDR["allow"])
        opened = check(gate(broken, fail_mode="open"), ADDR["allow"])
    assert closed.decision.reasons[0] == DECISION_ERROR
    assert closed.reply is not None
    assert opened.decision.action is Action.REVIEW
    assert opened.reply is None
    assert "corrupt state" in caplog.text


def test_subject_hook_feeds_subject_rules(snapshot: Snapshot) -> None:
    """A Subject from the hook lets subject rules decide; a wrong type fails closed."""
    policy = parse_policy(
        """
        [policy]
        id = "nationals"
        on_unresolved = "allow"
        [[rules]]
        id = "deny-kp-nationals"
        action = "deny"
        subject = { nationality = ["KP"] }
        """
    )
    engine = Geofence(snapshot, policy)
    nats: dict[str, frozenset[str]] = {"a": frozenset({"KP"}), "b": frozenset({"US"})}

    def subject(info: RequestInfo) -> Subject | Context | None:
        user = info.headers.get("x-user")
        if user == "ctx":
            return Context(subject=Subject(nationalities=nats["a"]))
        return Subject(nationalities=nats[user]) if user in nats else None

    g = gate(engine, subject=subject)
    assert check(g, ADDR["allow"], x_user="a").decision.action is Action.DENY
    assert check(g, ADDR["allow"], x_user="ctx").decision.action is Action.DENY
    assert check(g, ADDR["allow"], x_user="b").decision.action is Action.ALLOW
    assert check(g, ADDR["allow"]).decision.outcome == "unresolved"

    bad = gate(engine, subject=lambda info: "KP")
    assert check(bad, ADDR["allow"]).decision.reasons[0] == DECISION_ERROR


def test_client_signals_reach_the_policy(snapshot: Snapshot) -> None:
    """Forwarding-header evidence becomes signals a policy rule can act on."""
    policy = parse_policy(
        """
        [policy]
        id = "spoof"
        [[rules]]
        id = "review-untrusted-headers"
        action = "review"
        signals = ["header_untrusted"]
        """
    )
    engine = Geofence(snapshot, policy)
    spoofed = check(gate(engine), ADDR["allow"], x_forwarded_for=ADDR["deny"])
    assert spoofed.decision.action is Action.REVIEW
    assert spoofed.decision.address == ADDR["allow"]
    assert [s.code for s in spoofed.decision.signals] == ["header_untrusted"]
    plain = check(gate(engine), ADDR["allow"])
    assert plain.decision.action is Action.ALLOW
    off = check(gate(engine, client_signals=False), ADDR["allow"], x_forwarded_for="1.1.1.1")
    assert off.decision.action is Action.ALLOW


def test_subject_context_is_merged_with_client_signals(snapshot: Snapshot) -> None:
    """A Context from the hook keeps its own signals and gains the client's."""
    engine = Geofence(snapshot, parse_policy(POLICY))
    from geofence.signals.base import Signal

    def subject(info: RequestInfo) -> Context:
        return Context(signals=(Signal(code="tz_mismatch", weight=0.5),))

    verdict = check(gate(engine, subject=subject), ADDR["allow"], x_forwarded_for="1.1.1.1")
    codes = sorted(s.code for s in verdict.decision.signals)
    assert codes == ["header_untrusted", "tz_mismatch"]


def test_router_hook_overrides_route(engine: Geofence, caplog: pytest.LogCaptureFixture) -> None:
    """The router hook chooses the target; unsafe values and failures give no route."""

    def router(info: RequestInfo, decision: Decision) -> str | None:
        return f"{decision.country}-pool".lower()

    assert check(gate(engine, router=router), ADDR["review"]).route == "gb-pool"
    unsafe = gate(engine, router=lambda info, d: "a\r\nSet-Cookie: x=1")
    with caplog.at_level(logging.ERROR, logger="geofence"):
        assert check(unsafe, ADDR["route"]).route is None

    def failing(info: RequestInfo, decision: Decision) -> str | None:
        raise KeyError("no pool")

    with caplog.at_level(logging.ERROR, logger="geofence"):
        assert check(gate(engine, router=failing), ADDR["route"]).route is None
    assert "router hook failed" in caplog.text


def test_challenge_hook_results(engine: Geofence, caplog: pytest.LogCaptureFixture) -> None:
    """Hook reply is used; None passes; an exception or a non-Reply gives the default 403."""
    custom = Reply.plain(403, "verify at /kyc")
    assert check(gate(engine, challenge=lambda i, d: custom), ADDR["challenge"]).reply is custom
    passed = check(gate(engine, challenge=lambda i, d: None), ADDR["challenge"])
    assert passed.reply is None
    assert passed.decision.action is Action.CHALLENGE

    def failing(info: RequestInfo, decision: Decision) -> Reply | None:
        raise RuntimeError("kyc down")

    with caplog.at_level(logging.ERROR, logger="geofence"):
        failed = check(gate(engine, challenge=failing), ADDR["challenge"])
        wrong = check(gate(engine, challenge=lambda i, d: 401), ADDR["challenge"])
    assert failed.reply is not None
    assert failed.reply.status == 403
    assert wrong.reply is not None
    assert wrong.reply.status == 403


def test_replies_are_cached_per_reason(engine: Geofence) -> None:
    """The same reason code gets the very same reply object (built once)."""
    g = gate(engine)
    assert check(g, ADDR["deny"]).reply is check(g, ADDR["deny6"]).reply


def test_client_resolution_cache(engine: Geofence) -> None:
    """A client seen twice is cached, and other headers do not matter.

    Huge headers are never cached; one-off clients leave only a hash; both
    structures stay bounded.
    """
    g = gate(engine, trusted_proxies=["10.0.0.0/8"])
    resolver = g._clients
    resolver._clients.maxsize = 3
    resolver._seen.maxsize = 5
    first = check(g, "10.0.0.1", x_forwarded_for=ADDR["deny"], user_agent="a")
    assert not resolver._clients  # first sighting: remembered by hash only
    second = check(g, "10.0.0.1", x_forwarded_for=ADDR["deny"], user_agent="b")
    assert second.client == first.client
    assert len(resolver._clients) == 1  # second sighting: admitted
    third = check(g, "10.0.0.1", x_forwarded_for=ADDR["deny"], user_agent="c")
    assert third.client is second.client  # served from the cache
    other = check(g, "10.0.0.1", x_forwarded_for=ADDR["allow"])
    assert other.client is not first.client
    assert other.decision.action is Action.ALLOW
    huge = ", ".join(["10.0.0.2"] * 100) + f", {ADDR['deny']}"
    for _ in range(3):
        assert check(g, "10.0.0.1", x_forwarded_for=huge).decision.action is Action.DENY
    assert all(len(str(key)) < 1000 for key in resolver._clients)
    for n in range(10):
        check(g, f"1.0.0.{n}")  # one-off clients
        assert 1 <= len(resolver._seen) <= 5  # cleared when full, never larger
    for n in range(10):
        for _ in range(2):
            check(g, f"2.0.0.{n}")
        assert 1 <= len(resolver._clients) <= 3  # cleared when full, never larger
        assert ("2.0.0." + str(n),) in resolver._clients  # the newest repeat client is kept


def test_repeat_clients_reuse_their_verdict(snapshot: Snapshot, audit_caplog: AuditCapture) -> None:
    """A repeat client's verdict is reused while its decision stays the same.

    Audit lines and metrics still follow every request; a reload that changes
    the decision gives a new verdict; a challenge (its reply depends on the
    path: none on the challenge target) is never reused.
    """
    engine = Geofence(snapshot, parse_policy(POLICY))
    registry = CollectorRegistry()
    g = gate(
        engine,
        trusted_proxies=["10.0.0.0/8"],
        audit=AuditLogger(),
        metrics=PrometheusMetrics(registry=registry),
        challenge_redirect="/verify/",
    )
    verdicts = [check(g, "10.0.0.1", x_forwarded_for=ADDR["route"]) for _ in range(4)]
    assert verdicts[3] is verdicts[2]  # the cached client's verdict, reused
    assert {v.route for v in verdicts} == {"eu-tier"}
    assert len([r for r in audit_caplog.records if getattr(r, "event", None) == "route"]) == 4
    value = registry.get_sample_value
    assert value("geofence_decisions_total", {"action": "route", "reason": "rule:route-de"}) == 4
    for _ in range(3):
        for path, replied in (("/verify/", False), ("/api", True)):
            seen = check(g, "10.0.0.1", path, x_forwarded_for=ADDR["challenge"])
            assert (seen.reply is not None) is replied, path
    engine.reload(policy=parse_policy(STRICT_POLICY))
    after = check(g, "10.0.0.1", x_forwarded_for=ADDR["route"])
    assert after.decision is not None
    assert after.decision.action is Action.ALLOW
    assert after.route is None


def test_one_shot_clients_leave_no_verdict_behind(snapshot: Snapshot) -> None:
    """Only clients the resolver caches (seen before) have their verdict remembered.

    A crowd of clients seen once each must not fill the gate's verdict memo (nor
    keep their client objects alive); the second request of a client does.
    """
    engine = Geofence(snapshot, parse_policy(POLICY))
    g = gate(engine, trusted_proxies=["10.0.0.0/8"])
    for n in range(50):
        check(g, "10.0.0.1", x_forwarded_for="2.0.1." + str(n))
    assert len(g._verdicts) == 0
    first = check(g, "10.0.0.1", x_forwarded_for=ADDR["route"])
    second = check(g, "10.0.0.1", x_forwarded_for=ADDR["route"])
    third = check(g, "10.0.0.1", x_forwarded_for=ADDR["route"])
    assert len(g._verdicts) == 1
    assert third is second
    assert first is not second


# -- audit -------------------------------------------------------------------------------------


def _decision(action: Action = Action.ALLOW, **kw: Any) -> Decision:
    return Decision(action=action, reasons=("default",), **kw)


def test_audit_sampling_is_reproducible_with_a_seed() -> None:
    """Two loggers with the same seed sample the same allows."""
    a = AuditLogger(allow_sample_rate=0.3, seed=7)
    b = AuditLogger(allow_sample_rate=0.3, seed=7)
    allow = _decision()
    picks_a = [a._event(allow) for _ in range(200)]
    picks_b = [b._event(allow) for _ in range(200)]
    assert picks_a == picks_b
    assert 20 < picks_a.count("sample") < 100


def test_audit_events() -> None:
    """Non-allow, degraded and shadow decisions are always events; allows only when sampled."""
    quiet = AuditLogger()
    assert quiet._event(_decision()) is None
    assert quiet._event(_decision(Action.DENY)) == "deny"
    assert quiet._event(_decision(Action.ROUTE, route="x")) == "route"
    assert quiet._event(_decision(degraded=True)) == "degraded"
    assert quiet._event(_decision(shadow=True, shadow_action=Action.DENY)) == "shadow"
    assert AuditLogger(log_shadow=False)._event(_decision(shadow=True)) is None
    assert AuditLogger(allow_sample_rate=1.0)._event(_decision()) == "sample"
    no_routes = AuditLogger(actions=["deny", "challenge", "review"])
    assert no_routes._event(_decision(Action.ROUTE, route="x")) is None
    assert no_routes._event(_decision(Action.DENY)) == "deny"
    with pytest.raises(ValueError, match="maybe"):
        AuditLogger(actions=["maybe"])
    with pytest.raises(ValueError, match="allow_sample_rate"):
        AuditLogger(allow_sample_rate=1.5)


def test_audit_line_is_json_with_request_fields(
    engine: Geofence, audit_caplog: pytest.LogCaptureFixture
) -> None:
    """One JSON line per deny, with the client, the path and the reply status."""
    g = gate(engine, trusted_proxies=["10.0.0.0/8"])
    check(g, "10.0.0.1", "/v1/chat", x_forwarded_for=f"203.0.113.9, {ADDR['deny']}")
    check(g, ADDR["allow"], "/v1/chat")
    records = [r for r in audit_caplog.records if r.name == "geofence.audit"]
    assert len(records) == 1
    assert records[0].funcName == "AuditLogger.record"  # made without walking the stack
    assert records[0].levelno == logging.INFO
    line = json.loads(records[0].getMessage())
    assert line["action"] == "deny"
    assert line["event"] == "deny"
    assert line["address"] == ADDR["deny"]
    assert line["client_source"] == "x-forwarded-for"
    assert line["client_chain"] == [ADDR["deny"], "10.0.0.1"]
    assert line["path"] == "/v1/chat"
    assert line["status"] == 451
    assert line["integration"] == "test"
    assert line["rule_id"] == "deny-cu"
    assert line["policy_id"] == "test-integrations"


def test_audit_line_equals_decision_to_json(engine: Geofence) -> None:
    """AuditLogger.line is Decision.to_json, for shared and per-request decisions."""
    audit = AuditLogger()
    extra = {"path": "/x", "status": 451, "client_chain": ["1.2.3.4"], "event": "deny"}
    shared = engine.decide(ADDR["deny"])
    per_request = engine.decide(ADDR["deny"], Context())
    assert shared.address is None
    assert per_request.address is not None
    for decision in (shared, shared, per_request):  # twice: a cache miss, then a hit
        for address in (None, "9.9.9.9"):
            ours = audit.line(decision, address, extra, at=123.456)
            theirs = decision.to_json(address=address, at=123.456, **extra)
            assert json.loads(ours) == json.loads(theirs)
            assert ours == theirs


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(list(Action))
    | st.sampled_from(list(NetworkKind))
)
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    # "address" and "at" are to_json's own keyword arguments, not extra keys.
    extra=st.dictionaries(
        st.text(max_size=10).filter(lambda key: key not in ("address", "at")),
        _JSON_VALUES,
        max_size=8,
    ),
    address=st.none() | st.text(max_size=40),
    at=st.floats(min_value=0, max_value=4e9),
    shared=st.booleans(),
)
def test_audit_line_equals_to_json_for_any_fields(
    extra: dict[str, object], address: str | None, at: float, shared: bool
) -> None:
    """Property: the cached, piecewise audit line is byte for byte Decision.to_json."""
    decision = _decision(
        Action.ROUTE,
        route="eu-tier",
        country="DE",
        kinds=NetworkKind.HOSTING | NetworkKind.VPN,
        sources=("dbip", "iporigin"),
        address=None if shared else "2001:db8::1",
    )
    audit = AuditLogger()
    for _ in range(2):  # a cache miss, then a hit
        ours = audit.line(decision, address, extra, at=at)
        assert ours == decision.to_json(address=address, at=at, **extra)


def test_audit_disabled_logger_costs_nothing(engine: Geofence) -> None:
    """With the logger above INFO nothing is formatted (and no sample is drawn)."""
    logger = logging.getLogger("geofence.test.silent")
    logger.setLevel(logging.WARNING)
    audit = AuditLogger(logger, allow_sample_rate=1.0)
    audit.record(_decision(Action.DENY), client=None)
    assert audit.logger is logger


def test_audit_can_be_disabled(engine: Geofence, audit_caplog: pytest.LogCaptureFixture) -> None:
    """audit=None writes no lines."""
    check(gate(engine, audit=None), ADDR["deny"])
    assert not [r for r in audit_caplog.records if r.name == "geofence.audit"]


# -- metrics -----------------------------------------------------------------------------------


def test_prometheus_counters(engine: Geofence) -> None:
    """Decisions are counted by action and reason; shadow matches by would-be action."""
    registry = CollectorRegistry()
    g = gate(engine, metrics=PrometheusMetrics(registry=registry))
    for key in ("deny", "deny6", "allow", "shadow"):
        check(g, ADDR[key])
    value = registry.get_sample_value
    assert value("geofence_decisions_total", {"action": "deny", "reason": "rule:deny-cu"}) == 2
    assert value("geofence_decisions_total", {"action": "allow", "reason": "default"}) == 2
    assert value("geofence_shadow_decisions_total", {"action": "deny", "rule": "shadow-it"}) == 1
    again = PrometheusMetrics(registry=registry)  # same registry: counters are reused
    again.observe(_decision(Action.DENY))
    assert value("geofence_decisions_total", {"action": "deny", "reason": "default"}) == 1


# -- reload and threads ------------------------------------------------------------------------


def test_gate_follows_engine_reload(snapshot: Snapshot) -> None:
    """After Geofence.reload the gate decides with the new policy (and its context needs)."""
    engine = Geofence(snapshot, parse_policy(POLICY))
    g = gate(engine)
    assert check(g, ADDR["allow"]).decision.action is Action.ALLOW
    engine.reload(policy=parse_policy(STRICT_POLICY))
    assert check(g, ADDR["allow"]).decision.action is Action.DENY
    signals_policy = parse_policy(
        """
        [policy]
        id = "signals"
        [[rules]]
        id = "review-untrusted-headers"
        action = "review"
        signals = ["header_untrusted"]
        """
    )
    engine.reload(policy=signals_policy)
    assert check(g, ADDR["allow"]).decision.action is Action.ALLOW  # empty context: "no"
    assert check(g, ADDR["allow"], x_real_ip="1.1.1.1").decision.action is Action.REVIEW


def test_gate_is_shared_safely_between_threads(engine: Geofence) -> None:
    """Many threads through one gate: every decision right, every one counted."""
    registry = CollectorRegistry()
    g = gate(engine, metrics=PrometheusMetrics(registry=registry), audit=None)
    keys = ["allow", "deny", "route", "challenge", "review", "deny6", "route6"]
    expected = {
        "allow": Action.ALLOW,
        "deny": Action.DENY,
        "route": Action.ROUTE,
        "challenge": Action.CHALLENGE,
        "review": Action.REVIEW,
        "deny6": Action.DENY,
        "route6": Action.ROUTE,
    }
    wrong: list[str] = []
    rounds = 300

    def work(offset: int) -> None:
        for i in range(rounds):
            key = keys[(i + offset) % len(keys)]
            verdict = check(g, ADDR[key])
            if verdict.decision.action is not expected[key]:
                wrong.append(key)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong
    total = sum(
        metric.value
        for family in registry.collect()
        if family.name == "geofence_decisions"
        for metric in family.samples
        if metric.name == "geofence_decisions_total"
    )
    assert total == 8 * rounds


# -- the fast path and deferred audit lines ----------------------------------------------------


def test_hot_path_objects_are_plain_slotted_classes() -> None:
    """Verdict, ClientAddress and ParsedAddress: slotted, positional, equal by value."""
    from geofence.addr import ParsedAddress, parse_address
    from geofence.integrations.gate import Verdict
    from geofence.signals.proxy import ClientAddress, ClientSource

    address = parse_address("2001:db8::1")
    assert address == ParsedAddress(version=6, value=address.value, special=address.special)
    assert hash(address) == hash(parse_address("2001:db8::1"))
    built = ClientAddress(address, "2001:db8::1", ClientSource.X_FORWARDED_FOR, ("a", "b"))
    assert built == ClientAddress(
        address=address,
        text="2001:db8::1",
        source=ClientSource.X_FORWARDED_FOR,
        chain=("a", "b"),
    )
    decision = _decision(Action.ROUTE, route="eu-tier")
    reply = Reply.plain(451, "no")
    verdict = Verdict(decision, "eu-tier", reply, built, False, (("X-A", "1"),))
    assert verdict == Verdict(
        decision=decision,
        route="eu-tier",
        reply=reply,
        client=built,
        exempt=False,
        response_headers=(("X-A", "1"),),
    )
    assert repr(verdict).startswith("Verdict(decision=")
    for value in (verdict, built, address):
        assert not hasattr(value, "__dict__")  # slotted


_PEERS = st.sampled_from(["10.0.0.1", "127.0.0.1", "192.0.2.10", "2001:db8::5"])
_FORWARDED = st.one_of(
    st.sampled_from([*ADDR.values(), "::ffff:2.2.2.2", "fe80::1%eth0", "unknown", "", "1.2.3"]),
    st.ip_addresses().map(str),
    st.lists(st.sampled_from(list(ADDR.values())), min_size=2, max_size=3).map(", ".join),
)


@settings(max_examples=300, deadline=None)
@given(
    peer=_PEERS,
    xff=st.none() | _FORWARDED,
    real_ip=st.none() | _FORWARDED,
    path=st.sampled_from(["/", "/health", "/v1/chat"]),
)
def test_fast_check_equals_the_general_path(
    engine: Geofence, peer: str, xff: str | None, real_ip: str | None, path: str
) -> None:
    """Whenever fast_check answers, check() through the general path answers the same."""
    options: dict[str, Any] = {"trusted_proxies": ["10.0.0.0/8"], "exempt_paths": ["/health"]}
    fast, general = gate(engine, **options), gate(engine, **options)
    general._lean = False  # force _start / _context / the general decision
    headers = [("X-Forwarded-For", xff)] if xff is not None else []
    if real_ip is not None:
        headers.append(("X-Real-IP", real_ip))
    args: dict[str, Any] = {
        "kind": "http",
        "method": "GET",
        "path": path,
        "peer": peer,
        "headers": headers,
    }
    quick = fast.fast_check(**args)
    slow = general.check(**args, native=None)
    assert fast.check(**args, native=None) == slow
    if quick is not None:
        assert quick == slow
    if path == "/health":
        assert quick is not None
        assert quick.exempt


def test_fast_check_declines_what_needs_more(engine: Geofence, snapshot: Snapshot) -> None:
    """Hooks, route policies, spoofing evidence and context policies go the general way."""
    args: dict[str, Any] = {"kind": "http", "method": "GET", "path": "/", "peer": "10.0.0.1"}
    plain = gate(engine, trusted_proxies=["10.0.0.0/8"])
    assert plain.fast_check(**args, headers=[("X-Forwarded-For", ADDR["deny"])]) is not None
    spoofed = [("X-Forwarded-For", ADDR["deny"])]  # from a peer nobody trusts
    untrusting = gate(engine)
    assert untrusting.fast_check(**args, headers=spoofed) is None  # header_untrusted evidence
    unflagged = gate(engine, client_signals=False)
    assert unflagged.fast_check(**args, headers=spoofed) is not None
    assert gate(engine, subject=lambda info: None).fast_check(**args, headers=[]) is None
    assert gate(engine, route_policies={"/api": engine}).fast_check(**args, headers=[]) is None
    with Geofence(snapshot, parse_policy(STRICT_POLICY)) as strict:
        assert gate(strict).fast_check(**args, headers=[]) is not None
        strict.reload(policy=parse_policy(_SIGNAL_POLICY))
        assert gate(strict).fast_check(**args, headers=[]) is None  # needs a context now


_SIGNAL_POLICY = """
[policy]
id = "signals"
default = "allow"

[[rules]]
id = "review-spoofing"
action = "review"
signals = ["header_untrusted"]
"""


def test_deferred_audit_is_written_by_record(
    engine: Geofence, audit_caplog: pytest.LogCaptureFixture
) -> None:
    """defer_audit=True writes nothing; record() then writes the line check() would have."""
    g = gate(engine, audit=AuditLogger())
    args: dict[str, Any] = {
        "kind": "http",
        "method": "GET",
        "path": "/v1",
        "peer": ADDR["route"],
        "headers": [],
    }
    verdict = g.check(**args, native=None, defer_audit=True)
    assert not audit_caplog.records
    g.record(verdict, kind="http", method="GET", path="/v1", at=1_700_000_000.0)
    g.check(**args, native=None)
    deferred, direct = (json.loads(r.getMessage()) for r in audit_caplog.records)
    assert deferred["ts"] == 1_700_000_000.0
    del deferred["ts"], direct["ts"]
    assert deferred == direct
    g.record(g.check(**{**args, "path": "/"}, native=None, defer_audit=True), kind="http",
             method="GET", path="/")  # fmt: skip
    assert len(audit_caplog.records) == 3
    gate(engine, audit=None).record(verdict, kind="http", method="GET", path="/v1")
    assert len(audit_caplog.records) == 3


def test_audit_templates_follow_the_extra_keys() -> None:
    """One logger, one shared decision, changing sets of extra keys: every line is to_json."""
    decision = _decision(Action.ROUTE, route="eu-tier", country="DE")
    audit = AuditLogger()
    extras: list[dict[str, object]] = [
        {"event": "route", "status": None},
        {"event": "route"},
        {"zzz": 1, "action": "override", "aaa": [1, 2]},
        {},
        {"event": "route", "status": None},
    ]
    for extra in extras:
        assert audit.line(decision, "1.2.3.4", extra, at=5.0) == decision.to_json(
            address="1.2.3.4", at=5.0, **extra
        )

"""The framework-neutral core shared by every web integration.

One request goes through the same steps whatever the framework (see
:class:`Gate`):

1. an exempt path (exact or prefix) is served untouched, without a decision;
2. the client address is resolved from the socket peer and, only through
   configured trusted proxies, from forwarding headers
   (:func:`geofence.signals.proxy.resolve_client`);
3. the engine for the path (per-route policies, longest prefix first) decides;
   when no decision can be made (no usable client address, an engine error) the
   configured fail mode applies;
4. the action becomes a reply: ``deny`` -> HTTP 451 (RFC 7725) with an optional
   ``Link: <...>; rel="blocked-by"``; ``challenge`` -> a hook, a redirect or a
   401 with ``WWW-Authenticate``; ``allow``/``review``/``route`` pass through to
   the application with the decision (and the route target) attached;
5. non-allow, shadow and degraded decisions are written as one JSON line each
   to the ``geofence.audit`` logger (allows are sampled), and optional
   Prometheus counters are incremented.

The integrations (:mod:`~geofence.integrations.asgi`,
:mod:`~geofence.integrations.wsgi`, :mod:`~geofence.integrations.django`,
:mod:`~geofence.integrations.fastapi`, :mod:`~geofence.integrations.flask`)
only translate their framework's request and response shapes. Usage prose is
in ``docs/middleware.md``.
"""

from __future__ import annotations

import http
import json
import logging
import math
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from geofence.context import Context, Subject
from geofence.decision import Action, Decision
from geofence.signals.proxy import ClientAddress, ClientSource, TrustedProxies, resolve_client

if TYPE_CHECKING:
    from geofence.engine import Geofence

__all__ = [
    "AuditLogger",
    "ChallengeHook",
    "FailMode",
    "Gate",
    "GeofenceConfig",
    "GeofenceOptions",
    "HeaderSource",
    "PrometheusMetrics",
    "Reply",
    "RequestInfo",
    "RouterHook",
    "SubjectHook",
    "Verdict",
    "reason_code",
]

log = logging.getLogger("geofence")

FailMode = Literal["open", "closed"]
"""What to do when no decision can be made: ``open`` serves the request flagged
``review``; ``closed`` refuses it with 451."""

BodyFormat = Literal["json", "plain"]

#: Request headers as ASGI gives them (``(bytes, bytes)`` pairs), as ``(str, str)``
#: pairs, or as a mapping.
HeaderSource = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]

#: Reason codes of decisions the integrations make themselves.
NO_CLIENT_ADDRESS = "client_address_unavailable"
DECISION_ERROR = "decision_error"

# Names (str and bytes, lower case) of every header resolve_client looks at.
_FORWARDING: frozenset[str | bytes] = frozenset(
    name
    for source in ClientSource
    if source is not ClientSource.PEER
    for name in (source.value, source.value.encode("latin-1"))
)

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2 token
_VISIBLE = re.compile(r"^[!-~]+$")  # a header value safe to emit verbatim


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A response the integration sends instead of calling the application.

    Framework-neutral, so that one challenge hook serves every integration.
    """

    status: int
    """HTTP status code."""

    headers: tuple[tuple[str, str], ...] = ()
    """Response headers, in order (names as written)."""

    body: bytes = b""
    """Response body."""

    @classmethod
    def json(cls, status: int, data: object, headers: Iterable[tuple[str, str]] = ()) -> Reply:
        """A JSON reply (``application/json``).

        Args:
            status: HTTP status code.
            data: JSON-serialisable body.
            headers: More response headers.
        """
        body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        return cls(
            status=status,
            headers=(("Content-Type", "application/json"), *headers),
            body=body,
        )

    @classmethod
    def plain(cls, status: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> Reply:
        """A plain-text reply (``text/plain; charset=utf-8``)."""
        return cls(
            status=status,
            headers=(("Content-Type", "text/plain; charset=utf-8"), *headers),
            body=text.encode(),
        )

    @classmethod
    def redirect(cls, location: str, status: int = 303) -> Reply:
        """A redirect (303 See Other by default: the follow-up request is a GET)."""
        return cls(
            status=status,
            headers=(("Location", location), ("Cache-Control", "no-store")),
        )

    @property
    def status_line(self) -> str:
        """``"451 Unavailable For Legal Reasons"`` (for WSGI ``start_response``)."""
        try:
            phrase = http.HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        return f"{self.status} {phrase}"

    def with_headers(self, extra: Iterable[tuple[str, str]]) -> Reply:
        """A copy with ``extra`` headers appended."""
        more = tuple(extra)
        return replace(self, headers=(*self.headers, *more)) if more else self


class RequestInfo:
    """What hooks see of a request, whatever the framework.

    Attributes:
        kind: ``"http"`` or ``"websocket"``.
        method: The HTTP method (``"GET"`` for websocket handshakes).
        path: The request path as the application routes it.
        client: The resolved client address (``None`` on exempt paths).
        native: The framework's own request object: the ASGI scope, the WSGI
            environ, Django's ``HttpRequest`` or Starlette's ``HTTPConnection``.
    """

    __slots__ = ("_headers", "_raw", "client", "kind", "method", "native", "path")

    def __init__(
        self,
        *,
        kind: str,
        method: str,
        path: str,
        client: ClientAddress | None,
        headers: HeaderSource,
        native: object,
    ) -> None:
        self.kind = kind
        self.method = method
        self.path = path
        self.client = client
        self.native = native
        self._raw = headers
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> Mapping[str, str]:
        """Request headers, names lower-cased, repeated lines joined with ``", "``."""
        if self._headers is None:
            items = self._raw.items() if isinstance(self._raw, Mapping) else self._raw
            out: dict[str, str] = {}
            for name, value in items:
                key = _text(name).lower()
                text = _text(value)
                out[key] = f"{out[key]}, {text}" if key in out else text
            self._headers = out
        return self._headers

    def __repr__(self) -> str:
        return f"RequestInfo(kind={self.kind!r}, method={self.method!r}, path={self.path!r})"


#: ``(request, decision) -> Reply | None``: answer a ``challenge``; ``None`` lets
#: the request through (the subject already passed step-up verification).
ChallengeHook = Callable[[RequestInfo, Decision], Reply | None]

#: ``(request) -> Subject | Context | None``: who is behind the request. A
#: :class:`~geofence.context.Subject` or :class:`~geofence.context.Context`
#: makes the decision evaluate subject rules and signals.
SubjectHook = Callable[[RequestInfo], Subject | Context | None]

#: ``(request, decision) -> target | None``: the route target exposed to the
#: application (default: :attr:`Decision.route` of ``route`` decisions).
RouterHook = Callable[[RequestInfo, Decision], str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What the integration does with one request."""

    decision: Decision | None
    """The decision (``None`` on exempt paths)."""

    route: str | None = None
    """Route target for the application and the route header, or ``None``."""

    reply: Reply | None = None
    """A reply to send instead of calling the application (deny, challenge)."""

    client: ClientAddress | None = None
    """The resolved client address (``None`` on exempt paths)."""

    exempt: bool = False
    """Whether the path is exempt (no decision was made)."""

    response_headers: tuple[tuple[str, str], ...] = ()
    """Headers to add to the application's response (decision/route headers)."""


_EXEMPT = Verdict(decision=None, exempt=True)

# Enum members as module constants: ``Action.DENY`` is a class attribute lookup
# through the enum machinery (~60 ns each) on every request.
_DENY, _CHALLENGE, _ROUTE = Action.DENY, Action.CHALLENGE, Action.ROUTE

_new = object.__new__
_set_v_decision = Verdict.__dict__["decision"].__set__
_set_v_route = Verdict.__dict__["route"].__set__
_set_v_reply = Verdict.__dict__["reply"].__set__
_set_v_client = Verdict.__dict__["client"].__set__
_set_v_exempt = Verdict.__dict__["exempt"].__set__
_set_v_headers = Verdict.__dict__["response_headers"].__set__


def _verdict(
    decision: Decision,
    route: str | None,
    reply: Reply | None,
    client: ClientAddress,
    response_headers: tuple[tuple[str, str], ...],
) -> Verdict:
    """A Verdict without the frozen dataclass ``__init__`` (one per request).

    That ``__init__`` calls ``object.__setattr__`` per field; writing the slots
    through their descriptors costs a third (the same trick as
    :func:`geofence.addr._make_parsed`). The result equals
    ``Verdict(decision=..., ...)`` (tested).
    """
    verdict: Verdict = _new(Verdict)
    _set_v_decision(verdict, decision)
    _set_v_route(verdict, route)
    _set_v_reply(verdict, reply)
    _set_v_client(verdict, client)
    _set_v_exempt(verdict, False)
    _set_v_headers(verdict, response_headers)
    return verdict


#: Entries of the per-gate client address cache, and the largest total length of
#: forwarding header values it keeps (longer ones are resolved every time).
_CLIENT_CACHE_SIZE = 4096
#: Hashes of client keys seen once, remembered so that a second sighting is cached.
_SEEN_SIZE = 16384
_CLIENT_KEY_MAX = 512
#: Shared decisions whose audit fields are kept ready (a policy has few of them).
_AUDIT_CACHE_SIZE = 4096
_EMPTY_CONTEXT = Context()


# --------------------------------------------------------------------------- audit


def _dumps(value: object) -> str:
    """The audit line's JSON form: compact, sorted keys, unknown types as ``str``."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _member(key: str, value: object) -> str:
    """``"key":value`` exactly as :func:`_dumps` writes it inside an object."""
    return encode_basestring_ascii(key) + ":" + _value(value)


def _value(value: object) -> str:
    """``value`` exactly as :func:`_dumps` writes it inside an object.

    Strings, ``None``, booleans, integers, finite floats and lists of strings
    (nearly every audit field) skip the ``json.dumps`` call; the rest goes
    through it. The exact types an audit line carries are tested first.
    """
    if type(value) is float and math.isfinite(value):  # the timestamp
        return float.__repr__(value)
    if type(value) is list and all(type(item) is str for item in value):  # the client chain
        return "[" + ",".join([encode_basestring_ascii(item) for item in value]) + "]"
    if isinstance(value, str):
        text = encode_basestring_ascii(value)
    elif value is None:
        text = "null"
    elif value is True:
        text = "true"
    elif value is False:
        text = "false"
    elif isinstance(value, int):  # IntEnum and IntFlag too, as json writes them
        text = int.__repr__(value)
    elif isinstance(value, float) and math.isfinite(value):
        text = float.__repr__(value)
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        text = "[" + ",".join([encode_basestring_ascii(item) for item in value]) + "]"
    else:
        text = _dumps(value)
    return text


class AuditLogger:
    """Writes one JSON line per decision worth keeping to a stdlib logger.

    Logged: every decision whose action is not ``allow`` (deny, challenge,
    review, route), shadow-mode matches (``log_shadow``), degraded decisions
    (fail mode, engine errors), and a sample of plain allows. The message is
    exactly :meth:`Decision.to_json` with request fields added, so a line can be
    parsed back and re-checked against the policy and snapshot it names.

    Args:
        logger: A logger or its name (default ``"geofence.audit"``).
        allow_sample_rate: Fraction of plain allows to log, 0.0 to 1.0.
        seed: Seed of the sampler, for reproducible samples in tests.
        level: Log level of the lines.
        log_shadow: Log allows on which a shadow-mode rule matched.
        actions: Actions always logged (default: every action but ``allow``).
            Decisions with other actions are sampled like allows; e.g. leave
            out ``"route"`` when most traffic is routed.

    Raises:
        ValueError: ``allow_sample_rate`` is outside 0..1, or an action is unknown.
    """

    __slots__ = ("_actions", "_bases", "_level", "_logger", "_random", "_rate", "_shadow")

    def __init__(
        self,
        logger: logging.Logger | str = "geofence.audit",
        *,
        allow_sample_rate: float = 0.0,
        seed: int | None = None,
        level: int = logging.INFO,
        log_shadow: bool = True,
        actions: Iterable[Action | str] = (
            Action.DENY,
            Action.CHALLENGE,
            Action.REVIEW,
            Action.ROUTE,
        ),
    ) -> None:
        if not 0.0 <= allow_sample_rate <= 1.0:
            raise ValueError(f"allow_sample_rate must be between 0 and 1, got {allow_sample_rate}")
        # A tuple, tested with ``in``: identity matches first, where a set would
        # hash each Action through the enum's Python-level __hash__.
        self._actions = tuple(dict.fromkeys(Action(a) for a in actions))
        # id(decision) -> (decision, extra keys, line template) for shared decisions.
        self._bases: dict[int, tuple[Decision, tuple[str, ...], _Template]] = {}
        self._logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self._rate = float(allow_sample_rate)
        # random.Random.random is a single C call: safe to share between threads.
        self._random = random.Random(seed).random
        self._level = level
        self._shadow = log_shadow

    @property
    def logger(self) -> logging.Logger:
        """The logger lines go to."""
        return self._logger

    @property
    def enabled(self) -> bool:
        """Whether the logger takes lines at this level now (callers skip the work if not)."""
        return self._logger.isEnabledFor(self._level)

    def _event(self, decision: Decision) -> str | None:
        """The event name of a decision, or ``None`` when it is not logged."""
        if decision.action in self._actions:
            return str(decision.action.value)
        if decision.degraded:
            return "degraded"
        if decision.shadow and self._shadow:
            return "shadow"
        rate = self._rate
        if rate > 0.0 and (rate >= 1.0 or self._random() < rate):
            return "sample"
        return None

    def record(
        self,
        decision: Decision,
        *,
        client: ClientAddress | None,
        request: RequestInfo | None = None,
        status: int | None = None,
        integration: str = "",
        kind: str = "http",
        method: str = "",
        path: str = "",
        at: float | None = None,
    ) -> None:
        """Log one decision if it is worth keeping (see the class docstring).

        Args:
            decision: The decision.
            client: The resolved client address.
            request: The request, when a hook needed one (unused otherwise).
            status: Status of the reply sent instead of the application, or
                ``None`` when the request went on to the application.
            integration: Which integration decided (``"asgi"``, ``"wsgi"``...).
            kind: ``"http"`` or ``"websocket"``.
            method: HTTP method.
            path: Request path (never the query string: it may carry secrets).
            at: Unix time of the decision (default: now); for lines written
                after the response, so ``ts`` still says when it was decided.
        """
        if not self._logger.isEnabledFor(self._level):
            return
        event = self._event(decision)
        if event is None:
            return
        address: str | None = None
        extra: dict[str, object] = {}
        if client is not None:
            address = client.address.original_text if client.address is not None else client.text
            extra["client_source"] = client.source._value_  # .value is an enum property
            extra["client_chain"] = list(client.chain)
            if client.signals and not decision.signals:
                extra["client_signals"] = [s.as_dict() for s in client.signals]
        extra.update(
            event=event,
            status=status,
            integration=integration,
            kind=kind,
            method=method,
            path=path,
        )
        logger = self._logger
        # makeRecord + handle is what Logger.log does after its level check (done
        # above), minus the stack walk that finds the caller's file and line:
        # every audit line comes from here, so the record names this method.
        logger.handle(
            logger.makeRecord(
                logger.name,
                self._level,
                __file__,
                0,
                self.line(decision, address or None, extra, at=at),
                (),
                None,
                "AuditLogger.record",
            )
        )

    def line(
        self,
        decision: Decision,
        address: str | None,
        extra: Mapping[str, object],
        *,
        at: float | None = None,
    ) -> str:
        """The JSON line: exactly ``decision.to_json(address=address, at=at, **extra)``.

        Shared decisions (``address`` is ``None``: the precomputed ones, the
        same object for every address of a network) keep a template of their
        line, with their own members already encoded, so a line only encodes
        the request's fields; the parity with :meth:`Decision.to_json` is
        tested.

        Args:
            decision: The decision.
            address: The address decided (default: :attr:`Decision.address`).
            extra: More keys (they override the decision's own).
            at: Unix time of the decision (default: now).
        """
        stamp = round(time.time() if at is None else at, 3)
        if decision.address is not None:  # made for one request: nothing to reuse
            data = decision.as_dict(**extra)
            data["address"] = address if address is not None else decision.address
            data["ts"] = stamp
            return _dumps(data)
        keys = tuple(extra)
        cached = self._bases.get(id(decision))
        if cached is None or cached[0] is not decision or cached[1] != keys:
            cached = (decision, keys, _template(decision, keys))
            if len(self._bases) >= _AUDIT_CACHE_SIZE:
                # Start over when full (O(1), atomic); evicting the oldest entry
                # one by one walks the dict's deleted slots on every miss.
                self._bases.clear()
            self._bases[id(decision)] = cached
        # The template alternates fixed text (the decision's own members in key
        # order, then the separator and key of the next member filled in here)
        # and the names of those members.
        values = {**extra, "address": address, "ts": stamp}
        parts: list[str] = []
        for piece, key in cached[2]:
            parts.append(piece)
            if key is not None:
                value = values[key]
                parts.append(_encode(value) if type(value) is str else _value(value))
        return "".join(parts)


#: A line template: (fixed text, name of the member whose value follows it, or None).
_Template = tuple[tuple[str, str | None], ...]
_encode = encode_basestring_ascii


def _template(decision: Decision, keys: tuple[str, ...]) -> _Template:
    """The template of the lines of a shared decision with extra members ``keys``.

    Filling it in gives exactly what ``json.dumps(..., separators=(",", ":"),
    sort_keys=True)`` writes for the decision's fields updated with the extra
    members, ``address`` and ``ts`` (:meth:`AuditLogger.line`).
    """
    own = decision.as_dict()
    filled = {*keys, "address", "ts"}
    out: list[tuple[str, str | None]] = []
    fixed: list[str] = []
    for position, key in enumerate(sorted({*own, *filled})):
        comma = "," if position else "{"
        if key in filled:
            fixed.append(comma + _encode(key) + ":")
            out.append(("".join(fixed), key))
            fixed = []
        else:
            fixed.append(comma + _member(key, own[key]))
    fixed.append("}")
    out.append(("".join(fixed), None))
    return tuple(out)


# --------------------------------------------------------------------------- metrics

_counter_lock = threading.Lock()
# Counters per registry: a second middleware (or a Django re-configuration) on the
# same registry reuses them instead of failing with "Duplicated timeseries".
_counters: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


class PrometheusMetrics:
    """Prometheus counters of decisions (needs the ``prometheus`` extra).

    Counters (``namespace`` defaults to ``geofence``):

    * ``geofence_decisions_total{action, reason}``: every decision made, by the
      action enforced and the first reason code (``rule:<id>``, ``default``,
      ``unknown_address``, ``client_address_unavailable``...). Reason codes come
      from the policy, so the label set stays as small as the policy.
    * ``geofence_shadow_decisions_total{action, rule}``: shadow-mode matches, by
      the action that would have applied and the shadow rule id.

    Args:
        registry: A ``prometheus_client.CollectorRegistry`` (default: the global one).
        namespace: Metric name prefix.

    Raises:
        ImportError: ``prometheus-client`` is not installed.
    """

    __slots__ = ("_children", "_decisions", "_shadow", "_shadow_children")

    def __init__(self, *, registry: Any = None, namespace: str = "geofence") -> None:
        # Any: prometheus_client is an optional dependency, imported lazily here.
        try:
            import prometheus_client
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "PrometheusMetrics needs prometheus-client: pip install 'geofence[prometheus]'"
            ) from exc
        reg = registry if registry is not None else prometheus_client.REGISTRY
        with _counter_lock:
            known = _counters.setdefault(reg, {})
            decisions = f"{namespace}_decisions"
            shadow = f"{namespace}_shadow_decisions"
            if decisions not in known:
                known[decisions] = prometheus_client.Counter(
                    decisions,
                    "Geofence decisions by enforced action and first reason code.",
                    ("action", "reason"),
                    registry=reg,
                )
            if shadow not in known:
                known[shadow] = prometheus_client.Counter(
                    shadow,
                    "Shadow-mode matches by the action that would have applied and rule id.",
                    ("action", "rule"),
                    registry=reg,
                )
            self._decisions = known[decisions]
            self._shadow = known[shadow]
        self._children: dict[tuple[str, str], Any] = {}
        self._shadow_children: dict[tuple[str, str], Any] = {}

    def observe(self, decision: Decision) -> None:
        """Count one decision."""
        key = (decision.action.value, reason_code(decision))
        child = self._children.get(key)
        if child is None:  # labels() takes a lock; cache the child per label set
            child = self._children.setdefault(key, self._decisions.labels(*key))
        child.inc()
        if decision.shadow and decision.shadow_action is not None:
            skey = (decision.shadow_action.value, decision.shadow_rule_id or "policy")
            schild = self._shadow_children.get(skey)
            if schild is None:
                schild = self._shadow_children.setdefault(skey, self._shadow.labels(*skey))
            schild.inc()


# --------------------------------------------------------------------------- configuration


class GeofenceOptions(TypedDict, total=False):
    """Keyword options accepted by every integration (see :class:`GeofenceConfig`)."""

    trusted_proxies: TrustedProxies | str | Iterable[str] | Mapping[str, object] | None
    exempt_paths: Iterable[str]
    exempt_prefixes: Iterable[str]
    route_policies: Mapping[str, Geofence]
    fail_mode: FailMode
    body_format: BodyFormat
    blocked_by: str | None
    challenge: ChallengeHook | None
    challenge_redirect: str | None
    challenge_type: str
    route_header: str
    route_response_header: bool
    decision_header: str | None
    subject: SubjectHook | None
    router: RouterHook | None
    client_signals: bool
    audit: AuditLogger | None
    metrics: PrometheusMetrics | bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GeofenceConfig:
    """Validated settings of an integration. Build with :meth:`from_options`.

    Raises:
        ValueError: A setting is invalid (the message names it).
    """

    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    """Who may speak for the client through forwarding headers (default: nobody)."""

    exempt_paths: frozenset[str] = frozenset()
    """Paths served without a decision, matched exactly (``/healthz``)."""

    exempt_prefixes: tuple[str, ...] = ()
    """Path prefixes served without a decision. A prefix matches at a segment
    boundary: ``/static`` matches ``/static`` and ``/static/app.js``, not
    ``/staticfiles``; a prefix ending in ``/`` matches what starts with it."""

    route_policies: tuple[tuple[str, Geofence], ...] = ()
    """``(path prefix, engine)`` pairs, longest prefix first; the first matching
    prefix (same boundary rule) picks the engine, else the default engine."""

    fail_mode: FailMode = "closed"
    """When no decision can be made: ``closed`` refuses with 451 (reason
    ``client_address_unavailable`` or ``decision_error``); ``open`` serves the
    request with a degraded ``review`` decision. Both are audited."""

    body_format: BodyFormat = "json"
    """Body of 451 and 401 replies: ``json`` or ``plain``; either names only the
    reason code, never the address, country or data."""

    blocked_by: str | None = None
    """URI for ``Link: <uri>; rel="blocked-by"`` on 451 replies (RFC 7725 §4):
    who implements the block; a page explaining it serves users best."""

    challenge: ChallengeHook | None = None
    """Answers ``challenge`` decisions; see :data:`ChallengeHook`. Checked first."""

    challenge_redirect: str | None = None
    """Without a hook: redirect ``challenge`` decisions here (303 See Other)."""

    challenge_type: str = "step-up"
    """Without a hook or redirect: reply 401 with
    ``WWW-Authenticate: Geofence challenge="<type>"`` (an RFC 9110 token)."""

    route_header: str = "X-Geofence-Route"
    """Request header carrying the route target to the application and upstream
    routers. Any value a client sent in it is always removed first."""

    route_response_header: bool = False
    """Also add the route header to responses."""

    decision_header: str | None = None
    """Add the enforced action to responses under this name
    (e.g. ``X-Geofence-Decision``); ``None`` adds nothing."""

    subject: SubjectHook | None = None
    """Who is behind the request; see :data:`SubjectHook`."""

    router: RouterHook | None = None
    """Chooses the route target; see :data:`RouterHook`."""

    client_signals: bool = True
    """Pass forwarding-header evidence (spoofed or inconsistent headers) to the
    policy as signals. Requests with such evidence are decided per request
    instead of from the precomputed table (a few microseconds)."""

    audit: AuditLogger | None = field(default_factory=AuditLogger)
    """Where decisions are logged; ``None`` disables audit lines."""

    metrics: PrometheusMetrics | None = None
    """Prometheus counters, or ``None``."""

    def __post_init__(self) -> None:
        if not isinstance(self.trusted_proxies, TrustedProxies):
            raise ValueError(
                f"trusted_proxies must be TrustedProxies, got {self.trusted_proxies!r} "
                "(GeofenceConfig.from_options accepts CIDR lists and mappings)"
            )
        if self.fail_mode not in ("open", "closed"):
            raise ValueError(f"fail_mode must be 'open' or 'closed', got {self.fail_mode!r}")
        if self.body_format not in ("json", "plain"):
            raise ValueError(f"body_format must be 'json' or 'plain', got {self.body_format!r}")
        for path in (*self.exempt_paths, *self.exempt_prefixes):
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"exempt paths must start with '/', got {path!r}")
        for prefix, engine in self.route_policies:
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ValueError(f"route_policies prefixes must start with '/', got {prefix!r}")
            if not callable(getattr(engine, "decide", None)):
                raise ValueError(f"route_policies[{prefix!r}] must be a Geofence, got {engine!r}")
        if not _TOKEN.match(self.route_header):
            raise ValueError(f"route_header {self.route_header!r} is not a valid header name")
        if self.decision_header is not None and not _TOKEN.match(self.decision_header):
            raise ValueError(f"decision_header {self.decision_header!r} is not a valid header name")
        if not _TOKEN.match(self.challenge_type):
            raise ValueError(f"challenge_type {self.challenge_type!r} must be an RFC 9110 token")
        urls = (("blocked_by", self.blocked_by), ("challenge_redirect", self.challenge_redirect))
        for name, url in urls:
            if url is not None and (not url or not _VISIBLE.match(url) or ">" in url):
                raise ValueError(f"{name} must be a URI without spaces, got {url!r}")
        for name in ("challenge", "subject", "router"):
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise ValueError(f"{name} must be callable, got {hook!r}")
        if self.audit is not None and not callable(getattr(self.audit, "record", None)):
            raise ValueError(f"audit must be an AuditLogger or None, got {self.audit!r}")
        if self.metrics is not None and not callable(getattr(self.metrics, "observe", None)):
            raise ValueError(f"metrics must be PrometheusMetrics or None, got {self.metrics!r}")

    @classmethod
    def from_options(cls, **options: Unpack[GeofenceOptions]) -> GeofenceConfig:
        """Build from keyword options, accepting convenient forms.

        ``trusted_proxies`` may be a :class:`~geofence.signals.proxy.TrustedProxies`,
        a CIDR string or list (``"10.0.0.0/8, 127.0.0.1"``), a mapping for
        :meth:`TrustedProxies.from_config`, or ``None`` (trust nobody).
        ``route_policies`` is a mapping of path prefix to engine. ``metrics=True``
        uses :class:`PrometheusMetrics` on the global registry.

        Raises:
            ValueError: An option is unknown or invalid.
        """
        unknown = sorted(set(options) - set(GeofenceOptions.__annotations__))
        if unknown:
            known = ", ".join(sorted(GeofenceOptions.__annotations__))
            raise ValueError(f"unknown geofence option(s) {unknown}; known: {known}")
        kwargs: dict[str, Any] = dict(options)
        kwargs["trusted_proxies"] = _trusted(options.get("trusted_proxies"))
        if "exempt_paths" in options:
            kwargs["exempt_paths"] = frozenset(_strings(options["exempt_paths"], "exempt_paths"))
        if "exempt_prefixes" in options:
            kwargs["exempt_prefixes"] = _strings(options["exempt_prefixes"], "exempt_prefixes")
        if "route_policies" in options:
            policies = options["route_policies"]
            if not isinstance(policies, Mapping):
                raise ValueError(
                    f"route_policies must map path prefixes to engines, got {policies!r}"
                )
            kwargs["route_policies"] = tuple(
                sorted(policies.items(), key=lambda item: len(item[0]), reverse=True)
            )
        metrics = options.get("metrics")
        if metrics is True:
            kwargs["metrics"] = PrometheusMetrics()
        elif metrics is False:
            kwargs["metrics"] = None
        return cls(**kwargs)


def resolve_config(config: GeofenceConfig | None, options: GeofenceOptions) -> GeofenceConfig:
    """The settings of a middleware: ``config``, or one built from keyword ``options``.

    Raises:
        ValueError: Both are given, or an option is invalid.
    """
    if config is not None and options:
        raise ValueError("pass either config or keyword options, not both")
    return config if config is not None else GeofenceConfig.from_options(**options)


def _trusted(value: object) -> TrustedProxies:
    if value is None:
        return TrustedProxies()
    if isinstance(value, TrustedProxies):
        return value
    if isinstance(value, Mapping):
        return TrustedProxies.from_config(value)
    if isinstance(value, (str, Iterable)):
        return TrustedProxies(cidrs=value)
    raise ValueError(f"trusted_proxies must be TrustedProxies, CIDRs or a mapping, got {value!r}")


def _strings(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{what} must be a list of paths, got {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{what} must be strings, got {item!r}")
    return items


# --------------------------------------------------------------------------- the gate


def reason_code(decision: Decision) -> str:
    """The one reason code a refused client is told (and metrics are labelled by)."""
    return decision.reasons[0] if decision.reasons else decision.outcome


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("latin-1")


def _under(path: str, prefix: str) -> bool:
    """Whether ``path`` lies under ``prefix`` at a segment boundary."""
    if not path.startswith(prefix):
        return False
    return prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/"


class _Pending:
    """A request between the start of :meth:`Gate.check` and the engine's answer."""

    __slots__ = ("client", "context", "decision", "engine", "info", "kind", "method", "path")

    def __init__(
        self,
        kind: str,
        method: str,
        path: str,
        client: ClientAddress,
        info: RequestInfo | None,
        engine: Geofence,
    ) -> None:
        self.kind = kind
        self.method = method
        self.path = path
        self.client = client
        self.info = info
        self.engine = engine
        self.context: Context | None = None
        self.decision: Decision | None = None  # set when no engine call is needed


class Gate:
    """Decide one request and say what to do with it, framework-neutrally.

    Integrations call :meth:`check` and translate the :class:`Verdict`; a new
    integration (aiohttp, a gRPC interceptor) needs nothing else.

    Args:
        geofence: The default engine.
        config: The settings.
        integration: Name recorded in audit lines (``"asgi"``, ``"wsgi"``...).
    """

    __slots__ = (
        "_audit",
        "_client_signals",
        "_clients",
        "_config",
        "_engine",
        "_exact",
        "_hooks",
        "_integration",
        "_lean",
        "_metrics",
        "_prefixes",
        "_replies",
        "_routes",
        "_seen",
        "_subject",
        "_trusted",
    )

    def __init__(self, geofence: Geofence, config: GeofenceConfig, *, integration: str) -> None:
        if not callable(getattr(geofence, "decide", None)):
            raise ValueError(f"geofence must be a Geofence, got {geofence!r}")
        self._engine = geofence
        self._config = config
        self._integration = integration
        self._trusted = config.trusted_proxies
        self._exact = config.exempt_paths
        self._prefixes = config.exempt_prefixes
        self._routes = config.route_policies
        self._audit = config.audit
        self._metrics = config.metrics
        self._hooks = (
            config.subject is not None or config.router is not None or config.challenge is not None
        )
        # Replies per (action, reason code): reason codes come from the policy, so
        # this stays as small as the policy; built once, then shared.
        self._replies: dict[tuple[Action, str], Reply] = {}
        self._clients: dict[tuple[object, ...], ClientAddress] = {}
        self._seen: set[int] = set()  # hashes of client keys seen once (see _client)
        self._subject = config.subject
        self._client_signals = config.client_signals
        self._lean = not (self._hooks or self._routes)

    @property
    def config(self) -> GeofenceConfig:
        """The settings."""
        return self._config

    @property
    def geofence(self) -> Geofence:
        """The default engine."""
        return self._engine

    def is_exempt(self, path: str) -> bool:
        """Whether ``path`` is served without a decision."""
        if path in self._exact:
            return True
        return any(_under(path, prefix) for prefix in self._prefixes)

    def engine_for(self, path: str) -> Geofence:
        """The engine deciding ``path`` (per-route policies, longest prefix first)."""
        for prefix, engine in self._routes:
            if _under(path, prefix):
                return engine
        return self._engine

    def check(
        self,
        *,
        kind: str,
        method: str,
        path: str,
        peer: str | None,
        headers: HeaderSource,
        native: object,
        defer_audit: bool = False,
    ) -> Verdict:
        """Decide one request.

        Args:
            kind: ``"http"`` or ``"websocket"``.
            method: HTTP method.
            path: Request path as the application routes it.
            peer: The socket peer's address, ``None`` when there is none.
            headers: The request headers.
            native: The framework's request object, handed to hooks.
            defer_audit: Leave the audit line to the caller, who writes it with
                :meth:`record` once the response is on its way.

        Returns:
            What to do: pass (with the decision and route) or reply.
        """
        verdict = self.fast_check(
            kind=kind, method=method, path=path, peer=peer, headers=headers, defer_audit=defer_audit
        )
        if verdict is not None:
            return verdict
        pending = self._start(kind, method, path, peer, headers, native)
        decision = pending.decision
        if decision is None:
            address = pending.client.address
            try:
                decision = pending.engine.decide(address, pending.context)
            except Exception:
                decision = self._error(pending)
        return self._settle(pending, decision, defer_audit)

    async def acheck(
        self,
        *,
        kind: str,
        method: str,
        path: str,
        peer: str | None,
        headers: HeaderSource,
        native: object,
        defer_audit: bool = False,
    ) -> Verdict:
        """Decide one request from async code: like :meth:`check`, but awaits the engine.

        Decisions with a context go through :meth:`Geofence.adecide`, so an
        asyncio history store (Redis) does not block the event loop; the
        rest (and every decision without a context) is the same synchronous
        sub-microsecond work as :meth:`check`.

        Args:
            kind: ``"http"`` or ``"websocket"``.
            method: HTTP method.
            path: Request path as the application routes it.
            peer: The socket peer's address, ``None`` when there is none.
            headers: The request headers.
            native: The framework's request object, handed to hooks.
            defer_audit: Leave the audit line to the caller (see :meth:`check`).

        Returns:
            What to do: pass (with the decision and route) or reply.
        """
        verdict = self.fast_check(
            kind=kind, method=method, path=path, peer=peer, headers=headers, defer_audit=defer_audit
        )
        if verdict is not None:
            return verdict
        return await self._acheck_general(kind, method, path, peer, headers, native, defer_audit)

    async def _acheck_general(
        self,
        kind: str,
        method: str,
        path: str,
        peer: str | None,
        headers: HeaderSource,
        native: object,
        defer_audit: bool,
    ) -> Verdict:
        """:meth:`acheck` once :meth:`fast_check` has declined.

        The ASGI middleware calls this directly, so the fast path is not tried twice.
        """
        pending = self._start(kind, method, path, peer, headers, native)
        decision = pending.decision
        if decision is None:
            address = pending.client.address
            try:
                if pending.context is None:
                    decision = pending.engine.decide(address)
                else:
                    decision = await pending.engine.adecide(address, pending.context)
            except Exception:
                decision = self._error(pending)
        return self._settle(pending, decision, defer_audit)

    def fast_check(
        self,
        *,
        kind: str,
        method: str,
        path: str,
        peer: str | None,
        headers: HeaderSource,
        defer_audit: bool = False,
    ) -> Verdict | None:
        """The verdict of a request its client address alone decides, else ``None``.

        That is the common case: an exempt path, or no hooks and no per-route
        policies, a resolved client address without spoofing evidence (or
        ``client_signals`` off), and a policy with no subject or signal rules.
        Otherwise (and if the engine raises) it returns ``None``, and
        :meth:`check` or :meth:`acheck` decides, with the same result they
        would give anyway (tested). Async integrations call this first: most
        requests then need no coroutine.

        Args:
            kind: ``"http"`` or ``"websocket"``.
            method: HTTP method.
            path: Request path as the application routes it.
            peer: The socket peer's address, ``None`` when there is none.
            headers: The request headers.
            defer_audit: Leave the audit line to the caller (see :meth:`check`).
        """
        if path in self._exact or (self._prefixes and self.is_exempt(path)):
            return _EXEMPT
        engine = self._engine
        if not self._lean or engine.needs_context:
            return None  # decided before resolving the client: no work done twice
        client = self._client(peer, headers)
        address = client.address
        if address is None or (client.signals and self._client_signals):
            return None
        try:
            decision = engine.decide(address)
        except Exception:
            return None  # the general path logs it and applies the fail mode
        return self._finish(decision, client, None, kind, method, path, defer_audit)

    def record(
        self, verdict: Verdict, *, kind: str, method: str, path: str, at: float | None = None
    ) -> None:
        """Write the audit line of a verdict made with ``defer_audit=True``.

        The ASGI middleware decides, answers (or calls the application), then
        records: building and logging the line (~10 µs) then no longer delays
        the response. Does nothing without an audit logger or on exempt paths.

        Args:
            verdict: What :meth:`check` or :meth:`acheck` returned.
            kind: ``"http"`` or ``"websocket"``.
            method: HTTP method.
            path: Request path as the application routes it.
            at: Unix time of the decision (default: now).
        """
        audit = self._audit
        decision = verdict.decision
        if audit is None or decision is None:
            return
        reply = verdict.reply
        audit.record(
            decision,
            client=verdict.client,
            status=reply.status if reply is not None else None,
            integration=self._integration,
            kind=kind,
            method=method,
            path=path,
            at=at,
        )

    def _start(
        self,
        kind: str,
        method: str,
        path: str,
        peer: str | None,
        headers: HeaderSource,
        native: object,
    ) -> _Pending:
        """Everything before the engine is asked: client, hooks' view, engine, context."""
        client = self._client(peer, headers)
        info = (
            RequestInfo(
                kind=kind, method=method, path=path, client=client, headers=headers, native=native
            )
            if self._hooks
            else None
        )
        engine = self.engine_for(path) if self._routes else self._engine
        pending = _Pending(kind, method, path, client, info, engine)
        if client.address is None:
            pending.decision = self._fail(engine, NO_CLIENT_ADDRESS, client)
            return pending
        if (
            self._subject is None
            and not (self._client_signals and client.signals)
            and not engine.needs_context
        ):
            return pending  # the common case: no hook, no evidence, nothing asks for it
        try:
            pending.context = self._context(engine, client, info)
        except Exception:
            pending.decision = self._error(pending)
        return pending

    def _context(
        self, engine: Geofence, client: ClientAddress, info: RequestInfo | None
    ) -> Context | None:
        """The request context: from the subject hook, client evidence, policy needs."""
        config = self._config
        context: Context | None = None
        if config.subject is not None and info is not None:
            found = config.subject(info)
            if isinstance(found, Subject):
                context = Context(subject=found)
            elif isinstance(found, Context):
                context = found
            elif found is not None:
                raise TypeError(f"subject hook returned {found!r}, not Subject or Context")
        if config.client_signals and client.signals:
            if context is None:
                context = Context(signals=client.signals)
            else:
                context = replace(context, signals=(*context.signals, *client.signals))
        if context is None and engine.needs_context:
            # Rules on signals or subjects are "unresolved" without a context;
            # with an empty one, absent evidence is a plain "no".
            context = _EMPTY_CONTEXT
        return context

    def _error(self, pending: _Pending) -> Decision:
        """Log the exception being handled; the fail mode decides."""
        address = pending.client.address
        log.exception(
            "geofence: no decision for %s; fail mode %s",
            address.text if address is not None else pending.client.text,
            self._config.fail_mode,
        )
        return self._fail(pending.engine, DECISION_ERROR, pending.client)

    def _settle(self, pending: _Pending, decision: Decision, defer_audit: bool) -> Verdict:
        """:meth:`_finish` for a request that went through :meth:`_start`."""
        return self._finish(
            decision,
            pending.client,
            pending.info,
            pending.kind,
            pending.method,
            pending.path,
            defer_audit,
        )

    def _finish(
        self,
        decision: Decision,
        client: ClientAddress,
        info: RequestInfo | None,
        kind: str,
        method: str,
        path: str,
        defer_audit: bool,
    ) -> Verdict:
        """Everything after the decision: route, reply, headers, audit, metrics."""
        config = self._config
        action = decision.action
        route: str | None = decision.route if action is _ROUTE else None
        if config.router is not None and info is not None:
            try:
                route = config.router(info, decision)
            except Exception:
                log.exception("geofence: router hook failed; no route target set")
                route = None
        if route is not None and not (isinstance(route, str) and _VISIBLE.match(route)):
            log.error("geofence: route target %r is not a header-safe token; ignored", route)
            route = None

        reply: Reply | None = None
        if action is _DENY:
            reply = self._cached_reply(decision)
        elif action is _CHALLENGE:
            if config.challenge is not None and info is not None:
                try:
                    reply = config.challenge(info, decision)
                except Exception:
                    log.exception("geofence: challenge hook failed; using the default challenge")
                    reply = self._cached_reply(decision)
                if reply is not None and not isinstance(reply, Reply):
                    log.error("geofence: challenge hook returned %r, not a Reply", reply)
                    reply = self._cached_reply(decision)
            else:
                reply = self._cached_reply(decision)

        extra: tuple[tuple[str, str], ...] = ()
        if config.decision_header is not None:
            extra = ((config.decision_header, decision.action.value),)
        if route is not None and config.route_response_header:
            extra = (*extra, (config.route_header, route))
        if reply is not None and extra:
            reply = reply.with_headers(extra)

        audit = self._audit
        if audit is not None and not defer_audit and audit.enabled:
            audit.record(
                decision,
                client=client,
                request=info,
                status=reply.status if reply is not None else None,
                integration=self._integration,
                kind=kind,
                method=method,
                path=path,
            )
        if self._metrics is not None:
            self._metrics.observe(decision)
        return _verdict(decision, route, reply, client, extra if reply is None else ())

    def _client(self, peer: str | None, headers: HeaderSource) -> ClientAddress:
        """Resolve the client address, through a small cache.

        Resolution is a pure function of the peer, the forwarding headers and
        the (immutable) trusted-proxy settings, and costs far more than a
        decision (it parses every hop); API clients repeat the same peer and
        headers request after request. A client is admitted on its second
        request; bounded in entries and key size, so clients sending unique or
        huge headers only get cache misses.
        """
        items = (
            headers
            if type(headers) is list
            else (headers.items() if isinstance(headers, Mapping) else headers)
        )
        forwarding = [(name, value) for name, value in items if name.lower() in _FORWARDING]
        key = (peer, *forwarding)
        cache = self._clients
        client = cache.get(key)
        if client is not None:
            return client
        client = resolve_client(peer, forwarding, self._trusted)
        size = 0
        for _, value in forwarding:
            size += len(value)
        if size <= _CLIENT_KEY_MAX:
            # Admitted on its second sighting: the first one only records the
            # key's hash, an int the garbage collector never walks, so clients
            # seen once leave no objects behind (a hash collision merely admits
            # a key early: the cache compares whole keys).
            seen = self._seen
            digest = hash(key)
            if digest in seen:
                if len(cache) >= _CLIENT_CACHE_SIZE:
                    # Start over when full: O(1) and atomic, like the engine's cache.
                    cache.clear()
                cache[key] = client
            else:
                if len(seen) >= _SEEN_SIZE:
                    seen.clear()
                seen.add(digest)
        return client

    def _fail(self, engine: Geofence, code: str, client: ClientAddress) -> Decision:
        """A degraded decision made by the fail mode."""
        closed = self._config.fail_mode == "closed"
        try:
            policy = engine.policy
            ids = {
                "policy_id": policy.id,
                "policy_digest": policy.digest,
                "snapshot_id": engine.snapshot.snapshot_id,
            }
        except Exception:  # pragma: no cover - an engine too broken to describe itself
            ids = {}
        return Decision(
            action=Action.DENY if closed else Action.REVIEW,
            reasons=(code, "fail_closed" if closed else "fail_open"),
            outcome="error",
            degraded=True,
            signals=client.signals,
            address=(client.address.original_text if client.address else client.text) or None,
            **ids,  # type: ignore[arg-type]  # str values for str fields
        )

    def _cached_reply(self, decision: Decision) -> Reply:
        key = (decision.action, reason_code(decision))
        reply = self._replies.get(key)
        if reply is None:
            reply = self._replies.setdefault(key, self._default_reply(decision.action, key[1]))
        return reply

    def _default_reply(self, action: Action, reason: str) -> Reply:
        """The built-in reply for ``deny`` or ``challenge``."""
        config = self._config
        no_store = ("Cache-Control", "no-store")  # the answer depends on the client, not the URL
        if action is Action.DENY:
            headers: list[tuple[str, str]] = [no_store]
            if config.blocked_by is not None:
                headers.append(("Link", f'<{config.blocked_by}>; rel="blocked-by"'))
            if config.body_format == "json":
                return Reply.json(
                    451, {"error": "unavailable_for_legal_reasons", "reason": reason}, headers
                )
            return Reply.plain(451, f"Unavailable For Legal Reasons (reason: {reason})\n", headers)
        if config.challenge_redirect is not None:
            return Reply.redirect(config.challenge_redirect)
        headers = [("WWW-Authenticate", f'Geofence challenge="{config.challenge_type}"'), no_store]
        if config.body_format == "json":
            body = {
                "error": "challenge_required",
                "challenge": config.challenge_type,
                "reason": reason,
            }
            return Reply.json(401, body, headers)
        return Reply.plain(
            401, f"Verification required: {config.challenge_type} (reason: {reason})\n", headers
        )

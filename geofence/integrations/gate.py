"""The framework-neutral gate: one request in, one :class:`Verdict` out.

1. an exempt path (a prefix at a segment boundary) is served untouched;
2. the client address is resolved from the socket peer and, only through
   configured trusted proxies, from forwarding headers;
3. the engine for the path (per-route policies, longest prefix first) decides;
   when no decision can be made the configured fail mode applies;
4. the action becomes a reply (``deny`` -> 451, ``challenge`` -> the
   challenge, never on the challenge target itself) or passes through with the
   decision and the route target;
5. the decision is audited, counted and put on the current trace span.

The framework modules only translate their request and response shapes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from geofence._cache import BoundedCache
from geofence.context import Context
from geofence.decision import Action, Decision
from geofence.integrations.clients import ClientResolver
from geofence.integrations.config import VISIBLE, GeofenceConfig
from geofence.integrations.context import (
    DECISION_ERROR,
    NO_CLIENT_ADDRESS,
    fail_decision,
    request_context,
)
from geofence.integrations.paths import PathPrefixes
from geofence.integrations.replies import Replies, Reply
from geofence.integrations.request import HeaderSource, RequestInfo, header_value
from geofence.signals.proxy import ClientAddress

if TYPE_CHECKING:
    from geofence.engine import Geofence

__all__ = ["DECISION_ERROR", "NO_CLIENT_ADDRESS", "Gate", "Verdict"]

log = logging.getLogger("geofence")

# Enum members as module constants: a class attribute lookup through the enum
# machinery costs more than a global on every request.
_DENY, _CHALLENGE, _ROUTE, _ALLOW = Action.DENY, Action.CHALLENGE, Action.ROUTE, Action.ALLOW


@dataclass(slots=True)
class Verdict:
    """What the integration does with one request (read it; do not change it)."""

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

    request: RequestInfo | None = field(default=None, compare=False, repr=False)
    """The hooks' view of the request, when a hook needed one."""


_EXEMPT = Verdict(None, exempt=True)


class Gate:
    """Decide one request and say what to do with it, framework-neutrally.

    Integrations call :meth:`check` (or :meth:`acheck` from async code) and
    translate the :class:`Verdict`; a new integration (aiohttp, a gRPC
    interceptor) needs nothing else.

    Args:
        geofence: The default engine.
        config: The settings.
        integration: Name recorded in audit lines (``"asgi"``, ``"wsgi"``...).

    Raises:
        ValueError: ``geofence`` is not an engine.
    """

    __slots__ = (
        "_audit",
        "_challenge_host",
        "_challenge_target",
        "_client_signals",
        "_clients",
        "_config",
        "_decision_headers",
        "_engine",
        "_exempt",
        "_has_exempt",
        "_hooks",
        "_integration",
        "_lean",
        "_observers",
        "_replies",
        "_reporting",
        "_route_engines",
        "_route_header_out",
        "_router",
        "_routes",
        "_safe_routes",
        "_shadowed",
        "_subject",
        "_verdicts",
    )

    def __init__(self, geofence: Geofence, config: GeofenceConfig, *, integration: str) -> None:
        if not callable(getattr(geofence, "decide", None)):
            raise ValueError(f"geofence must be a Geofence, got {geofence!r}")
        self._engine = geofence
        self._config = config
        self._integration = integration
        self._clients = ClientResolver(config.trusted_proxies)
        self._exempt = PathPrefixes((*config.exempt_paths, *config.exempt_prefixes))
        self._has_exempt = bool(self._exempt)
        self._routes = PathPrefixes(prefix for prefix, _ in config.route_policies)
        self._route_engines = dict(config.route_policies)
        self._replies = Replies(config)
        target = urlsplit(config.challenge_redirect) if config.challenge_redirect else None
        self._challenge_target = PathPrefixes([target.path or "/"]) if target else None
        self._challenge_host = (target.netloc.lower() or None) if target else None
        self._audit = config.audit
        self._observers = tuple(o for o in (config.metrics, config.tracing) if o is not None)
        self._subject = config.subject
        self._router = config.router
        self._client_signals = config.client_signals
        # Response headers per action, built once (the decision header's value).
        name = config.decision_header
        # Keyed by the action's text: an enum member's hash is computed in Python.
        self._decision_headers: dict[str, tuple[tuple[str, str], ...]] = {
            a.value: ((name, a.value),) if name else () for a in Action
        }
        self._route_header_out = config.route_header if config.route_response_header else None
        # Route targets already found header-safe (a policy has few; a router hook may
        # make more, hence the bound).
        self._safe_routes: BoundedCache[str, bool] = BoundedCache(1024)
        self._hooks = (
            config.subject is not None
            or config.router is not None
            or config.challenge is not None
            or (config.audit is not None and config.audit.wants_request)
        )
        self._lean = not (self._hooks or self._routes)
        self._reporting = self._audit is not None or bool(self._observers)
        # Verdicts of repeat clients by id(client), checked against the client and
        # the decision (see _fast).
        self._verdicts: BoundedCache[int, tuple[Decision, Verdict]] = BoundedCache(4096)
        self._shadowed: BoundedCache[int, tuple[Decision, Decision]] | None = (
            BoundedCache(4096) if config.shadow else None
        )

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
        return self._exempt.match(path) is not None

    def engine_for(self, path: str) -> Geofence:
        """The engine deciding ``path`` (per-route policies, longest prefix first)."""
        prefix = self._routes.match(path)
        return self._engine if prefix is None else self._route_engines[prefix]

    # -- entry points -------------------------------------------------------------------

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
        verdict = self._fast(kind, method, path, peer, headers, defer_audit)
        if verdict is not None:
            return verdict
        pending = self._start(kind, method, path, peer, headers, native)
        client = pending.client
        if client is None:  # exempt
            return _EXEMPT
        decision = pending.decision
        if decision is None:
            try:
                decision = pending.engine.decide(client.address, pending.context)
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
        asyncio history store (Redis) does not block the event loop. Callers
        that want to skip the coroutine for requests the client address alone
        decides call :meth:`fast_check` first and this only when it declines.

        Args:
            kind: ``"http"`` or ``"websocket"``.
            method: HTTP method.
            path: Request path as the application routes it.
            peer: The socket peer's address, ``None`` when there is none.
            headers: The request headers.
            native: The framework's request object, handed to hooks.
            defer_audit: Leave the audit line to the caller (see :meth:`check`).
        """
        pending = self._start(kind, method, path, peer, headers, native)
        client = pending.client
        if client is None:  # exempt
            return _EXEMPT
        decision = pending.decision
        if decision is None:
            address = client.address
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
        :meth:`check` or :meth:`acheck` decides, with the same result
        (tested).

        Args:
            kind: ``"http"`` or ``"websocket"``.
            method: HTTP method.
            path: Request path as the application routes it.
            peer: The socket peer's address, ``None`` when there is none.
            headers: The request headers.
            defer_audit: Leave the audit line to the caller (see :meth:`check`).
        """
        return self._fast(kind, method, path, peer, headers, defer_audit)

    def _fast(
        self,
        kind: str,
        method: str,
        path: str,
        peer: str | None,
        headers: HeaderSource,
        defer_audit: bool,
    ) -> Verdict | None:
        """:meth:`fast_check` with positional arguments (what :meth:`check` calls)."""
        if self._has_exempt and self._exempt.match(path) is not None:
            return _EXEMPT
        engine = self._engine
        if not self._lean or engine.needs_context:
            return None  # decided before resolving the client: no work done twice
        client = self._clients.resolve(peer, headers)
        address = client.address
        if address is None or (client.signals and self._client_signals):
            return None
        try:
            decision = engine.decide(address)
        except Exception:
            return None  # the general path logs it and applies the fail mode
        # A client's verdict is the same for the same decision (challenges aside:
        # they depend on the path), so repeat clients (those the resolver caches)
        # reuse theirs.
        known = self._verdicts.get(id(client))
        if known is not None and known[0] is decision and known[1].client is client:
            verdict = known[1]
        else:
            verdict = self._verdict(decision, engine, client, None, path, headers)
            if decision.action is not _CHALLENGE and self._clients.cached.get(id(client)) is client:
                self._verdicts.put(id(client), (decision, verdict))
        if self._reporting:
            self._report(verdict, kind, method, path, defer_audit)
        return verdict

    def record(
        self, verdict: Verdict, *, kind: str, method: str, path: str, at: float | None = None
    ) -> None:
        """Write the audit line of a verdict made with ``defer_audit=True``.

        Does nothing without an audit logger or on exempt paths.

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
        audit.enqueue(
            decision,
            verdict.client,
            verdict.request,
            reply.status if reply is not None else None,
            self._integration,
            kind,
            method,
            path,
            at,
        )

    # -- the general path ---------------------------------------------------------------

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
        if self._has_exempt and self._exempt.match(path) is not None:
            return _Pending(kind, method, path, headers, None, None, self._engine)
        client = self._clients.resolve(peer, headers)
        info = (
            RequestInfo(
                kind=kind, method=method, path=path, client=client, headers=headers, native=native
            )
            if self._hooks
            else None
        )
        engine = self.engine_for(path) if self._routes else self._engine
        pending = _Pending(kind, method, path, headers, client, info, engine)
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
            pending.context = request_context(
                engine, client, info, subject=self._subject, client_signals=self._client_signals
            )
        except Exception:
            pending.decision = self._error(pending)
        return pending

    def _error(self, pending: _Pending) -> Decision:
        """Log the exception being handled; the fail mode decides."""
        client = pending.client
        if client is None:  # pragma: no cover - exempt requests are never decided
            raise RuntimeError("no client to decide")
        address = client.address
        log.exception(
            "geofence: no decision for %s; fail mode %s",
            address.text if address is not None else client.text,
            self._config.fail_mode,
        )
        return self._fail(pending.engine, DECISION_ERROR, client)

    def _fail(self, engine: Geofence, code: str, client: ClientAddress) -> Decision:
        """The fail mode's degraded decision."""
        return fail_decision(engine, code, client, closed=self._config.fail_mode == "closed")

    def _settle(self, pending: _Pending, decision: Decision, defer_audit: bool) -> Verdict:
        """:meth:`_finish` for a request that went through :meth:`_start`."""
        client = pending.client
        if client is None:  # pragma: no cover - exempt requests return before
            return _EXEMPT
        return self._finish(
            decision,
            pending.engine,
            client,
            pending.info,
            pending.kind,
            pending.method,
            pending.path,
            pending.headers,
            defer_audit,
        )

    # -- after the decision -------------------------------------------------------------

    def _finish(
        self,
        decision: Decision,
        engine: Geofence,
        client: ClientAddress,
        info: RequestInfo | None,
        kind: str,
        method: str,
        path: str,
        headers: HeaderSource,
        defer_audit: bool,
    ) -> Verdict:
        """Everything after the decision: the verdict, then audit and metrics."""
        verdict = self._verdict(decision, engine, client, info, path, headers)
        if self._reporting:
            self._report(verdict, kind, method, path, defer_audit)
        return verdict

    def _verdict(
        self,
        decision: Decision,
        engine: Geofence,
        client: ClientAddress,
        info: RequestInfo | None,
        path: str,
        headers: HeaderSource,
    ) -> Verdict:
        """What to do with a decided request: route, reply and response headers."""
        if self._shadowed is not None and decision.action is not _ALLOW:
            decision = self._shadow(decision)
        action = decision.action
        extra = self._decision_headers[action._value_]
        route: str | None = None
        reply: Reply | None = None
        if action is not _ALLOW or self._router is not None:
            route = decision.route if action is _ROUTE else None
            if self._router is not None and info is not None:
                route = self._route(info, decision)
            if route is not None:
                route = route if route in self._safe_routes else self._checked_route(route)
            if action is _DENY:
                reply = self._replies.for_decision(decision, engine)
            elif action is _CHALLENGE:
                reply = self._challenge(decision, engine, info, path, headers)
            if route is not None and self._route_header_out is not None:
                extra = (*extra, (self._route_header_out, route))
            if reply is not None:
                reply, extra = (reply.with_headers(extra) if extra else reply), ()
        return Verdict(decision, route, reply, client, False, extra, info)

    def _report(
        self, verdict: Verdict, kind: str, method: str, path: str, defer_audit: bool
    ) -> None:
        """Audit the verdict (unless deferred) and tell the observers (metrics, tracing)."""
        decision = verdict.decision
        if decision is None:  # pragma: no cover - exempt verdicts are never reported
            return
        audit = self._audit
        if audit is not None and not defer_audit:
            reply = verdict.reply
            audit.enqueue(
                decision,
                verdict.client,
                verdict.request,
                reply.status if reply is not None else None,
                self._integration,
                kind,
                method,
                path,
            )
        for observer in self._observers:
            observer.observe(decision, verdict.route)

    def _route(self, info: RequestInfo, decision: Decision) -> str | None:
        """The router hook's target (``None`` when it fails)."""
        router = self._router
        if router is None:  # pragma: no cover - callers check
            return None
        try:
            return router(info, decision)
        except Exception:
            log.exception("geofence: router hook failed; no route target set")
            return None

    def _checked_route(self, route: object) -> str | None:
        """``route`` if it is safe to send in a header (remembered), else ``None``."""
        if isinstance(route, str) and VISIBLE.match(route):
            self._safe_routes.put(route, True)
            return route
        log.error("geofence: route target %r is not a header-safe token; ignored", route)
        return None

    def _challenge(
        self,
        decision: Decision,
        engine: Geofence,
        info: RequestInfo | None,
        path: str,
        headers: HeaderSource,
    ) -> Reply | None:
        """The reply to a challenge: none on the challenge target, else the hook's or ours."""
        if self._on_challenge_target(path, headers):
            return None  # the page that answers the challenge: never a redirect loop
        hook = self._config.challenge
        if hook is None or info is None:
            return self._replies.for_decision(decision, engine)
        try:
            reply = hook(info, decision)
        except Exception:
            log.exception("geofence: challenge hook failed; using the default challenge")
            return self._replies.for_decision(decision, engine)
        if reply is not None and not isinstance(reply, Reply):
            log.error("geofence: challenge hook returned %r, not a Reply", reply)
            return self._replies.for_decision(decision, engine)
        return reply

    def _on_challenge_target(self, path: str, headers: HeaderSource) -> bool:
        """Whether the request is for the challenge redirect's target (or below it).

        A relative target is a path of this application. An absolute one is
        only when the request's ``Host`` is the target's: otherwise a target
        such as ``https://kyc.example.com/`` (path ``/``) would let every
        challenged request through.
        """
        target = self._challenge_target
        if target is None or target.match(path) is None:
            return False
        host = self._challenge_host
        return host is None or (header_value(headers, "host") or "").lower() == host

    def _shadow(self, decision: Decision) -> Decision:
        """``decision`` in shadow mode (cached for shared decisions)."""
        cache = self._shadowed
        if cache is None or decision.address is not None:
            return decision.as_shadow()
        cached = cache.get(id(decision))
        if cached is None or cached[0] is not decision:
            cached = cache.put(id(decision), (decision, decision.as_shadow()))
        return cached[1]


class _Pending:
    """A request between the start of :meth:`Gate.check` and the engine's answer.

    ``client`` is ``None`` for an exempt path (nothing is decided).
    """

    __slots__ = (
        "client",
        "context",
        "decision",
        "engine",
        "headers",
        "info",
        "kind",
        "method",
        "path",
    )

    def __init__(
        self,
        kind: str,
        method: str,
        path: str,
        headers: HeaderSource,
        client: ClientAddress | None,
        info: RequestInfo | None,
        engine: Geofence,
    ) -> None:
        self.kind = kind
        self.method = method
        self.path = path
        self.headers = headers
        self.client = client
        self.info = info
        self.engine = engine
        self.context: Context | None = None
        self.decision: Decision | None = None  # set when no engine call is needed

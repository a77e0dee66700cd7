"""The settings every integration takes, validated once (:class:`GeofenceConfig`).

Usage prose and the option table are in ``docs/middleware.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from geofence.integrations.audit import AuditLogger
from geofence.signals.proxy import TrustedProxies

if TYPE_CHECKING:
    from geofence.engine import Geofence
    from geofence.integrations.metrics import PrometheusMetrics
    from geofence.integrations.request import ChallengeHook, RouterHook, SubjectHook
    from geofence.integrations.tracing import OpenTelemetrySpans

__all__ = ["BodyFormat", "FailMode", "GeofenceConfig", "GeofenceOptions", "resolve_config"]

FailMode = Literal["open", "closed"]
"""What to do when no decision can be made: ``open`` serves the request flagged
``review``; ``closed`` refuses it with 451."""

BodyFormat = Literal["json", "plain"]
"""Body of 451 and challenge replies."""

TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2 token
VISIBLE = re.compile(r"^[!-~]+$")  # a header value safe to emit verbatim


class GeofenceOptions(TypedDict, total=False):
    """Keyword options accepted by every integration (see :class:`GeofenceConfig`)."""

    trusted_proxies: TrustedProxies | str | Iterable[str] | Mapping[str, object] | None
    exempt_paths: Iterable[str]
    exempt_prefixes: Iterable[str]
    route_policies: Mapping[str, Geofence]
    fail_mode: FailMode
    body_format: BodyFormat
    blocked_by: str | None
    refusal_details: bool
    challenge: ChallengeHook | None
    challenge_redirect: str | None
    challenge_url: str | None
    challenge_status: int
    challenge_type: str
    route_header: str
    route_response_header: bool
    decision_header: str | None
    subject: SubjectHook | None
    router: RouterHook | None
    client_signals: bool
    shadow: bool
    audit: AuditLogger | None
    metrics: PrometheusMetrics | bool | None
    tracing: OpenTelemetrySpans | bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GeofenceConfig:
    """Validated settings of an integration. Build with :meth:`from_options`.

    Raises:
        ValueError: A setting is invalid (the message names it).
    """

    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    """Who may speak for the client through forwarding headers (default: nobody)."""

    exempt_paths: frozenset[str] = frozenset()
    """Path prefixes served without a decision, at segment boundaries:
    ``/metrics`` covers ``/metrics``, ``/metrics/`` and ``/metrics/x``, not
    ``/metricsx``; ``/static/`` covers what starts with it."""

    exempt_prefixes: tuple[str, ...] = ()
    """More exempt prefixes, matched exactly like :attr:`exempt_paths` (kept for
    configurations written when ``exempt_paths`` matched whole paths only)."""

    route_policies: tuple[tuple[str, Geofence], ...] = ()
    """``(path prefix, engine)`` pairs, longest prefix first; the first matching
    prefix (same boundary rule) picks the engine, else the default engine."""

    fail_mode: FailMode = "closed"
    """When no decision can be made: ``closed`` refuses with 451 (reason
    ``client_address_unavailable`` or ``decision_error``); ``open`` serves the
    request with a degraded ``review`` decision. Both are audited."""

    body_format: BodyFormat = "json"
    """Body of 451 and challenge replies: ``json`` (``{"detail": {...}}``) or
    ``plain``; neither names the address, country or data."""

    blocked_by: str | None = None
    """URI for ``Link: <uri>; rel="blocked-by"`` on 451 replies (RFC 7725 §4):
    who implements the block; a page explaining it serves users best."""

    refusal_details: bool = True
    """Name the deciding rule, its description and its citation in 451 and
    challenge bodies (RFC 7725: explain the legal demand)."""

    challenge: ChallengeHook | None = None
    """Answers ``challenge`` decisions; see :data:`ChallengeHook`. Checked first."""

    challenge_redirect: str | None = None
    """Without a hook: redirect ``challenge`` decisions here (303 See Other), for
    browsers. The target (and what lies under it) is never challenged itself."""

    challenge_url: str | None = None
    """Where a client completes the challenge, named as ``verify`` in the body."""

    challenge_status: int = 403
    """Status of the built-in challenge reply (a 4xx). 403, not 401: API SDKs
    treat 401 as bad credentials. With 401, ``WWW-Authenticate`` is sent."""

    challenge_type: str = "step-up"
    """The challenge named in the body (and in ``WWW-Authenticate`` with 401):
    an RFC 9110 token."""

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

    shadow: bool = False
    """Enforce nothing: every decision is served as ``allow`` with the action
    that would have applied in :attr:`Decision.shadow_action`, and audited as
    ``shadow``. For trying a policy on live traffic first."""

    audit: AuditLogger | None = field(default_factory=AuditLogger)
    """Where decisions are logged; ``None`` disables audit lines."""

    metrics: PrometheusMetrics | None = None
    """Prometheus counters, or ``None``."""

    tracing: OpenTelemetrySpans | None = None
    """OpenTelemetry span attributes, or ``None``."""

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
        if not TOKEN.match(self.route_header):
            raise ValueError(f"route_header {self.route_header!r} is not a valid header name")
        if self.decision_header is not None and not TOKEN.match(self.decision_header):
            raise ValueError(f"decision_header {self.decision_header!r} is not a valid header name")
        if not TOKEN.match(self.challenge_type):
            raise ValueError(f"challenge_type {self.challenge_type!r} must be an RFC 9110 token")
        status = self.challenge_status
        if type(status) is not int or not 400 <= status <= 499:
            raise ValueError(f"challenge_status must be a 4xx status code, got {status!r}")
        urls = (
            ("blocked_by", self.blocked_by),
            ("challenge_redirect", self.challenge_redirect),
            ("challenge_url", self.challenge_url),
        )
        for name, url in urls:
            if url is not None and (not url or not VISIBLE.match(url) or ">" in url):
                raise ValueError(f"{name} must be a URI without spaces, got {url!r}")
        for name in ("challenge", "subject", "router"):
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise ValueError(f"{name} must be callable, got {hook!r}")
        checks = (("audit", "record"), ("metrics", "observe"), ("tracing", "observe"))
        for name, method in checks:
            value = getattr(self, name)
            if value is not None and not callable(getattr(value, method, None)):
                raise ValueError(f"{name} has no {method}() method: {value!r}")

    @classmethod
    def from_options(cls, **options: Unpack[GeofenceOptions]) -> GeofenceConfig:
        """Build from keyword options, accepting convenient forms.

        ``trusted_proxies`` may be a :class:`~geofence.signals.proxy.TrustedProxies`,
        a CIDR string or list (``"10.0.0.0/8, 127.0.0.1"``), a mapping for
        :meth:`TrustedProxies.from_config`, or ``None`` (trust nobody).
        ``route_policies`` is a mapping of path prefix to engine. ``metrics=True``
        uses :class:`~geofence.integrations.metrics.PrometheusMetrics` on the
        global registry; ``tracing=True`` uses
        :class:`~geofence.integrations.tracing.OpenTelemetrySpans`.

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
            from geofence.integrations.metrics import PrometheusMetrics

            kwargs["metrics"] = PrometheusMetrics()
        elif metrics is False:
            kwargs["metrics"] = None
        tracing = options.get("tracing")
        if tracing is True:
            from geofence.integrations.tracing import OpenTelemetrySpans

            kwargs["tracing"] = OpenTelemetrySpans()
        elif tracing is False:
            kwargs["tracing"] = None
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

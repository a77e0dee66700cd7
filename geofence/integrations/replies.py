"""Responses sent instead of the application: 451 for ``deny``, the challenge.

One body shape for every integration, the FastAPI dependency included: a JSON
object whose ``detail`` member describes the refusal, the convention FastAPI
and Django REST framework clients already parse::

    {"detail": {"error": "unavailable_for_legal_reasons", "reason": "rule:ofac-cuba",
                "message": "...", "rule": "ofac-cuba", "description": "...",
                "citation": "31 CFR part 515", "blocked_by": "https://..."}}

RFC 7725 asks a 451 body to explain the legal demand: the deciding rule's
description and citation are included (``refusal_details=False`` leaves them
out); the address, country and data never are.

A challenge is ``403`` by default, not ``401``: API SDKs read 401 as "bad
credentials" and rotate keys, refresh tokens or give up, while a 403 with
``"error": "challenge_required"`` tells them the credentials are fine and the
request needs step-up verification (``"verify"`` names where, when configured).
``challenge_status`` changes it per application (e.g. 428, or 401 for clients
that expect ``WWW-Authenticate``, which is then sent).
"""

from __future__ import annotations

import http
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from geofence._cache import BoundedCache
from geofence.decision import Action, Decision

if TYPE_CHECKING:
    from geofence.engine import Geofence
    from geofence.integrations.config import GeofenceConfig
    from geofence.policy.model import Policy, Rule

__all__ = ["Replies", "Reply", "reason_code"]

#: ``error`` codes of the two refusals.
UNAVAILABLE = "unavailable_for_legal_reasons"
CHALLENGE_REQUIRED = "challenge_required"

_NO_STORE = ("Cache-Control", "no-store")  # the answer depends on the client, not the URL
_DENY_MESSAGE = "This service is not available at your location for legal reasons."
_UNRESOLVED_MESSAGE = (
    "Your location could not be determined as precisely as this service's policy "
    "requires. Complete location verification to continue."
)
_CHALLENGE_MESSAGE = "This request needs step-up verification ({kind}) before it can be served."


def reason_code(decision: Decision) -> str:
    """The one reason code a refused client is told (and metrics are labelled by)."""
    return decision.reasons[0] if decision.reasons else decision.outcome


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
        return cls(status=status, headers=(("Location", location), _NO_STORE))

    @property
    def status_line(self) -> str:
        """``"451 Unavailable For Legal Reasons"`` (for WSGI ``start_response``)."""
        try:
            phrase = http.HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        return f"{self.status} {phrase}"

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` header's value, or ``""``."""
        return next((v for k, v in self.headers if k.lower() == "content-type"), "")

    def with_headers(self, extra: Iterable[tuple[str, str]]) -> Reply:
        """A copy with ``extra`` headers appended."""
        more = tuple(extra)
        return replace(self, headers=(*self.headers, *more)) if more else self


class Replies:
    """The built-in replies of one integration, built once per policy, action and reason.

    Args:
        config: The integration's settings (body format, challenge, details).
    """

    __slots__ = ("_cache", "_config")

    def __init__(self, config: GeofenceConfig) -> None:
        self._config = config
        # Keyed by policy digest, action, reason and rule: as few as the policies' rules.
        # The policy is kept with the reply: a reload may change a rule's citation
        # without changing the digest (which covers what decides, not the prose).
        self._cache: BoundedCache[tuple[str, str, str, str | None], tuple[object, Reply]] = (
            BoundedCache(1024)
        )

    def for_decision(self, decision: Decision, engine: Geofence) -> Reply:
        """The reply to a ``deny`` or ``challenge`` decision made by ``engine``."""
        # The action's text, not the member: an enum member's hash is computed in Python.
        action = decision.action._value_
        key = (decision.policy_digest, action, reason_code(decision), decision.rule_id)
        policy = _policy(engine)
        cached = self._cache.get(key)
        if cached is None or cached[0] is not policy:
            cached = self._cache.put(key, (policy, self._build(decision, engine)))
        return cached[1]

    def _build(self, decision: Decision, engine: Geofence) -> Reply:
        config = self._config
        reason = reason_code(decision)
        detail: dict[str, object] = {"reason": reason}
        if config.refusal_details:
            rule = _rule(engine, decision)
            detail["rule"] = decision.rule_id
            if rule is not None and rule.description:
                detail["description"] = rule.description
            if rule is not None and rule.citation:
                detail["citation"] = rule.citation
        if decision.action is Action.DENY:
            headers = [_NO_STORE]
            if config.blocked_by is not None:
                headers.append(("Link", f'<{config.blocked_by}>; rel="blocked-by"'))
                detail["blocked_by"] = config.blocked_by
            detail.update(error=UNAVAILABLE, message=_DENY_MESSAGE)
            return _reply(451, detail, headers, plain=config.body_format == "plain")
        if config.challenge_redirect is not None:
            return Reply.redirect(config.challenge_redirect)
        headers = [_NO_STORE]
        if config.challenge_status == 401:
            headers.append(("WWW-Authenticate", f'Geofence challenge="{config.challenge_type}"'))
        message = (
            _UNRESOLVED_MESSAGE
            if decision.outcome == "unresolved"
            else _CHALLENGE_MESSAGE.format(kind=config.challenge_type)
        )
        detail.update(
            error=CHALLENGE_REQUIRED,
            challenge=config.challenge_type,
            outcome=decision.outcome,
            message=message,
        )
        if config.challenge_url is not None:
            detail["verify"] = config.challenge_url
        return _reply(config.challenge_status, detail, headers, plain=config.body_format == "plain")


def _policy(engine: Geofence) -> Policy | None:
    """The engine's policy (``None`` from an engine too broken to describe itself)."""
    try:
        return engine.policy
    except Exception:
        return None


def _rule(engine: Geofence, decision: Decision) -> Rule | None:
    """The rule (or exception) that made ``decision``, if the engine still has its policy."""
    policy = _policy(engine)
    if decision.rule_id is None or policy is None:
        return None
    if policy.digest != decision.policy_digest:
        return None  # reloaded since: the rule may have changed
    return next((r for r in (*policy.exceptions, *policy.rules) if r.id == decision.rule_id), None)


def _reply(
    status: int, detail: dict[str, object], headers: list[tuple[str, str]], *, plain: bool
) -> Reply:
    """The body in the configured format: ``{"detail": ...}`` or plain text."""
    if not plain:
        return Reply.json(status, {"detail": detail}, headers)
    lines = [f"{detail['message']} (reason: {detail['reason']})"]
    labels = (
        ("Rule", "description"),
        ("Citation", "citation"),
        ("Verify", "verify"),
        ("More", "blocked_by"),
    )
    for label, key in labels:
        if key in detail:
            lines.append(f"{label}: {detail[key]}")
    return Reply.plain(status, "\n".join(lines) + "\n", headers)

"""Decisions: what the policy says about a request, with reasons and provenance."""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from geofence.kinds import NetworkKind, kinds_to_names

__all__ = ["Action", "Decision", "Verdict", "parse_action"]


class Action(enum.StrEnum):
    """What to do with a request.

    A ``str`` enum: ``Action.DENY == "deny"`` and ``str(Action.DENY) == "deny"``.
    """

    ALLOW = "allow"
    """Serve the request."""

    DENY = "deny"
    """Refuse it (HTTP 451 in the middleware: unavailable for legal reasons, RFC 7725)."""

    CHALLENGE = "challenge"
    """Ask for step-up verification (identity, nationality, location) before serving."""

    REVIEW = "review"
    """Serve it, but flag it for a compliance review."""

    ROUTE = "route"
    """Serve it from a permitted alternative named by :attr:`Decision.route`."""


def parse_action(text: str) -> tuple[Action, str | None]:
    """Parse ``allow|deny|challenge|review|route:<target>``.

    Returns:
        The action and the route target (``None`` unless ``route``).

    Raises:
        ValueError: ``text`` is not an action.
    """
    if not isinstance(text, str):
        raise ValueError(f"action must be a string, got {text!r}")
    name, sep, target = text.strip().partition(":")
    try:
        action = Action(name.lower())
    except ValueError:
        raise ValueError(
            f"unknown action {text!r}; expected allow, deny, challenge, review or route:<target>"
        ) from None
    if action is Action.ROUTE:
        if not sep or not target.strip():
            raise ValueError(f"route action {text!r} needs a target, e.g. 'route:eu-tier'")
        return action, target.strip()
    if sep:
        raise ValueError(f"only route takes a target, got {text!r}")
    return action, None


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of :meth:`geofence.Geofence.decide` for one request.

    Decisions for IP-only policies are computed when the policy is compiled and
    shared: every address of the same network (and tunnel form) gets the same
    object, so ``address`` is ``None`` on those. Pass the address to
    :meth:`to_json` for an audit line.
    """

    action: Action
    """The action to enforce (``ALLOW`` when the deciding rule or the policy is in shadow mode)."""

    route: str | None = None
    """Target of a ``route`` action (a region, a model tier), else ``None``."""

    reasons: tuple[str, ...] = ()
    """Reason codes, most important first (``"rule:ofac-crimea"``, ``"jurisdiction:UA-43"``...)."""

    rule_id: str | None = None
    """Id of the rule or exception that decided, ``None`` for the policy's fallbacks."""

    outcome: str = "rule"
    """How the decision was reached: ``rule``, ``exception``, ``default``, ``unresolved``,
    ``unknown`` (address not in the data) or ``reserved`` (private, loopback...)."""

    country: str | None = None
    """ISO 3166-1 alpha-2 country of the address, when known."""

    subdivision: str | None = None
    """ISO 3166-2 subdivision of the address, when known."""

    kinds: NetworkKind = NetworkKind.UNKNOWN
    """Network kinds of the address."""

    asn: int | None = None
    """Autonomous system number of the address, when known."""

    tunnel: str | None = None
    """How the address was tunnelled (``"ipv4_mapped"``, ``"6to4"``...), else ``None``."""

    special: str | None = None
    """Special-purpose category (``"private"``, ``"loopback"``...) for reserved addresses."""

    shadow: bool = False
    """Whether a shadow-mode rule or policy matched (see :attr:`shadow_action`)."""

    shadow_action: Action | None = None
    """What the shadow-mode rule or policy would have done had it been enforced."""

    shadow_rule_id: str | None = None
    """Id of the shadow-mode rule that matched."""

    risk: float = 0.0
    """Sum of the weights of the workaround signals present (0 without context)."""

    signals: tuple[Any, ...] = ()
    """Workaround signals (:class:`geofence.signals.Signal`) that were evaluated as present."""

    degraded: bool = False
    """Whether part of the evaluation could not run (history store unavailable...)."""

    snapshot_id: str = ""
    """Identity of the snapshot the decision was computed from."""

    policy_id: str = ""
    """Id of the policy."""

    policy_digest: str = ""
    """SHA-256 (first 16 hex digits) of the policy's canonical form."""

    address: str | None = None
    """The address decided, on decisions made per request (``None`` on shared ones)."""

    sources: tuple[str, ...] = field(default=())
    """Names of the data sources that spoke for the address."""

    @property
    def allowed(self) -> bool:
        """Whether the request may be served as is (allow or review)."""
        return self.action in (Action.ALLOW, Action.REVIEW)

    @property
    def blocked(self) -> bool:
        """Whether the action is ``deny``."""
        return self.action is Action.DENY

    def as_shadow(self) -> Decision:
        """This decision in shadow mode: ``allow`` enforced, its own action recorded.

        As a policy with ``shadow = true`` decides: the action that would have
        applied becomes :attr:`shadow_action` (and the rule :attr:`shadow_rule_id`),
        the reason ``shadow:policy`` is added. A decision already in shadow mode
        is returned as is.
        """
        if self.shadow and self.action is Action.ALLOW:
            return self
        return replace(
            self,
            action=Action.ALLOW,
            route=None,
            shadow=True,
            shadow_action=self.action,
            shadow_rule_id=self.rule_id,
            reasons=(*self.reasons, "shadow:policy"),
        )

    def with_address(self, address: str) -> Decision:
        """A copy naming the address (for logs)."""
        return replace(self, address=address)

    def as_dict(self, **extra: object) -> dict[str, object]:
        """JSON-ready mapping of every field; ``extra`` keys are added (and override)."""
        data: dict[str, object] = {
            "action": self.action.value,
            "route": self.route,
            "reasons": list(self.reasons),
            "rule_id": self.rule_id,
            "outcome": self.outcome,
            "address": self.address,
            "country": self.country,
            "subdivision": self.subdivision,
            "kinds": kinds_to_names(self.kinds),
            "asn": self.asn,
            "tunnel": self.tunnel,
            "special": self.special,
            "shadow": self.shadow,
            "shadow_action": self.shadow_action.value if self.shadow_action else None,
            "shadow_rule_id": self.shadow_rule_id,
            "risk": self.risk,
            "signals": [s.as_dict() for s in self.signals],
            "degraded": self.degraded,
            "snapshot_id": self.snapshot_id,
            "policy_id": self.policy_id,
            "policy_digest": self.policy_digest,
            "sources": list(self.sources),
        }
        data.update(extra)
        return data

    def to_json(
        self, *, address: str | None = None, at: float | None = None, **extra: object
    ) -> str:
        """One JSON audit line (no newline), reproducible from its own fields.

        Args:
            address: The address decided (defaults to :attr:`address`).
            at: Unix time of the decision (default: now).
            extra: More keys to record (request id, subject id, path...).
        """
        stamp = time.time() if at is None else at
        data = self.as_dict(**extra)
        data["address"] = address if address is not None else self.address
        data["ts"] = round(stamp, 3)
        return json.dumps(data, separators=(",", ":"), sort_keys=True, default=str)

    def explain(self) -> str:
        """The decision in plain words, for operators and compliance reviews."""
        where = self.subdivision or self.country or "an unknown location"
        lines = [f"Action: {self.action.value}" + (f" -> {self.route}" if self.route else "")]
        what = {
            "rule": f"rule {self.rule_id!r} matched",
            "exception": f"exception {self.rule_id!r} applies",
            "default": "no rule matched; the policy's default applies",
            "unresolved": "the data cannot answer what a rule needs; on_unresolved applies",
            "disputed": (
                "independent country sources disagree and their answers lead to different "
                "actions; on_disputed applies"
            ),
            "unknown": "the address is not in the data; on_unknown applies",
            "reserved": f"the address is {self.special or 'reserved'}; on_reserved applies",
        }.get(self.outcome, self.outcome)
        lines.append(f"Why: {what}.")
        lines.append(f"Policy: {self.policy_id or 'unknown'} (digest {self.policy_digest or '-'}).")
        kinds = ", ".join(kinds_to_names(self.kinds)) or "no known kind"
        loc = f"Address: {self.address + ' in ' if self.address else ''}{where}"
        loc += f", AS{self.asn}" if self.asn else ""
        lines.append(f"{loc}; network: {kinds}.")
        if self.tunnel:
            lines.append(f"The address was tunnelled ({self.tunnel}); its embedded IPv4 was used.")
        if self.shadow and self.shadow_action:
            rule = f"rule {self.shadow_rule_id!r}" if self.shadow_rule_id else "the policy"
            lines.append(
                f"Shadow mode: {rule} would have applied {self.shadow_action.value}; not enforced."
            )
        for sig in self.signals:
            lines.append(f"Signal {sig.code} (weight {sig.weight:g}): {sig.detail}")
        if self.signals:
            lines.append(f"Risk score: {self.risk:g}.")
        if self.degraded:
            lines.append("Degraded: part of the evaluation could not run (see reasons).")
        for reason in self.reasons:
            kind, _, detail = reason.partition(":")
            if kind == "territory":
                lines.append(f"Location set by the territory table: source {detail}.")
            elif kind == "disputed":
                lines.append(f"Sources disagree: {detail}.")
        lines.append("Reasons: " + (", ".join(self.reasons) or "none"))
        src = ", ".join(self.sources) or "none"
        lines.append(
            f"Data: snapshot {self.snapshot_id} (sources: {src}); policy {self.policy_id} "
            f"@ {self.policy_digest}."
        )
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's part of a decision: what to do and which rule said so.

    :meth:`geofence.Geofence.verdict` returns it without the address's record details
    (country, kinds, ASN, sources), which is what lets it search the compiled policy's
    own ranges instead of the data's; the edge exports (:mod:`geofence.export`) hold
    one per range. Equal verdicts compare equal; :meth:`of` reads one off a
    :class:`Decision`.
    """

    action: Action
    """The action to enforce."""

    route: str | None
    """Route target of a ``route`` action, else ``None``."""

    rule_id: str | None
    """The rule (or exception) that decided, ``None`` for defaults and fallbacks."""

    outcome: str
    """How it was reached (``rule``, ``default``, ``unresolved``...; in edge exports,
    ``stated`` for the verdict stated for tunnel prefixes)."""

    @property
    def allowed(self) -> bool:
        """Whether the request may be served as is (allow or review)."""
        return self.action in (Action.ALLOW, Action.REVIEW)

    @property
    def blocked(self) -> bool:
        """Whether the action is ``deny``."""
        return self.action is Action.DENY

    @property
    def key(self) -> str:
        """The value an edge map holds: ``deny``, ``challenge``, ``route:<target>``..."""
        if self.action is Action.ROUTE:
            return f"route:{self.route}"
        name: str = self.action.value
        return name

    @classmethod
    def of(cls, decision: Decision) -> Verdict:
        """The verdict of a decision."""
        return cls(decision.action, decision.route, decision.rule_id, decision.outcome)

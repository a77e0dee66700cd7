"""The policy interpreter: evaluate a policy for one address and context.

Compilation (:mod:`geofence.policy.compile`) calls this once per distinct
(record, CIDR membership) with no context; requests with a context call it with
the precomputed list of candidate rules. The semantics are documented in
:mod:`geofence.policy.model`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from geofence.context import Context
from geofence.decision import Action
from geofence.kinds import SpecialRange
from geofence.policy.model import Match, Policy, Rule
from geofence.records import NetworkRecord
from geofence.signals.base import Signal

__all__ = ["Candidate", "Outcome", "address_candidates", "evaluate"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A rule whose address conditions did not rule it out for some address."""

    rule: Rule
    exception: bool
    match: Match
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """The result of evaluating a policy (before it is dressed as a Decision)."""

    action: Action
    route: str | None
    outcome: str
    rule_id: str | None
    reasons: tuple[str, ...]
    shadow_action: Action | None = None
    shadow_rule_id: str | None = None
    final: bool = True
    """False when a context could change the result (a context rule was a candidate)."""


def address_candidates(
    policy: Policy,
    record: NetworkRecord | None,
    cidr_hit: Callable[[Rule], bool],
    today: dt.date,
    *,
    among: tuple[Sequence[Rule], Sequence[Rule]] | None = None,
) -> tuple[Candidate, ...]:
    """Rules (exceptions first) whose address conditions hold or are unresolved.

    The list stops after the first rule that matches without needing context
    and without shadow mode: nothing after it can be reached.

    For a disputed record (``alt_country`` set) the candidates are also worked
    out for the other country; when the two lead to different address-only
    verdicts, the deciding candidate becomes a :attr:`Match.DISPUTED` one, so
    that ``on_disputed`` applies.

    Args:
        policy: The policy.
        record: The address's record, or ``None``.
        cidr_hit: Whether the address is in a rule's CIDRs.
        today: The date rule effectivity is evaluated for.
        among: The exceptions and rules to consider, in policy order (default:
            all of the policy's); the compiler passes only those that can match.
    """
    out = _candidates(policy, record, cidr_hit, today, among)
    if record is None or record.alt_country in (None, record.country):
        return out
    other = replace(
        record, country=record.alt_country, subdivision=None, alt_country=None, territory=None
    )
    theirs_all = _candidates(policy, other, cidr_hit, today, among)
    mine, theirs = _deciding(out), _deciding(theirs_all)
    if _verdict(policy, mine) == _verdict(policy, theirs):
        return out
    rule = (mine or theirs).rule  # type: ignore[union-attr]  # equal verdicts if both None
    why = record.dispute or f"{record.country} or {record.alt_country}"
    disputed = Candidate(rule, False, Match.DISPUTED, why)
    return (*(c for c in out if c is not mine), disputed)


def _deciding(candidates: tuple[Candidate, ...]) -> Candidate | None:
    """The candidate that decides without a context, if the list ends with one."""
    last = candidates[-1] if candidates else None
    if last is None or last.exception or last.rule.shadow or last.rule.needs_context:
        return None
    return last


def _verdict(policy: Policy, cand: Candidate | None) -> tuple[Action, str | None]:
    """The address-only action a deciding candidate (or its absence) leads to."""
    if cand is None:
        return policy.default
    if cand.match is Match.UNRESOLVED:
        return policy.on_unresolved
    return cand.rule.action, cand.rule.route


def _candidates(
    policy: Policy,
    record: NetworkRecord | None,
    cidr_hit: Callable[[Rule], bool],
    today: dt.date,
    among: tuple[Sequence[Rule], Sequence[Rule]] | None,
) -> tuple[Candidate, ...]:
    exceptions, rules = among if among is not None else (policy.exceptions, policy.rules)
    out: list[Candidate] = []
    for exc in exceptions:
        if exc.active_on(today):
            m, why = exc.test_address(record, cidr_hit(exc))
            if m is not Match.NO:
                out.append(Candidate(exc, True, m, why))
    for rule in rules:
        if not rule.active_on(today):
            continue
        m, why = rule.test_address(record, cidr_hit(rule))
        if m is Match.NO:
            continue
        out.append(Candidate(rule, False, m, why))
        if not rule.shadow and not rule.needs_context:
            break  # decides (as a match, or as unresolved) for every context
    return tuple(out)


def evaluate(
    policy: Policy,
    candidates: Sequence[Candidate],
    *,
    found: bool,
    special: SpecialRange | None,
    context: Context | None,
    signals: Sequence[Signal] = (),
    risk: float = 0.0,
) -> Outcome:
    """Evaluate a policy given the candidate rules for an address.

    Args:
        policy: The policy.
        candidates: From :func:`address_candidates` for the address.
        found: Whether the address is covered by the data.
        special: Special-purpose category of the address, if any.
        context: The request context (``None`` for IP-only evaluation).
        signals: Workaround signals present.
        risk: Risk score (sum of signal weights).
    """
    codes = frozenset(s.code for s in signals)
    shadow_action: Action | None = None
    shadow_rule: str | None = None
    final = True
    result: Outcome | None = None
    for cand in candidates:
        rule = cand.rule
        match, why = cand.match, cand.why
        if rule.needs_context:
            final = final and context is not None
            cm, cwhy = rule.test_context(context, risk, codes)
            if cm is Match.NO:
                continue
            if cm is Match.UNRESOLVED and match is Match.YES:
                match, why = cm, cwhy
        if cand.exception:
            if match is not Match.YES:
                continue  # an allow-list that cannot be checked does not apply
            if rule.shadow:  # recorded, not enforced, like a shadow rule
                if shadow_action is None:
                    shadow_action, shadow_rule = rule.action, rule.id
                continue
            result = Outcome(
                action=rule.action,
                route=rule.route,
                outcome="exception",
                rule_id=rule.id,
                reasons=(f"exception:{rule.id}",),
            )
            break
        if rule.shadow:
            if shadow_action is None:
                shadow_action = rule.action if match is Match.YES else policy.on_unresolved[0]
                shadow_rule = rule.id
            continue
        if match is Match.DISPUTED:
            act, route = policy.disputed_action
            result = Outcome(
                action=act,
                route=route,
                outcome="disputed",
                rule_id=rule.id,
                reasons=(f"disputed:{why}", f"rule:{rule.id}"),
            )
        elif match is Match.UNRESOLVED:
            act, route = policy.on_unresolved
            result = Outcome(
                action=act,
                route=route,
                outcome="unresolved",
                rule_id=rule.id,
                reasons=(f"unresolved:{why}", f"rule:{rule.id}"),
            )
        else:
            result = Outcome(
                action=rule.action,
                route=rule.route,
                outcome="rule",
                rule_id=rule.id,
                reasons=(f"rule:{rule.id}",),
            )
        break
    if result is None:
        if special is not None:
            (act, route), kind, reason = policy.on_reserved, "reserved", f"reserved:{special.value}"
        elif not found:
            (act, route), kind, reason = policy.on_unknown, "unknown", "unknown_address"
        else:
            (act, route), kind, reason = policy.default, "default", "default"
        result = Outcome(action=act, route=route, outcome=kind, rule_id=None, reasons=(reason,))
    reasons = result.reasons
    if shadow_rule is not None:
        reasons = (*reasons, f"shadow:{shadow_rule}")
    if policy.shadow:
        return Outcome(
            action=Action.ALLOW,
            route=None,
            outcome=result.outcome,
            rule_id=result.rule_id,
            reasons=(*reasons, "shadow:policy"),
            shadow_action=result.action,
            shadow_rule_id=result.rule_id,
            final=final,
        )
    return Outcome(
        action=result.action,
        route=result.route,
        outcome=result.outcome,
        rule_id=result.rule_id,
        reasons=reasons,
        shadow_action=shadow_action,
        shadow_rule_id=shadow_rule,
        final=final,
    )

"""Expected decisions for a policy, run like unit tests (``geofence policy test``).

A cases file is TOML: an array ``[[case]]`` of named cases, each with an
``address``, the expected ``action`` (``allow``, ``deny``, ``route:<target>``...)
and optionally the expected ``rule`` (a rule id, or ``""`` for "no rule: a
default or fallback decided"), a ``subject`` table and a ``context`` table
(``timezone``, ``accept_language``, ``signals`` as a list of signal codes)::

    [[case]]
    name = "a Tehran address is denied"
    address = "2.176.0.1"
    action = "deny"
    rule = "ofac-iran"

Cases run through :class:`geofence.Geofence` (the same ``decide()`` the
middleware calls), so a failing case is a real difference, shown as expected
versus got with the decision's reasons.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from geofence.context import Context, Subject
from geofence.decision import Action, Decision, parse_action
from geofence.engine import Geofence
from geofence.errors import GeofenceError, InvalidAddressError, PolicyError
from geofence.policy.model import Policy
from geofence.signals.base import Signal
from geofence.snapshot.reader import Snapshot

__all__ = ["Case", "CaseResult", "load_cases", "run_cases"]

_CASE_KEYS = {"name", "address", "action", "rule", "subject", "context", "note"}
_CONTEXT_KEYS = {"timezone", "accept_language", "signals"}


@dataclass(frozen=True, slots=True)
class Case:
    """One expected decision."""

    name: str
    address: str
    action: Action
    route: str | None
    rule: str | None
    """Expected rule id; ``""`` expects no rule; ``None`` does not check it."""
    context: Context | None


@dataclass(frozen=True, slots=True)
class CaseResult:
    """A case and the decision it got."""

    case: Case
    decision: Decision | None
    error: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the decision is the expected one."""
        d, c = self.decision, self.case
        if d is None:
            return False
        if d.action is not c.action or d.route != c.route:
            return False
        return c.rule is None or (d.rule_id or "") == c.rule

    def report(self) -> str:
        """``PASS name`` or a FAIL block with expected and got."""
        c = self.case
        if self.passed:
            return f"PASS {c.name}"
        want = c.action.value + (f":{c.route}" if c.route else "")
        if c.rule is not None:
            want += f" (rule {c.rule or 'none'})"
        lines = [f"FAIL {c.name}: {c.address}", f"    expected: {want}"]
        d = self.decision
        if d is None:
            lines.append(f"    error:    {self.error}")
        else:
            got = d.action.value + (f":{d.route}" if d.route else "")
            got += f" (rule {d.rule_id or 'none'}; outcome {d.outcome})"
            lines.append(f"    got:      {got}")
            where = d.subdivision or d.country or d.special or "unknown"
            lines.append(f"    reasons:  {', '.join(d.reasons)}; location {where}")
        return "\n".join(lines)


def _fail(source: str, what: str) -> PolicyError:
    return PolicyError(f"cases file: {what}", source=source)


def _case(raw: object, k: int, source: str) -> Case:
    if not isinstance(raw, dict):
        raise _fail(source, f"case {k} is not a table")
    unknown = set(raw) - _CASE_KEYS
    if unknown:
        raise _fail(source, f"case {k} has unknown keys {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(source, f"case {k} needs a name")
    address = raw.get("address")
    if not isinstance(address, str):
        raise _fail(source, f"case {name!r} needs an address (a string)")
    try:
        action, route = parse_action(raw.get("action"))  # type: ignore[arg-type]
    except ValueError as exc:
        raise _fail(source, f"case {name!r}: {exc}") from None
    rule = raw.get("rule")
    if rule is not None and not isinstance(rule, str):
        raise _fail(source, f'case {name!r}: rule must be a rule id or ""')
    subject = None
    if "subject" in raw:
        if not isinstance(raw["subject"], dict):
            raise _fail(source, f"case {name!r}: subject must be a table")
        try:
            subject = Subject.from_mapping(raw["subject"])
        except ValueError as exc:
            raise _fail(source, f"case {name!r}: subject: {exc}") from None
    ctx_raw = raw.get("context", {})
    if not isinstance(ctx_raw, dict) or set(ctx_raw) - _CONTEXT_KEYS:
        raise _fail(source, f"case {name!r}: context takes {sorted(_CONTEXT_KEYS)}")
    codes = ctx_raw.get("signals", [])
    if not isinstance(codes, list) or not all(isinstance(s, str) for s in codes):
        raise _fail(source, f"case {name!r}: context.signals must be a list of codes")
    context = None
    if subject is not None or ctx_raw:
        context = Context(
            subject=subject,
            timezone=ctx_raw.get("timezone"),
            accept_language=ctx_raw.get("accept_language"),
            signals=tuple(Signal(code=s) for s in codes),
        )
    return Case(name, address, action, route, rule, context)


def load_cases(path: str | os.PathLike[str]) -> tuple[Case, ...]:
    """Read and validate a cases file.

    Raises:
        PolicyError: The file cannot be read, is not TOML, or a case is malformed.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise _fail(source, f"cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _fail(source, f"not valid TOML: {exc}") from exc
    raw = data.get("case")
    if not isinstance(raw, list) or not raw:
        raise _fail(source, "no [[case]] entries")
    unknown = set(data) - {"case", "policy", "note"}
    if unknown:
        raise _fail(source, f"unknown top-level keys {sorted(unknown)}")
    cases = tuple(_case(item, k, source) for k, item in enumerate(raw))
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail(source, f"duplicate case names {dupes}")
    return cases


def run_cases(
    policy: Policy | str | os.PathLike[str],
    cases: tuple[Case, ...] | str | os.PathLike[str],
    *,
    snapshot: Snapshot | str | os.PathLike[str] | None = None,
    params: Mapping[str, Any] | None = None,
    today: dt.date | None = None,
) -> list[CaseResult]:
    """Decide every case with ``policy`` and compare with the expectation.

    Args:
        policy: A policy, a policy file or a preset name.
        cases: Cases, or a cases file.
        snapshot: The snapshot; default: the bundled data.
        params: Parameters of a parameterised preset.
        today: The date rules are compiled for (default: today, UTC).

    Raises:
        PolicyError: The policy or the cases file is invalid.
        SnapshotError: The snapshot cannot be opened.
    """
    if not isinstance(cases, tuple):
        cases = load_cases(cases)
    if params is not None and not isinstance(policy, Policy):
        from geofence.policy.parse import load_policy

        policy = load_policy(policy, params=params)
    clock = None if today is None else (lambda: today)
    with Geofence(snapshot, policy, today=clock) as gf:
        results = []
        for case in cases:
            try:
                d = gf.decide(case.address, case.context)
            except InvalidAddressError as exc:
                results.append(CaseResult(case, None, str(exc)))
                continue
            except GeofenceError as exc:  # pragma: no cover - a decision error is reported
                results.append(CaseResult(case, None, str(exc)))
                continue
            results.append(CaseResult(case, d))
    return results

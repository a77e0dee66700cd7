"""The policy model and its plain interpreter.

Semantics (also in ``docs/policy.md``):

* **Order of evaluation.** (1) exceptions, in file order; (2) rules, in file
  order — the **first matching rule decides** (first match wins); (3) when no
  rule matched: ``on_reserved`` for special-purpose addresses, ``on_unknown`` for
  addresses not in the data, else ``default``.
* **A rule matches** when every condition it states holds (AND); each list
  condition holds when any of its items does (OR).
* **Unresolved.** When a rule's conditions cannot be decided — a subdivision rule
  against a record with no subdivision, a partial jurisdiction, a subject rule
  without a subject — evaluation stops and ``on_unresolved`` applies, with the
  reason. Rules before it still win; rules after it are not reached.
* **Disputed.** When two independent country sources disagree about an address
  (its record has ``alt_country``) and the policy's address-only verdict for the
  other country differs from the verdict for the recorded one, ``on_disputed``
  applies (by default ``on_unresolved``), with both answers in the reason.
* **Addresses not in the data and reserved addresses** cannot match conditions
  about location, kinds or ASNs (those rules are skipped there); conditions on
  CIDRs and subjects still apply.
* **Shadow mode.** A rule with ``shadow = true`` that matches is recorded on the
  decision (``shadow_action``) and evaluation continues as if it were absent. A
  policy with ``shadow = true`` is evaluated fully and its action recorded as
  ``shadow_action``, while ``allow`` is enforced.
* **Dates.** A rule applies on dates ``effective_from <= d < effective_to``
  (either may be omitted); outside them it is absent.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Final

from geofence.context import Context, Subject
from geofence.decision import Action
from geofence.errors import PolicyError
from geofence.kinds import NetworkKind, kinds_to_names
from geofence.records import NetworkRecord
from geofence.signals.base import MAX_WEIGHT, check_weight

__all__ = ["Match", "Policy", "Rule", "SubjectCondition"]


class Match(enum.Enum):
    """Result of testing a condition."""

    YES = "yes"
    NO = "no"
    UNRESOLVED = "unresolved"
    DISPUTED = "disputed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectCondition:
    """Conditions about the subject; each stated field must hold."""

    nationality: frozenset[str] | None = None
    """Holds when any verified nationality of the subject is in this set."""

    nationality_not: frozenset[str] | None = None
    """Holds when the subject's nationalities are known and none is in this set."""

    account_country: frozenset[str] | None = None
    """Holds when the account country is in this set."""

    org_ids: frozenset[str] | None = None
    """Holds when the subject's organisation id is in this set."""

    ids: frozenset[str] | None = None
    """Holds when the subject id is in this set."""

    verified: bool | None = None
    """Holds when the subject's verification status equals this."""

    def is_empty(self) -> bool:
        """Whether no condition is stated."""
        return all(
            v is None
            for v in (
                self.nationality,
                self.nationality_not,
                self.account_country,
                self.org_ids,
                self.ids,
                self.verified,
            )
        )

    def test(self, subject: Subject | None) -> tuple[Match, str]:
        """Test against a subject; returns the match and, if unresolved, what is missing."""
        if self.is_empty():
            return Match.YES, ""
        if subject is None:
            return Match.UNRESOLVED, "subject"
        # AND over three values: a condition that fails decides (NO) even when another
        # cannot be checked; only if none fails does a missing attribute leave it unresolved.
        missing = ""
        if self.nationality is not None or self.nationality_not is not None:
            nats = subject.nationalities
            if not nats:
                missing = "subject.nationality"
            elif (self.nationality is not None and not nats & self.nationality) or (
                self.nationality_not is not None and nats & self.nationality_not
            ):
                return Match.NO, ""
        if self.account_country is not None:
            if subject.account_country is None:
                missing = missing or "subject.account_country"
            elif subject.account_country not in self.account_country:
                return Match.NO, ""
        if self.org_ids is not None and subject.org_id not in self.org_ids:
            return Match.NO, ""
        if self.ids is not None and subject.id not in self.ids:
            return Match.NO, ""
        if self.verified is not None:
            if subject.verified is None:
                missing = missing or "subject.verified"
            elif subject.verified is not self.verified:
                return Match.NO, ""
        return (Match.UNRESOLVED, missing) if missing else (Match.YES, "")


# CIDR ranges as (version, first, last).
CidrRange = tuple[int, int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One rule (or exception): conditions and the action they lead to."""

    id: str
    """Unique id, quoted in decisions and audit lines."""

    action: Action
    """Action when the rule matches."""

    route: str | None = None
    """Target of a ``route`` action."""

    description: str = ""
    """What the rule is for, in plain words."""

    citation: str = ""
    """Legal or internal source (``"EO 13685"``, a URL)."""

    effective_from: dt.date | None = None
    """First date the rule applies (inclusive)."""

    effective_to: dt.date | None = None
    """Date the rule stops applying (exclusive)."""

    shadow: bool = False
    """Evaluate and report, but do not enforce."""

    jurisdictions: frozenset[str] | None = None
    """Holds when the address's country or subdivision is in this set."""

    not_jurisdictions: frozenset[str] | None = None
    """Holds when the address's location is known and outside this set ("domestic only")."""

    partial_jurisdictions: frozenset[str] | None = None
    """Subdivisions only part of which the rule targets (e.g. the DNR within UA-14):
    an address there, or in their country with no subdivision, is unresolved."""

    kinds: NetworkKind | None = None
    """Holds when the address has any of these network kinds."""

    asns: frozenset[int] | None = None
    """Holds when the address's ASN is in this set."""

    cidrs: tuple[CidrRange, ...] | None = None
    """Holds when the (unwrapped) address is in any of these networks."""

    cidr_text: tuple[str, ...] = ()
    """The CIDRs as written, for reports."""

    subject: SubjectCondition = field(default_factory=SubjectCondition)
    """Conditions on the subject."""

    signals: frozenset[str] | None = None
    """Holds when any of these signal codes is present (needs context)."""

    min_risk: float | None = None
    """Holds when the risk score is at least this (needs context)."""

    # Derived once: both are asked per candidate rule on every request with context.
    _needs_context: bool = field(default=False, init=False, repr=False, compare=False)
    _needs_data: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.min_risk is not None and not _finite_non_negative(self.min_risk):
            raise PolicyError(
                f"min_risk must be a finite number >= 0, got {self.min_risk!r}", rule_id=self.id
            )
        context = (
            (not self.subject.is_empty()) or self.signals is not None or self.min_risk is not None
        )
        data = any(
            x is not None
            for x in (
                self.jurisdictions,
                self.not_jurisdictions,
                self.partial_jurisdictions,
                self.kinds,
                self.asns,
            )
        )
        object.__setattr__(self, "_needs_context", context)
        object.__setattr__(self, "_needs_data", data)

    def active_on(self, day: dt.date) -> bool:
        """Whether the rule is in force on ``day``."""
        if self.effective_from is not None and day < self.effective_from:
            return False
        return not (self.effective_to is not None and day >= self.effective_to)

    @property
    def needs_context(self) -> bool:
        """Whether the rule has conditions that only a request context can answer."""
        return self._needs_context

    @property
    def needs_data(self) -> bool:
        """Whether the rule has conditions about the address's data record."""
        return self._needs_data

    def in_cidrs(self, version: int, value: int) -> bool:
        """Whether an (unwrapped) address is in this rule's CIDRs (True when it has none)."""
        if self.cidrs is None:
            return True
        return any(v == version and f <= value <= la for v, f, la in self.cidrs)

    def test_address(self, record: NetworkRecord | None, cidr_hit: bool) -> tuple[Match, str]:
        """Test the address conditions (everything but subject and signals).

        Args:
            record: The address's record, or ``None`` (not in the data, or reserved).
            cidr_hit: Whether the address is in the rule's CIDRs (see :meth:`in_cidrs`).

        Returns:
            The match and, when unresolved, what could not be resolved.
        """
        if not cidr_hit:
            return Match.NO, ""
        if not self.needs_data:
            return Match.YES, ""
        if record is None:
            return Match.NO, ""
        if self.kinds is not None and not record.kinds & self.kinds:
            return Match.NO, ""
        if self.asns is not None and record.asn not in self.asns:
            return Match.NO, ""
        result = Match.YES
        why = ""
        if self.jurisdictions is not None:
            m, w = _in_jurisdictions(record, self.jurisdictions)
            if m is Match.NO:
                return m, ""
            if m is Match.UNRESOLVED:
                result, why = m, w
        if self.not_jurisdictions is not None:
            m, w = _in_jurisdictions(record, self.not_jurisdictions)
            if m is Match.YES:
                return Match.NO, ""
            if m is Match.UNRESOLVED or record.country is None:
                result, why = Match.UNRESOLVED, w or "country"
        if self.partial_jurisdictions is not None:
            m, w = _in_jurisdictions(record, self.partial_jurisdictions)
            if m is Match.NO:
                return m, ""
            result, why = (
                Match.UNRESOLVED,
                (f"partial:{record.subdivision or record.country}" if m is Match.YES else w),
            )
        return result, why

    def test_context(
        self, context: Context | None, risk: float, codes: frozenset[str]
    ) -> tuple[Match, str]:
        """Test subject and signal conditions against a request context."""
        if not self.needs_context:
            return Match.YES, ""
        m, why = self.subject.test(context.subject if context is not None else None)
        if m is Match.NO:
            return m, why
        if self.signals is not None or self.min_risk is not None:
            if context is None:
                return Match.UNRESOLVED, why or "context"
            if self.signals is not None and not self.signals & codes:
                return Match.NO, ""  # fails, even if the subject part was unresolved
            if self.min_risk is not None and risk < self.min_risk:
                return Match.NO, ""
        return m, why

    def canonical(self) -> dict[str, object]:
        """A canonical, JSON-ready form (for the policy digest and reports)."""

        def srt(x: frozenset[str] | frozenset[int] | None) -> list[object] | None:
            return None if x is None else sorted(x, key=str)

        return {
            "id": self.id,
            "action": self.action.value,
            "route": self.route,
            "effective_from": self.effective_from.isoformat() if self.effective_from else None,
            "effective_to": self.effective_to.isoformat() if self.effective_to else None,
            "shadow": self.shadow,
            "jurisdictions": srt(self.jurisdictions),
            "not_jurisdictions": srt(self.not_jurisdictions),
            "partial_jurisdictions": srt(self.partial_jurisdictions),
            "kinds": None if self.kinds is None else kinds_to_names(self.kinds),
            "asns": srt(self.asns),
            "cidrs": list(self.cidr_text) if self.cidrs is not None else None,
            "subject": {
                "nationality": srt(self.subject.nationality),
                "nationality_not": srt(self.subject.nationality_not),
                "account_country": srt(self.subject.account_country),
                "org_ids": srt(self.subject.org_ids),
                "ids": srt(self.subject.ids),
                "verified": self.subject.verified,
            },
            "signals": srt(self.signals),
            "min_risk": self.min_risk,
        }


def _finite_non_negative(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _in_jurisdictions(record: NetworkRecord, codes: frozenset[str]) -> tuple[Match, str]:
    """Whether a record's location is in a set of country and subdivision codes."""
    country = record.country
    if country is None:
        return Match.UNRESOLVED, "country"
    if country in codes:
        return Match.YES, ""
    sub = record.subdivision
    if sub is not None:
        return (Match.YES, "") if sub in codes else (Match.NO, "")
    prefix = country + "-"
    if any(c.startswith(prefix) for c in codes):
        return Match.UNRESOLVED, "subdivision"
    return Match.NO, ""


VALID_FALLBACKS: Final = (
    "default",
    "on_unresolved",
    "on_disputed",
    "on_unknown",
    "on_reserved",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A validated policy. Build one with :func:`geofence.policy.load_policy`."""

    id: str
    """Policy id, quoted in decisions."""

    version: str = ""
    """Version or date of the policy text."""

    description: str = ""
    """What the policy is for."""

    source: str = ""
    """The file or preset it came from."""

    rules: tuple[Rule, ...] = ()
    """Rules in evaluation order (first match wins)."""

    exceptions: tuple[Rule, ...] = ()
    """Exceptions, checked before any rule (allow-lists by CIDR or subject)."""

    default: tuple[Action, str | None] = (Action.ALLOW, None)
    """Action when no rule matched."""

    on_unresolved: tuple[Action, str | None] = (Action.REVIEW, None)
    """Action when the data cannot answer what a rule needs."""

    on_disputed: tuple[Action, str | None] | None = None
    """Action when independent country sources disagree with different outcomes
    (``None``: ``on_unresolved`` applies; see :attr:`disputed_action`)."""

    on_unknown: tuple[Action, str | None] = (Action.ALLOW, None)
    """Action for addresses not in the data (when no rule matched)."""

    on_reserved: tuple[Action, str | None] = (Action.ALLOW, None)
    """Action for private, loopback and other special-purpose addresses."""

    shadow: bool = False
    """Evaluate fully, record the outcome as ``shadow_action``, enforce ``allow``."""

    signal_weights: tuple[tuple[str, float], ...] = ()
    """Overrides of signal weights (code, weight) for the risk score."""

    _digest: str = field(default="", init=False, repr=False, compare=False)
    # Cache of :attr:`digest`: every decision with a context quotes it, and computing it
    # serialises and hashes the whole policy.

    def __post_init__(self) -> None:
        for code, weight in self.signal_weights:
            if not check_weight(weight):
                raise PolicyError(
                    f"signal weight of {code!r} must be a finite number between 0 and "
                    f"{MAX_WEIGHT:g}, got {weight!r}",
                    source=self.source or None,
                )

    def canonical(self) -> dict[str, object]:
        """Canonical JSON-ready form; its hash is :attr:`digest`."""

        def act(x: tuple[Action, str | None]) -> str:
            return x[0].value + (f":{x[1]}" if x[1] else "")

        return {
            "id": self.id,
            "version": self.version,
            "default": act(self.default),
            "on_unresolved": act(self.on_unresolved),
            # Only when set, so that the digests of policies without it stay as they were.
            **({"on_disputed": act(self.on_disputed)} if self.on_disputed is not None else {}),
            "on_unknown": act(self.on_unknown),
            "on_reserved": act(self.on_reserved),
            "shadow": self.shadow,
            "rules": [r.canonical() for r in self.rules],
            "exceptions": [r.canonical() for r in self.exceptions],
            "signal_weights": dict(self.signal_weights),
        }

    @property
    def disputed_action(self) -> tuple[Action, str | None]:
        """What applies to a disputed address: ``on_disputed``, else ``on_unresolved``."""
        return self.on_disputed if self.on_disputed is not None else self.on_unresolved

    @property
    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the canonical form: the policy's identity."""
        if not self._digest:  # computed once; a race only computes the same value twice
            blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
            object.__setattr__(self, "_digest", hashlib.sha256(blob.encode()).hexdigest()[:16])
        return self._digest

    @property
    def needs_context(self) -> bool:
        """Whether any rule or exception needs a request context."""
        return any(r.needs_context for r in (*self.rules, *self.exceptions))

    def date_boundaries(self) -> list[dt.date]:
        """Sorted dates on which some rule starts or stops applying."""
        days = {
            d
            for r in (*self.rules, *self.exceptions)
            for d in (r.effective_from, r.effective_to)
            if d is not None
        }
        return sorted(days)

"""Who works around the policy: the account-history signals replayed over a log.

When log lines name a user (or account, or API key), each such line is
replayed through the engine exactly as the middleware would decide it with a
subject: a :class:`~geofence.signals.pipeline.SignalPipeline` with an
in-process :class:`~geofence.signals.stores.MemoryHistoryStore`, the request
time taken from the log line. The history signals that fire
(``impossible_travel``, ``country_hopping``, ``denied_then_evasion``,
``shared_egress``; see ``docs/history.md``) are counted per code and per
subject, with examples.

The store's expiry clock is the log's own time, so a week of log replays as a
week of history. Lines should come in time order (one server's log is; the
lines of several servers' logs given one after the other are not, and a
subject seen on both may then look like it travelled back in time, which the
signals treat by absolute time differences).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from geofence.context import Context, Subject
from geofence.engine import Geofence
from geofence.signals.history import HistoryConfig
from geofence.signals.pipeline import SignalConfig, SignalPipeline
from geofence.signals.stores import MemoryHistoryStore

__all__ = ["HISTORY_CODES", "SignalExample", "WorkaroundView"]

#: The history signals the view reports, in report order.
HISTORY_CODES = ("denied_then_evasion", "impossible_travel", "country_hopping", "shared_egress")


@dataclass(frozen=True, slots=True)
class SignalExample:
    """One request on which a history signal fired."""

    code: str
    subject: str
    address: str
    at: float
    detail: str


@dataclass(slots=True)
class _Code:
    events: int = 0
    subjects: Counter[str] = field(default_factory=Counter)
    examples: list[SignalExample] = field(default_factory=list)


class WorkaroundView:
    """Replays requests with a subject through the history signals.

    Args:
        gf: The engine whose snapshot and policy the audit uses.
        config: History thresholds and weights (the defaults when ``None``).
        examples: Examples kept per signal code.
        max_subjects: Subjects whose history is kept at once (least recently
            seen forgotten first).
    """

    def __init__(
        self,
        gf: Geofence,
        config: HistoryConfig | None = None,
        *,
        examples: int = 5,
        max_subjects: int = 100_000,
    ) -> None:
        history = config or HistoryConfig()
        self._now = 0.0
        store = MemoryHistoryStore(
            history, max_subjects=max_subjects, max_egress=max_subjects, clock=self._clock
        )
        pipeline = SignalPipeline(SignalConfig(history=history), store=store)
        self._engine = Geofence(gf.snapshot, gf.policy, signals=pipeline)
        self._examples = examples
        self._codes: dict[str, _Code] = {code: _Code() for code in HISTORY_CODES}
        self.requests = 0
        """Requests replayed (lines with a user, a time and a valid address)."""
        self.subjects: set[str] = set()
        """Distinct subjects seen."""

    def _clock(self) -> float:
        return self._now

    def observe(self, subject: str, address: str, at: float) -> None:
        """Replay one request of ``subject`` from ``address`` at Unix time ``at``."""
        self._now = max(self._now, at)
        self.requests += 1
        self.subjects.add(subject)
        d = self._engine.decide(address, Context(subject=Subject(id=subject), at=at))
        for signal in d.signals:
            entry = self._codes.get(signal.code)
            if entry is None:
                continue
            entry.events += 1
            entry.subjects[subject] += 1
            if len(entry.examples) < self._examples:
                entry.examples.append(
                    SignalExample(signal.code, subject, address, at, signal.detail)
                )

    def as_dict(self, top: int = 10) -> dict[str, object]:
        """JSON-ready summary: per code the events, distinct subjects, top subjects, examples."""
        return {
            "requests": self.requests,
            "subjects": len(self.subjects),
            "signals": {
                code: {
                    "events": entry.events,
                    "subjects": len(entry.subjects),
                    "top_subjects": [
                        {"subject": s, "events": n} for s, n in entry.subjects.most_common(top)
                    ],
                    "examples": [
                        {"subject": e.subject, "address": e.address, "at": e.at, "detail": e.detail}
                        for e in entry.examples
                    ],
                }
                for code, entry in self._codes.items()
            },
        }

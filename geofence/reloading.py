"""Reload health: the file watcher, retries with backoff, and the alarm when reloads fail.

Sanctions rules must not go stale silently. :class:`Watcher` is the thread behind
:meth:`geofence.Geofence.watch`: it survives every exception a reload can raise
(a policy with a bad byte, a wrong type or 3,000-deep nesting, a snapshot being
rewritten), keeps the old state serving, and retries with exponential backoff
until a reload succeeds, with or without a further change to the files.

:class:`ReloadMonitor` records every attempt (the watcher's, the date refresh's
and explicit :meth:`~geofence.Geofence.reload` calls), logs failures at
``ERROR`` on the ``geofence`` logger and tells listeners, such as the Prometheus
gauges of :func:`prometheus_reload_metrics`. :meth:`geofence.Geofence.health`
returns its view as a :class:`Health`. See ``docs/reliability.md``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "Health",
    "ReloadEvent",
    "ReloadMonitor",
    "Retry",
    "Watcher",
    "prometheus_reload_metrics",
]

log = logging.getLogger("geofence")

#: What triggered a reload attempt.
TRIGGERS: Final = ("watch", "refresh", "manual")


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Exponential backoff between attempts after a failed reload.

    Raises:
        ValueError: A delay is not a finite positive number, or ``first > maximum``.
    """

    first: float = 1.0
    """Seconds before the first retry."""

    maximum: float = 60.0
    """Longest wait between retries (the delay doubles up to this)."""

    def __post_init__(self) -> None:
        for name in ("first", "maximum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"Retry.{name} must be a number of seconds, got {value!r}")
            if not 0 < value < float("inf"):
                raise ValueError(f"Retry.{name} must be finite and positive, got {value!r}")
        if self.first > self.maximum:
            raise ValueError(f"Retry.first {self.first} is above Retry.maximum {self.maximum}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (``failures >= 1``)."""
        return min(self.first * 2.0 ** min(failures - 1, 60), self.maximum)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadEvent:
    """One reload attempt, as listeners see it."""

    trigger: str
    """``"watch"`` (a file changed, or a retry), ``"refresh"`` (a rule's date
    arrived) or ``"manual"`` (:meth:`~geofence.Geofence.reload`)."""

    ok: bool
    """Whether the new state was installed."""

    error: str | None
    """The error in words (type and message) when it failed."""

    at: float
    """Unix time of the attempt's end."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    """The engine's reload health at one moment (:meth:`geofence.Geofence.health`)."""

    healthy: bool
    """No reload failed since the last success and no date refresh is overdue."""

    snapshot_id: str
    """Identity of the snapshot in use."""

    policy_digest: str
    """Identity of the policy in use."""

    loaded_at: float
    """Unix time the state in use was installed."""

    state_age: float
    """Seconds since then."""

    last_success_at: float | None
    """Unix time of the last successful reload (``None``: none since start)."""

    last_error: str | None
    """The last failure in words (kept after a later success, for the record)."""

    last_error_at: float | None
    """Unix time of the last failure."""

    consecutive_failures: int
    """Failures since the last success (0 when the last attempt succeeded)."""

    reloads: int
    """Successful reloads since start."""

    failures: int
    """Failed reload attempts since start."""

    watching: bool
    """Whether the file watcher thread is running."""

    refresh_due: dt.date | None
    """Date on which a rule starts or stops applying next (the date refresh)."""

    refresh_overdue: bool
    """That date has arrived and the rules in use were compiled for an earlier one."""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready mapping (for a health endpoint)."""
        out: dict[str, object] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, dt.date) else value
        return out


class ReloadMonitor:
    """Thread-safe record of reload attempts; logs failures and notifies listeners."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """Start with no attempts; ``clock`` gives Unix time (tests may pass their own)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Callable[[ReloadEvent], None]] = []
        self.loaded_at = clock()
        self.last_success_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.consecutive_failures = 0
        self.reloads = 0
        self.failures = 0

    def add_listener(self, listener: Callable[[ReloadEvent], None]) -> None:
        """Call ``listener`` after every attempt (its own errors are logged, not raised)."""
        with self._lock:
            self._listeners.append(listener)

    def health(
        self,
        *,
        snapshot_id: str,
        policy_digest: str,
        watching: bool,
        refresh_due: dt.date | None,
        refresh_overdue: bool,
    ) -> Health:
        """A consistent view of the record, with the engine's facts added."""
        with self._lock:
            return Health(
                healthy=not self.consecutive_failures and not refresh_overdue,
                snapshot_id=snapshot_id,
                policy_digest=policy_digest,
                loaded_at=self.loaded_at,
                state_age=max(self._clock() - self.loaded_at, 0.0),
                last_success_at=self.last_success_at,
                last_error=self.last_error,
                last_error_at=self.last_error_at,
                consecutive_failures=self.consecutive_failures,
                reloads=self.reloads,
                failures=self.failures,
                watching=watching,
                refresh_due=refresh_due,
                refresh_overdue=refresh_overdue,
            )

    def succeeded(self, trigger: str) -> None:
        """Record an installed state."""
        with self._lock:
            now = self._clock()
            self.loaded_at = self.last_success_at = now
            self.consecutive_failures = 0
            self.reloads += 1
        log.info("geofence: reloaded (%s)", trigger)
        self._notify(ReloadEvent(trigger=trigger, ok=True, error=None, at=now))

    def failed(self, trigger: str, exc: BaseException) -> None:
        """Record a failed attempt; the old state keeps serving."""
        error = f"{type(exc).__name__}: {exc}"[:500]
        with self._lock:
            now = self._clock()
            self.last_error, self.last_error_at = error, now
            self.consecutive_failures += 1
            self.failures += 1
            streak = self.consecutive_failures
        log.error(
            "geofence: reload (%s) failed %d time(s) in a row, keeping the old state: %s",
            trigger,
            streak,
            error,
        )
        self._notify(ReloadEvent(trigger=trigger, ok=False, error=error, at=now))

    def _notify(self, event: ReloadEvent) -> None:
        with self._lock:
            listeners = tuple(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a broken metrics hook must not stop reloads
                log.exception("geofence: reload listener %r failed", listener)


class Watcher:
    """A daemon thread that reloads when files change and retries failures with backoff.

    Args:
        signature: Returns something that changes when a watched file changes.
        reload: Builds and installs a new state; may raise anything.
        monitor: Records the attempts.
        interval: Seconds between checks of ``signature``.
        retry: Backoff between retries of a failed reload.
    """

    def __init__(
        self,
        signature: Callable[[], object],
        reload: Callable[[], None],
        monitor: ReloadMonitor,
        *,
        interval: float,
        retry: Retry,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise ValueError(f"watch interval must be a number of seconds, got {interval!r}")
        if not 0 < interval < float("inf"):
            raise ValueError(f"watch interval must be finite and positive, got {interval!r}")
        self._signature = signature
        self._reload = reload
        self._monitor = monitor
        self._interval = interval
        self._retry = retry
        self._stop = threading.Event()
        # The baseline is taken here, not in the thread: a change made right after
        # watch() returns must not become the thread's baseline and go unnoticed.
        self._last = self._checked_signature()
        self._thread = threading.Thread(target=self._run, name="geofence-watch", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait for it."""
        self._stop.set()
        self._thread.join(timeout=timeout)

    @property
    def alive(self) -> bool:
        """Whether the thread is running."""
        return self._thread.is_alive()

    def _checked_signature(self) -> object:
        try:
            return self._signature()
        except Exception as exc:  # stat() of a path that vanished mid-check, and the like
            return ("unreadable", type(exc).__name__)

    def _run(self) -> None:
        retry_at: float | None = None  # monotonic time of the next retry, while failing
        failures = 0
        while not self._stop.wait(self._interval):
            now = self._checked_signature()
            due = retry_at is not None and time.monotonic() >= retry_at
            if now == self._last and not due:
                continue
            self._last = now
            try:
                self._reload()
            except Exception as exc:  # every error: the thread must outlive bad files
                failures += 1
                self._monitor.failed("watch", exc)
                retry_at = time.monotonic() + self._retry.delay(failures)
            else:
                failures, retry_at = 0, None
                self._monitor.succeeded("watch")


def prometheus_reload_metrics(
    engine: Any, *, registry: Any = None, namespace: str = "geofence"
) -> None:
    """Export an engine's reload health to Prometheus (needs the ``prometheus`` extra).

    Registers, on ``registry`` (default: the global one):

    * ``<namespace>_reloads_total{trigger, outcome}``: reload attempts, by
      trigger (watch, refresh, manual) and outcome (ok, error);
    * ``<namespace>_reload_consecutive_failures``: failures since the last success
      (alert when above zero for longer than a retry or two);
    * ``<namespace>_state_age_seconds``: age of the state in use;
    * ``<namespace>_refresh_overdue``: 1 while a date refresh is overdue.

    Args:
        engine: A :class:`geofence.Geofence`.
        registry: A ``prometheus_client.CollectorRegistry``.
        namespace: Metric name prefix.

    Raises:
        ImportError: ``prometheus-client`` is not installed.
    """
    try:
        import prometheus_client
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reload metrics need prometheus-client: pip install 'geofence[prometheus]'"
        ) from exc
    reg = registry if registry is not None else prometheus_client.REGISTRY
    attempts = prometheus_client.Counter(
        f"{namespace}_reloads",
        "Geofence reload attempts by trigger and outcome.",
        ("trigger", "outcome"),
        registry=reg,
    )
    for trigger in TRIGGERS:  # export zeros, so "no failure yet" is a value, not an absence
        for outcome in ("ok", "error"):
            attempts.labels(trigger, outcome)
    gauges = {
        "reload_consecutive_failures": (
            "Geofence reload failures since the last success.",
            lambda: engine.health().consecutive_failures,
        ),
        "state_age_seconds": (
            "Seconds since the geofence state in use was installed.",
            lambda: engine.health().state_age,
        ),
        "refresh_overdue": (
            "1 while a rule's effective date has arrived but is not applied yet.",
            lambda: float(engine.health().refresh_overdue),
        ),
    }
    for name, (text, read) in gauges.items():
        prometheus_client.Gauge(f"{namespace}_{name}", text, registry=reg).set_function(read)
    engine.add_reload_listener(
        lambda event: attempts.labels(event.trigger, "ok" if event.ok else "error").inc()
    )

"""How old data may be before :class:`~geofence.Geofence` says so.

By default a :class:`~geofence.Geofence` warns (:class:`~geofence.errors.DataAgeWarning`)
when its snapshot's data is older than **45 days**, once per snapshot per
process, so a long-running server does not repeat it on every reload. The
limit is set per engine with ``max_age=`` (a :class:`datetime.timedelta`, or
``None`` for no check) or for the whole process with the environment variable
``GEOFENCE_MAX_AGE_DAYS`` (a number of days, or ``off``).
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import threading

from geofence.snapshot.reader import Snapshot

__all__ = [
    "DEFAULT_MAX_AGE",
    "ENV_MAX_AGE_DAYS",
    "MAX_AGE_DAYS",
    "Default",
    "resolve_max_age",
    "warn_if_stale",
]

MAX_AGE_DAYS = 45
"""The default maximum age of the data, in days."""

ENV_MAX_AGE_DAYS = "GEOFENCE_MAX_AGE_DAYS"
"""Environment variable overriding :data:`MAX_AGE_DAYS` (days, or ``off``/``none``)."""

_OFF = frozenset({"off", "none", "never"})


class Default(enum.Enum):
    """Marker for "no ``max_age`` given": the environment variable or 45 days."""

    MAX_AGE = "default"
    """Use ``GEOFENCE_MAX_AGE_DAYS`` when set, else :data:`MAX_AGE_DAYS`."""


DEFAULT_MAX_AGE = Default.MAX_AGE
"""The default value of ``Geofence(max_age=...)``."""


def resolve_max_age(value: dt.timedelta | Default | None) -> dt.timedelta | None:
    """The maximum age in force: ``value``, or the environment's, or 45 days.

    Raises:
        ValueError: ``GEOFENCE_MAX_AGE_DAYS`` is neither a non-negative number
            of days nor ``off``.
    """
    if not isinstance(value, Default):
        return value
    raw = os.environ.get(ENV_MAX_AGE_DAYS, "").strip()
    if not raw:
        return dt.timedelta(days=MAX_AGE_DAYS)
    if raw.lower() in _OFF:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise ValueError(
            f"{ENV_MAX_AGE_DAYS}={raw!r} is not a number of days (or 'off' to disable the check)"
        )
    return dt.timedelta(days=int(raw))


_warned: set[str] = set()
_lock = threading.Lock()


def warn_if_stale(snapshot: Snapshot, max_age: dt.timedelta | None, *, error: bool = False) -> None:
    """Warn once per snapshot per process when its data is older than ``max_age``.

    Args:
        snapshot: The snapshot about to be used.
        max_age: The limit; ``None`` checks nothing.
        error: Raise instead of warning (every time, not once).

    Raises:
        SnapshotError: ``error`` is true and the data is too old or undated.
    """
    if max_age is None:
        return
    if error:
        snapshot.check_age(max_age, error=True)
        return
    age = snapshot.age()
    if age is None or age <= max_age:
        return
    with _lock:
        if snapshot.snapshot_id in _warned:
            return
        _warned.add(snapshot.snapshot_id)
    snapshot.check_age(max_age)

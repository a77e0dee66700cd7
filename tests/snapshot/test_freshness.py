"""Tests of geofence.snapshot.freshness: the default data-age warning of Geofence()."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
import warnings

import pytest

from geofence import Geofence
from geofence.errors import DataAgeWarning, SnapshotError
from geofence.snapshot.freshness import (
    DEFAULT_MAX_AGE,
    ENV_MAX_AGE_DAYS,
    MAX_AGE_DAYS,
    resolve_max_age,
)
from geofence.snapshot.reader import Snapshot
from geofence.testing import make_snapshot

TODAY = dt.datetime.now(dt.UTC).date()


def _snapshot(age_days: int) -> Snapshot:
    """A fresh, uniquely named snapshot whose data is ``age_days`` old."""
    return make_snapshot(
        {"8.8.8.0/24": {"country": "US"}},
        name=f"t-{uuid.uuid4().hex}",
        data_date=TODAY - dt.timedelta(days=age_days),
    )


def _age_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, DataAgeWarning)]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MAX_AGE_DAYS, raising=False)


def test_old_data_warns_once_per_snapshot() -> None:
    """Data older than 45 days warns on the first engine, not again for the same snapshot."""
    old = _snapshot(MAX_AGE_DAYS + 1)
    other = _snapshot(90)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Geofence(old)
        Geofence(old)
        Geofence(other)
    messages = _age_warnings(caught)
    assert len(messages) == 2
    assert f"data is {MAX_AGE_DAYS + 1} days old (maximum {MAX_AGE_DAYS})" in messages[0]
    assert "90 days old" in messages[1]


def test_fresh_data_and_silenced_checks_do_not_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    """45 days is still fresh; max_age=None and GEOFENCE_MAX_AGE_DAYS=off silence the check."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Geofence(_snapshot(MAX_AGE_DAYS))
        Geofence(_snapshot(400), max_age=None)
        monkeypatch.setenv(ENV_MAX_AGE_DAYS, "off")
        Geofence(_snapshot(400))
        monkeypatch.setenv(ENV_MAX_AGE_DAYS, "500")
        Geofence(_snapshot(400))
    assert _age_warnings(caught) == []


def test_configured_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """max_age= and the environment variable set the limit; a bad value is refused."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Geofence(_snapshot(10), max_age=dt.timedelta(days=7))
        monkeypatch.setenv(ENV_MAX_AGE_DAYS, "5")
        Geofence(_snapshot(6))
    assert [m.split("; ")[0].split(") ")[-1] for m in _age_warnings(caught)] == [
        "data is 10 days old (maximum 7)",
        "data is 6 days old (maximum 5)",
    ]
    monkeypatch.setenv(ENV_MAX_AGE_DAYS, "six weeks")
    with pytest.raises(ValueError, match="GEOFENCE_MAX_AGE_DAYS='six weeks'"):
        resolve_max_age(DEFAULT_MAX_AGE)


def test_stale_error_raises_every_time() -> None:
    """With stale='error' old data is refused on every construction, not just once."""
    old = _snapshot(60)
    for _ in range(2):
        with pytest.raises(SnapshotError, match="60 days old"):
            Geofence(old, stale="error")


def test_one_warning_across_threads() -> None:
    """Engines built at once in several threads on one snapshot warn exactly once."""
    old = _snapshot(100)
    start = threading.Barrier(8)

    def build() -> None:
        start.wait()
        Geofence(old)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=build) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(_age_warnings(caught)) == 1

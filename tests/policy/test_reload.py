"""Hot reload that never silently stops: the watcher, retries, date refreshes and health.

Each test that reloads from a file writes the file and gives it a distinct mtime
(see :func:`_write`), so changes are noticed even on filesystems with coarse clocks.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from geofence.decision import Action
from geofence.engine import Geofence
from geofence.errors import PolicyError
from geofence.reloading import (
    Health,
    ReloadEvent,
    ReloadMonitor,
    Retry,
    prometheus_reload_metrics,
)
from tests.policy.conftest import ADDR

MakeGf = Callable[..., Geofence]

FAST = Retry(first=0.01, maximum=0.05)
ALLOW = '[policy]\nid = "w"\ndefault = "allow"\n'
DENY = '[policy]\nid = "w"\ndefault = "deny"\n'
CHALLENGE = '[policy]\nid = "w"\ndefault = "challenge"\n'

#: Policy files that once killed the watcher thread (errors other than GeofenceError).
BAD_FILES: dict[str, bytes] = {
    "non_utf8_byte": b'[policy]\nid = "w"\ndefault = "deny"\ndescription = "\xff"\n',
    "groups_not_lists": b'[policy]\nid = "w"\n[groups]\nx = 5\n',
    "deep_nesting": b'[policy]\nid = "w"\nx = ' + b"[" * 3000 + b"]" * 3000 + b"\n",
}

#: Exceptions a reload may raise from anywhere below it, one per type the watcher must outlive.
INJECTED: dict[str, BaseException] = {
    "UnicodeDecodeError": UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    "TypeError": TypeError("'int' object is not iterable"),
    "RecursionError": RecursionError("maximum recursion depth exceeded"),
    "ValueError": ValueError("bad value"),
    "KeyError": KeyError("sources"),
    "OSError": OSError(5, "Input/output error"),
    "MemoryError": MemoryError(),
    "RuntimeError": RuntimeError("anything else"),
    "PolicyError": PolicyError("a documented error"),
}


_STAMPS = itertools.count(time.time_ns() + 10_000_000_000, 1_000_000_000)


def _write(path: Path, content: str | bytes) -> None:
    """Write a file and give it a distinct mtime (a second after the previous write's)."""
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    stamp = next(_STAMPS)
    os.utime(path, ns=(stamp, stamp))


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def _watched(make_gf: MakeGf, tmp_path: Path) -> tuple[Geofence, Path]:
    path = tmp_path / "watched.toml"
    _write(path, ALLOW)
    gf = make_gf(str(path), retry=FAST)
    gf.watch(interval=0.01)
    return gf, path


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_watcher_survives_bad_policy_files(make_gf: MakeGf, tmp_path: Path, name: str) -> None:
    """A non-UTF-8 byte, a wrongly typed group or deep nesting: old state kept, later edits load."""
    gf, path = _watched(make_gf, tmp_path)
    _write(path, BAD_FILES[name])
    assert _wait_for(lambda: gf.health().consecutive_failures >= 1)
    assert gf.decide(ADDR["us"]).action is Action.ALLOW
    health = gf.health()
    assert not health.healthy
    assert health.watching
    assert health.last_error is not None
    assert health.last_error.startswith("PolicyError")  # a typed error naming the file
    assert "watched.toml" in health.last_error
    _write(path, CHALLENGE)
    assert _wait_for(lambda: gf.decide(ADDR["us"]).action is Action.CHALLENGE)
    assert _wait_for(lambda: gf.health().healthy)


@pytest.mark.parametrize("name", sorted(INJECTED))
def test_watcher_survives_every_exception_type(
    make_gf: MakeGf, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Whatever a reload raises, the thread lives on, reports it, and loads the next version."""
    gf, path = _watched(make_gf, tmp_path)
    real_build = Geofence._build
    failing = [True]

    def build(self: Geofence, *args: Any) -> Any:
        if failing[0]:
            raise INJECTED[name]
        return real_build(self, *args)

    monkeypatch.setattr(Geofence, "_build", build)
    _write(path, DENY)
    assert _wait_for(lambda: gf.health().failures >= 2)  # failed, then retried with backoff
    assert gf.health().watching
    assert gf.health().last_error.startswith(name)  # type: ignore[union-attr]
    assert gf.decide(ADDR["us"]).action is Action.ALLOW
    failing[0] = False
    _write(path, CHALLENGE)
    assert _wait_for(lambda: gf.decide(ADDR["us"]).action is Action.CHALLENGE)
    assert gf.health().consecutive_failures == 0


def test_failed_reload_is_retried_without_another_change(
    make_gf: MakeGf, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that failed (a file mid-rewrite, a flaky disk) is retried until it succeeds."""
    gf, path = _watched(make_gf, tmp_path)
    real_build = Geofence._build
    left = [3]

    def build(self: Geofence, *args: Any) -> Any:
        if left[0]:
            left[0] -= 1
            raise OSError(5, "Input/output error")
        return real_build(self, *args)

    monkeypatch.setattr(Geofence, "_build", build)
    _write(path, DENY)  # the only change: the retries must pick it up
    assert _wait_for(lambda: gf.decide(ADDR["us"]).action is Action.DENY)
    health = gf.health()
    assert health.failures == 3
    assert health.consecutive_failures == 0
    assert health.healthy


def test_retry_delays_double_up_to_the_maximum() -> None:
    """Backoff doubles from ``first`` and stops at ``maximum``; bad settings are refused."""
    retry = Retry(first=0.5, maximum=3.0)
    assert [retry.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert Retry().delay(10_000) == 60.0
    for bad in ({"first": float("nan")}, {"first": 0}, {"maximum": float("inf")}, {"first": 9}):
        with pytest.raises(ValueError, match="Retry"):
            Retry(**{"first": 1.0, "maximum": 5.0, **bad})


@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf"), "5"])
def test_watch_interval_is_validated(make_gf: MakeGf, tmp_path: Path, interval: object) -> None:
    """A watch interval that is not a finite positive number is refused up front."""
    path = tmp_path / "p.toml"
    _write(path, ALLOW)
    gf = make_gf(str(path))
    with pytest.raises(ValueError, match="interval"):
        gf.watch(interval)  # type: ignore[arg-type]


DATED = """\
[policy]
id = "dated"
default = "allow"

[[rules]]
id = "future-sanction"
action = "deny"
jurisdictions = ["IR"]
effective_from = 2090-01-01
"""


def test_failed_date_refresh_still_applies_the_new_rule(make_gf: MakeGf, tmp_path: Path) -> None:
    """A rule whose date arrives takes effect even when the policy file is broken by then.

    The refresh (what the date timer runs) fails to re-read the file, records the
    failure, and compiles the policy already in memory for the new date.
    """
    path = tmp_path / "dated.toml"
    _write(path, DATED)
    clock = [dt.date(2089, 12, 31)]
    gf = make_gf(str(path), today=lambda: clock[0], retry=FAST)
    assert gf.decide(ADDR["ir"]).action is Action.ALLOW
    assert gf.health().refresh_due == dt.date(2090, 1, 1)
    clock[0] = dt.date(2090, 1, 1)
    assert gf.health().refresh_overdue
    assert not gf.health().healthy
    _write(path, b"\xff\xfe not toml")
    gf._refresh_dates()
    assert gf.decide(ADDR["ir"]).action is Action.DENY
    health = gf.health()
    assert not health.refresh_overdue
    assert health.last_error is not None
    assert "dated.toml" in health.last_error
    assert health.consecutive_failures == 1  # the file is still broken: the alarm stays on


def test_date_refresh_is_retried_when_recompiling_fails(
    make_gf: MakeGf, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When even the in-memory recompile fails, the refresh is retried with backoff."""
    import geofence.engine as engine_module

    path = tmp_path / "dated.toml"
    _write(path, DATED)
    clock = [dt.date(2089, 12, 31)]
    gf = make_gf(str(path), today=lambda: clock[0], retry=FAST)
    real_compile = engine_module.compile_policy  # type: ignore[attr-defined]
    left = [2]

    def compile_policy(*args: Any, **kwargs: Any) -> Any:
        if left[0]:
            left[0] -= 1
            raise MemoryError
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(engine_module, "compile_policy", compile_policy)
    clock[0] = dt.date(2090, 1, 1)
    gf._refresh_dates()  # reload fails (MemoryError), recompile fails (MemoryError)
    assert gf.decide(ADDR["ir"]).action is Action.ALLOW
    assert gf.health().refresh_overdue
    assert _wait_for(lambda: gf.decide(ADDR["ir"]).action is Action.DENY)
    assert _wait_for(lambda: gf.health().healthy)


def test_manual_reload_failure_is_recorded_and_raised(make_gf: MakeGf, tmp_path: Path) -> None:
    """reload() raises the typed error, keeps the old state and records the failure."""
    path = tmp_path / "p.toml"
    _write(path, ALLOW)
    gf = make_gf(str(path))
    events: list[ReloadEvent] = []
    gf.add_reload_listener(events.append)
    _write(path, '[policy]\nid = "w"\ndefault = "bogus"\n')
    with pytest.raises(PolicyError, match="bogus"):
        gf.reload()
    _write(path, DENY)
    gf.reload()
    assert [(e.trigger, e.ok) for e in events] == [("manual", False), ("manual", True)]
    assert events[0].error is not None
    assert "bogus" in events[0].error
    health = gf.health()
    assert health.reloads == 1
    assert health.failures == 1
    assert health.healthy
    assert health.last_success_at is not None
    assert health.last_error_at is not None
    assert health.last_success_at >= health.last_error_at


def test_failures_are_logged_at_error(
    make_gf: MakeGf, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The alarm goes to the ``geofence`` logger at ERROR, with the file and the reason."""
    path = tmp_path / "p.toml"
    _write(path, ALLOW)
    gf = make_gf(str(path))
    _write(path, BAD_FILES["non_utf8_byte"])
    with caplog.at_level(logging.ERROR, logger="geofence"), pytest.raises(PolicyError):
        gf.reload()
    assert any("p.toml" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_broken_listener_does_not_stop_reloads(make_gf: MakeGf, tmp_path: Path) -> None:
    """A listener that raises is logged and ignored."""
    path = tmp_path / "p.toml"
    _write(path, ALLOW)
    gf = make_gf(str(path))

    def broken(event: ReloadEvent) -> None:
        raise RuntimeError("metrics backend down")

    gf.add_reload_listener(broken)
    _write(path, DENY)
    gf.reload()
    assert gf.decide(ADDR["us"]).action is Action.DENY


def test_health_state_age_and_dict(make_gf: MakeGf, tmp_path: Path) -> None:
    """State age grows from the install time; as_dict is JSON-ready."""
    path = tmp_path / "p.toml"
    _write(path, ALLOW)
    gf = make_gf(str(path))
    health = gf.health()
    assert isinstance(health, Health)
    assert health.healthy
    assert not health.watching
    assert 0.0 <= health.state_age < 60.0
    assert health.snapshot_id == gf.snapshot.snapshot_id
    assert health.policy_digest == gf.policy.digest
    data = json.loads(json.dumps(health.as_dict()))
    assert data["consecutive_failures"] == 0


def test_monitor_counts_are_consistent_across_threads() -> None:
    """Attempts recorded from many threads add up, and each health view is consistent."""
    monitor = ReloadMonitor()
    views: list[Health] = []

    def work(k: int) -> None:
        for i in range(200):
            if (i + k) % 3:
                monitor.succeeded("watch")
            else:
                monitor.failed("watch", RuntimeError(str(i)))
            views.append(
                monitor.health(
                    snapshot_id="s",
                    policy_digest="p",
                    watching=True,
                    refresh_due=None,
                    refresh_overdue=False,
                )
            )

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = monitor.health(
        snapshot_id="s", policy_digest="p", watching=True, refresh_due=None, refresh_overdue=False
    )
    assert final.reloads + final.failures == 8 * 200
    assert final.failures == sum(1 for k in range(8) for i in range(200) if not (i + k) % 3)
    for view in views:
        assert view.healthy == (view.consecutive_failures == 0)


def test_prometheus_reload_metrics(make_gf: MakeGf, tmp_path: Path) -> None:
    """Reload attempts are counted by trigger and outcome; the gauges read health()."""
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    path = tmp_path / "p.toml"
    _write(path, ALLOW)
    gf = make_gf(str(path))
    prometheus_reload_metrics(gf, registry=registry)

    def value(name: str, **labels: str) -> float | None:
        result: float | None = registry.get_sample_value(name, labels)
        return result

    assert value("geofence_reloads_total", trigger="manual", outcome="error") == 0.0
    _write(path, b"\xff")
    with pytest.raises(PolicyError):
        gf.reload()
    assert value("geofence_reloads_total", trigger="manual", outcome="error") == 1.0
    assert value("geofence_reload_consecutive_failures") == 1.0
    assert value("geofence_refresh_overdue") == 0.0
    age = value("geofence_state_age_seconds")
    assert age is not None
    assert age >= 0.0
    _write(path, DENY)
    gf.reload()
    assert value("geofence_reloads_total", trigger="manual", outcome="ok") == 1.0
    assert value("geofence_reload_consecutive_failures") == 0.0

"""Tests of the history stores: one contract for every store, then each store's own."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.signals.history import HistoryConfig, HistoryView, Observation, history_signals
from geofence.signals.stores import (
    AsyncHistoryStore,
    AsyncRedisHistoryStore,
    HistoryStore,
    MemoryHistoryStore,
    RedisHistoryStore,
)

redis = pytest.importorskip("redis")

HOUR = 3600.0
StoreFactory = Callable[..., HistoryStore]


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def obs(
    subject: str = "s1", at: float = 0.0, address: str = "203.0.113.7", **kw: Any
) -> Observation:
    return Observation(subject=subject, at=at, address=address, **kw)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def new_prefix() -> str:
    return f"geofence-test:{uuid.uuid4().hex}:"


# ------------------------------------------------------------------ the shared contract


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    """A factory of fresh, empty stores of one kind; closed and cleaned up afterwards."""
    made: list[tuple[HistoryStore, str]] = []
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def factory(config: HistoryConfig | None = None) -> HistoryStore:
        store: HistoryStore
        prefix = new_prefix()
        if url:
            store = RedisHistoryStore(
                url, config=config, prefix=prefix, socket_timeout=2, socket_connect_timeout=2
            )
        else:
            store = MemoryHistoryStore(config)
        made.append((store, prefix))
        return store

    yield factory
    for store, prefix in made:
        store.close()
        if url:
            delete_prefix(url, prefix)


def test_record_returns_earlier_history_newest_first(make_store: StoreFactory) -> None:
    """The view excludes the observation just recorded and lists the rest newest first."""
    store = make_store()
    first = obs(at=1.0, country="DE", latitude=52.5, longitude=13.4)
    second = obs(at=2.0, country="US", kinds=2, denied=True, jurisdiction_denied="US")
    third = obs(at=3.0)
    assert store.record(first) == HistoryView(observations=(), egress_subjects=1)
    assert store.record(second).observations == (first,)
    view = store.record(third)
    assert view.observations == (second, first)
    assert not view.degraded
    assert view.failure_mode == "open"


def test_subjects_are_kept_apart(make_store: StoreFactory) -> None:
    """One subject never sees another's history, even with look-alike ids."""
    store = make_store()
    store.record(obs("alice", 1.0))
    store.record(obs("alice*", 2.0))
    assert store.record(obs("alice", 3.0)).observations == (obs("alice", 1.0),)
    assert store.record(obs("bob", 4.0)).observations == ()


def test_history_is_bounded_per_subject(make_store: StoreFactory) -> None:
    """At most max_observations_per_subject are kept; the newest win."""
    store = make_store(HistoryConfig(max_observations_per_subject=3))
    for i in range(10):
        store.record(obs(at=float(i)))
    view = store.record(obs(at=10.0))
    assert [o.at for o in view.observations] == [9.0, 8.0, 7.0]


def test_egress_counts_distinct_subjects_in_the_window(make_store: StoreFactory) -> None:
    """Subjects behind one address are counted once each, within egress_window_s."""
    store = make_store(HistoryConfig(egress_window_s=HOUR))
    assert store.record(obs("a", 0.0)).egress_subjects == 1
    assert store.record(obs("a", 10.0)).egress_subjects == 1
    assert store.record(obs("b", 20.0)).egress_subjects == 2
    assert store.record(obs("c", 30.0, address="198.51.100.1")).egress_subjects == 1
    # "a" was last seen at 10: outside the window of a request at 10 + HOUR + 1.
    assert store.record(obs("d", HOUR + 11.0)).egress_subjects == 2


def test_egress_count_is_capped(make_store: StoreFactory) -> None:
    """The per-address subject set keeps only the most recent max_subjects_per_egress."""
    store = make_store(HistoryConfig(max_subjects_per_egress=5))
    counts = [store.record(obs(f"s{i}", float(i))).egress_subjects for i in range(8)]
    assert counts == [1, 2, 3, 4, 5, 5, 5, 5]


def test_views_feed_history_signals(make_store: StoreFactory) -> None:
    """A store's views are what history_signals expects."""
    store = make_store()
    store.record(obs(at=0.0, country="CU", denied=True, jurisdiction_denied="CU"))
    current = obs(at=60.0, country="US", kinds=2)
    signals = history_signals(current, store.record(current))
    assert [s.code for s in signals] == ["denied_then_evasion"]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from(["192.0.2.1", "2001:db8::1"]),
            st.floats(min_value=0, max_value=900),
        ),
        max_size=40,
    )
)
def test_store_matches_a_naive_model(
    make_store: StoreFactory, steps: list[tuple[str, str, float]]
) -> None:
    """Without eviction, every view equals what an unbounded list model predicts."""
    config = HistoryConfig(max_observations_per_subject=5, egress_window_s=1500)
    store = make_store(config)
    history: dict[str, list[Observation]] = {}
    last_seen: dict[str, dict[str, float]] = {}
    at = 0.0
    for subject, address, step in steps:
        at += step
        o = obs(subject, at, address)
        view = store.record(o)
        expected = tuple(reversed(history.setdefault(subject, [])))[:5]
        seen = last_seen.setdefault(address, {})
        seen[subject] = at
        expected_count = sum(1 for t in seen.values() if t >= at - 1500)
        assert view.observations == expected
        assert view.egress_subjects == expected_count
        history[subject].append(o)


# ------------------------------------------------------------------ memory store


def test_memory_store_expires_subjects_after_ttl() -> None:
    """History disappears ttl_s after the subject's last observation."""
    clock = FakeClock()
    store = MemoryHistoryStore(HistoryConfig(ttl_s=100, egress_window_s=50), clock=clock)
    store.record(obs(at=0.0))
    clock.now += 99
    assert len(store.record(obs(at=1.0)).observations) == 1  # touched: TTL restarts
    clock.now += 101
    assert store.record(obs(at=2.0)).observations == ()


def test_memory_store_sweeps_expired_entries_nobody_touches() -> None:
    """Expired subjects and addresses are swept by later calls, not only on access."""
    clock = FakeClock()
    store = MemoryHistoryStore(HistoryConfig(ttl_s=100, egress_window_s=10), clock=clock)
    for i in range(10):
        store.record(obs(f"old{i}", 0.0, address=f"10.0.0.{i}"))
    assert (store.subject_count, store.egress_count) == (10, 10)
    clock.now += 101
    store.record(obs("new", 200.0, address="10.0.1.1"))
    assert (store.subject_count, store.egress_count) == (1, 1)


def test_memory_store_evicts_least_recently_used() -> None:
    """Past max_subjects, the subject touched longest ago goes first."""
    store = MemoryHistoryStore(max_subjects=2, max_egress=2)
    store.record(obs("a", 1.0, address="x"))
    store.record(obs("b", 2.0, address="y"))
    store.record(obs("a", 3.0, address="x"))
    store.record(obs("c", 4.0, address="z"))
    assert store.subject_count == 2
    assert store.record(obs("b", 5.0, address="x")).observations == ()
    assert len(store.record(obs("c", 6.0, address="x")).observations) == 1


def test_memory_store_rejects_bad_bounds() -> None:
    """Bounds below one are configuration errors."""
    with pytest.raises(ValueError, match="max_subjects"):
        MemoryHistoryStore(max_subjects=0)


def test_memory_store_close_forgets_everything() -> None:
    """close() empties the store; a context manager closes it."""
    with MemoryHistoryStore() as store:
        store.record(obs())
        assert store.subject_count == 1
    assert (store.subject_count, store.egress_count) == (0, 0)


operations = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=7),  # subject
        st.integers(min_value=0, max_value=5),  # address
        st.floats(min_value=-50, max_value=2000),  # observation time step (may go back)
        st.floats(min_value=0, max_value=3000),  # clock step
    ),
    max_size=80,
)


@settings(max_examples=200)
@given(operations)
def test_memory_store_never_exceeds_its_bounds(ops: list[tuple[int, int, float, float]]) -> None:
    """Under any sequence of records and clock moves, every bound holds."""
    clock = FakeClock()
    config = HistoryConfig(
        max_observations_per_subject=4,
        max_subjects_per_egress=3,
        ttl_s=5000,
        egress_window_s=1000,
    )
    store = MemoryHistoryStore(config, max_subjects=3, max_egress=2, sweep_batch=1, clock=clock)
    at = 0.0
    for subject, address, step, tick in ops:
        at += step
        clock.now += tick
        view = store.record(obs(f"s{subject}", at, f"10.0.0.{address}"))
        assert len(view.observations) <= 4
        assert 1 <= view.egress_subjects <= 3
        assert store.subject_count <= 3
        assert store.egress_count <= 2
        assert all(len(e.observations) <= 4 for e in store._subjects.values())
        assert all(len(e.seen) <= 3 for e in store._egress.values())
        # Tables stay in touch order, which LRU eviction and TTL sweeps rely on.
        for table in (store._subjects, store._egress):
            touched = [e.touched for e in table.values()]
            assert touched == sorted(touched)


def test_memory_store_is_thread_safe() -> None:
    """Eight threads recording at once: no error, and every count adds up."""
    threads, per_thread = 8, 300
    store = MemoryHistoryStore(HistoryConfig(max_observations_per_subject=per_thread))
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []
    lengths: dict[int, list[int]] = {}

    def work(n: int) -> None:
        try:
            barrier.wait()
            seen = lengths.setdefault(n, [])
            for i in range(per_thread):
                view = store.record(obs(f"t{n}", float(i), address="198.51.100.9"))
                seen.append(len(view.observations))
                assert 1 <= view.egress_subjects <= threads
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    for n in range(threads):
        assert lengths[n] == list(range(per_thread))
    assert store.subject_count == threads
    assert store.record(obs("late", float(per_thread), "198.51.100.9")).egress_subjects == 9


# ------------------------------------------------------------------ redis stores


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A fresh key namespace, deleted afterwards."""
    value = new_prefix()
    yield value
    delete_prefix(redis_url, value)


def evalsha_calls(client: Any) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.mark.redis
def test_redis_keys_are_namespaced_hashed_and_expire(redis_url: str, prefix: str) -> None:
    """Two keys per observation, under the prefix, fixed-length, both with a TTL."""
    config = HistoryConfig(ttl_s=1000, egress_window_s=60)
    with RedisHistoryStore(redis_url, config=config, prefix=prefix) as store:
        subject = "user:1*\r\n{evil}"
        store.record(obs(subject, 1.0))
        client = store.client
        keys = sorted(k.decode() for k in client.scan_iter(match=prefix + "*"))
        assert keys == sorted([store.subject_key(subject), store.egress_key("203.0.113.7")])
        for key in keys:
            assert re.fullmatch(re.escape(prefix) + r"(subj|egress):[0-9a-f]{32}", key)
        assert 0 < client.ttl(store.subject_key(subject)) <= 1000
        assert 0 < client.ttl(store.egress_key("203.0.113.7")) <= 60
        assert client.llen(store.subject_key(subject)) == 1


@pytest.mark.redis
def test_redis_namespaces_are_isolated(redis_url: str, prefix: str) -> None:
    """Stores with different prefixes on one server do not see each other."""
    other = new_prefix()
    try:
        with (
            RedisHistoryStore(redis_url, prefix=prefix) as one,
            RedisHistoryStore(redis_url, prefix=other) as two,
        ):
            one.record(obs(at=1.0))
            assert two.record(obs(at=2.0)) == HistoryView(egress_subjects=1)
            assert one.record(obs(at=3.0)).observations == (obs(at=1.0),)
    finally:
        delete_prefix(redis_url, other)


@pytest.mark.redis
def test_redis_record_is_one_evalsha(redis_url: str, prefix: str) -> None:
    """Every record is exactly one EVALSHA of the registered script."""
    with RedisHistoryStore(redis_url, prefix=prefix) as store:
        store.record(obs(at=0.0))  # loads the script if the server lacks it
        before = evalsha_calls(store.client)
        for i in range(10):
            store.record(obs(at=float(i)))
        assert evalsha_calls(store.client) - before == 10


@pytest.mark.redis
def test_redis_skips_malformed_stored_entries(redis_url: str, prefix: str) -> None:
    """Garbage in a subject's list is skipped, not raised."""
    with RedisHistoryStore(redis_url, prefix=prefix) as store:
        good = obs(at=1.0)
        store.record(good)
        store.client.lpush(store.subject_key("s1"), b"\xff garbage", b"[9]")
        view = store.record(obs(at=2.0))
        assert view.observations == (good,)
        assert not view.degraded


@pytest.mark.redis
def test_redis_store_accepts_a_client(redis_url: str, prefix: str) -> None:
    """A client passed in is used as is and left open by close()."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        store = RedisHistoryStore(client, prefix=prefix, failure_mode="closed")
        store.record(obs(at=1.0))
        view = store.record(obs(at=2.0))
        assert view.observations == (obs(at=1.0),)
        assert view.failure_mode == "closed"
        store.close()
        assert client.ping()
    finally:
        client.close()


def test_redis_store_rejects_bad_arguments() -> None:
    """Failure mode and retry window are validated at construction."""
    with pytest.raises(ValueError, match="failure_mode"):
        RedisHistoryStore("redis://127.0.0.1:1/0", failure_mode="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry_after_s"):
        RedisHistoryStore("redis://127.0.0.1:1/0", retry_after_s=-1)


def test_unreachable_redis_degrades_and_short_circuits() -> None:
    """Nothing listening: degraded views, no exception, Redis skipped for retry_after_s."""
    clock = FakeClock()
    store = RedisHistoryStore(
        f"redis://127.0.0.1:{free_port()}/0", failure_mode="closed", clock=clock
    )
    first = store.record(obs())
    assert first.degraded
    assert first.failure_mode == "closed"
    assert "ConnectionError" in first.error
    assert store.circuit_open
    skipped = store.record(obs())
    assert skipped.degraded
    assert "skipping Redis" in skipped.error
    (signal,) = history_signals(obs(), skipped)
    assert signal.code == "history_unavailable"
    clock.now += 1.01
    assert not store.circuit_open
    assert "ConnectionError" in store.record(obs()).error
    store.close()


async def test_async_unreachable_redis_degrades() -> None:
    """The async store degrades the same way and never raises."""
    store = AsyncRedisHistoryStore(f"redis://127.0.0.1:{free_port()}/0", retry_after_s=0)
    for _ in range(3):
        view = await store.record(obs())
        assert view.degraded
        assert view.failure_mode == "open"
        assert history_signals(obs(), view) == ()
    await store.close()


@pytest.mark.redis
async def test_async_redis_round_trip(redis_url: str, prefix: str) -> None:
    """The async store records, views and counts like the sync one, one EVALSHA each."""
    async with AsyncRedisHistoryStore(redis_url, prefix=prefix) as store:
        checker: AsyncHistoryStore = store
        assert (await checker.record(obs("a", 1.0))).egress_subjects == 1
        stats = redis.Redis.from_url(redis_url)
        before = evalsha_calls(stats)
        view = await store.record(obs("a", 2.0))
        assert view.observations == (obs("a", 1.0),)
        assert (await store.record(obs("b", 3.0))).egress_subjects == 2
        assert evalsha_calls(stats) - before == 2
        stats.close()
        assert 0 < await store.client.ttl(store.subject_key("a")) <= HistoryConfig().ttl_s


# ------------------------------------------------------------------ Redis going away


class RedisProcess:
    """A dedicated redis-server that a test may kill or pause."""

    def __init__(self, tmp: str) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.skip("redis-server not available")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        # fmt: off
        command = [
            executable, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", tmp,
        ]
        # fmt: on
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.skip("dedicated redis-server did not start")
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def dedicated_redis(tmp_path: Any) -> Iterator[RedisProcess]:
    """A redis-server of this test's own; killed (and resumed first) at the end."""
    server = RedisProcess(str(tmp_path))
    yield server
    if sys.platform != "win32" and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


@pytest.mark.redis
def test_redis_killed_mid_run(dedicated_redis: RedisProcess) -> None:
    """After the server dies, records return quickly, degraded, and never raise."""
    store = RedisHistoryStore(dedicated_redis.url, prefix=new_prefix())
    assert not store.record(obs(at=1.0)).degraded
    dedicated_redis.stop()
    started = time.monotonic()
    views = [store.record(obs(at=2.0 + i)) for i in range(20)]
    elapsed = time.monotonic() - started
    assert all(v.degraded for v in views)
    assert elapsed < 2.0  # generous: one failed attempt, then the breaker skips Redis
    store.close()


@pytest.mark.redis
async def test_async_redis_killed_mid_run(dedicated_redis: RedisProcess) -> None:
    """The async store survives the server dying just the same."""
    store = AsyncRedisHistoryStore(dedicated_redis.url, prefix=new_prefix(), retry_after_s=0)
    assert not (await store.record(obs(at=1.0))).degraded
    dedicated_redis.stop()
    started = time.monotonic()
    views = [await store.record(obs(at=2.0 + i)) for i in range(20)]
    assert all(v.degraded for v in views)
    assert time.monotonic() - started < 2.0
    await store.close()


@pytest.mark.redis
@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGSTOP")
def test_redis_hanging_times_out_then_recovers(dedicated_redis: RedisProcess) -> None:
    """A frozen server costs one socket timeout, then the breaker; after it, Redis is back."""
    clock = FakeClock()
    store = RedisHistoryStore(dedicated_redis.url, prefix=new_prefix(), clock=clock)
    assert not store.record(obs(at=1.0)).degraded
    os.kill(dedicated_redis.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        first = store.record(obs(at=2.0))
        views = [store.record(obs(at=3.0 + i)) for i in range(20)]
        elapsed = time.monotonic() - started
        assert first.degraded
        assert "Timeout" in first.error
        assert all(v.degraded for v in views)
        assert elapsed < 2.0
    finally:
        os.kill(dedicated_redis.process.pid, signal.SIGCONT)
    clock.now += 1.01
    view = store.record(obs(at=30.0))
    assert not view.degraded
    assert obs(at=1.0) in view.observations
    store.close()

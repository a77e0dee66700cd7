"""Cost of a decision with context: signal pipeline, in-process history and Redis history.

Usage (from a checkout)::

    python benchmarks/bench_signals.py                # ~800 subjects' traffic, 3 passes
    python benchmarks/bench_signals.py --smoke        # short run (< 30 s), used by CI
    python benchmarks/bench_signals.py --json out.json

The requests are the labelled synthetic traffic of ``benchmarks/traffic.py`` (real
addresses of the bundled snapshot, client hints, account countries, subjects with
histories) decided in time order against ``benchmarks/policies/evasion.toml``. Scenarios:

* ``decide(ip)``: no context, the precompiled path (timed in batches of 100 calls);
* ``decide(ip, ctx)`` with ``SignalPipeline(history=False)``: network and hint signals;
* ``decide(ip, ctx)`` with the default in-process ``MemoryHistoryStore``;
* ``decide(ip, ctx)`` with ``RedisHistoryStore`` on loopback;
* ``adecide(ip, ctx)`` with ``AsyncRedisHistoryStore`` on loopback, one request at a time.

Every context call is timed on its own with the wall clock (Redis time is waiting, not
CPU); figures are the median and 99th percentile in microseconds over all passes. Redis
is ``GEOFENCE_TEST_REDIS_URL`` when set, else a throwaway ``redis-server`` started on a
free loopback port (no persistence); without either the Redis rows are skipped with a
message. Each pass uses a fresh key prefix (or a fresh memory store), so every pass sees
the same histories; the prefixes are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from _common import DEFAULT_SEED, Results, environment, print_environment
from traffic import DEFAULT_POLICY, Request, generate

from geofence.context import Context
from geofence.engine import Geofence
from geofence.signals.pipeline import SignalPipeline
from geofence.signals.stores import AsyncRedisHistoryStore, MemoryHistoryStore, RedisHistoryStore

FULL_SUBJECTS = 800
SMOKE_SUBJECTS = 150
Timed = Callable[[str, Context], object]


def _percentiles(samples_ns: Sequence[float]) -> tuple[float, float]:
    """Median and 99th percentile, in microseconds."""
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) / 1000, p99 / 1000


def _time_each(decide: Timed, requests: Sequence[tuple[str, Context]]) -> list[float]:
    """Wall-clock nanoseconds of each call, in order."""
    clock = time.perf_counter_ns
    out: list[float] = []
    gc.collect()
    for ip, ctx in requests:
        start = clock()
        decide(ip, ctx)
        out.append(clock() - start)
    return out


async def _atime_each(gf: Geofence, requests: Sequence[tuple[str, Context]]) -> list[float]:
    clock = time.perf_counter_ns
    out: list[float] = []
    gc.collect()
    for ip, ctx in requests:
        start = clock()
        await gf.adecide(ip, ctx)
        out.append(clock() - start)
    return out


def _time_batches(gf: Geofence, ips: Sequence[str], batch: int = 100) -> list[float]:
    """Per-call nanoseconds of batches of ``batch`` no-context calls (one call is too short)."""
    clock = time.perf_counter_ns
    decide = gf.decide
    out: list[float] = []
    gc.collect()
    for i in range(0, len(ips) - batch + 1, batch):
        chunk = ips[i : i + batch]
        start = clock()
        for ip in chunk:
            decide(ip)
        out.append((clock() - start) / batch)
    return out


# ------------------------------------------------------------------------------ Redis


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def redis_url() -> Iterator[tuple[str | None, str]]:
    """``(url, how)``: the configured Redis, a throwaway redis-server, or ``(None, why)``."""
    url = os.environ.get("GEOFENCE_TEST_REDIS_URL")
    if url:
        yield url, "GEOFENCE_TEST_REDIS_URL"
        return
    try:
        import redis
    except ImportError:
        yield None, "redis-py is not installed (pip install geofence[redis])"
        return
    executable = shutil.which("redis-server")
    if executable is None:
        yield None, "no redis-server on PATH and GEOFENCE_TEST_REDIS_URL is not set"
        return
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="geofence-bench-redis-") as workdir:
        # fmt: off
        command = [
            executable, "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", workdir,
        ]
        # fmt: on
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port, socket_connect_timeout=0.5)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.RedisError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        client.close()
                        yield None, f"redis-server did not start on port {port}"
                        return
                    time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0", f"redis-server on loopback port {port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _redis_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("server")
        return str(info.get("redis_version", "?"))
    finally:
        client.close()


def _delete_prefixes(url: str, prefixes: Sequence[str]) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for prefix in prefixes:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
    finally:
        client.close()


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="short run (< 30 s), for CI")
    parser.add_argument("--subjects", type=int, help=f"traffic subjects (default {FULL_SUBJECTS})")
    parser.add_argument("--passes", type=int, help="timed passes per scenario (default 3; smoke 1)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis scenarios")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    subjects = args.subjects or (SMOKE_SUBJECTS if args.smoke else FULL_SUBJECTS)
    passes = args.passes or (1 if args.smoke else 3)

    results = Results("bench_signals")
    results.env = environment(("redis",))
    print_environment(results.env)
    started = time.perf_counter()

    base = Geofence(policy=args.policy)
    snapshot = base.snapshot
    traffic: list[Request] = generate(snapshot, subjects, args.seed)
    requests = [(r.address, r.context()) for r in traffic]
    per_subject = len(requests) / len({r.subject for r in traffic})
    print(
        f"# {len(requests):,} requests of {subjects:,} subjects ({per_subject:.1f} per subject; "
        f"history grows to that), policy {base.policy.id} @ {base.policy.digest}, "
        f"seed {args.seed}, {passes} pass(es)"
    )

    def engine(pipeline: SignalPipeline | None) -> Geofence:
        return Geofence(snapshot, args.policy, signals=pipeline)

    # Warm up: tz tables, the policy digest, allocator, branch caches.
    warm = engine(SignalPipeline())
    for ip, ctx in requests[:300]:
        warm.decide(ip, ctx)
        warm.decide(ip)

    rows: dict[str, dict[str, float | int]] = {}

    def record(name: str, samples: list[float], calls: int) -> None:
        median, p99 = _percentiles(samples)
        rows[name] = {"median_us": median, "p99_us": p99, "calls": calls}
        print(f"  {name:<44}{calls:>9,}{median:>12.2f}{p99:>12.2f}")

    print(f"\n  {'scenario':<44}{'calls':>9}{'median µs':>12}{'p99 µs':>12}")
    ips = [ip for ip, _ in requests]
    no_ctx: list[float] = []
    for _ in range(passes):
        no_ctx += _time_batches(base, ips)
    record("decide(ip)  no context (batches of 100)", no_ctx, len(ips) * passes)

    hints_only = engine(SignalPipeline(history=False))
    samples: list[float] = []
    for _ in range(passes):
        samples += _time_each(hints_only.decide, requests)
    record("decide(ip, ctx)  network + hints, no history", samples, len(samples))

    samples = []
    for _ in range(passes):
        gf = engine(SignalPipeline(store=MemoryHistoryStore()))
        samples += _time_each(gf.decide, requests)
    record("decide(ip, ctx)  + MemoryHistoryStore", samples, len(samples))

    redis_rows = 0
    if args.no_redis:
        results.note("Redis scenarios skipped (--no-redis)")
    else:
        with redis_url() as (url, how):
            if url is None:
                results.note(f"Redis scenarios skipped: {how}")
            else:
                version = _redis_version(url)
                results.env["redis_server"] = version
                prefixes: list[str] = []
                try:
                    samples = []
                    for _ in range(passes):
                        prefix = f"geofence-bench:{uuid.uuid4().hex}:"
                        prefixes.append(prefix)
                        store = RedisHistoryStore(
                            url, prefix=prefix, socket_timeout=2, socket_connect_timeout=2
                        )
                        gf = engine(SignalPipeline(store=store))
                        samples += _time_each(gf.decide, requests)
                        store.close()
                    record("decide(ip, ctx)  + RedisHistoryStore", samples, len(samples))

                    async def run_async() -> list[float]:
                        out: list[float] = []
                        for _ in range(passes):
                            prefix = f"geofence-bench:{uuid.uuid4().hex}:"
                            prefixes.append(prefix)
                            store = AsyncRedisHistoryStore(
                                url, prefix=prefix, socket_timeout=2, socket_connect_timeout=2
                            )
                            gf = engine(SignalPipeline(async_store=store))
                            out += await _atime_each(gf, requests)
                            await store.close()
                        return out

                    samples = asyncio.run(run_async())
                    record("adecide(ip, ctx)  + AsyncRedisHistoryStore", samples, len(samples))
                    redis_rows = 2
                finally:
                    _delete_prefixes(url, prefixes)
                results.note(f"Redis {version} via {how}")

    memory = rows["decide(ip, ctx)  + MemoryHistoryStore"]["median_us"]
    plain = rows["decide(ip)  no context (batches of 100)"]["median_us"]
    print(f"\n  context with in-process history costs {memory / plain:,.0f}x a no-context decide")
    if redis_rows:
        redis_sync = rows["decide(ip, ctx)  + RedisHistoryStore"]["median_us"]
        print(f"  Redis on loopback adds {redis_sync - memory:,.0f} µs (median) to that")
    elapsed = time.perf_counter() - started
    print(f"  total {elapsed:.1f} s")
    results.data = {
        "subjects": subjects,
        "requests": len(requests),
        "passes": passes,
        "policy_digest": base.policy.digest,
        "seed": args.seed,
        "scenarios": rows,
        "seconds": elapsed,
    }
    results.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reliability figures: reload under in-place rewrites, spoofed headers, a Redis outage.

Usage (from a checkout)::

    python benchmarks/reliability.py                 # all three, default lengths
    python benchmarks/reliability.py reload --seconds 20
    python benchmarks/reliability.py spoofing
    python benchmarks/reliability.py redis --seconds 3

* ``reload``: the server of ``tests/snapshot/test_live_rewrite.py`` (bundled
  snapshot, a sanctions preset, ``watch(0.05)``, a thread deciding in a loop)
  while its snapshot file is rewritten in place every ~20 ms, alternating two
  encodings of the same tables. Prints writes, decisions, wrong answers,
  reload failures (torn reads refused) and whether the process survived.
* ``spoofing``: every spoofed-header variant of ``tests/signals/test_proxy_trust.py``
  sent by a client that reaches the application directly, under each proxy
  configuration; counts the variants whose header address was believed, and of
  those, believed without a signal.
* ``redis``: decisions with context through ``RedisHistoryStore`` on a throwaway
  loopback ``redis-server`` while it is frozen (SIGSTOP) and then killed; prints
  decisions, exceptions, degraded decisions and the latency per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.signals.test_proxy_trust import ALL_HEADERS, ATTACKER, SPOOFS
from tests.snapshot.test_live_rewrite import (
    SERVER,
    _rewrite_in_place,
    _same_tables_other_bytes,
)


def reload_run(seconds: float) -> dict[str, object]:
    """Rewrite the served snapshot in place for ``seconds``; report what the server saw."""
    from geofence.snapshot.reader import Snapshot, default_snapshot_path

    bundled = default_snapshot_path()
    snap = Snapshot.open(bundled)
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other.gfs"
        other.write_bytes(_same_tables_other_bytes(snap))
        live = Path(tmp) / "live.gfs"
        shutil.copyfile(bundled, live)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(live), snap.snapshot_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        server.stdout.readline()
        writes = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and server.poll() is None:
            _rewrite_in_place(other if writes % 2 else bundled, live)
            writes += 1
            time.sleep(0.02)
        _rewrite_in_place(bundled, live)
        alive = server.poll() is None
        out, _ = server.communicate("", timeout=120)
    report = json.loads(out.strip().splitlines()[-1]) if alive and out.strip() else {}
    return {"seconds": seconds, "writes": writes, "survived": alive, **report}


def spoofing_run() -> dict[str, object]:
    """Spoofed variants from a direct client under each proxy configuration."""
    from geofence.signals.proxy import ClientSource, TrustedProxies, resolve_client

    warnings.simplefilter("ignore")
    configs = {
        "default (trust nobody)": TrustedProxies(headers=ALL_HEADERS),
        "cidrs": TrustedProxies(cidrs=["10.0.0.0/8"], headers=ALL_HEADERS),
        "hops=1 + cidrs": TrustedProxies(hops=1, cidrs=["10.0.0.0/8"], headers=ALL_HEADERS),
        "hops=1, no cidrs": TrustedProxies(hops=1, headers=ALL_HEADERS),
        "hops=2, no cidrs": TrustedProxies(hops=2, headers=ALL_HEADERS),
    }
    out: dict[str, object] = {"variants": len(SPOOFS)}
    for name, config in configs.items():
        believed = silent = 0
        for headers in SPOOFS.values():
            result = resolve_client(ATTACKER, headers, config)
            if result.source is not ClientSource.PEER:
                believed += 1
                if "proxy_unverified" not in {s.code for s in result.signals}:
                    silent += 1
        out[name] = {"believed": believed, "believed_without_signal": silent}
    return out


def _start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis: skipped (no redis-server on PATH)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # fmt: off
    command = [executable, "--port", str(port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", workdir]
    # fmt: on
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("redis: redis-server did not start")


def redis_run(seconds: float) -> dict[str, object]:
    """Decide with Redis history through healthy, frozen and killed phases."""
    from geofence.context import Context, Subject
    from geofence.engine import Geofence
    from geofence.policy.parse import parse_policy
    from geofence.signals.pipeline import SignalPipeline
    from geofence.signals.stores import RedisHistoryStore

    policy = parse_policy(
        '[policy]\nid = "h"\ndefault = "allow"\n'
        '[[rules]]\nid = "evasion"\naction = "challenge"\nsignals = ["impossible_travel"]\n'
    )
    with tempfile.TemporaryDirectory() as workdir:
        process, url = _start_redis(workdir)
        store = RedisHistoryStore(url)
        gf = Geofence(None, policy, signals=SignalPipeline(store=store))
        phases: dict[str, dict[str, list[float] | int]] = {}
        try:
            for phase in ("healthy", "frozen", "thawed", "killed"):
                if phase == "frozen":
                    os.kill(process.pid, signal.SIGSTOP)
                elif phase == "thawed":
                    os.kill(process.pid, signal.SIGCONT)
                elif phase == "killed":
                    process.kill()
                    process.wait()
                latencies: list[float] = []
                errors = degraded = 0
                end = time.monotonic() + seconds
                k = 0
                while time.monotonic() < end:
                    ctx = Context(subject=Subject(id=f"u{k % 50}"), at=1.75e9 + k)
                    started = time.perf_counter()
                    try:
                        decision = gf.decide("8.8.8.8" if k % 2 else "2.16.6.1", ctx)
                        degraded += decision.degraded
                    except Exception:
                        errors += 1
                    latencies.append(time.perf_counter() - started)
                    k += 1
                phases[phase] = {"decisions": k, "errors": errors, "degraded": degraded,
                                 "latencies": latencies}  # fmt: skip
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait()
            gf.close()
    out: dict[str, object] = {"seconds_per_phase": seconds}
    for phase, data in phases.items():
        lat = sorted(data["latencies"])  # type: ignore[arg-type]
        out[phase] = {
            "decisions": data["decisions"],
            "errors": data["errors"],
            "degraded": data["degraded"],
            "median_ms": round(statistics.median(lat) * 1000, 2),
            "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 2),
            "max_ms": round(lat[-1] * 1000, 2),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the chosen measurements and print their figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", default=["reload", "spoofing", "redis"])
    parser.add_argument("--seconds", type=float, help="length of the reload run / redis phase")
    args = parser.parse_args(argv)
    for what in args.what:
        if what == "reload":
            result = reload_run(args.seconds or 10.0)
        elif what == "spoofing":
            result = spoofing_run()
        elif what == "redis":
            result = redis_run(args.seconds or 2.0)
        else:
            parser.error(f"unknown measurement {what!r}")
        print(f"{what}: {json.dumps(result, indent=2)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

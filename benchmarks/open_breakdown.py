"""Where the time of ``Snapshot.open`` goes: each step, in fresh processes.

Usage (from a checkout)::

    python benchmarks/open_breakdown.py              # the bundled snapshot, 7 runs
    python benchmarks/open_breakdown.py --runs 15 --snapshot my.gfs

Each run starts a fresh interpreter (imports first, as a server would have
them), times the steps of one open in CPU milliseconds by wrapping the
functions the reader calls, and prints the medians with the load average. The
steps: reading the file into the private buffer, the SHA-256 checksum, JSON of
META and RECS, checking and building the records, the structural checks of all
columns (records and ASN table), the UTF-8 check of the organisation names,
and the rest (headers, source metadata, installing the lookup).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing geofence
    sys.path.insert(0, str(ROOT))

from geofence.snapshot.reader import default_snapshot_path  # noqa: E402

_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import geofence.snapshot.reader as reader
import geofence.snapshot.sections as sections
from geofence.snapshot.reader import Snapshot

steps = {}

def timed(owner, name, step):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        start = time.process_time_ns()
        try:
            return inner(*args, **kwargs)
        finally:
            steps[step] = steps.get(step, 0) + time.process_time_ns() - start
    setattr(owner, name, wrapper)

timed(reader, "read_file", "read file")
timed(sections.hashlib, "sha256", "sha-256 checksum")
timed(reader.json, "loads", "json (META, RECS)")
timed(reader, "decode_records", "records")
timed(reader, "table_problem", "column checks")
timed(reader, "offsets_ok", "column checks")
timed(reader.codecs, "utf_8_decode", "organisation names")
start = time.process_time_ns()
Snapshot.open(sys.argv[2])
total = time.process_time_ns() - start
steps["rest"] = total - sum(steps.values())
steps["total"] = total
print(json.dumps({k: v / 1e6 for k, v in steps.items()}))
"""


def main(argv: list[str] | None = None) -> int:
    """Run the breakdown and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshot", type=Path, help="snapshot file (default: the bundled one)")
    parser.add_argument("--runs", type=int, default=7, help="fresh processes (default 7)")
    args = parser.parse_args(argv)
    path = args.snapshot or default_snapshot_path()
    runs = []
    for _ in range(args.runs):
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(ROOT), os.fspath(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    size = path.stat().st_size
    print(f"Snapshot.open({path.name}), {size / 1e6:.1f} MB; {args.runs} fresh processes")
    print(f"load average {load} on {os.cpu_count()} CPUs; CPU ms, median (min-max)")
    for step in runs[0]:
        values = [r[step] for r in runs]
        print(
            f"  {step:<22}{statistics.median(values):>7.1f}   ({min(values):.1f}-{max(values):.1f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

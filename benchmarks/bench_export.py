"""Edge exports: sizes (lines, bytes, entries) and times per format for each bundled preset.

Usage (from a checkout)::

    python benchmarks/bench_export.py                # every preset, 3 repeats, naive peer
    python benchmarks/bench_export.py --smoke        # OFAC only, 1 repeat, no peer (CI)
    python benchmarks/bench_export.py --check        # exit 1 if the OFAC goal is missed

Times are medians of process CPU time over the repeats. ``end-to-end`` is what
``geofence export`` does: open the bundled snapshot, compile the preset, read the
verdict table and render one format (goal for the OFAC preset: <= 2 s).
``table`` is reading the verdict table of an already compiled policy, ``render``
one format from that table. The peer is what a user writes by hand today: walk
``Snapshot.ranges``, call ``decide()`` on each segment's first address, merge
neighbours and summarise each run to CIDRs with :mod:`ipaddress` (it covers IPv4
and IPv6 without tunnel prefixes, and is measured once).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing geofence
    sys.path.insert(0, str(ROOT))

from geofence.engine import Geofence  # noqa: E402  # after the sys.path fallback
from geofence.export import (  # noqa: E402
    FORMATS,
    EdgeExport,
    ExportError,
    VerdictTable,
    export_table,
    verdict_table,
)
from geofence.policy.compile import CompiledPolicy, compile_policy  # noqa: E402
from geofence.policy.model import Policy  # noqa: E402
from geofence.policy.parse import load_policy, preset_names  # noqa: E402
from geofence.snapshot.partition import TUNNEL_BY_ID  # noqa: E402
from geofence.snapshot.reader import Snapshot  # noqa: E402

#: Fixed compile date and header time, so that every run exports the same text.
TODAY = dt.date(2026, 11, 27)
GENERATED = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
OFAC = "us-ofac-comprehensive"
GOAL_SECONDS = 2.0


T = TypeVar("T")


def cpu_median(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median CPU seconds of ``fn()`` over ``repeats`` runs, and its last result."""
    times: list[float] = []
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return statistics.median(times), result


def cli_run(preset: str, fmt: str, repeats: int) -> tuple[float, float]:
    """Medians of CPU (user + system) and wall seconds of ``geofence export`` in a new process.

    The CPU time is the child's own (``RUSAGE_CHILDREN``), so it does not grow when
    other processes share the machine; the wall time does.
    """
    cpu: list[float] = []
    wall: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "geofence.cli", "export", fmt, "--policy", preset,
            "--date", TODAY.isoformat(), "-o", str(Path(tmp) / f"out.{fmt}"),
        ]  # fmt: skip
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
            wall.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(cpu), statistics.median(wall)


def naive_lines(preset: str, snap: Snapshot) -> int:
    """The hand-made export: decide() per segment, merge, summarise; returns CIDR lines."""
    lines = 0
    with Geofence(snap, preset, today=lambda: TODAY) as gf:
        for version in (4, 6):
            cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            run: tuple[int, int, str] | None = None
            for first, last, rid in snap.ranges(version):
                if rid in TUNNEL_BY_ID:
                    continue
                action = gf.decide(str(cls(first))).action.value
                if run is not None and run[2] == action and run[1] + 1 == first:
                    run = (run[0], last, action)
                    continue
                if run is not None and run[2] != "allow":
                    lines += len(list(ipaddress.summarize_address_range(cls(run[0]), cls(run[1]))))
                run = (first, last, action)
            if run is not None and run[2] != "allow":
                lines += len(list(ipaddress.summarize_address_range(cls(run[0]), cls(run[1]))))
    return lines


def main() -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="OFAC only, 1 repeat, no peer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="exit 1 if the OFAC goal is missed")
    parser.add_argument("--no-peer", action="store_true", help="skip the hand-made peer")
    args = parser.parse_args()
    repeats = 1 if args.smoke else args.repeats
    presets = [OFAC] if args.smoke else preset_names()

    open_s, snap = cpu_median(Snapshot.default, repeats)
    n4, n6 = snap.range_counts
    print(f"snapshot {snap.snapshot_id}: {n4:,} IPv4 + {n6:,} IPv6 segments; open {open_s:.3f} s")
    print(f"python {sys.version.split()[0]}, repeats {repeats}, CPU time medians\n")
    columns = ("lines", "bytes", "render s", "end-to-end s")
    header = f"{'preset':<30} {'format':<9} " + " ".join(f"{c:>12}" for c in columns)
    ofac_e2e = 0.0
    for preset in presets:
        policy = load_policy(preset)

        def compile_it(p: Policy = policy) -> CompiledPolicy:
            return compile_policy(p, snap, today=TODAY)

        compile_s, compiled = cpu_median(compile_it, repeats)

        def read_table(c: CompiledPolicy = compiled) -> VerdictTable:
            return verdict_table(c)

        table_s, table = cpu_median(read_table, repeats)
        print(f"{preset}: compile {compile_s:.3f} s, verdict table {table_s:.3f} s")
        print(header)
        for fmt in FORMATS:

            def render(f: str = fmt, t: VerdictTable = table) -> EdgeExport:
                return export_table(t, f, generated_at=GENERATED)

            try:
                render_s, result = cpu_median(render, repeats)
            except ExportError as exc:  # allow-all: nothing to list, in every format
                print(f"{preset:<30} (every format) {exc}")
                break
            e2e = open_s + compile_s + table_s + render_s
            if preset == OFAC:
                ofac_e2e = max(ofac_e2e, e2e)
            text = result.text
            cells = (
                f"{result.lines:,}",
                f"{len(text.encode()):,}",
                f"{render_s:.3f}",
                f"{e2e:.3f}",
            )
            print(f"{preset:<30} {fmt:<9} " + " ".join(f"{c:>12}" for c in cells))
        print()
    stated = verdict_table(
        compile_policy(load_policy(OFAC), snap, today=TODAY), expand_tunnels=False
    )
    sizes = ", ".join(
        f"{fmt} {export_table(stated, fmt, generated_at=GENERATED).lines:,}" for fmt in FORMATS
    )
    print(f"OFAC lines with --tunnels state (6to4/NAT64/mapped stated, not expanded): {sizes}\n")
    runs = {fmt: cli_run(OFAC, fmt, repeats) for fmt in ("nginx", "json")}
    cli_cpu = max(cpu for cpu, _ in runs.values())
    wall = max(w for _, w in runs.values())
    verdict = "met" if max(ofac_e2e, cli_cpu) <= GOAL_SECONDS else "MISSED"
    print(f"OFAC export, slowest format: {ofac_e2e:.3f} s CPU in process;")
    print(f"  `geofence export` in a new process: {cli_cpu:.3f} s CPU, {wall:.3f} s wall")
    print("  (import, open, compile, write; the wall time includes waiting for a shared CPU)")
    print(f"  goal <= {GOAL_SECONDS} s CPU: {verdict}")
    if not (args.smoke or args.no_peer):
        start = time.process_time()
        lines = naive_lines(OFAC, snap)
        naive_s = time.process_time() - start
        print(f"peer (decide() per segment + ipaddress.summarize, OFAC): {lines:,} CIDR lines")
        print(f"  in {naive_s:.2f} s CPU = {naive_s / max(ofac_e2e, 1e-9):.1f}x our slowest format")
    return 1 if args.check and max(ofac_e2e, cli_cpu) > GOAL_SECONDS else 0


if __name__ == "__main__":
    raise SystemExit(main())

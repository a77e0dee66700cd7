"""Audit throughput: `geofence audit` on a generated nginx log, and the same audit in engines.

Generates a seeded nginx log (the stock ``main`` format: combined plus
``"$http_x_forwarded_for"``), 1M lines by default, with client addresses drawn
from the bundled snapshot's ranges (a Zipf-like popularity over 50k distinct
clients, a tenth of the lines behind a trusted proxy that sets
X-Forwarded-For), then times:

* ``geofence audit`` as a user runs it (a child process, ``--json -q``): the
  whole process's wall time and lines/s (interpreter start-up, imports and the
  engine included: what the throughput goal is judged on), the figure the CLI
  prints itself (the audit alone), CPU and the child's peak RSS (medians of
  ``--repeats`` runs), with the compiled core, with the pure-Python core
  (``GEOFENCE_PURE_PYTHON=1``) and with ``--per-line`` (the per-line reference
  path, compiled core), so the vectorised path's gain is a ratio taken in the
  same run. The children read compiled bytecode, as an installed package does
  (a warm-up run writes it to a temporary ``PYTHONPYCACHEPREFIX``, also when
  the environment sets ``PYTHONDONTWRITEBYTECODE``);
* the same audit through DuckDB (Arrow scan of ``log_batches``), Polars
  (``map_batches`` over the raw lines), Dask (``map_partitions`` on a
  ``LocalCluster`` of 2 worker processes) and Spark (``mapInArrow`` in
  ``local[2]``), each engine's start-up timed apart from the audit;

and checks that every engine counts the same requests per action as
``geofence audit``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import environment, make_sample, print_environment

from geofence.engine import Geofence
from geofence.signals.proxy import TrustedProxies
from geofence.snapshot.reader import Snapshot

POLICY = "us-ofac-comprehensive"
PROXY = "10.0.0.7"
TRUSTED = "10.0.0.0/8"
DISTINCT = 50_000


def write_log(path: Path, lines: int, seed: int) -> None:
    """The seeded nginx log: one day of traffic, clients with a skewed popularity."""
    snap = Snapshot.default()
    clients = make_sample(snap, min(DISTINCT, max(lines // 4, 100)), seed=seed).addresses
    rng = random.Random(seed)
    weights = [1.0 / (k + 1) ** 0.8 for k in range(len(clients))]
    picks = rng.choices(clients, weights=weights, k=lines)
    agents = ["python-httpx/0.27", "curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)", "okhttp/4.12"]
    paths = ["/v1/chat/completions", "/v1/embeddings", "/v1/models", "/healthz"]
    start = 1_772_323_200  # 2026-03-01 00:00 UTC
    step = 86_400 / lines
    with path.open("w") as fh:
        for i, ip in enumerate(picks):
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(start + int(i * step)))
            peer, xff = (PROXY, ip) if i % 10 == 0 else (ip, "-")
            fh.write(
                f'{peer} - - [{stamp}] "POST {paths[i % 4]} HTTP/1.1" {200 + (i % 7 == 0) * 229} '
                f'{rng.randrange(100, 9000)} "-" "{agents[i % 4]}" "{xff}"\n'
            )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_now() -> float:
    """CPU seconds of this process and its finished children.

    The machine is shared: CPU time says what the work costs when wall time also
    counts others' load.
    """
    return time.process_time() + _children_cpu()


# Runs the CLI and reports the child's own peak RSS: VmHWM of its address space.
# (ru_maxrss would not do: RUSAGE_CHILDREN is the largest of all children so far, and
# Linux carries a process's ru_maxrss across exec, so a child forked from this large
# process starts at this process's size.)
_CLI = (
    "import sys; from geofence.cli import main; from geofence import core_info; "
    "status = main(sys.argv[1:]); "
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
    "print('core', core_info()['core'], file=sys.stderr); "
    "print('peak-rss-kib', hwm.split()[1], file=sys.stderr); sys.exit(status)"
)


#: Where the children keep their compiled bytecode (set by :func:`main`): a package
#: installed by pip has it, a checkout run with ``PYTHONDONTWRITEBYTECODE`` would
#: compile every module's source again in each run (about 0.15 s of start-up).
BYTECODE: dict[str, str] = {}


def run_cli(
    log: Path, *more: str, pure: bool = False
) -> tuple[float, float, dict[str, Any], int, str]:
    """``geofence audit`` in a child process.

    Returns:
        (seconds, CPU seconds, summary, peak RSS bytes, the core it ran on).
    """
    command = [
        sys.executable, "-c", _CLI, "audit", str(log), "--policy", POLICY,
        "--trusted-proxies", TRUSTED, "--json", "-q", *more,
    ]  # fmt: skip
    env = dict(os.environ)
    env.pop("GEOFENCE_PURE_PYTHON", None)
    if BYTECODE:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(BYTECODE)
    if pure:
        env["GEOFENCE_PURE_PYTHON"] = "1"
    started, cpu = time.perf_counter(), _children_cpu()
    run = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    seconds = time.perf_counter() - started
    cpu = _children_cpu() - cpu
    peak = int(run.stderr.rsplit("peak-rss-kib", 1)[1].split()[0]) * 1024
    core = run.stderr.rsplit("core ", 1)[1].split()[0]
    return seconds, cpu, json.loads(run.stdout), peak, core


def cli_runs(
    log: Path, lines: int, repeats: int, label: str, *more: str, pure: bool = False
) -> tuple[dict[str, Any], dict[str, float]]:
    """Median of ``repeats`` CLI runs, printed; returns (summary, figures)."""
    runs = [run_cli(log, *more, pure=pure) for _ in range(repeats)]
    seconds = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    peak = max(r[3] for r in runs)
    inside = statistics.median(r[2]["lines_per_second"] for r in runs)
    outside = statistics.median(r[0] - r[2]["seconds"] for r in runs)  # start-up and exit
    summary, core = runs[0][2], runs[0][4]
    assert summary["lines"] == lines, summary["lines"]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"geofence audit {label} ({core} core): whole process {seconds:5.2f} s "
        f"{lines / seconds:>9,.0f} lines/s; in process {inside:>9,.0f} lines/s "
        f"(start-up and exit {outside:.2f} s); "
        f"CPU {cpu:5.2f} s = {lines / cpu:,.0f} lines/CPU-s; peak RSS {peak / 2**20:,.0f} MiB "
        f"(median of {repeats}; load {load})"
    )
    figures = {
        "seconds": seconds,
        "cpu": cpu,
        "lines_per_second": lines / seconds,
        "in_process_lines_per_second": inside,
        "startup_and_exit": outside,
    }
    return summary, {**figures, "peak_rss": peak}


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def distinct_clients(directory: Path, lines: int, seed: int) -> None:
    """Memory with every line from another client: peak RSS against distinct addresses."""
    rng = random.Random(seed)
    log = directory / "distinct.log"
    with log.open("w") as fh:
        for i in range(lines):
            ip = ".".join(
                str(rng.randrange(1, 224) if k == 0 else rng.randrange(256)) for k in range(4)
            )
            fh.write(
                f"{ip} - - [01/Mar/2026:10:{i // 10000 % 60:02d}:{i % 60:02d} +0000] "
                f'"GET / HTTP/1.1" 200 1 "-" "a" "-"\n'
            )
    _, cpu, summary, peak, _ = run_cli(log)
    distinct = summary["distinct_addresses"]
    print(
        f"distinct clients: {lines:,} lines, {distinct:,} addresses: peak RSS "
        f"{peak / 2**20:,.0f} MiB, {cpu:5.2f} s CPU"
    )


def decide_json(directory: Path, n: int, seed: int) -> None:
    """``geofence decide - --json`` on ``n`` addresses, and its line renderer against to_json."""
    from geofence.cli import _JsonLines

    addresses = make_sample(Snapshot.default(), n, seed=seed).addresses
    listing = directory / "addresses.txt"
    listing.write_text("\n".join(addresses) + "\n")
    command = [sys.executable, "-m", "geofence.cli", "decide", "-", "--json", "--policy", POLICY]
    started, cpu = time.perf_counter(), _children_cpu()
    with listing.open("rb") as stdin:
        subprocess.run(command, stdin=stdin, stdout=subprocess.DEVNULL, check=True)
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
    print(f"geofence decide - --json, {n:,} addresses: {wall:5.2f} s wall, {cpu:5.2f} s CPU")
    gf = Geofence(None, POLICY)
    decisions = [gf.decide(a) for a in addresses]
    lines = _JsonLines()
    at = time.time()
    t0 = time.process_time()
    for a, d in zip(addresses, decisions, strict=True):
        d.to_json(address=a, at=at)
    t1 = time.process_time()
    for a, d in zip(addresses, decisions, strict=True):
        lines.line(d, a, at)
    t2 = time.process_time()
    print(
        f"  per line: Decision.to_json {(t1 - t0) / n * 1e6:5.1f} µs, the CLI's renderer "
        f"{(t2 - t1) / n * 1e6:5.1f} µs ({(t1 - t0) / (t2 - t1):.0f}x)"
    )


def _plain(counts: dict[str | None, int]) -> dict[str, int]:
    """Engine counts keyed like the CLI's ``by_action`` (``route`` keys differ; no None)."""
    return {k: v for k, v in counts.items() if k is not None}


def engine_duckdb(gf: Geofence, log: Path) -> tuple[float, float, dict[str | None, int]]:
    import duckdb

    from geofence.audit.recipes import duckdb_action_counts

    t0 = time.perf_counter()
    con = duckdb.connect()
    t1 = time.perf_counter()
    counts = duckdb_action_counts(con, gf, str(log), trusted=TrustedProxies(cidrs=TRUSTED))
    return t1 - t0, time.perf_counter() - t1, counts


def engine_polars(gf: Geofence, log: Path) -> tuple[float, float, dict[str | None, int]]:
    import polars as pl

    from geofence.audit.recipes import polars_audit

    t0 = time.perf_counter()
    lines = pl.DataFrame({"line": log.read_text().splitlines()})
    t1 = time.perf_counter()
    trusted = TrustedProxies(cidrs=TRUSTED)
    audited = polars_audit(lines.lazy(), gf, trusted=trusted).collect()
    counts = dict(audited.group_by("action").len().rows())
    return t1 - t0, time.perf_counter() - t1, counts


def engine_dask(gf: Geofence, log: Path) -> tuple[float, float, dict[str | None, int]]:
    import distributed

    from geofence.audit.recipes import dask_action_counts

    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = distributed.Client(cluster)  # type: ignore[no-untyped-call]
    t1 = time.perf_counter()
    try:
        counts = dask_action_counts(
            client, gf, [str(log)], blocksize="16MiB", trusted=TrustedProxies(cidrs=TRUSTED)
        )
        return t1 - t0, time.perf_counter() - t1, counts
    finally:
        client.close()  # type: ignore[no-untyped-call]
        cluster.close()


def engine_spark(gf: Geofence, log: Path) -> tuple[float, float, dict[str | None, int]]:
    from pyspark.sql import SparkSession

    from geofence.audit.recipes import spark_audit

    os.environ["PYSPARK_PYTHON"] = sys.executable
    t0 = time.perf_counter()
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("geofence-bench-audit")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    t1 = time.perf_counter()
    try:
        frame = spark.read.text(str(log))
        audited = spark_audit(frame, gf, trusted=TrustedProxies(cidrs=TRUSTED))
        rows = audited.groupBy("action").count().collect()
        return t1 - t0, time.perf_counter() - t1, {r["action"]: r["count"] for r in rows}
    finally:
        spark.stop()


ENGINES: dict[str, Callable[[Geofence, Path], tuple[float, float, dict[str | None, int]]]] = {
    "duckdb": engine_duckdb,
    "polars": engine_polars,
    "dask": engine_dask,
    "spark": engine_spark,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="log lines (default 1M)")
    parser.add_argument("--smoke", action="store_true", help="20k lines; engines without Spark")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="CLI runs per figure (median)")
    parser.add_argument(
        "--engines",
        default=None,
        help="comma-separated subset of: " + ", ".join(ENGINES) + " ('' for none)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    lines = 20_000 if args.smoke else args.lines
    wanted = (
        [e for e in args.engines.split(",") if e]
        if args.engines is not None
        else [e for e in ENGINES if not (args.smoke and e == "spark")]
    )
    if "spark" in wanted and shutil.which("java") is None:
        print("spark: skipped (no java on PATH)")
        wanted.remove("spark")

    env = environment(["pyarrow", "duckdb", "polars", "dask", "distributed", "pyspark"])
    print_environment(env)
    with tempfile.TemporaryDirectory(prefix="geofence-bench-audit-") as tmp:
        log = Path(tmp) / "access.log"
        started = time.perf_counter()
        write_log(log, lines, args.seed)
        size = log.stat().st_size
        print(
            f"# log: {lines:,} nginx lines, {size / 1e6:.0f} MB, seed {args.seed}, "
            f"generated in {time.perf_counter() - started:.1f} s; policy {POLICY}"
        )

        repeats = 1 if args.smoke else args.repeats
        BYTECODE["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "bytecode")
        for core in ("compiled", "pure"):  # writes the bytecode; the log into the page cache
            run_cli(log, pure=core == "pure")
        summary, compiled = cli_runs(log, lines, repeats, "(CLI)")
        seconds = compiled["seconds"]
        cli_counts = {r["key"].split(":")[0]: r["requests"] for r in summary["by_action"]}
        pure_summary, pure = cli_runs(log, lines, repeats, "(CLI)", pure=True)
        reference_summary, per_line = cli_runs(log, lines, repeats, "--per-line", "--per-line")
        for other in (pure_summary, reference_summary):
            for key in ("seconds", "lines_per_second"):
                other.pop(key)
        same = {k: v for k, v in summary.items() if k not in ("seconds", "lines_per_second")}
        verdicts = (
            f": {_met(pure['lines_per_second'] >= 150_000)}, "
            f"{_met(compiled['lines_per_second'] >= 500_000)}, "
            f"{_met(compiled['peak_rss'] <= 500 * 2**20)}"
            if lines >= 1_000_000
            else " (judged on 1M lines)"
        )
        print(
            "  goals (whole process): >= 150,000 lines/s (pure Python), >= 500,000 (compiled "
            f"core); peak RSS <= 500 MiB{verdicts}"
        )
        equal = same == reference_summary == pure_summary
        print(
            f"  vectorised / per-line: {per_line['seconds'] / seconds:.2f}x faster; summaries "
            f"{'equal' if equal else 'DIFFER'} (compiled, pure, per-line)"
        )
        if not equal:
            return 1
        print(f"  {summary['decided']:,} decided, {summary['distinct_addresses']:,} addresses")
        results: dict[str, Any] = {
            "environment": env,
            "lines": lines,
            "bytes": size,
            "cli": compiled,
            "cli_pure": pure,
            "cli_per_line": per_line,
            "engines": {},
        }
        decide_json(Path(tmp), 100_000 if not args.smoke else 5_000, args.seed)
        distinct_clients(Path(tmp), lines // 2, args.seed)
        gf = Geofence(None, POLICY)
        for name in wanted:
            before = cpu_now()
            startup, audit, counts = ENGINES[name](gf, log)
            # Spark's Python workers are children of the JVM, which outlives the run.
            used = cpu_now() - before if name != "spark" else None
            agree = _plain(counts) == cli_counts
            shown = f"CPU {used:6.2f} s" if used is not None else "CPU    n/a"
            print(
                f"{name:>7}: start {startup:6.2f} s  audit {audit:6.2f} s  "
                f"{lines / audit:>10,.0f} lines/s  {shown}  wall ratio to CLI "
                f"{seconds / audit:4.2f}  counts {'agree' if agree else 'DIFFER'}"
            )
            results["engines"][name] = {
                "startup": startup, "seconds": audit, "cpu": used,
                "lines_per_second": lines / audit, "agree": agree,
            }  # fmt: skip
            if not agree:
                print(f"  CLI {cli_counts}\n  {name} {_plain(counts)}", file=sys.stderr)
                return 1
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

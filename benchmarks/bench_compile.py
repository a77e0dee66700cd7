"""Compile-time benchmark: parse + compile time against the number of single-CIDR rules.

Usage (from a checkout)::

    python benchmarks/bench_compile.py                # 1k, 2k, 5k, 10k, 20k rules
    python benchmarks/bench_compile.py --smoke        # 1k, 2k, 4k (CI): checks the growth
    python benchmarks/bench_compile.py --json out.json

Operators generate such policies from allow-lists and block-lists: one rule per
network. The policy here has N rules, each denying one distinct /24 (seeded),
compiled against the bundled snapshot. Figures are CPU seconds of the process
(median of the repeats) for parsing the TOML text and for compiling; the last
column divides the compile time by N, which stays flat when growth is linear.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from functools import partial
from pathlib import Path

from _common import (
    DEFAULT_SEED,
    Results,
    environment,
    print_environment,
    print_row,
    time_call,
)

from geofence.policy import parse_policy
from geofence.policy.compile import compile_policy
from geofence.snapshot.reader import Snapshot, default_snapshot_path

FULL_COUNTS = (1_000, 2_000, 5_000, 10_000, 20_000)
SMOKE_COUNTS = (1_000, 2_000, 4_000)
#: Goal (issue 11): 20,000 single-CIDR rules compile in <= 5 s.
GOAL_20K_S = 5.0
#: --smoke fails when compile time per rule grows by more than this from the
#: smallest to the largest count (quadratic growth over 4x the rules gives 4x).
SMOKE_GROWTH_LIMIT = 2.5


def cidr_policy(count: int, seed: int) -> str:
    """TOML of a policy with ``count`` rules, each denying one distinct /24."""
    lines = ['[policy]\nid = "generated-block-list"\ndefault = "allow"\n']
    step = 2654435761 + seed * 2  # odd: a permutation of the /24s
    for k in range(count):
        net = ipaddress.IPv4Network((((k * step) % (1 << 24)) << 8, 24))
        lines.append(f'[[rules]]\nid = "r{k}"\naction = "deny"\ncidrs = ["{net}"]\n')
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small counts, growth check")
    parser.add_argument("--counts", type=int, nargs="+", help="rule counts to time")
    parser.add_argument("--repeats", type=int, help="timed passes per count (default 3)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--snapshot", type=Path, help="snapshot file (default: the bundled one)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    counts = tuple(args.counts or (SMOKE_COUNTS if args.smoke else FULL_COUNTS))
    repeats = args.repeats or (1 if args.smoke else 3)

    res = Results("bench_compile")
    res.env = environment()
    print_environment(res.env)
    started = time.perf_counter()
    snap = Snapshot.open(args.snapshot or default_snapshot_path())
    print(f"\nsnapshot {snap.snapshot_id}; CPU seconds, median of {repeats}")
    print_row("rules", "parse s", "compile s", "us/rule", width=12)
    rows: dict[str, dict[str, float]] = {}
    for count in counts:
        text = cidr_policy(count, args.seed)
        t_parse = time_call(partial(parse_policy, text), repeats=repeats)
        pol = parse_policy(text)
        t_compile = time_call(partial(compile_policy, pol, snap), repeats=repeats)
        parse_s, compile_s = t_parse.median / 1e9, t_compile.median / 1e9
        per_rule_us = t_compile.median / 1e3 / count
        print_row(
            f"{count:,}", f"{parse_s:.2f}", f"{compile_s:.2f}", f"{per_rule_us:.0f}", width=12
        )
        rows[str(count)] = {
            "parse_s": round(parse_s, 3),
            "compile_s": round(compile_s, 3),
            "compile_us_per_rule": round(per_rule_us, 1),
        }
    res.data["counts"] = rows
    status = 0
    last = rows[str(counts[-1])]
    if counts[-1] == 20_000:
        total = last["parse_s"] + last["compile_s"]
        ok = total <= GOAL_20K_S
        print(
            f"20,000 rules: parse + compile {total:.2f} s; goal <= {GOAL_20K_S:g} s: "
            f"{'met' if ok else 'MISSED'}"
        )
        res.data["goal_20k"] = {"seconds": round(total, 2), "goal": GOAL_20K_S, "met": ok}
    if args.smoke:
        first = rows[str(counts[0])]
        growth = last["compile_us_per_rule"] / max(first["compile_us_per_rule"], 1e-9)
        ok = growth <= SMOKE_GROWTH_LIMIT
        print(
            f"compile time per rule grew {growth:.2f}x from {counts[0]:,} to {counts[-1]:,} "
            f"rules; limit {SMOKE_GROWTH_LIMIT:g}x: {'ok' if ok else 'FAILED'}"
        )
        res.data["growth"] = {"ratio": round(growth, 2), "limit": SMOKE_GROWTH_LIMIT, "ok": ok}
        status = 0 if ok else 1
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    res.write(args.json)
    return status


if __name__ == "__main__":
    sys.exit(main())

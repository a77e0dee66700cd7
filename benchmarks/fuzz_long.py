"""The long fuzz run: policy text, snapshot bytes, request contexts and forwarding headers.

Usage (from a checkout)::

    python benchmarks/fuzz_long.py                    # 20,000 inputs per domain, seed 1
    python benchmarks/fuzz_long.py --count 2000       # shorter
    python benchmarks/fuzz_long.py --seed 7 --json out.json

The mutators and checks are those of the CI fuzz tests (``tests/fuzzing.py``);
this script only runs them longer, seeded, and counts. For each domain it prints
the inputs tried, how many were accepted (parsed, opened, built), crashes
(exceptions outside the documented types) and wrong answers (broken
invariants), with the first few of each. The totals are reported in
``docs/reliability.md``. Exit status 1 when anything crashed or answered wrong.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuzzing import (
    Outcome,
    build_context,
    check_context,
    check_headers,
    check_policy,
    check_snapshot,
    mutate_policy,
    mutate_snapshot,
    random_context,
    random_headers,
    seed_policies,
    seed_snapshot,
)

Case = Callable[[random.Random], tuple[bool, Outcome | None]]


def policy_case(rng: random.Random) -> tuple[bool, Outcome | None]:
    """One mutated policy; accepted when it parsed."""
    from geofence.errors import PolicyError
    from geofence.policy.parse import parse_policy

    text = mutate_policy(rng.choice(seed_policies()), rng)
    try:
        parse_policy(text)
        accepted = True
    except PolicyError:
        accepted = False
    except Exception:
        accepted = False  # check_policy reports it
    return accepted, check_policy(text)


def snapshot_case(rng: random.Random) -> tuple[bool, Outcome | None]:
    """One mutated, re-summed snapshot; accepted when it opened."""
    from geofence.errors import SnapshotError
    from geofence.snapshot.reader import Snapshot

    data = mutate_snapshot(seed_snapshot(), rng)
    try:
        Snapshot.from_bytes(data)
        accepted = True
    except SnapshotError:
        accepted = False
    except Exception:
        accepted = False
    return accepted, check_snapshot(data, probes=100, seed=rng.randrange(1 << 30))


def context_case(rng: random.Random) -> tuple[bool, Outcome | None]:
    """One hostile context; accepted when it could be built."""
    from geofence.errors import ContextError

    spec = random_context(rng)
    try:
        build_context(spec)
        accepted = True
    except (ContextError, ValueError):
        accepted = False
    except Exception:
        accepted = False  # check_context reports it
    return accepted, check_context(spec)


def headers_case(rng: random.Random) -> tuple[bool, Outcome | None]:
    """One request's peer and forwarding headers; accepted always (nothing may raise)."""
    peer, headers, config = random_headers(rng)
    return True, check_headers(peer, headers, config)


DOMAINS: dict[str, Case] = {
    "policy text": policy_case,
    "snapshot bytes": snapshot_case,
    "request contexts": context_case,
    "forwarding headers": headers_case,
}


def main(argv: list[str] | None = None) -> int:
    """Run every domain and print the totals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="inputs per domain")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the totals to this file")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # TrustWarning and data-age warnings are expected here
    totals: dict[str, dict[str, object]] = {}
    failed = False
    for name, case in DOMAINS.items():
        rng = random.Random(f"{args.seed}:{name}")
        accepted = 0
        found: dict[str, list[str]] = {"crash": [], "wrong": []}
        started = time.perf_counter()
        for _ in range(args.count):
            ok, outcome = case(rng)
            accepted += ok
            if outcome is not None:
                found[outcome.kind].append(outcome.detail)
        seconds = time.perf_counter() - started
        totals[name] = {
            "tried": args.count,
            "accepted": accepted,
            "crashes": len(found["crash"]),
            "wrong": len(found["wrong"]),
            "seconds": round(seconds, 1),
            "examples": {k: v[:3] for k, v in found.items() if v},
        }
        failed = failed or any(found.values())
        print(
            f"{name:19s} tried {args.count:7,d}  accepted {accepted:7,d}  "
            f"crashes {len(found['crash']):4d}  wrong {len(found['wrong']):4d}  ({seconds:.0f} s)"
        )
        for kind, details in found.items():
            for detail in details[:3]:
                print(f"    {kind}: {detail}")
    if args.json:
        Path(args.json).write_text(json.dumps(totals, indent=2), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

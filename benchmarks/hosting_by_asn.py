"""Would a hosting-by-ASN label label VPN exits? Measured before deciding (issue 13, item 6).

Usage (from a checkout, with ``pip install -e '.[data]'``)::

    python benchmarks/hosting_by_asn.py

The derivation measured: an AS whose announced IPv4 space (the bundled
snapshot's ASN table: DB-IP ASN Lite, then origin-asn) is covered at least
``t`` by the hosting ranges that providers publish (iporigin's kept
``hosting`` labels, the ones the recipe ships) is a hosting AS, and all its
other ranges would get ``hosting`` too. The held-out reference is the other
openly licensed list in the same data: the VPN exits iporigin labels ``vpn``
(Mullvad, ProtonVPN; Apple Private Relay is a relay, not counted). Their
labels are not used to choose the ASes, so the share of their addresses that
falls in a derived hosting AS is what the derivation would add for VPN exits.
There is no openly licensed public-proxy list in the recipe's packages, so no
proxy figure can be measured.
"""

from __future__ import annotations

import importlib.util
import sys
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing geofence
    sys.path.insert(0, str(ROOT))

from geofence.snapshot.reader import Snapshot  # noqa: E402


def _recipe_tools() -> Any:
    """``data/build_default.py`` (a script, not a package module), imported by path."""
    name = "geofence_data_build_default"
    spec = importlib.util.spec_from_file_location(name, ROOT / "data" / "build_default.py")
    if spec is None or spec.loader is None:
        raise ImportError("data/build_default.py is missing: run from a source checkout")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


THRESHOLDS = (0.5, 0.8, 0.95)


class AsnSpace:
    """IPv4 segments of the bundled snapshot's ASN table, with each AS's announced size."""

    def __init__(self, snap: Snapshot) -> None:
        table = snap.asn_table
        parts = table.partitions
        self.starts = list(parts.v4_starts)
        self.ends = [*self.starts[1:], 1 << 32]
        self.asns = [table.asns[k] if k >= 0 else None for k in parts.v4_ids]
        self.size: Counter[int] = Counter()
        self.names: dict[int, str | None] = {}
        for start, end, asn in zip(self.starts, self.ends, self.asns, strict=True):
            if asn is not None:
                self.size[asn] += end - start
        for k in range(len(table)):
            asn, org = table.entry(k)
            self.names.setdefault(asn, org)

    def pieces(self, first: int, last: int) -> Iterator[tuple[int | None, int]]:
        """``(AS number or None, addresses)`` of each ASN segment overlapping ``first..last``."""
        i = bisect_right(self.starts, first) - 1
        while i < len(self.starts) and self.starts[i] <= last:
            yield self.asns[i], min(self.ends[i] - 1, last) - max(self.starts[i], first) + 1
            i += 1


def main() -> int:
    """Print the derivation's reach for each threshold and where the VPN exits are."""
    build_default = _recipe_tools()
    recipe = build_default.load_recipe()
    paths = build_default.locate_data_files(recipe)
    source = recipe.source("iporigin")
    data = build_default.read_iporigin(paths[source.name].read_bytes())
    space = AsnSpace(Snapshot.default())
    hosting: Counter[int] = Counter()
    vpn: list[tuple[int, int, str]] = []
    for first, last, index in data.v4:
        label = data.labels[index]
        if label.provider in source.excluded_providers:
            continue
        if label.kind == "hosting":
            for asn, count in space.pieces(first, last):
                if asn is not None:
                    hosting[asn] += count
        elif label.kind == "vpn" and label.provider != "Apple Private Relay":
            vpn.append((first, last, label.provider))
    by_asn: defaultdict[int | None, int] = defaultdict(int)
    for first, last, _provider in vpn:
        for asn, count in space.pieces(first, last):
            by_asn[asn] += count
    exits = sum(by_asn.values())
    providers = sorted({p for _f, _l, p in vpn})
    print(f"held-out VPN exits: {exits:,} IPv4 addresses ({', '.join(providers)})")
    for t in THRESHOLDS:
        chosen = {a for a, n in hosting.items() if n >= t * space.size[a]}
        added = sum(space.size[a] - hosting[a] for a in chosen)
        hit = sum(n for a, n in by_asn.items() if a in chosen)
        print(
            f"  t = {t:.2f}: {len(chosen)} hosting ASes, {added:,} more IPv4 addresses "
            f"labelled hosting; VPN exits reached {hit:,} ({100 * hit / max(exits, 1):.1f} %)"
        )
    print("where the VPN exits are (share of the exits; share of the AS labelled hosting):")
    for asn, count in sorted(by_asn.items(), key=lambda item: -item[1])[:10]:
        covered = hosting[asn] / space.size[asn] if asn is not None else 0.0
        name = space.names.get(asn) if asn is not None else "no ASN"
        print(f"  AS{asn} {name}: {100 * count / exits:.1f} %; {100 * covered:.0f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

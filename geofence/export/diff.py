"""Which address space changes verdict between two compiled policies (or two snapshots).

This is the review a compliance team signs before a policy or data change goes
live: for each (country, old action -> new action), how many addresses and
ranges change, and the largest networks concerned. Both sides are read from
their compiled verdict tables and walked in step; nothing is evaluated per
address. Tunnel prefixes are left out: they carry IPv4 addresses, whose
changes are already counted.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from geofence.decision import Decision
from geofence.export.cidr import address_text, cidr_text, range_cidrs
from geofence.export.table import compiled_segments
from geofence.policy.compile import CompiledPolicy
from geofence.snapshot.partition import TUNNEL_BY_ID, V4_TOP, V6_TOP

__all__ = ["Change", "ChangedRange", "PolicyDiff", "diff"]


@dataclass(slots=True)
class Change:
    """Address space of one country whose action changes from ``old`` to ``new``."""

    country: str
    """ISO 3166-1 code (of the new data when the two snapshots differ), or what the address
    is (``reserved``, ``unknown``)."""
    old: str
    new: str
    ipv4_addresses: int = 0
    ipv6_addresses: int = 0
    ranges: int = 0


@dataclass(frozen=True, slots=True, order=True)
class ChangedRange:
    """One changed range (neighbouring pieces of the same change merged)."""

    size: int
    version: int
    first: int
    last: int
    country: str = field(compare=False)
    old: str = field(compare=False)
    new: str = field(compare=False)

    @property
    def network(self) -> str:
        """The range as a CIDR block, or ``first-last`` when it is not one block."""
        bits = 32 if self.version == 4 else 128
        blocks = list(range_cidrs(self.first, self.last, bits))
        if len(blocks) == 1:
            return cidr_text(self.version, *blocks[0])
        return f"{address_text(self.version, self.first)}-{address_text(self.version, self.last)}"


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    """The result of :func:`diff`."""

    old: CompiledPolicy
    new: CompiledPolicy
    changes: tuple[Change, ...]
    """Sorted by IPv4 then IPv6 addresses, largest first."""
    top: tuple[ChangedRange, ...]
    """The largest changed ranges of each family, largest first."""

    @property
    def changed(self) -> bool:
        """Whether any address changes verdict."""
        return bool(self.changes)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form."""

        def side(c: CompiledPolicy) -> dict[str, object]:
            return {
                "policy_id": c.policy.id,
                "policy_version": c.policy.version,
                "policy_digest": c.policy.digest,
                "snapshot_id": c.snapshot.snapshot_id,
                "data_date": str(c.snapshot.data_date) if c.snapshot.data_date else None,
            }

        return {
            "old": side(self.old),
            "new": side(self.new),
            "changes": [
                {
                    "country": c.country,
                    "old": c.old,
                    "new": c.new,
                    "ipv4_addresses": c.ipv4_addresses,
                    "ipv6_addresses": c.ipv6_addresses,
                    "ranges": c.ranges,
                }
                for c in self.changes
            ],
            "top_networks": [
                {
                    "network": r.network,
                    "family": f"ipv{r.version}",
                    "addresses": r.size,
                    "country": r.country,
                    "old": r.old,
                    "new": r.new,
                }
                for r in self.top
            ],
        }

    def to_json(self) -> str:
        """The diff as indented JSON."""
        return json.dumps(self.as_dict(), indent=2)

    def table(self) -> str:
        """The diff as a plain-text table."""
        o, n = self.old, self.new
        lines = [
            f"old: policy {o.policy.id} {o.policy.version or '-'} ({o.policy.digest}), "
            f"snapshot {o.snapshot.snapshot_id}",
            f"new: policy {n.policy.id} {n.policy.version or '-'} ({n.policy.digest}), "
            f"snapshot {n.snapshot.snapshot_id}",
        ]
        if not self.changes:
            return "\n".join([*lines, "no address changes verdict"]) + "\n"
        lines.append(
            f"{'country':<10} {'old -> new':<32} {'IPv4 addresses':>15} {'IPv6 /48s':>14} "
            f"{'ranges':>8}"
        )
        for c in self.changes:
            lines.append(
                f"{c.country:<10} {c.old + ' -> ' + c.new:<32} {c.ipv4_addresses:>15,} "
                f"{c.ipv6_addresses >> 80:>14,} {c.ranges:>8,}"
            )
        lines.append("top networks:")
        for r in self.top:
            size = f"{r.size:,}" if r.version == 4 else f"{r.size >> 80:,} /48s"
            lines.append(f"  {r.network:<44} {r.country:<10} {r.old} -> {r.new}  ({size})")
        return "\n".join(lines) + "\n"


def _key(d: Decision | None) -> str:
    if d is None:
        return "?"
    return f"route:{d.route}" if d.route is not None else d.action.value


def _place(c: CompiledPolicy, vid: int) -> str:
    record = c.records[vid]
    if record is not None and record.country:
        return record.country
    d = c.table[vid]
    if d is not None and d.special:
        return "reserved"
    return "unknown" if record is None else "no-country"


def _pieces(
    a: CompiledPolicy, b: CompiledPolicy, version: int
) -> Iterator[tuple[int, int, int, int]]:
    """``(first, last, old id, new id)`` over the common refinement of both partitions."""
    sa, ia = compiled_segments(a, version)
    sb, ib = compiled_segments(b, version)
    top = V4_TOP if version == 4 else V6_TOP
    i = j = 0
    na, nb = len(sa), len(sb)
    start = 0
    while start <= top:
        end_a = sa[i + 1] if i + 1 < na else top + 1
        end_b = sb[j + 1] if j + 1 < nb else top + 1
        end = min(end_a, end_b)
        yield start, end - 1, ia[i], ib[j]
        start = end
        if end == end_a:
            i += 1
        if end == end_b:
            j += 1


def diff(old: CompiledPolicy, new: CompiledPolicy, *, top: int = 10) -> PolicyDiff:
    """Compare the IP-only verdicts of two compiled policies.

    Args:
        old: The policy (or data) in force.
        new: The candidate.
        top: How many of the largest changed ranges to keep per family.

    Returns:
        The changes per (country, old action, new action) and the largest changed ranges.
    """
    changes: dict[tuple[str, str, str], Change] = {}
    largest: list[ChangedRange] = []
    for version in (4, 6):
        heap: list[ChangedRange] = []
        run: ChangedRange | None = None

        def close(r: ChangedRange | None, heap: list[ChangedRange] = heap) -> None:
            if r is None:
                return
            change = changes[(r.country, r.old, r.new)]
            change.ranges += 1
            if len(heap) < top:
                heapq.heappush(heap, r)
            elif r > heap[0]:
                heapq.heapreplace(heap, r)

        for first, last, va, vb in _pieces(old, new, version):
            if va in TUNNEL_BY_ID or vb in TUNNEL_BY_ID:
                continue
            ka, kb = _key(old.table[va]), _key(new.table[vb])
            if ka == kb:
                close(run)
                run = None
                continue
            place = _place(new, vb)
            change = changes.setdefault((place, ka, kb), Change(place, ka, kb))
            span = last - first + 1
            if version == 4:
                change.ipv4_addresses += span
            else:
                change.ipv6_addresses += span
            if (
                run is not None
                and run.last + 1 == first
                and (run.country, run.old, run.new)
                == (
                    place,
                    ka,
                    kb,
                )
            ):
                run = ChangedRange(run.size + span, version, run.first, last, place, ka, kb)
            else:
                close(run)
                run = ChangedRange(span, version, first, last, place, ka, kb)
        close(run)
        largest += sorted(heap, reverse=True)
    ordered = sorted(
        changes.values(), key=lambda c: (-c.ipv4_addresses, -c.ipv6_addresses, c.country)
    )
    return PolicyDiff(old, new, tuple(ordered), tuple(largest))

"""The verdict table of a compiled policy, as merged address ranges per family.

An edge device (nginx, HAProxy, a firewall) can only map an address to a value.
This module reads the compiled policy's partition once, replaces every segment
id by its IP-only verdict, and merges neighbours with the same verdict, so each
family becomes a short list of ``(start, verdict)`` pieces covering the whole
space. Nothing is re-evaluated per address: the verdicts are the
:class:`~geofence.decision.Decision` objects the policy compiler made, the same
ones :meth:`geofence.Geofence.decide` returns without a context.

IPv6 tunnel prefixes (RFC 4291 IPv4-mapped, RFC 6052 NAT64, RFC 3056 6to4) are
decided by the IPv4 address they carry; they are expanded here into the IPv6
ranges of every IPv4 piece, so the edge needs no unwrapping. Teredo (RFC 4380)
keeps its client address in the low 32 bits under a 64-bit server and port
part, which no short list of ranges can express: the whole prefix gets one
stated verdict (:attr:`VerdictTable.stated`). On request (``expand_tunnels=False``)
the other tunnel prefixes get that stated verdict too, which keeps exports short.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from geofence.addr import TUNNEL_RANGES, TunnelKind
from geofence.decision import Action, Verdict
from geofence.policy.compile import CompiledPolicy
from geofence.snapshot.partition import TUNNEL_BY_ID, V4_TOP, V6_TOP, Column

__all__ = [
    "SEVERITY",
    "ContextRule",
    "Partition",
    "Verdict",
    "VerdictTable",
    "compiled_segments",
    "verdict_table",
]

V4_MAX = V4_TOP

#: Actions from the most to the least restrictive (picks the Teredo verdict).
SEVERITY: tuple[Action, ...] = (
    Action.DENY,
    Action.CHALLENGE,
    Action.ROUTE,
    Action.REVIEW,
    Action.ALLOW,
)

#: How far the embedded IPv4 address is shifted inside each expandable tunnel prefix.
_EMBED_SHIFT: dict[TunnelKind, int] = {
    TunnelKind.IPV4_MAPPED: 0,
    TunnelKind.NAT64: 0,
    TunnelKind.SIXTOFOUR: 80,
}
_PREFIX: dict[TunnelKind, int] = {kind: first for kind, first, _ in TUNNEL_RANGES}


@dataclass(frozen=True, slots=True)
class Partition:
    """Pieces covering one address family: piece ``i`` runs from ``starts[i]`` to the next start.

    Neighbouring pieces never share a key.
    """

    version: int
    starts: list[int]
    keys: list[int]

    @property
    def top(self) -> int:
        """The last address of the family."""
        return V4_TOP if self.version == 4 else V6_TOP

    def ranges(self) -> Iterator[tuple[int, int, int]]:
        """Yield ``(first, last, key)`` for every piece, in address order."""
        starts, keys = self.starts, self.keys
        n = len(starts)
        for i in range(n):
            last = starts[i + 1] - 1 if i + 1 < n else self.top
            yield starts[i], last, keys[i]

    def rekey(self, mapping: list[int]) -> Partition:
        """The partition with every key ``k`` replaced by ``mapping[k]``, merged again."""
        return _merged(self.version, self.starts, [mapping[k] for k in self.keys])


@dataclass(frozen=True, slots=True)
class ContextRule:
    """A rule the edge cannot decide: it needs the request's context."""

    rule_id: str
    needs: tuple[str, ...]
    """What it needs: ``subject``, ``signals`` (client hints, account history), ``risk``."""
    ipv4_addresses: int
    """IPv4 addresses at which the rule is reached (the edge gives them the IP-only verdict)."""
    ipv6_addresses: int
    """IPv6 addresses at which it is reached (tunnel prefixes not counted twice)."""


@dataclass(frozen=True, slots=True)
class VerdictTable:
    """The IP-only verdicts of a compiled policy as merged ranges of both families."""

    compiled: CompiledPolicy
    verdicts: tuple[Verdict, ...]
    """Distinct verdicts; the partitions' keys index this tuple."""
    v4: Partition
    v6: Partition
    stated: Verdict
    """The verdict stated for Teredo (its client address is not expressible as ranges) and,
    when tunnels are not expanded, for the other tunnel prefixes."""
    expanded: bool
    """Whether IPv4-mapped, NAT64 and 6to4 prefixes carry the IPv4 verdicts (else ``stated``)."""
    context_rules: tuple[ContextRule, ...]
    """Rules that need a request context, with where they are reached."""

    def partition(self, version: int) -> Partition:
        """The partition of one family."""
        return self.v4 if version == 4 else self.v6

    def by_key(self) -> tuple[tuple[str, ...], Partition, Partition]:
        """Both partitions re-keyed by :attr:`Verdict.key` (what map formats need).

        Returns:
            The distinct keys, and the IPv4 and IPv6 partitions whose keys index them.
        """
        names: list[str] = []
        index: dict[str, int] = {}
        mapping: list[int] = []
        for verdict in self.verdicts:
            mapping.append(index.setdefault(verdict.key, len(index)))
            if len(names) < len(index):
                names.append(verdict.key)
        return tuple(names), self.v4.rekey(mapping), self.v6.rekey(mapping)


def compiled_segments(compiled: CompiledPolicy, version: int) -> tuple[list[int], Column]:
    """Segment starts and virtual ids of one family of a compiled policy.

    The one place this module reads the compiled policy's search columns.
    """
    if version == 4:
        return list(compiled.v4_starts), compiled.v4_ids
    hi, lo = compiled.v6_hi, compiled.v6_lo
    return [(h << 64) | low for h, low in zip(hi, lo, strict=True)], compiled.v6_ids


def _merged(version: int, starts: list[int], keys: list[int]) -> Partition:
    """Drop every piece whose key equals its left neighbour's."""
    out_s: list[int] = []
    out_k: list[int] = []
    prev = None
    for start, key in zip(starts, keys, strict=True):
        if key != prev:
            out_s.append(start)
            out_k.append(key)
            prev = key
    return Partition(version, out_s, out_k)


def _tunnel_pieces(
    kind: TunnelKind, first: int, last: int, v4: Partition, stated_key: int, expand: bool
) -> Iterator[tuple[int, int]]:
    """``(start, key)`` pieces of a tunnel segment ``first..last`` from the IPv4 verdicts."""
    shift = _EMBED_SHIFT.get(kind)
    if shift is None or not expand:  # Teredo is not expressible as ranges
        yield first, stated_key
        return
    prefix = _PREFIX[kind]
    low = (first >> shift) & V4_MAX
    high = (last >> shift) & V4_MAX
    starts, keys = v4.starts, v4.keys
    i = bisect_right(starts, low) - 1
    yield first, keys[i]
    for j in range(i + 1, len(starts)):
        if starts[j] > high:
            break
        yield prefix | (starts[j] << shift), keys[j]


def _context_rules(
    compiled: CompiledPolicy, segments: dict[int, tuple[list[int], Column]]
) -> tuple[ContextRule, ...]:
    """Rules needing context that some address reaches, with address counts per family."""
    reached: dict[int, tuple[str, ...]] = {}
    for _starts, ids in segments.values():
        for vid in set(ids) - reached.keys():
            plan = compiled.plans[vid]  # negative ids index from the end, like the table
            reached[vid] = tuple(c.rule.id for c in plan if c.rule.needs_context)
    counts: dict[str, list[int]] = {}
    for version, (starts, ids) in segments.items():
        top = V4_TOP if version == 4 else V6_TOP
        n = len(starts)
        for i, vid in enumerate(ids):
            rules = reached[vid]
            if not rules or vid in TUNNEL_BY_ID:
                continue
            span = (starts[i + 1] if i + 1 < n else top + 1) - starts[i]
            for rid in rules:
                counts.setdefault(rid, [0, 0])[0 if version == 4 else 1] += span
    out: list[ContextRule] = []
    policy = compiled.policy
    for rule in (*policy.exceptions, *policy.rules):
        if rule.id not in counts:
            continue
        needs = tuple(
            name
            for name, flag in (
                ("subject", not rule.subject.is_empty()),
                ("signals", rule.signals is not None),
                ("risk", rule.min_risk is not None),
            )
            if flag
        )
        v4n, v6n = counts[rule.id]
        out.append(ContextRule(rule.id, needs, v4n, v6n))
    return tuple(out)


def verdict_table(
    compiled: CompiledPolicy,
    *,
    teredo: Action | None = None,
    teredo_route: str | None = None,
    expand_tunnels: bool = True,
) -> VerdictTable:
    """Read the verdict table of ``compiled`` as merged ranges.

    Args:
        compiled: The compiled policy (e.g. ``Geofence(...).compiled``).
        teredo: The action stated for the Teredo prefix; default: the most
            restrictive action of any IPv4 verdict (:data:`SEVERITY`).
        teredo_route: The route target when ``teredo`` is ``Action.ROUTE``.
        expand_tunnels: Expand IPv4-mapped, NAT64 and 6to4 into the IPv6 ranges of the
            IPv4 verdicts (exact). When false they get the stated Teredo verdict too.

    Returns:
        The table.
    """
    index: dict[Verdict, int] = {}
    slot_key: list[int] = []
    for decision in compiled.table:
        # Tunnel slots hold no decision (-1); tunnel segments are expanded below instead.
        key = -1 if decision is None else index.setdefault(Verdict.of(decision), len(index))
        slot_key.append(key)
    segments = {v: compiled_segments(compiled, v) for v in (4, 6)}
    starts4, ids4 = segments[4]
    v4 = _merged(4, starts4, [slot_key[vid] for vid in ids4])
    verdicts = list(index)
    if teredo is None:
        present = {verdicts[k] for k in set(v4.keys)}
        worst = min(present, key=lambda v: SEVERITY.index(v.action))
        teredo, teredo_route = worst.action, worst.route
    stated = Verdict(teredo, teredo_route if teredo is Action.ROUTE else None, None, "stated")
    stated_key = index.setdefault(stated, len(index))
    verdicts = list(index)
    starts6, ids6 = segments[6]
    s6: list[int] = []
    k6: list[int] = []
    n6 = len(starts6)
    for i, vid in enumerate(ids6):
        kind = TUNNEL_BY_ID.get(vid)
        if kind is None:
            s6.append(starts6[i])
            k6.append(slot_key[vid])
            continue
        last = starts6[i + 1] - 1 if i + 1 < n6 else V6_TOP
        pieces = _tunnel_pieces(kind, starts6[i], last, v4, stated_key, expand_tunnels)
        for start, key in pieces:
            s6.append(start)
            k6.append(key)
    v6 = _merged(6, s6, k6)
    return VerdictTable(
        compiled=compiled,
        verdicts=tuple(verdicts),
        v4=v4,
        v6=v6,
        stated=stated,
        expanded=expand_tunnels,
        context_rules=_context_rules(compiled, segments),
    )

"""Compile a policy against a snapshot into a verdict table.

For IP-only evaluation the answer depends only on (record, which policy CIDRs
contain the address). CIDR conditions are made record-like by carving the
snapshot's partition at CIDR boundaries and giving each carved piece a virtual
id for (record id, CIDR label). Every id then indexes one precomputed
:class:`~geofence.decision.Decision`, so a request costs parse + bisect + index.

The same partitions relabelled by :class:`~geofence.decision.Verdict` and merged
where neighbours agree are the *verdict partitions*: the few thousand places where
the policy's answer changes, searched by :meth:`geofence.Geofence.verdict`.
"""

from __future__ import annotations

import datetime as dt
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from geofence.decision import Decision, Verdict
from geofence.kinds import NetworkKind, SpecialRange
from geofence.policy.evaluate import Candidate, Outcome, address_candidates, evaluate
from geofence.policy.model import Policy, Rule
from geofence.records import NetworkRecord
from geofence.snapshot.asn import with_asns
from geofence.snapshot.partition import (
    GAP,
    MASK64,
    SPECIAL_BY_ID,
    TUNNEL_BY_ID,
    V4_TOP,
    V6_TOP,
    Column,
    Partitions,
    coalesce,
    index16,
    locate6,
    overlay,
    segment,
)
from geofence.snapshot.reader import Snapshot
from geofence.snapshot.search import relabel_runs

__all__ = ["CompiledPolicy", "compile_policy"]

#: Negative ids run down to the lowest tunnel id; the table keeps that many tail slots.
TAIL = -min(TUNNEL_BY_ID)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledPolicy:
    """A policy compiled against one snapshot on one date. Immutable; share freely."""

    policy: Policy
    snapshot: Snapshot
    today: dt.date
    """The date rule effectivity was evaluated for."""
    valid_until: dt.date | None
    """First date on which some rule starts or stops applying (recompile then)."""
    partitions: Partitions
    """The snapshot's partitions carved at the policy's CIDR boundaries; ids are virtual."""
    table: list[Decision | None]
    """Decision per id; negative ids index from the end (gap, special ranges);
    tunnel slots are ``None`` (unwrap and look up the IPv4 address)."""
    plans: list[tuple[Candidate, ...]]
    """Candidate rules per id, for evaluation with a context."""
    records: list[NetworkRecord | None]
    """Record per id (``None`` for gaps and special ranges)."""
    signal_weights: dict[str, float]
    """The policy's signal weight overrides, as a mapping (read per request with context)."""
    verdict_partitions: Partitions
    """``partitions`` relabelled by verdict and merged where neighbours agree: ids index
    :attr:`verdicts`, except tunnel prefixes, which keep their tunnel ids."""
    verdicts: tuple[Verdict, ...]
    """The distinct verdicts of :attr:`table`."""

    @property
    def v4_starts(self) -> Column:
        """IPv4 segment starts (``partitions.v4_starts``)."""
        return self.partitions.v4_starts

    @property
    def v4_ids(self) -> Column:
        """IPv4 segment ids (``partitions.v4_ids``)."""
        return self.partitions.v4_ids

    @property
    def v4_index(self) -> Column:
        """IPv4 /16 index (``partitions.v4_index``)."""
        return self.partitions.v4_index

    @property
    def v6_hi(self) -> Column:
        """IPv6 segment starts, high halves (``partitions.v6_hi``)."""
        return self.partitions.v6_hi

    @property
    def v6_lo(self) -> Column:
        """IPv6 segment starts, low halves (``partitions.v6_lo``)."""
        return self.partitions.v6_lo

    @property
    def v6_ids(self) -> Column:
        """IPv6 segment ids (``partitions.v6_ids``)."""
        return self.partitions.v6_ids

    @property
    def v6_index(self) -> Column:
        """IPv6 /16 index (``partitions.v6_index``)."""
        return self.partitions.v6_index

    def locate(self, version: int, value: int) -> int:
        """Virtual id of an (unwrapped) address; may be a tunnel id for IPv6."""
        ids = self.partitions.v4_ids if version == 4 else self.partitions.v6_ids
        return ids[segment(self.partitions, version, value)]


def _pieces(
    rules: list[Rule], version: int
) -> tuple[list[tuple[int, int, int]], list[frozenset[str]]]:
    """Disjoint pieces of the CIDRs of ``rules`` labelled by the set of rule ids covering them."""
    events: dict[int, list[tuple[int, str]]] = {}
    for rule in rules:
        for v, first, last in rule.cidrs or ():
            if v == version:
                events.setdefault(first, []).append((1, rule.id))
                events.setdefault(last + 1, []).append((-1, rule.id))
    labels: list[frozenset[str]] = [frozenset()]
    label_ids: dict[frozenset[str], int] = {frozenset(): 0}
    pieces: list[tuple[int, int, int]] = []
    active: dict[str, int] = {}
    points = sorted(events)
    for k, point in enumerate(points):
        for delta, rid in events[point]:
            active[rid] = active.get(rid, 0) + delta
            if not active[rid]:
                del active[rid]
        if not active or k + 1 == len(points):
            continue
        label = frozenset(active)
        lid = label_ids.get(label)
        if lid is None:
            lid = label_ids[label] = len(labels)
            labels.append(label)
        pieces.append((point, points[k + 1] - 1, lid))
    return pieces, labels


Relabel = Callable[[int, int], int]


def _carve(
    parts: Partitions, version: int, pieces: list[tuple[int, int, int]], relabel: Relabel
) -> Partitions:
    """Carve the CIDR ``pieces`` of one family into ``parts`` (see :func:`overlay`)."""
    if not pieces:
        return parts
    if version == 4:
        starts = parts.v4_starts
        v4s, v4i = overlay(
            (starts, parts.v4_ids),
            starts.__getitem__,
            lambda a: (a,),
            lambda a: bisect_right(starts, a) - 1,
            pieces,
            V4_TOP,
            relabel,
        )
        return parts._replace(v4_starts=v4s, v4_ids=v4i, v4_index=index16(v4s))
    hi, lo = parts.v6_hi, parts.v6_lo
    v6h, v6l, v6i = overlay(
        (hi, lo, parts.v6_ids),
        lambda i: (hi[i] << 64) | lo[i],
        lambda a: (a >> 64, a & MASK64),
        lambda a: locate6(hi, lo, a),
        pieces,
        V6_TOP,
        relabel,
    )
    return parts._replace(v6_hi=v6h, v6_lo=v6l, v6_ids=v6i, v6_index=index16(v6h, 48))


class _RuleOrder:
    """The rules a (record, CIDR label) can match, in policy order, without scanning all.

    A rule with CIDRs matches only inside them, so the candidates for an address
    come from the rules without CIDRs plus the rules named by its CIDR label.
    Walking every rule for every virtual id made compilation quadratic in the
    number of single-CIDR rules.
    """

    def __init__(self, policy: Policy) -> None:
        ordered = [(True, r) for r in policy.exceptions] + [(False, r) for r in policy.rules]
        self._by_id: dict[str, list[tuple[int, bool, Rule]]] = {}
        self._plain: list[tuple[int, bool, Rule]] = []
        for k, (exc, rule) in enumerate(ordered):
            if rule.cidrs is None:
                self._plain.append((k, exc, rule))
            else:
                self._by_id.setdefault(rule.id, []).append((k, exc, rule))
        self._cache: dict[frozenset[str], tuple[list[Rule], list[Rule]]] = {}

    def among(self, label: frozenset[str]) -> tuple[list[Rule], list[Rule]]:
        """The exceptions and rules an address carrying ``label`` can match, in order."""
        found = self._cache.get(label)
        if found is None:
            chosen = sorted(
                self._plain + [item for rid in label for item in self._by_id.get(rid, ())],
                key=lambda item: item[0],
            )
            found = self._cache[label] = (
                [r for _, exc, r in chosen if exc],
                [r for _, exc, r in chosen if not exc],
            )
        return found


def compile_policy(
    policy: Policy, snapshot: Snapshot, *, today: dt.date | None = None
) -> CompiledPolicy:
    """Compile ``policy`` against ``snapshot`` for the date ``today`` (default: UTC today).

    The cost is linear in the snapshot's segments plus the policy's CIDR pieces:
    each piece is carved in with one search, and each virtual id is evaluated
    against the rules that can match it (see :class:`_RuleOrder`). Only a
    policy with ASN rules overlays the snapshot's ASN table first, and only
    the ranges of the AS numbers it names
    (:func:`~geofence.snapshot.asn.with_asns`).
    """
    day = today or dt.datetime.now(dt.UTC).date()
    records: Sequence[NetworkRecord] = snapshot.records
    parts = snapshot.partitions
    every_rule = (*policy.exceptions, *policy.rules)
    named = frozenset[int]().union(*(r.asns for r in every_rule if r.asns is not None))
    if named and len(snapshot.asn_table):
        # ASN rules need the AS number: split the records where the named ASes begin and end.
        parts, records = with_asns(parts, records, snapshot.asn_table, named)
    nrec = len(records)
    cidr_rules = [r for r in every_rule if r.cidrs is not None]
    virtual: dict[tuple[int, int], int] = {}
    all_labels: list[list[frozenset[str]]] = []
    for version in (4, 6) if cidr_rules else ():
        pieces, labels = _pieces(cidr_rules, version)
        all_labels.append(labels)

        def relabel(old: int, label: int, _b: int = len(all_labels) - 1) -> int:
            if old in TUNNEL_BY_ID:
                return old  # CIDRs match the unwrapped address, not the tunnel prefix
            key = (old, _b * (1 << 32) + label)
            vid = virtual.get(key)
            if vid is None:
                vid = virtual[key] = nrec + len(virtual)
            return vid

        parts = _carve(parts, version, pieces, relabel)
    size = nrec + len(virtual) + TAIL
    table: list[Decision | None] = [None] * size
    plans: list[tuple[Candidate, ...]] = [()] * size
    recs: list[NetworkRecord | None] = [None] * size
    interned: dict[Decision, Decision] = {}
    snap_id = snapshot.snapshot_id
    digest = policy.digest
    order = _RuleOrder(policy)

    def fill(slot: int, base_id: int, label: frozenset[str]) -> None:
        record = records[base_id] if base_id >= 0 else None
        special = SPECIAL_BY_ID.get(base_id)
        # Every rule in the view can match: those with CIDRs are the ones in the label.
        cands = address_candidates(policy, record, _always, day, among=order.among(label))
        out = evaluate(policy, cands, found=base_id >= 0, special=special, context=None)
        dec = make_decision(out, record, special, snap_id, policy, digest)
        table[slot] = interned.setdefault(dec, dec)
        plans[slot] = cands
        recs[slot] = record

    empty: frozenset[str] = frozenset()
    for rid in range(nrec):
        fill(rid, rid, empty)
    for base in (GAP, *SPECIAL_BY_ID):
        fill(base, base, empty)
    for (old, lab), vid in virtual.items():
        fill(vid, old, all_labels[lab >> 32][lab & 0xFFFFFFFF])
    future = [d for d in policy.date_boundaries() if d > day]
    verdicts, by_slot = _verdict_ids(table)
    return CompiledPolicy(
        policy=policy,
        snapshot=snapshot,
        today=day,
        valid_until=future[0] if future else None,
        partitions=parts,
        table=table,
        plans=plans,
        records=recs,
        signal_weights=dict(policy.signal_weights),
        verdict_partitions=coalesce(parts, by_slot, relabel_runs),
        verdicts=verdicts,
    )


def _verdict_ids(table: list[Decision | None]) -> tuple[tuple[Verdict, ...], array[int]]:
    """The distinct verdicts of ``table``, and the verdict id of each of its slots.

    Slots without a decision keep their negative id: tunnel prefixes, which a lookup
    over the verdict partitions hands to the general path as it does over the
    table, and unused tail slots, which no segment carries.
    """
    index: dict[Verdict, int] = {}
    relabel = array("i")
    size = len(table)
    for slot, decision in enumerate(table):
        if decision is None:
            relabel.append(slot - size)
        else:
            relabel.append(index.setdefault(Verdict.of(decision), len(index)))
    return tuple(index), relabel


def _always(_rule: Rule) -> bool:
    return True


def make_decision(
    out: Outcome,
    record: NetworkRecord | None,
    special: SpecialRange | None,
    snapshot_id: str,
    policy: Policy,
    digest: str,
    **extra: object,
) -> Decision:
    """Dress an evaluation outcome as a Decision."""
    reasons = out.reasons
    if record is not None and record.territory is not None:
        # Provenance of a territory-table override (e.g. a source's RU / Crimea -> UA-43).
        reasons = (*reasons, f"territory:{record.territory}")
    return Decision(
        action=out.action,
        route=out.route,
        reasons=reasons,
        rule_id=out.rule_id,
        outcome=out.outcome,
        country=record.country if record else None,
        subdivision=record.subdivision if record else None,
        kinds=record.kinds if record else NetworkKind.UNKNOWN,
        asn=record.asn if record else None,
        special=special.value if special else None,
        shadow=out.shadow_action is not None,
        shadow_action=out.shadow_action,
        shadow_rule_id=out.shadow_rule_id,
        snapshot_id=snapshot_id,
        policy_id=policy.id,
        policy_digest=digest,
        sources=record.sources if record else (),
        **extra,  # type: ignore[arg-type]  # Decision field names
    )

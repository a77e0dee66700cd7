"""Compile a policy against a snapshot into a verdict table.

For IP-only evaluation the answer depends only on (record, which policy CIDRs
contain the address). CIDR conditions are made record-like by carving the
snapshot's partition at CIDR boundaries and giving each carved piece a virtual
id for (record id, CIDR label). Every id then indexes one precomputed
:class:`~geofence.decision.Decision`, so a request costs parse + bisect + index.
"""

from __future__ import annotations

import datetime as dt
from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

from geofence.decision import Decision
from geofence.kinds import NetworkKind, SpecialRange
from geofence.policy.evaluate import Candidate, Outcome, address_candidates, evaluate
from geofence.policy.model import Policy, Rule
from geofence.records import NetworkRecord
from geofence.snapshot.partition import (
    GAP,
    MASK64,
    SPECIAL_BY_ID,
    TUNNEL_BY_ID,
    V4_TOP,
    V6_TOP,
    index16,
    locate6,
    locate6_indexed,
)
from geofence.snapshot.reader import Snapshot

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
    v4_starts: array[int]
    v4_ids: array[int]
    v4_index: array[int]
    v6_hi: array[int]
    v6_lo: array[int]
    v6_ids: array[int]
    v6_index: array[int]
    table: list[Decision | None]
    """Decision per id; negative ids index from the end (gap, special ranges);
    tunnel slots are ``None`` (unwrap and look up the IPv4 address)."""
    plans: list[tuple[Candidate, ...]]
    """Candidate rules per id, for evaluation with a context."""
    records: list[NetworkRecord | None]
    """Record per id (``None`` for gaps and special ranges)."""
    signal_weights: dict[str, float]
    """The policy's signal weight overrides, as a mapping (read per request with context)."""

    def locate(self, version: int, value: int) -> int:
        """Virtual id of an (unwrapped) address; may be a tunnel id for IPv6."""
        if version == 4:
            p = value >> 16
            ix = self.v4_index
            return self.v4_ids[bisect_right(self.v4_starts, value, ix[p], ix[p + 1] + 1) - 1]
        return self.v6_ids[
            locate6_indexed(self.v6_hi, self.v6_lo, self.v6_index, value >> 64, value & MASK64)
        ]


def _carve(
    columns: tuple[array[int], ...],
    key_at: Callable[[int], int],
    split: Callable[[int], tuple[int, ...]],
    locate: Callable[[int], int],
    pieces: list[tuple[int, int, int]],
    top: int,
    assign: Callable[[int, int], int],
) -> tuple[array[int], ...]:
    """Split a partition at piece boundaries and relabel the ids inside pieces.

    Inside each ``(first, last, label)`` piece every segment keeps its own
    boundaries, and its id becomes ``assign(old_id, label)``.
    """
    n = len(columns[-1])
    ids = columns[-1]
    out = tuple(array(c.typecode) for c in columns)
    tail: list[int | None] = [None]

    def copy(a: int, b: int) -> None:
        if b > a:
            for col, src in zip(out, columns, strict=True):
                col.extend(src[a:b])
            tail[0] = key_at(b - 1)

    def push(start: int, seg_id: int) -> None:
        if tail[0] == start:
            for col in out:
                col.pop()
        for col, value in zip(out, (*split(start), seg_id), strict=True):
            col.append(value)
        tail[0] = start

    done = 0
    for first, last, label in pieces:
        i = locate(first)
        if i >= done:
            copy(done, i + 1)
            done = i + 1
        push(first, assign(ids[i], label))
        j = locate(last)
        for k in range(max(i + 1, done), j + 1):
            push(key_at(k), assign(ids[k], label))
        done = max(done, j + 1)
        if last >= top:
            done = n
            continue
        k = locate(last + 1)
        if key_at(k) != last + 1:
            push(last + 1, ids[k])
            done = max(done, k + 1)
        else:
            done = max(done, k)
    copy(done, n)
    return out


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


def compile_policy(
    policy: Policy, snapshot: Snapshot, *, today: dt.date | None = None
) -> CompiledPolicy:
    """Compile ``policy`` against ``snapshot`` for the date ``today`` (default: UTC today)."""
    day = today or dt.datetime.now(dt.UTC).date()
    records = snapshot.records
    nrec = len(records)
    cidr_rules = [r for r in (*policy.exceptions, *policy.rules) if r.cidrs is not None]
    v4s, v4i, v4x = snapshot._v4_starts, snapshot._v4_ids, snapshot._v4_index
    v6h, v6l, v6i = snapshot._v6_hi, snapshot._v6_lo, snapshot._v6_ids
    v6x = snapshot._v6_index
    virtual: dict[tuple[int, int], int] = {}
    all_labels: list[list[frozenset[str]]] = []
    if cidr_rules:
        for version in (4, 6):
            pieces, labels = _pieces(cidr_rules, version)
            all_labels.append(labels)
            lab_base = len(all_labels) - 1

            def assign(old: int, label: int, _b: int = lab_base) -> int:
                if old in TUNNEL_BY_ID:
                    return old  # CIDRs match the unwrapped address, not the tunnel prefix
                key = (old, _b * (1 << 32) + label)
                vid = virtual.get(key)
                if vid is None:
                    vid = virtual[key] = nrec + len(virtual)
                return vid

            if version == 4 and pieces:
                base4 = v4s

                def locate4(a: int, s: array[int] = base4) -> int:
                    return bisect_right(s, a) - 1

                v4s, v4i = _carve(
                    (v4s, v4i), base4.__getitem__, lambda a: (a,), locate4, pieces, V4_TOP, assign
                )
                v4x = index16(v4s)
            elif version == 6 and pieces:
                hi0, lo0 = v6h, v6l

                def key6(i: int, h: array[int] = hi0, lo: array[int] = lo0) -> int:
                    return (h[i] << 64) | lo[i]

                def loc6(a: int, h: array[int] = hi0, lo: array[int] = lo0) -> int:
                    return locate6(h, lo, a)

                v6h, v6l, v6i = _carve(
                    (v6h, v6l, v6i),
                    key6,
                    lambda a: (a >> 64, a & MASK64),
                    loc6,
                    pieces,
                    V6_TOP,
                    assign,
                )
                v6x = index16(v6h, 48)
    size = nrec + len(virtual) + TAIL
    table: list[Decision | None] = [None] * size
    plans: list[tuple[Candidate, ...]] = [()] * size
    recs: list[NetworkRecord | None] = [None] * size
    interned: dict[Decision, Decision] = {}
    snap_id = snapshot.snapshot_id
    digest = policy.digest

    def fill(slot: int, base_id: int, label: frozenset[str]) -> None:
        record = records[base_id] if base_id >= 0 else None
        special = SPECIAL_BY_ID.get(base_id)
        hit: Callable[[Rule], bool] = lambda r: r.cidrs is None or r.id in label  # noqa: E731
        cands = address_candidates(policy, record, hit, day)
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
    return CompiledPolicy(
        policy=policy,
        snapshot=snapshot,
        today=day,
        valid_until=future[0] if future else None,
        v4_starts=v4s,
        v4_ids=v4i,
        v4_index=v4x,
        v6_hi=v6h,
        v6_lo=v6l,
        v6_ids=v6i,
        v6_index=v6x,
        table=table,
        plans=plans,
        records=recs,
        signal_weights=dict(policy.signal_weights),
    )


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

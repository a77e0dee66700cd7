"""Counting an audit: every line lands in exactly one bucket, and decisions are grouped late.

A line is *decided* (it named a valid client address), *invalid* (it parsed,
but the address is not one), *unparsed* (not a line of the format, or
oversized), or a *header*. While reading, only cheap C-level counts are kept:
requests per client address, each address's decision, and requests per
(minute, action). The breakdowns per action, rule, country and network kind,
and the top networks, are built once at the end from the distinct addresses
(:meth:`Tally.summary`): a decision is a function of the address, so nothing
per line is needed for them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from geofence.decision import Action, Decision
from geofence.engine import Geofence
from geofence.kinds import kinds_to_names

__all__ = ["Tally", "action_name"]

#: Bin widths (seconds) for the timeline, smallest first; the first giving at most
#: :data:`_MAX_BINS` bins is used.
_BIN_WIDTHS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
_MAX_BINS = 120


class Tally:
    """The running counts of an audit.

    Args:
        examples: Examples kept per failure reason.
    """

    def __init__(self, examples: int = 5) -> None:
        self.examples = examples
        self.lines = 0
        self.headers = 0
        self.untimed = 0
        self.requests: Counter[str] = Counter()
        """Decided requests per client address."""
        self.decision_of: dict[str, Decision] = {}
        """Each client address's decision."""
        self.timeline: Counter[tuple[float | None, int]] = Counter()
        """Decided requests per (minute start, ``id()`` of the decision)."""
        self._decisions: dict[int, Decision] = {}
        """The decisions ``timeline`` counts, by id (keeps them alive, so ids stay unique)."""
        self.timeline_actions: Counter[tuple[float | None, str]] = Counter()
        """Decided requests per (minute start, action name), counted already grouped."""
        self.unparsed: Counter[str] = Counter()
        """Unparsed lines per reason."""
        self.unparsed_examples: dict[str, list[str]] = {}
        self.invalid: Counter[str] = Counter()
        """Lines whose address is invalid, per address text (first 200 characters)."""
        self.client_signals: Counter[str] = Counter()
        """Forwarding-header evidence (``header_untrusted``, ``header_malformed``...) per code."""
        self.client_signal_examples: dict[str, list[str]] = {}
        self.unknown_fields: Counter[str] = Counter()
        """JSON keys and CSV columns that no field name reads, per key (lines)."""
        self.read_problems: list[dict[str, object]] = []
        self.sources: list[dict[str, object]] = []

    # -- while reading ------------------------------------------------------------------------

    def fail(self, reason: str, where: str, text: str) -> None:
        """Count one unparsed line."""
        self.unparsed[reason] += 1
        shown = self.unparsed_examples.setdefault(reason, [])
        if len(shown) < self.examples:
            shown.append(f"{where}: {text}" if text else where)

    def client_signal(self, code: str, where: str, detail: str) -> None:
        """Count one piece of forwarding-header evidence."""
        self.client_signals[code] += 1
        self.signal_example(code, where, detail)

    def wants_signal_example(self, code: str) -> bool:
        """Whether fewer than ``examples`` examples of ``code`` are kept."""
        return len(self.client_signal_examples.get(code, ())) < self.examples

    def signal_example(self, code: str, where: str, detail: str) -> bool:
        """Keep an example of ``code`` unless enough are kept; returns whether more are wanted."""
        shown = self.client_signal_examples.setdefault(code, [])
        if len(shown) < self.examples:
            shown.append(f"{where}: {detail}")
        return len(shown) < self.examples

    def decided(
        self, clients: list[str], decisions: list[Decision], minutes: Iterable[float | None]
    ) -> None:
        """Count decided requests (all three in the same order)."""
        self.requests.update(clients)
        self.decision_of.update(zip(clients, decisions, strict=True))
        # Keyed by id(): hashing an Enum member or a Decision runs Python code.
        ids = list(map(id, decisions))
        self._decisions.update(zip(ids, decisions, strict=True))
        self.timeline.update(zip(minutes, ids, strict=True))

    def timed(self, counts: Iterable[tuple[float | None, str, int]]) -> None:
        """Count requests already grouped per (minute start, action name): (minute, action, n)."""
        timeline = self.timeline_actions
        for minute, action, n in counts:
            timeline[(minute, action)] += n

    # -- at the end ---------------------------------------------------------------------------

    @property
    def decided_count(self) -> int:
        """Requests decided."""
        return self.requests.total()

    def summary(self, gf: Geofence, top: int = 10) -> dict[str, Any]:
        """The JSON-ready summary: totals, breakdowns, top networks, timeline, failures."""
        per_decision: dict[int, list[Any]] = {}  # id -> [decision, requests, addresses]
        for address, n in self.requests.items():
            d = self.decision_of[address]
            entry = per_decision.get(id(d))
            if entry is None:
                per_decision[id(d)] = [d, n, 1]
            else:
                entry[1] += n
                entry[2] += 1
        groups = list(per_decision.values())
        asn_of: dict[str, str] = {}
        non_allow = self._non_allow(gf, top, asn_of)
        return {
            "lines": self.lines,
            "decided": self.decided_count,
            "distinct_addresses": len(self.requests),
            "invalid": self.invalid.total(),
            "unparsed": self.unparsed.total(),
            "headers": self.headers,
            "untimed": self.untimed,
            "snapshot_id": gf.snapshot.snapshot_id,
            "policy_id": gf.policy.id,
            "policy_digest": gf.policy.digest,
            "sources": self.sources,
            "read_problems": self.read_problems,
            "by_action": _breakdown(groups, lambda d: [action_name(d)]),
            "by_rule": _breakdown(groups, lambda d: [d.rule_id or f"({d.outcome})"]),
            "by_country": _breakdown(groups, lambda d: [d.country or "unknown"]),
            "by_subdivision": _breakdown(groups, _subdivision),
            "by_kind": _breakdown(groups, lambda d: kinds_to_names(d.kinds) or ["none"]),
            "shadow": _breakdown(
                groups, lambda d: [d.shadow_action.value] if d.shadow_action else []
            ),
            "denied": _denied(groups, self._denied_asns(asn_of)),
            "map": _map(groups),
            "non_allow": non_allow,
            "timeline": self._timeline(),
            "unparsed_reasons": [
                {"reason": r, "lines": n, "examples": self.unparsed_examples.get(r, [])}
                for r, n in self.unparsed.most_common()
            ],
            "unknown_fields": [
                {"field": k, "lines": n} for k, n in self.unknown_fields.most_common(50)
            ],
            "invalid_examples": [
                {"address": a, "lines": n} for a, n in self.invalid.most_common(self.examples)
            ],
            "client_signals": [
                {"code": c, "lines": n, "examples": self.client_signal_examples.get(c, [])}
                for c, n in self.client_signals.most_common()
            ],
        }

    def _non_allow(self, gf: Geofence, top: int, asn_of: dict[str, str]) -> dict[str, Any]:
        """Per action other than allow: the top networks and ASNs by requests.

        Fills ``asn_of`` with the ASN name (``AS15169``, ``unknown``) of every
        address it looks up.
        """
        snap = gf.snapshot
        nets: dict[str, Counter[tuple[str, str]]] = {}
        net_addresses: dict[str, Counter[tuple[str, str]]] = {}
        asns: dict[str, Counter[str]] = {}
        asn_addresses: dict[str, Counter[str]] = {}
        for address, n in self.requests.items():
            d = self.decision_of[address]
            if d.action is Action.ALLOW:
                continue
            action = action_name(d)
            result = snap.lookup(address)
            record = result.record
            org = (record.as_org or record.provider or "") if record is not None else ""
            key = (str(result.network), org)
            nets.setdefault(action, Counter())[key] += n
            net_addresses.setdefault(action, Counter())[key] += 1
            # The lookup fills the ASN from the snapshot's ASN table (decisions of
            # policies without ASN rules do not carry it).
            number = d.asn or (record.asn if record is not None else None)
            asn = asn_of[address] = f"AS{number}" if number else "unknown"
            asns.setdefault(action, Counter())[asn] += n
            asn_addresses.setdefault(action, Counter())[asn] += 1
        return {
            action: {
                "networks": [
                    {
                        "network": net,
                        "org": org,
                        "requests": n,
                        "addresses": net_addresses[action][(net, org)],
                    }
                    for (net, org), n in nets[action].most_common(top)
                ],
                "asns": [
                    {"asn": asn, "requests": n, "addresses": asn_addresses[action][asn]}
                    for asn, n in asns[action].most_common(top)
                ],
            }
            for action in sorted(nets)
        }

    def _denied_asns(self, asn_of: dict[str, str]) -> dict[tuple[str, str], Counter[str]]:
        """Denied requests per place (country, subdivision) and ASN name."""
        out: dict[tuple[str, str], Counter[str]] = {}
        for address, n in self.requests.items():
            d = self.decision_of[address]
            if d.action is Action.DENY:
                place = (d.country or "unknown", d.subdivision or "")
                out.setdefault(place, Counter())[asn_of[address]] += n
        return out

    def _timeline(self) -> dict[str, Any]:
        """Requests per action in time bins (at most 120 bins)."""
        names = {k: action_name(d) for k, d in self._decisions.items()}
        timed = [(m, names[k], n) for (m, k), n in self.timeline.items() if m is not None]
        timed += [(m, a, n) for (m, a), n in self.timeline_actions.items() if m is not None]
        if not timed:
            return {"width": 0, "bins": []}
        low = min(m for m, _, _ in timed)
        high = max(m for m, _, _ in timed)
        width = next((w for w in _BIN_WIDTHS if (high - low) / w < _MAX_BINS), _BIN_WIDTHS[-1])
        start = low - low % width
        bins: dict[float, dict[str, int]] = {}
        for m, a, n in timed:
            key = start + (m - start) // width * width
            actions = bins.get(key)
            if actions is None:
                actions = bins[key] = {}
            actions[a] = actions.get(a, 0) + n
        return {
            "width": width,
            "bins": [{"start": t, "actions": bins[t]} for t in sorted(bins)],
        }


def _subdivision(d: Decision) -> list[str]:
    return [d.subdivision] if d.subdivision else []


def action_name(d: Decision) -> str:
    """The action as the summary names it (``route:<target>`` for a route)."""
    return f"route:{d.route}" if d.route else d.action.value


def _breakdown(groups: list[list[Any]], keys: Any) -> list[dict[str, Any]]:
    """Requests and distinct addresses per key, most requests first."""
    requests: Counter[str] = Counter()
    addresses: Counter[str] = Counter()
    for d, n, distinct in groups:
        for key in keys(d):
            requests[key] += n
            addresses[key] += distinct
    return [{"key": k, "requests": n, "addresses": addresses[k]} for k, n in requests.most_common()]


def _denied(
    groups: list[list[Any]], asns: dict[tuple[str, str], Counter[str]]
) -> list[dict[str, Any]]:
    """Denied traffic per place (country, subdivision) with its rules and ASNs.

    ``asns``: denied requests per place and ASN name (the addresses' ASNs, which
    the decisions of a policy without ASN rules do not carry).
    """
    places: dict[tuple[str, str], dict[str, Any]] = {}
    for d, n, distinct in groups:
        if d.action is not Action.DENY:
            continue
        key = (d.country or "unknown", d.subdivision or "")
        row = places.setdefault(
            key,
            {
                "country": key[0],
                "subdivision": key[1],
                "requests": 0,
                "addresses": 0,
                "rules": Counter(),
                "asns": asns.get(key, Counter()),
            },
        )
        row["requests"] += n
        row["addresses"] += distinct
        row["rules"][d.rule_id or f"({d.outcome})"] += n
    out = sorted(places.values(), key=lambda r: -r["requests"])
    for row in out:
        row["rules"] = [k for k, _ in row["rules"].most_common(3)]
        row["asns"] = [k for k, _ in row["asns"].most_common(3)]
    return out


def _map(groups: list[list[Any]]) -> list[dict[str, Any]]:
    """Requests and denials per country, placed at the country's representative point.

    The point is :func:`geofence.signals.hints.country_centroid` (from the tz
    database, offline); countries it does not know are left off the map (they stay
    in the tables).
    """
    from geofence.signals.hints import country_centroid

    totals: dict[str, list[int]] = {}
    for d, n, _ in groups:
        if d.country is None:
            continue
        row = totals.setdefault(d.country, [0, 0])
        row[0] += n
        if d.action is Action.DENY:
            row[1] += n
    out = []
    for cc, (requests, denied) in sorted(totals.items()):
        point = country_centroid(cc)
        if point is not None:
            out.append(
                {"country": cc, "lat": point[0], "lon": point[1], "requests": requests,
                 "denied": denied}
            )  # fmt: skip
    return out

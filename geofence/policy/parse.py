"""Load and validate policies from TOML (see ``docs/policy.md`` for the format).

Everything is checked here, when the policy loads, never at request time:
unknown keys, country and subdivision codes (ISO 3166 via ``pycountry``),
network kinds, CIDRs, dates, actions, duplicate ids, unreachable and
self-contradictory rules. Errors are :class:`~geofence.errors.PolicyError`
naming the file, the rule id and the reason.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import os
import re
import tomllib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from geofence.decision import Action, parse_action
from geofence.errors import PolicyError
from geofence.kinds import kinds_from_names
from geofence.policy.groups import BUILTIN_GROUPS
from geofence.policy.model import Policy, Rule, SubjectCondition
from geofence.signals.base import MAX_WEIGHT, check_weight
from geofence.signals.codes import BUILTIN_SIGNAL_CODES, suggest_code

__all__ = ["load_policy", "parse_policy", "preset_names", "preset_path"]

_POLICY_KEYS = {
    "id",
    "version",
    "description",
    "default",
    "on_unresolved",
    "on_disputed",
    "on_unknown",
    "on_reserved",
    "shadow",
}
_RULE_KEYS = {
    "id",
    "action",
    "description",
    "citation",
    "effective_from",
    "effective_to",
    "shadow",
    "jurisdictions",
    "not_jurisdictions",
    "partial_jurisdictions",
    "kinds",
    "asns",
    "cidrs",
    "subject",
    "signals",
    "min_risk",
    "note",
}
_SUBJECT_KEYS = {"nationality", "nationality_not", "account_country", "org_ids", "ids", "verified"}
_TOP_KEYS = {"policy", "groups", "rules", "exceptions", "signal_weights"}
#: ISO 3166 user-assigned codes in common use for places pycountry does not list:
#: XK is Kosovo (used by the European Commission, SWIFT and the IP registries' data).
_USER_ASSIGNED = frozenset({"XK"})
# \Z, not $: "$" also matches before a final newline, and an id like "a\n" would split
# the CLI's and the audit log's lines.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}\Z")
_SIGNAL = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")


def _presets_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent.parent
    # Installed wheels carry the presets as package data; a source checkout has them in data/.
    return [here / "_data" / "policies", here.parent / "data" / "policies"]


def preset_names() -> list[str]:
    """Names of the bundled policy presets."""
    names: set[str] = set()
    for d in _presets_dirs():
        if d.is_dir():
            # NAME.cases.toml beside a preset holds its expected decisions, not a policy.
            names.update(p.stem for p in d.glob("*.toml") if not p.name.endswith(".cases.toml"))
    return sorted(names)


def preset_path(name: str) -> Path:
    """Path of a bundled preset.

    Raises:
        PolicyError: No preset has that name.
    """
    for d in _presets_dirs():
        path = d / f"{name}.toml"
        if path.is_file():
            return path
    raise PolicyError(f"no preset named {name!r}; presets: {', '.join(preset_names()) or 'none'}")


def load_policy(ref: str | os.PathLike[str], *, params: Mapping[str, Any] | None = None) -> Policy:
    """Load a policy from a TOML file or a bundled preset name.

    Args:
        ref: A path to a ``.toml`` file, or a preset name (``"us-ofac-comprehensive"``;
            ``"preset:NAME"`` also works).
        params: Values for ``{name}`` placeholders in a parameterised preset's
            ``[params]`` (e.g. ``{"home": ["US"]}``).

    Raises:
        PolicyError: The file cannot be read or the policy is invalid.
    """
    text_ref = os.fspath(ref)
    path = Path(text_ref)
    if text_ref.startswith("preset:"):
        path = preset_path(text_ref.removeprefix("preset:"))
    elif not path.exists() and "/" not in text_ref and not text_ref.endswith(".toml"):
        path = preset_path(text_ref)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy: {exc.strerror or exc}", source=str(path)) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PolicyError(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} (offset {exc.start}); "
            "TOML files are UTF-8",
            source=str(path),
        ) from None
    return parse_policy(text, source=str(path), params=params)


def parse_policy(
    text: str, *, source: str = "<string>", params: Mapping[str, Any] | None = None
) -> Policy:
    """Parse and validate a policy from TOML text.

    Raises:
        PolicyError: The policy is invalid; the message names source, rule and reason.
    """
    try:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"invalid TOML: {exc}", source=source) from exc
        if "params" in data:
            data = _apply_params(data, params or {}, source)
        elif params:
            raise PolicyError(
                "params were given but the policy declares no [params]", source=source
            )
        return _Parser(source).policy(data)
    except RecursionError:
        # tomllib (and any walk over the values) recurses once per level of nesting.
        raise PolicyError(
            "arrays or tables nested too deeply (a policy needs at most a few levels)",
            source=source,
        ) from None


def _apply_params(data: dict[str, Any], given: Mapping[str, Any], source: str) -> dict[str, Any]:
    declared = data.pop("params")
    if not isinstance(declared, dict):
        raise PolicyError("[params] must be a table of defaults", source=source)
    unknown = set(given) - set(declared)
    if unknown:
        raise PolicyError(
            f"unknown params {sorted(unknown)}; declared: {sorted(declared)}", source=source
        )
    values = {**declared, **given}

    def sub(node: Any) -> Any:
        if isinstance(node, str) and node.startswith("{") and node.endswith("}"):
            key = node[1:-1]
            if key in values:
                return values[key]
        if isinstance(node, dict):
            return {k: sub(v) for k, v in node.items()}
        if isinstance(node, list):
            out: list[Any] = []
            for item in node:
                value = sub(item)
                if isinstance(item, str) and isinstance(value, list):
                    out.extend(value)  # a list param spliced into a list
                else:
                    out.append(value)
            return out
        return node

    result: dict[str, Any] = sub(data)
    return result


def _non_negative(value: object) -> bool:
    """Whether ``value`` is a finite number >= 0 (not a bool; NaN and infinities refused)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


#: Tunnel prefixes whose addresses are decided by the IPv4 address they embed (the
#: mapped prefix has its own message above), with how to find that IPv4 address.
_TUNNEL_PREFIXES: Final = (
    (ipaddress.IPv6Network("64:ff9b::/96"), "NAT64 (RFC 6052)", 96, 0),
    (ipaddress.IPv6Network("2001::/32"), "Teredo (RFC 4380)", None, 0),
    (ipaddress.IPv6Network("2002::/16"), "6to4 (RFC 3056)", 16, 80),
)


def _inside_tunnel(net: ipaddress.IPv6Network) -> str | None:
    """Why an IPv6 network inside a tunnel prefix can never match, or ``None``.

    Addresses there are unwrapped and decided as the IPv4 address they carry
    (see ``docs/policy.md``), so a rule must name that IPv4 network instead.
    """
    for prefix, name, skip, shift in _TUNNEL_PREFIXES:
        if not net.subnet_of(prefix):
            continue
        advice = "name the IPv4 network it carries instead"
        if skip is not None and skip <= net.prefixlen <= skip + 32:
            first = (int(net.network_address) >> shift) & 0xFFFFFFFF
            v4 = ipaddress.IPv4Network((first, net.prefixlen - skip))
            advice = f"write {str(v4)!r} instead"
        return (
            f"lies inside the {name} prefix {prefix}: addresses there are decided as the "
            f"IPv4 address they embed, so it can never match; {advice}"
        )
    return None


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.groups: dict[str, frozenset[str]] = dict(BUILTIN_GROUPS)
        self.custom_signals: frozenset[str] = frozenset()

    def fail(self, message: str, rule_id: str | None = None) -> PolicyError:
        return PolicyError(message, source=self.source, rule_id=rule_id)

    def policy(self, data: dict[str, Any]) -> Policy:
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise self.fail(
                f"unknown top-level keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}"
            )
        head = data.get("policy")
        if not isinstance(head, dict):
            raise self.fail("missing [policy] table (id, default, on_unresolved, ...)")
        unknown = set(head) - _POLICY_KEYS
        if unknown:
            raise self.fail(f"unknown keys in [policy]: {sorted(unknown)}")
        pid = head.get("id")
        if not isinstance(pid, str) or not _ID.match(pid):
            raise self.fail(f"[policy] id must be a short identifier, got {pid!r}")
        groups = data.get("groups", {})
        if not isinstance(groups, dict):
            raise self.fail("[groups] must be a table of name = [codes]")
        for name, codes in groups.items():
            if not _ID.match(name):
                raise self.fail(f"group name {name!r} is not an identifier")
            if not isinstance(codes, list):
                raise self.fail(
                    f"[groups] {name} must be a list of codes or @groups, got {codes!r}"
                )
        pending = dict(groups)
        while pending:  # resolve groups that refer to other groups
            progressed = False
            for name, codes in list(pending.items()):
                refs = [c[1:] for c in codes if isinstance(c, str) and c.startswith("@")]
                if all(r in self.groups or r not in pending for r in refs):
                    self.groups[name] = self.codes(codes, f"groups.{name}", None)
                    del pending[name]
                    progressed = True
            if not progressed:
                raise self.fail(f"groups refer to each other in a cycle: {sorted(pending)}")
        weights = data.get("signal_weights", {})
        if not isinstance(weights, dict) or not all(
            isinstance(k, str) and _SIGNAL.match(k) and check_weight(v) for k, v in weights.items()
        ):
            raise self.fail(
                "[signal_weights] must map signal codes to finite numbers between 0 and "
                f"{MAX_WEIGHT:g}"
            )
        for code in weights:
            guess = suggest_code(code) if code not in BUILTIN_SIGNAL_CODES else None
            if guess is not None:
                raise self.fail(
                    f"[signal_weights]: unknown signal code {code!r}; did you mean {guess!r}? "
                    "(a code of your own must not look like a built-in one)"
                )
        self.custom_signals = frozenset(weights) - BUILTIN_SIGNAL_CODES
        rules = tuple(
            self.rule(r, i, exception=False) for i, r in enumerate(self.list(data, "rules"))
        )
        exceptions = tuple(
            self.rule(r, i, exception=True) for i, r in enumerate(self.list(data, "exceptions"))
        )
        counts = Counter(r.id for r in (*exceptions, *rules))
        dupes = sorted(i for i, n in counts.items() if n > 1)
        if dupes:
            raise self.fail(f"duplicate rule ids {dupes}")
        self.check_reachable(rules)
        shadow = head.get("shadow", False)
        if not isinstance(shadow, bool):
            raise self.fail("[policy] shadow must be true or false")
        return Policy(
            id=pid,
            version=str(head.get("version", "")),
            description=str(head.get("description", "")),
            source=self.source,
            rules=rules,
            exceptions=exceptions,
            default=self.action(head.get("default", "allow"), "default", None),
            on_unresolved=self.action(head.get("on_unresolved", "review"), "on_unresolved", None),
            on_disputed=(
                self.action(head["on_disputed"], "on_disputed", None)
                if "on_disputed" in head
                else None
            ),
            on_unknown=self.action(head.get("on_unknown", "allow"), "on_unknown", None),
            on_reserved=self.action(head.get("on_reserved", "allow"), "on_reserved", None),
            shadow=shadow,
            signal_weights=tuple(sorted((k, float(v)) for k, v in weights.items())),
        )

    def list(self, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
        items = data.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise self.fail(f"{key} must be an array of tables ([[{key}]])")
        return items

    def action(self, value: object, where: str, rule_id: str | None) -> tuple[Action, str | None]:
        try:
            act, route = parse_action(value)  # type: ignore[arg-type]  # checked inside
        except ValueError as exc:
            raise self.fail(f"{where}: {exc}", rule_id) from None
        if route is not None and not _ID.match(route):
            raise self.fail(f"{where}: route target {route!r} is not an identifier", rule_id)
        return act, route

    def codes(self, value: object, where: str, rule_id: str | None) -> frozenset[str]:
        import pycountry

        if not isinstance(value, list) or not value:
            raise self.fail(
                f"{where} must be a non-empty list of ISO 3166 codes or @groups", rule_id
            )
        out: set[str] = set()
        for item in value:
            if not isinstance(item, str):
                raise self.fail(f"{where}: {item!r} is not a string", rule_id)
            code = item.strip()
            if code.startswith("@"):
                group = self.groups.get(code[1:])
                if group is None:
                    raise self.fail(
                        f"{where}: unknown group {code!r}; groups: "
                        f"{', '.join('@' + g for g in sorted(self.groups))}",
                        rule_id,
                    )
                out |= group
                continue
            code = code.upper()
            if len(code) == 2:
                if code not in _USER_ASSIGNED and pycountry.countries.get(alpha_2=code) is None:
                    raise self.fail(
                        f"{where}: unknown country code {item!r} (ISO 3166-1 alpha-2)", rule_id
                    )
            elif pycountry.subdivisions.get(code=code) is None:  # type: ignore[no-untyped-call]
                raise self.fail(f"{where}: unknown subdivision code {item!r} (ISO 3166-2)", rule_id)
            out.add(code)
        return frozenset(out)

    def date(self, value: object, where: str, rule_id: str) -> dt.date | None:
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            raise self.fail(f"{where} must be a date (YYYY-MM-DD), not a date-time", rule_id)
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise self.fail(f"{where} must be a date (YYYY-MM-DD), got {value!r}", rule_id)

    def rule(self, data: dict[str, Any], index: int, *, exception: bool) -> Rule:
        kind = "exceptions" if exception else "rules"
        rid = data.get("id")
        if not isinstance(rid, str) or not _ID.match(rid):
            raise self.fail(f"{kind}[{index}] needs an id (letters, digits, . _ : -), got {rid!r}")
        unknown = set(data) - _RULE_KEYS
        if unknown:
            raise self.fail(f"unknown keys {sorted(unknown)}; allowed: {sorted(_RULE_KEYS)}", rid)
        if "action" not in data and not exception:
            raise self.fail("a rule needs an action", rid)
        act, route = self.action(data.get("action", "allow"), "action", rid)
        start = self.date(data.get("effective_from"), "effective_from", rid)
        end = self.date(data.get("effective_to"), "effective_to", rid)
        if start and end and end <= start:
            raise self.fail(f"effective_to {end} is not after effective_from {start}", rid)
        shadow = data.get("shadow", False)
        if not isinstance(shadow, bool):
            raise self.fail("shadow must be true or false", rid)
        juris = (
            self.codes(data["jurisdictions"], "jurisdictions", rid)
            if "jurisdictions" in data
            else None
        )
        not_juris = (
            self.codes(data["not_jurisdictions"], "not_jurisdictions", rid)
            if "not_jurisdictions" in data
            else None
        )
        partial = (
            self.codes(data["partial_jurisdictions"], "partial_jurisdictions", rid)
            if "partial_jurisdictions" in data
            else None
        )
        if partial is not None and any(len(c) == 2 for c in partial):
            raise self.fail("partial_jurisdictions takes subdivision codes (e.g. UA-14)", rid)
        if juris is not None and not_juris is not None and juris & not_juris:
            raise self.fail(
                f"contradictory: {sorted(juris & not_juris)} are in both jurisdictions and "
                "not_jurisdictions, so the rule can never match",
                rid,
            )
        kinds = None
        if "kinds" in data:
            try:
                kinds = kinds_from_names(data["kinds"])
            except ValueError as exc:
                raise self.fail(str(exc), rid) from None
            if not kinds:
                raise self.fail("kinds must name at least one kind", rid)
        asns = None
        if "asns" in data:
            raw = data["asns"]
            if (
                not isinstance(raw, list)
                or not raw
                or not all(
                    isinstance(a, int) and not isinstance(a, bool) and 0 < a < 2**32 for a in raw
                )
            ):
                raise self.fail("asns must be a non-empty list of AS numbers (1..4294967295)", rid)
            asns = frozenset(raw)
        cidrs = None
        cidr_text: tuple[str, ...] = ()
        if "cidrs" in data:
            cidrs, cidr_text = self.cidrs(data["cidrs"], rid)
        subject = self.subject(data.get("subject", {}), rid)
        signals = None
        if "signals" in data:
            raw = data["signals"]
            if (
                not isinstance(raw, list)
                or not raw
                or not all(isinstance(s, str) and _SIGNAL.match(s) for s in raw)
            ):
                raise self.fail("signals must be a non-empty list of signal codes", rid)
            for code in raw:
                if code not in BUILTIN_SIGNAL_CODES and code not in self.custom_signals:
                    guess = suggest_code(code)
                    hint = f"did you mean {guess!r}? " if guess else ""
                    raise self.fail(
                        f"signals: unknown signal code {code!r}; {hint}a code of your own "
                        "(in Context.signals) must be declared in [signal_weights]",
                        rid,
                    )
            signals = frozenset(raw)
        min_risk = data.get("min_risk")
        if min_risk is not None and not _non_negative(min_risk):
            raise self.fail(f"min_risk must be a finite number >= 0, got {min_risk!r}", rid)
        rule = Rule(
            id=rid,
            action=act,
            route=route,
            description=str(data.get("description", "")),
            citation=str(data.get("citation", "")),
            effective_from=start,
            effective_to=end,
            shadow=shadow,
            jurisdictions=juris,
            not_jurisdictions=not_juris,
            partial_jurisdictions=partial,
            kinds=kinds,
            asns=asns,
            cidrs=cidrs,
            cidr_text=cidr_text,
            subject=subject,
            signals=signals,
            min_risk=float(min_risk) if min_risk is not None else None,
        )
        if not rule.needs_data and not rule.needs_context and rule.cidrs is None:
            raise self.fail(
                "the rule has no conditions, so it matches everything; use the policy's "
                "`default` instead",
                rid,
            )
        if exception and (rule.needs_data or rule.signals is not None or rule.min_risk is not None):
            raise self.fail("exceptions take only cidrs and subject conditions (allow-lists)", rid)
        return rule

    def cidrs(
        self, raw: object, rid: str
    ) -> tuple[tuple[tuple[int, int, int], ...], tuple[str, ...]]:
        if not isinstance(raw, list) or not raw:
            raise self.fail("cidrs must be a non-empty list of networks", rid)
        out: list[tuple[int, int, int]] = []
        text: list[str] = []
        for item in raw:
            if not isinstance(item, str):
                raise self.fail(f"cidrs: {item!r} is not a string", rid)
            try:
                net = ipaddress.ip_network(item.strip(), strict=True)
            except ValueError as exc:
                raise self.fail(f"cidrs: {item!r} is not a valid network ({exc})", rid) from None
            if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(
                ipaddress.IPv6Network("::ffff:0:0/96")
            ):
                raise self.fail(f"cidrs: write IPv4-mapped {item!r} as an IPv4 network", rid)
            if isinstance(net, ipaddress.IPv6Network):
                tunnel = _inside_tunnel(net)
                if tunnel is not None:
                    raise self.fail(f"cidrs: {item!r} {tunnel}", rid)
            out.append((net.version, int(net.network_address), int(net.broadcast_address)))
            text.append(str(net))
        return tuple(out), tuple(text)

    def subject(self, raw: object, rid: str) -> SubjectCondition:
        if not isinstance(raw, dict):
            raise self.fail("subject must be a table", rid)
        unknown = set(raw) - _SUBJECT_KEYS
        if unknown:
            raise self.fail(
                f"unknown subject keys {sorted(unknown)}; allowed: {sorted(_SUBJECT_KEYS)}", rid
            )

        def strings(key: str) -> frozenset[str] | None:
            if key not in raw:
                return None
            value = raw[key]
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, str) for v in value)
            ):
                raise self.fail(f"subject.{key} must be a non-empty list of strings", rid)
            return frozenset(value)

        verified = raw.get("verified")
        if verified is not None and not isinstance(verified, bool):
            raise self.fail("subject.verified must be true or false", rid)
        return SubjectCondition(
            nationality=self.codes(raw["nationality"], "subject.nationality", rid)
            if "nationality" in raw
            else None,
            nationality_not=self.codes(raw["nationality_not"], "subject.nationality_not", rid)
            if "nationality_not" in raw
            else None,
            account_country=self.codes(raw["account_country"], "subject.account_country", rid)
            if "account_country" in raw
            else None,
            org_ids=strings("org_ids"),
            ids=strings("ids"),
            verified=verified,
        )

    def check_reachable(self, rules: tuple[Rule, ...]) -> None:
        """Refuse rules that an earlier rule always pre-empts."""
        seen: dict[str, str] = {}
        for rule in rules:
            conditions = rule.canonical()
            for key in ("id", "action", "route", "shadow"):
                conditions.pop(key)
            key = repr(sorted(conditions.items()))
            if key in seen:
                raise self.fail(
                    f"unreachable: rule {seen[key]!r} has the same conditions and dates and "
                    "comes first",
                    rule.id,
                )
            if not rule.shadow:
                seen[key] = rule.id

"""Export a compiled policy for an edge: choose what to list, add the header, write atomically."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geofence.decision import Action, parse_action
from geofence.errors import GeofenceError, PolicyError
from geofence.export.cidr import cidr_count
from geofence.export.formats import FORMATS, Listing, render
from geofence.export.table import VerdictTable, verdict_table
from geofence.policy.compile import CompiledPolicy, compile_policy
from geofence.policy.model import Policy
from geofence.policy.parse import load_policy
from geofence.snapshot.reader import Snapshot

__all__ = [
    "NGINX_STYLES",
    "EdgeExport",
    "ExportError",
    "compile_for_edge",
    "explain",
    "export",
    "export_table",
    "load_compiled",
    "parse_teredo",
    "write_text_atomic",
]

#: nginx ``geo`` styles: CIDR lines, ``ranges`` for IPv4, or whichever is shorter.
NGINX_STYLES = ("auto", "cidr", "ranges")
_ACTION_NAMES = tuple(a.value for a in Action)


class ExportError(GeofenceError, ValueError):
    """An export cannot be made as asked (unknown format, nothing to list...)."""


@dataclass(frozen=True, slots=True)
class EdgeExport:
    """One rendered export."""

    format: str
    """``nginx``, ``haproxy``, ``nftables``, ``cidr`` or ``json``."""
    text: str
    """The whole output, header included."""
    header: tuple[str, ...]
    """The header lines (without comment markers)."""
    entries: dict[str, tuple[int, int]]
    """Entries per listed value: ``(IPv4, IPv6)``."""
    listing: Listing
    table: VerdictTable

    @property
    def lines(self) -> int:
        """Number of lines of :attr:`text`."""
        return self.text.count("\n")


def load_compiled(
    policy: Policy | str | os.PathLike[str] | CompiledPolicy,
    snapshot: Snapshot | str | os.PathLike[str] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    today: dt.date | None = None,
) -> CompiledPolicy:
    """Load and compile a policy (file, preset or :class:`Policy`) against a snapshot.

    Args:
        policy: A policy, a policy file, a preset name, or an already compiled policy
            (returned as it is).
        snapshot: A snapshot or snapshot file; default: the bundled data.
        params: Parameters of a parameterised preset.
        today: The date rules are compiled for (default: today, UTC).

    Raises:
        PolicyError: The policy is invalid.
        SnapshotError: The snapshot cannot be opened.
    """
    if isinstance(policy, CompiledPolicy):
        return policy
    pol = policy if isinstance(policy, Policy) else load_policy(policy, params=params)
    if snapshot is None:
        snap = Snapshot.default()
    elif isinstance(snapshot, Snapshot):
        snap = snapshot
    else:
        snap = Snapshot.open(snapshot)
    return compile_policy(pol, snap, today=today)


def compile_for_edge(
    policy: Policy | str | os.PathLike[str] | CompiledPolicy,
    snapshot: Snapshot | str | os.PathLike[str] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    today: dt.date | None = None,
) -> CompiledPolicy:
    """:func:`load_compiled`, refusing policies the edge can decide nothing of.

    Raises:
        PolicyError: The policy is invalid, or every rule needs a request context.
        SnapshotError: The snapshot cannot be opened.
    """
    compiled = load_compiled(policy, snapshot, params=params, today=today)
    rules = (*compiled.policy.rules, *compiled.policy.exceptions)
    if rules and all(r.needs_context for r in rules):
        raise PolicyError(
            f"policy {compiled.policy.id!r}: every rule needs a request context "
            f"({', '.join(r.id for r in rules)}); nothing of it can be decided at the edge",
            source=compiled.policy.source,
        )
    return compiled


def _listing(table: VerdictTable, actions: Iterable[str] | None) -> Listing:
    """Which values to list: the requested actions, or all but the most frequent value."""
    keys, v4, v6 = table.by_key()
    blocks = Counter[str]()
    for part in (v4, v6):
        bits = 32 if part.version == 4 else 128
        for first, last, k in part.ranges():
            blocks[keys[k]] += cidr_count(first, last, bits)
    present = [k for k in keys if k in blocks]
    # The value with the most CIDR blocks becomes the default: listing the others is shortest.
    background = max(present, key=lambda k: (blocks[k], k))
    if actions is None:
        listed = [k for k in present if k != background]
    else:
        wanted = [a.strip().lower() for a in actions if a.strip()]
        for item in wanted:
            name, sep, target = item.partition(":")
            if name not in _ACTION_NAMES or (sep and (name != "route" or not target)):
                raise ExportError(
                    f"unknown action {item!r} in --actions; expected "
                    f"{', '.join(_ACTION_NAMES)} or route:<target>"
                )
        listed = [
            k for k in present if k in wanted or (k.startswith("route:") and "route" in wanted)
        ]
    rest = [k for k in present if k not in listed]
    if not rest:
        return Listing(tuple(listed), background, True)
    if len(rest) == 1:
        return Listing(tuple(listed), rest[0], True)
    return Listing(tuple(listed), "other", False)


def _header(
    table: VerdictTable,
    fmt: str,
    listing: Listing,
    entries: Mapping[str, list[int]],
    generated_at: dt.datetime,
) -> list[str]:
    c = table.compiled
    snap, pol = c.snapshot, c.policy
    lines = [
        f"geofence edge export ({fmt}); generated {generated_at.isoformat(timespec='seconds')}",
        f"snapshot {snap.snapshot_id} ({snap.meta.get('name') or '-'}), data date "
        f"{snap.data_date or 'unknown'}",
        f"policy {pol.id} version {pol.version or '-'} digest {pol.digest}, compiled for "
        f"{c.today.isoformat()}"
        + (f" (recompile and export again on {c.valid_until})" if c.valid_until else ""),
    ]
    for value in listing.listed:
        n4, n6 = entries.get(value, [0, 0])
        lines.append(f"listed: {value}: {n4} IPv4 + {n6} IPv6 entries")
    what = "the verdict" if listing.exact_default else "not one of the listed actions"
    lines.append(f"every other address: {listing.default} ({what})")
    lines.append(
        f"Teredo 2001::/32: {table.stated.key} (its client IPv4 address cannot be expressed "
        "as ranges; stated, not decided per address)"
    )
    if not table.expanded:
        lines.append(
            f"6to4 2002::/16, NAT64 64:ff9b::/96, IPv4-mapped ::ffff:0:0/96: {table.stated.key} "
            "too (not expanded; nginx and HAProxy unwrap IPv4-mapped addresses themselves, "
            "HAProxy also 6to4 ones)"
        )
    for rule in table.context_rules:
        lines.append(
            f"not decided at the edge: rule {rule.rule_id} needs {' and '.join(rule.needs)}; "
            f"reached at {rule.ipv4_addresses} IPv4 addresses and "
            f"{rule.ipv6_addresses >> 80} IPv6 /48s, which get the IP-only verdict here "
            "(decide them in the application with context)"
        )
    for source in snap.sources:
        lines.append(
            f"data: {source.name}: {source.attribution or source.name} "
            f"(licence {source.license or 'unknown'})"
        )
    return lines


def export_table(
    table: VerdictTable,
    fmt: str,
    *,
    actions: Iterable[str] | None = None,
    name: str = "geofence",
    nginx_style: str = "auto",
    generated_at: dt.datetime | None = None,
) -> EdgeExport:
    """Render a verdict table in one format.

    Args:
        table: From :func:`geofence.export.verdict_table`.
        fmt: One of :data:`FORMATS`.
        actions: Values to list (``deny``, ``challenge``, ``route`` for every route,
            ``route:<target>``...); default: every value but the most frequent one,
            which map formats give as their default.
        name: Prefix of variable, set and table names (nginx ``$<name>_action``,
            nftables table ``inet <name>``).
        nginx_style: ``auto``, ``cidr`` or ``ranges`` (see :data:`NGINX_STYLES`).
        generated_at: Time written in the header (default: now, UTC).

    Raises:
        ExportError: Unknown format or style, bad name or action, or nothing to list.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if nginx_style not in NGINX_STYLES:
        raise ExportError(f"unknown nginx style {nginx_style!r}; expected {NGINX_STYLES}")
    if not name.isidentifier() or not name.isascii():
        raise ExportError(f"name {name!r} must be letters, digits and underscores")
    listing = _listing(table, actions)
    if not listing.listed:
        pid = table.compiled.policy.id
        if actions is None:
            raise ExportError(
                f"nothing to export: every address gets {listing.default!r} under policy "
                f"{pid!r}; list it explicitly with --actions to export it anyway"
            )
        keys, v4, v6 = table.by_key()
        present = sorted({keys[k] for k in (*v4.keys, *v6.keys)})
        raise ExportError(
            f"nothing to export: no address gets {', '.join(actions)} under policy {pid!r} "
            f"(its verdicts: {', '.join(present)})"
        )
    at = generated_at or dt.datetime.now(dt.UTC).replace(microsecond=0)
    c = table.compiled
    meta: dict[str, object] = {
        "format": fmt,
        "generated_at": at.isoformat(timespec="seconds"),
        "snapshot_id": c.snapshot.snapshot_id,
        "data_date": str(c.snapshot.data_date) if c.snapshot.data_date else None,
        "policy_id": c.policy.id,
        "policy_version": c.policy.version,
        "policy_digest": c.policy.digest,
        "compiled_for": c.today.isoformat(),
        "valid_until": c.valid_until.isoformat() if c.valid_until else None,
        "listed": list(listing.listed),
        "default": listing.default,
        "stated": table.stated.key,
        "tunnels_expanded": table.expanded,
        "context_rules": [
            {"rule_id": r.rule_id, "needs": list(r.needs), "ipv4_addresses": r.ipv4_addresses}
            for r in table.context_rules
        ],
        "attribution": [
            {"source": s.name, "attribution": s.attribution, "license": s.license}
            for s in c.snapshot.sources
        ],
    }
    rendered = render(table, fmt, listing, name=name, nginx_style=nginx_style, meta=meta)
    header = _header(table, fmt, listing, rendered.entries, at) + list(rendered.notes)
    if fmt == "json":
        text = "\n".join(rendered.body) + "\n"
    else:
        text = "\n".join([*(f"# {h}" for h in header), *rendered.body]) + "\n"
    entries = {k: (v[0], v[1]) for k, v in rendered.entries.items()}
    return EdgeExport(fmt, text, tuple(header), entries, listing, table)


def export(
    policy: Policy | str | os.PathLike[str] | CompiledPolicy,
    fmt: str,
    *,
    snapshot: Snapshot | str | os.PathLike[str] | None = None,
    params: Mapping[str, Any] | None = None,
    today: dt.date | None = None,
    actions: Iterable[str] | None = None,
    teredo: str | None = None,
    expand_tunnels: bool = True,
    name: str = "geofence",
    nginx_style: str = "auto",
    generated_at: dt.datetime | None = None,
) -> EdgeExport:
    """Export the IP-only part of a policy for an edge (nginx, HAProxy, nftables, CIDR, JSON).

    Args:
        policy: A policy, a policy file, a preset name or a compiled policy.
        fmt: One of :data:`FORMATS`.
        snapshot: The snapshot (object or file); default: the bundled data.
        params: Parameters of a parameterised preset.
        today: The date rules are compiled for (default: today, UTC).
        actions: See :func:`export_table`.
        teredo: Action for the Teredo prefix (``deny``, ``route:<target>``...);
            default: the most restrictive IPv4 verdict.
        expand_tunnels: See :func:`geofence.export.verdict_table`.
        name: See :func:`export_table`.
        nginx_style: See :func:`export_table`.
        generated_at: See :func:`export_table`.

    Raises:
        ExportError: See :func:`export_table`.
        PolicyError: The policy is invalid or needs a context for every rule.
        SnapshotError: The snapshot cannot be opened.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    compiled = compile_for_edge(policy, snapshot, params=params, today=today)
    t_action, t_route = parse_teredo(teredo)
    table = verdict_table(
        compiled, teredo=t_action, teredo_route=t_route, expand_tunnels=expand_tunnels
    )
    return export_table(
        table,
        fmt,
        actions=actions,
        name=name,
        nginx_style=nginx_style,
        generated_at=generated_at,
    )


def parse_teredo(text: str | None) -> tuple[Action | None, str | None]:
    """Parse the ``--teredo`` action (``None``: the default, the most restrictive verdict).

    Raises:
        ExportError: ``text`` is not an action.
    """
    if text is None:
        return None, None
    try:
        return parse_action(text)
    except ValueError as exc:
        raise ExportError(f"--teredo: {exc}") from None


def explain(table: VerdictTable) -> str:
    """What the edge decides exactly, what it states, and what it cannot decide, in words."""
    c = table.compiled
    keys, v4, v6 = table.by_key()
    lines = [
        f"Policy {c.policy.id} (digest {c.policy.digest}) on snapshot {c.snapshot.snapshot_id}, "
        f"compiled for {c.today}:",
        f"  IPv4: {len(v4.starts)} merged ranges; IPv6: {len(v6.starts)} merged ranges "
        "(tunnel prefixes expanded to the IPv4 verdicts they carry).",
    ]
    share = Counter[str]()
    for first, last, k in v4.ranges():
        share[keys[k]] += last - first + 1
    total = sum(share.values())
    for value, n in share.most_common():
        lines.append(f"  {value}: {n:,} IPv4 addresses ({100 * n / total:.2f}%)")
    lines.append(
        f"  Teredo (2001::/32) is stated as {table.stated.key}: its client address is not "
        "expressible as ranges."
    )
    if not table.expanded:
        lines.append(
            "  6to4, NAT64 and IPv4-mapped prefixes are stated too (tunnels not expanded)."
        )
    if not table.context_rules:
        lines.append("  Every rule is decided from the address alone: the export is exact.")
    for rule in table.context_rules:
        lines.append(
            f"  Rule {rule.rule_id} needs {' and '.join(rule.needs)} (not at the edge): reached "
            f"at {rule.ipv4_addresses:,} IPv4 addresses; the edge gives them the verdict "
            "decide() gives without a context. Decide those requests in the application."
        )
    return "\n".join(lines) + "\n"


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same directory + rename).

    Raises:
        ExportError: The file cannot be written (nothing is left behind).
    """
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

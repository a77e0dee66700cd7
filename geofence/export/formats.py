"""Render a verdict table for an edge: nginx, HAProxy, nftables, CIDR lists, JSON.

Every renderer gets the same :class:`Listing`: the map values (:attr:`Verdict.key`)
to list, and the value every other address gets. A map format lists only those
values and lets the map's default answer the rest; a set format has one set per
listed value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from geofence.export.cidr import address_text, cidr_count, cidr_text, range_cidrs
from geofence.export.table import Partition, VerdictTable
from geofence.snapshot.partition import V4_TOP

__all__ = ["FORMATS", "Listing", "Rendered", "render"]

#: Address regions an edge program unwraps to IPv4 by itself, per format: their
#: IPv6 entries would be redundant (nginx and HAProxy look IPv4-mapped addresses
#: up as IPv4; HAProxy also 6to4 addresses when no IPv6 entry matches).
_MAPPED = (0xFFFF << 32, (0xFFFF << 32) | 0xFFFFFFFF)
_SIXTOFOUR = (0x2002 << 112, ((0x2002 << 112) | ((1 << 112) - 1)))
#: HAProxy also unwraps the deprecated IPv4-compatible ``::a.b.c.d`` (RFC 4291 §2.5.5.1)
#: when no IPv6 entry matches; geofence treats it as reserved, so it is always listed.
_COMPAT = (0, 0xFFFFFFFF)
#: How a CIDR row names the last IPv4 address (nginx wants it bare: see ``_nginx``).
_BROADCAST_CIDR = "255.255.255.255/32"
#: Lines the ``ranges`` style adds to an nginx export (the second ``geo`` and the ``map``).
_RANGES_OVERHEAD = 12


@dataclass(frozen=True, slots=True)
class Listing:
    """Which map values an export lists, and what every other address gets."""

    listed: tuple[str, ...]
    """Map values listed, in table order."""
    default: str
    """The value of addresses not listed (a map's default)."""
    exact_default: bool
    """Whether ``default`` is itself a verdict (else a placeholder, ``other``)."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered body and its entry counts."""

    body: list[str]
    entries: dict[str, list[int]]
    """Entries (lines) per listed value: ``[IPv4, IPv6]``."""
    notes: tuple[str, ...] = ()
    """Format-specific lines for the header (how to use the output)."""


def _clip(first: int, last: int, skip: tuple[tuple[int, int], ...]) -> Iterator[tuple[int, int]]:
    """The parts of ``first..last`` outside the regions ``skip`` (sorted, disjoint)."""
    for lo, hi in skip:
        if last < lo or first > hi:
            continue
        if first < lo:
            yield first, lo - 1
        first = hi + 1
        if first > last:
            return
    yield first, last


def _entries(
    part: Partition,
    keys: tuple[str, ...],
    wanted: set[str],
    skip: tuple[tuple[int, int], ...] = (),
) -> Iterator[tuple[int, int, str]]:
    """``(first, last, value)`` of the listed pieces of a partition, outside ``skip``."""
    for first, last, k in part.ranges():
        value = keys[k]
        if value in wanted:
            yield from ((f, la, value) for f, la in _clip(first, last, skip))


def _cidrs(version: int, pieces: Iterator[tuple[int, int, str]]) -> Iterator[tuple[str, str]]:
    """``(CIDR text, value)`` of the fewest blocks covering each piece."""
    bits = 32 if version == 4 else 128
    for first, last, value in pieces:
        for net, length in range_cidrs(first, last, bits):
            yield cidr_text(version, net, length), value


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _count(entries: dict[str, list[int]], value: str, version: int) -> None:
    entries.setdefault(value, [0, 0])[0 if version == 4 else 1] += 1


def _cidr_lines(
    keys: tuple[str, ...],
    parts: tuple[Partition, ...],
    listing: Listing,
    entries: dict[str, list[int]],
    skip6: tuple[tuple[int, int], ...],
    line: Callable[[str, str], str],
) -> list[str]:
    """One ``line(cidr, value)`` per listed CIDR block of ``parts``, counted in ``entries``."""
    wanted = set(listing.listed)
    out: list[str] = []
    for part in parts:
        skip = skip6 if part.version == 6 else ()
        for text, value in _cidrs(part.version, _entries(part, keys, wanted, skip)):
            out.append(line(text, value))
            _count(entries, value, part.version)
    return out


def _nginx(
    keys: tuple[str, ...],
    parts: tuple[Partition, Partition],
    listing: Listing,
    *,
    name: str,
    style: str,
) -> Rendered:
    """A ``geo`` block (CIDR style) or two plus a ``map`` (``ranges`` style, IPv4 only).

    The IPv6 part is the same in both styles, so ``auto`` compares the IPv4 lines:
    one per CIDR block against one per range plus the extra block and ``map``.
    nginx parses addresses with ``ngx_inet_addr``, whose error value is
    255.255.255.255: a CIDR line can only name it bare (``geo`` accepts that one
    spelling), and a range cannot end there. ``auto`` therefore keeps the CIDR style
    when that address is listed; an explicit ``ranges`` style ends the last range
    one address earlier and says so (that address is never a client's source).
    """
    v4, v6 = parts
    wanted = set(listing.listed)
    broadcast_listed = keys[v4.keys[-1]] in wanted
    if style == "auto":
        blocks = sum(cidr_count(f, la, 32) for f, la, _ in _entries(v4, keys, wanted))
        ranges = sum(1 for _ in _entries(v4, keys, wanted)) + _RANGES_OVERHEAD
        style = "cidr" if blocks <= ranges or broadcast_listed else "ranges"
    default = f"    default {_quote(listing.default)};"
    entries: dict[str, list[int]] = {}
    var = f"${name}_action"

    def row(text: str, value: str) -> str:
        if text == _BROADCAST_CIDR:
            text = "255.255.255.255"
        return f"    {text} {_quote(value)};"

    if style == "cidr":
        rows = _cidr_lines(keys, parts, listing, entries, (_MAPPED,), row)
        body = [f"geo {var} {{", default, *rows, "}"]
        notes = [f"nginx geo (CIDR style): {var} holds the action of the client address."]
    else:
        rows = []
        for first, last, value in _entries(v4, keys, wanted, ((V4_TOP, V4_TOP),)):
            rows.append(row(f"{address_text(4, first)}-{address_text(4, last)}", value))
            _count(entries, value, 4)
        rows6 = _cidr_lines(keys, (v6,), listing, entries, (_MAPPED,), row)
        body = [
            f"geo ${name}_action_v4 {{",
            "    ranges;",
            default,
            *rows,
            "}",
            f"geo ${name}_action_v6 {{",
            default,
            *rows6,
            "}",
            "# `ranges` is IPv4-only in nginx: pick the block by the client's family",
            "# (IPv4-mapped IPv6 addresses are looked up as IPv4 by geo).",
            f"map $remote_addr {var} {{",
            f'    "~^::ffff:[0-9.]+$" ${name}_action_v4;',
            f'    "~:" ${name}_action_v6;',
            f"    default ${name}_action_v4;",
            "}",
        ]
        notes = [f"nginx geo (ranges style for IPv4): {var} holds the action of the client."]
        if broadcast_listed:
            notes.append(
                "nginx ranges cannot name 255.255.255.255 (never a client source): it gets "
                "the default here; --nginx-style cidr lists it."
            )
    if any(v.startswith("route:") for v in listing.listed):
        body += [
            f"map {var} ${name}_route {{",
            '    "~^route:(?<target>.+)$" $target;',
            '    default "";',
            "}",
        ]
        notes.append(f"${name}_route holds the route target of route actions.")
    notes.append("Include at http level; see docs/edge.md for the 451 snippet.")
    return Rendered(body, entries, tuple(notes))


def _haproxy(
    keys: tuple[str, ...], parts: tuple[Partition, Partition], listing: Listing, *, name: str
) -> Rendered:
    """A map file for ``map_ip``; ACL lines to use it go in the header."""
    entries: dict[str, list[int]] = {}
    v4, v6 = parts
    body = _cidr_lines(keys, (v4,), listing, entries, (), lambda t, v: f"{t} {v}")
    # IPv4-compatible addresses: HAProxy would look them up as IPv4, so every piece
    # there is listed, unlisted ones with the default value.
    wanted = set(listing.listed)
    for first, last, k in v6.ranges():
        if first > _COMPAT[1]:
            break
        value = keys[k] if keys[k] in wanted else listing.default
        for text, val in _cidrs(6, iter([(first, min(last, _COMPAT[1]), value)])):
            body.append(f"{text} {val}")
            _count(entries, val, 6)
    skip = (_COMPAT, _MAPPED, _SIXTOFOUR)
    body += _cidr_lines(keys, (v6,), listing, entries, skip, lambda t, v: f"{t} {v}")
    var = f"txn.{name}_action"
    notes = (
        "HAProxy map for map_ip. In a frontend (path to this file):",
        f"  http-request set-var({var}) src,map_ip(/etc/haproxy/{name}.map,{listing.default})",
        f"  http-request deny deny_status 451 if {{ var({var}) -m str deny }}",
        "HAProxy unwraps IPv4-mapped and 6to4 sources to IPv4 itself; they are not listed.",
    )
    return Rendered(body, entries, notes)


def _set_name(value: str, version: int) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", value) + f"_v{version}"


def _nftables(
    keys: tuple[str, ...], parts: tuple[Partition, Partition], listing: Listing, *, name: str
) -> Rendered:
    """Named interval sets per value and family, replaced in one ``nft -f`` transaction."""
    entries: dict[str, list[int]] = {}
    table = f"inet {name}"
    body = [f"add table {table}"]
    for value in listing.listed:
        for part in parts:
            family = "ipv4_addr" if part.version == 4 else "ipv6_addr"
            set_name = _set_name(value, part.version)
            body.append(f"add set {table} {set_name} {{ type {family}; flags interval; }}")
            body.append(f"flush set {table} {set_name}")
            members = [t for t, _ in _cidrs(part.version, _entries(part, keys, {value}))]
            entries.setdefault(value, [0, 0])[0 if part.version == 4 else 1] += len(members)
            if members:
                body.append(f"add element {table} {set_name} {{")
                body.extend(f"    {m}," for m in members)
                body.append("}")
    sets = ", ".join(f"@{_set_name(v, 4)}/@{_set_name(v, 6)}" for v in listing.listed)
    notes = (
        f"nftables: `nft -f` this file; it creates table {table} if needed and replaces the",
        f"sets {sets} in one transaction. Match with e.g.",
        f"  ip saddr @{_set_name(listing.listed[0], 4)} drop",
    )
    return Rendered(body, entries, notes)


def _cidr(keys: tuple[str, ...], parts: tuple[Partition, Partition], listing: Listing) -> Rendered:
    """Plain CIDR lists, one block per listed value."""
    entries: dict[str, list[int]] = {}
    body: list[str] = []
    many = len(listing.listed) > 1
    for value in listing.listed:
        if many:
            body.append(f"# == {value} ==")
        for part in parts:
            for text, _ in _cidrs(part.version, _entries(part, keys, {value})):
                body.append(text)
                _count(entries, value, part.version)
    return Rendered(body, entries)


def _json_body(table: VerdictTable, listing: Listing, meta: dict[str, object]) -> Rendered:
    """Merged ranges with action, route and rule id; ``meta`` carries the header fields."""
    entries: dict[str, list[int]] = {}
    wanted = set(listing.listed)
    rows: list[str] = []
    for part in (table.v4, table.v6):
        for first, last, k in part.ranges():
            verdict = table.verdicts[k]
            if verdict.key not in wanted:
                continue
            bits = 32 if part.version == 4 else 128
            row = {
                "first": address_text(part.version, first),
                "last": address_text(part.version, last),
                "cidrs": [
                    cidr_text(part.version, n, ln) for n, ln in range_cidrs(first, last, bits)
                ],
                "action": verdict.action.value,
                "route": verdict.route,
                "rule_id": verdict.rule_id,
                "outcome": verdict.outcome,
            }
            rows.append(json.dumps(row, separators=(",", ":")))
            _count(entries, verdict.key, part.version)
    meta = {**meta, "entries": {k: {"ipv4": a, "ipv6": b} for k, (a, b) in entries.items()}}
    head = json.dumps(meta, indent=2, ensure_ascii=False)
    body = ['{"meta": ' + head + ",", ' "ranges": [']
    body += [f"  {r}," for r in rows[:-1]] + [f"  {r}" for r in rows[-1:]]
    body.append("]}")
    return Rendered(body, entries)


#: Supported formats.
FORMATS = ("nginx", "haproxy", "nftables", "cidr", "json")


def render(
    table: VerdictTable,
    fmt: str,
    listing: Listing,
    *,
    name: str,
    nginx_style: str,
    meta: dict[str, object],
) -> Rendered:
    """Render the body of one format (the header is added by the caller, except for JSON)."""
    if fmt == "json":
        return _json_body(table, listing, meta)
    keys, v4, v6 = table.by_key()
    parts = (v4, v6)
    if fmt == "nginx":
        return _nginx(keys, parts, listing, name=name, style=nginx_style)
    if fmt == "haproxy":
        return _haproxy(keys, parts, listing, name=name)
    if fmt == "nftables":
        return _nftables(keys, parts, listing, name=name)
    return _cidr(keys, parts, listing)

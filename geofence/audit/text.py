"""The audit summary as plain text for a terminal."""

from __future__ import annotations

from typing import Any

__all__ = ["render_text"]


def _table(title: str, rows: list[dict[str, Any]], top: int) -> list[str]:
    if not rows:
        return []
    width = max(len(str(r["key"])) for r in rows[:top])
    out = [f"{title}:", f"  {'':<{width}}  {'requests':>10}  {'addresses':>10}"]
    for r in rows[:top]:
        out.append(f"  {r['key']!s:<{width}}  {r['requests']:>10,}  {r['addresses']:>10,}")
    if len(rows) > top:
        out.append(f"  ... {len(rows) - top} more")
    return [*out, ""]


def render_text(summary: dict[str, Any], top: int = 10) -> str:
    """Totals, breakdowns, top networks per non-allow action, signals and failures."""
    s = summary
    lines = [
        f"Audit of {s['lines']:,} lines against policy {s['policy_id']} @ {s['policy_digest']}, "
        f"snapshot {s['snapshot_id']}",
        f"  decided: {s['decided']:,} requests from {s['distinct_addresses']:,} addresses; "
        f"invalid address: {s['invalid']:,}; unparsed: {s['unparsed']:,}"
        + (f"; header lines: {s['headers']:,}" if s["headers"] else "")
        + (f"; without a usable time: {s['untimed']:,}" if s["untimed"] else ""),
        "",
    ]
    lines += _table("By action", s["by_action"], top)
    lines += _table("By rule (or outcome)", s["by_rule"], top)
    lines += _table("By country", s["by_country"], top)
    lines += _table("By subdivision", s["by_subdivision"], top)
    lines += _table("By network kind", s["by_kind"], top)
    lines += _table("Shadow mode would have done", s["shadow"], top)
    for action, detail in s["non_allow"].items():
        lines.append(f"Top networks, {action}:")
        for n in detail["networks"][:top]:
            org = f" ({n['org']})" if n["org"] else ""
            lines.append(
                f"  {n['network']}{org}: {n['requests']:,} requests, {n['addresses']:,} addresses"
            )
        lines.append(f"Top ASNs, {action}:")
        for a in detail["asns"][:top]:
            lines.append(f"  {a['asn']}: {a['requests']:,} requests, {a['addresses']:,} addresses")
        lines.append("")
    work = s.get("workarounds")
    if work:
        lines.append(
            f"Workaround signals ({work['requests']:,} requests of {work['subjects']:,} subjects "
            "replayed through account history):"
        )
        for code, detail in work["signals"].items():
            lines.append(
                f"  {code}: {detail['events']:,} requests, {detail['subjects']:,} subjects"
            )
            for e in detail["examples"][:3]:
                lines.append(f"    e.g. {e['subject']} from {e['address']}: {e['detail']}")
        lines.append("")
    if s["client_signals"]:
        lines.append("Forwarding headers (X-Forwarded-For through the trusted-proxy setup):")
        for c in s["client_signals"]:
            lines.append(f"  {c['code']}: {c['lines']:,} lines")
            for e in c["examples"][:2]:
                lines.append(f"    e.g. {e}")
        lines.append("")
    if s["invalid_examples"]:
        lines.append("Invalid client addresses (most frequent):")
        for e in s["invalid_examples"]:
            lines.append(f"  {e['address']!r}: {e['lines']:,} lines")
        lines.append("")
    if s["unknown_fields"]:
        shown = ", ".join(f"{u['field']} ({u['lines']:,})" for u in s["unknown_fields"][:top])
        lines += ["JSON/CSV fields no option reads (lines): " + shown, ""]
    if s["unparsed_reasons"]:
        lines.append("Unparsed lines:")
        for r in s["unparsed_reasons"]:
            lines.append(f"  {r['reason']}: {r['lines']:,}")
            for e in r["examples"][:3]:
                lines.append(f"    {e}")
        lines.append("")
    for p in s["read_problems"]:
        lines.append(
            f"Read error: {p['source']} stopped after line {p['after_line']:,}: {p['reason']}"
        )
    return "\n".join(lines).rstrip() + "\n"

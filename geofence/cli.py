"""The ``geofence`` command line: lookups, decisions, policy checks and data tooling.

Errors go to stderr with exit status 2 (usage or bad input) or 1 (a check
failed); results go to stdout. Addresses can be given as arguments or, with
``-`` or none at all on a pipe, one per line on stdin.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TextIO

from geofence.errors import GeofenceError, InvalidAddressError, SnapshotError

if TYPE_CHECKING:
    from geofence.decision import Decision

__all__ = ["main"]


def _addresses(args: Sequence[str], stdin: TextIO) -> Iterator[str]:
    if not args or list(args) == ["-"]:
        if not args and stdin.isatty():
            raise SystemExit("geofence: give addresses as arguments or on stdin (one per line)")
        for raw in stdin:
            line = raw.strip()
            if line and not line.startswith("#"):
                yield line
        return
    yield from args


def _open_snapshot(path: str | None) -> object:
    from geofence.snapshot.reader import Snapshot

    return Snapshot.open(path) if path else Snapshot.default()


def _max_age(args: argparse.Namespace, snap: object) -> None:
    from geofence.snapshot.reader import Snapshot

    assert isinstance(snap, Snapshot)
    if getattr(args, "max_age_days", None) is not None:
        snap.check_age(dt.timedelta(days=args.max_age_days), error=args.stale == "error")


def cmd_lookup(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence lookup IP...``: location, network kind and provenance."""
    from geofence.snapshot.reader import Snapshot

    snap = _open_snapshot(args.snapshot)
    assert isinstance(snap, Snapshot)
    _max_age(args, snap)
    status = 0
    for text in _addresses(args.ips, sys.stdin):
        try:
            res = snap.lookup(text)
        except InvalidAddressError as exc:
            print(f"geofence: {exc}", file=err)
            status = 2
            continue
        rec = res.record
        data: dict[str, object] = {
            "ip": text,
            "address": res.address.text,
            "network": str(res.network),
            "tunnel": res.address.tunnel.value if res.address.tunnel else None,
            "special": res.address.special.value if res.address.special else None,
            "found": rec is not None,
            **(rec.as_dict() if rec else {}),
            "snapshot_id": snap.snapshot_id,
        }
        if args.json:
            print(json.dumps(data, separators=(",", ":")), file=out)
            continue
        if res.address.special is not None:
            what = f"reserved ({res.address.special.value}), not looked up in the data"
        elif rec is None:
            what = "not in the data (unknown)"
        else:
            kinds = ", ".join(rec.as_dict()["kinds"]) or "unknown kind"  # type: ignore[arg-type]
            where = rec.subdivision or rec.country or "unknown location"
            extra = f", {rec.provider}" if rec.provider else ""
            extra += f", AS{rec.asn}" if rec.asn else ""
            what = f"{where}; {kinds}{extra}; sources: {', '.join(rec.sources)}"
        tunnel = f" (via {res.address.tunnel.value})" if res.address.tunnel else ""
        print(f"{text}{tunnel}: {what} [{res.network}]", file=out)
    if not args.json:
        print(
            f"-- snapshot {snap.snapshot_id}, data date {snap.data_date}; "
            + "; ".join(f"{s.name}: {s.attribution or s.license}" for s in snap.sources),
            file=out,
        )
    return status


def _engine(args: argparse.Namespace) -> object:
    from geofence.engine import Geofence

    params = json.loads(args.params) if getattr(args, "params", None) else None
    policy: object = args.policy
    if params is not None:
        from geofence.policy.parse import load_policy

        policy = load_policy(args.policy, params=params)
    return Geofence(args.snapshot, policy)  # type: ignore[arg-type]


def _context(args: argparse.Namespace) -> object:
    from geofence.context import Context, Subject

    subject = None
    if args.subject:
        try:
            data = json.loads(args.subject)
        except json.JSONDecodeError as exc:
            raise GeofenceError(f"--subject is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise GeofenceError("--subject must be a JSON object")
        try:
            subject = Subject.from_mapping(data)
        except ValueError as exc:
            raise GeofenceError(f"--subject: {exc}") from exc
    if subject is None and not args.timezone and not args.accept_language:
        return None
    return Context(subject=subject, timezone=args.timezone, accept_language=args.accept_language)


class _JsonLines:
    """``decide --json`` lines, each shared decision serialised once.

    :meth:`Decision.to_json` builds a dict of every field and encodes it per
    call (about 60 µs, most of it naming the network kinds). Decisions without
    context are shared objects, so each one's line is rendered once with
    markers in place of ``address`` and ``ts`` and then filled in per address.
    The result is character for character what ``to_json`` gives (tested).
    """

    _ADDRESS = "\x00address"
    _TS = "\x00ts"

    def __init__(self) -> None:
        self._templates: dict[int, tuple[object, tuple[str, str, str], bool]] = {}

    def line(self, d: Decision, address: str, at: float) -> str:
        """The audit line of ``d`` for ``address`` at Unix time ``at``, newline included."""
        if d.address is not None:  # made for this request (context): not shared
            return d.to_json(address=address, at=at) + "\n"
        entry = self._templates.get(id(d))
        if entry is None or entry[0] is not d:
            entry = (d, *self._template(d))
            self._templates[id(d)] = entry
        (head, middle, tail), address_first = entry[1], entry[2]
        a, t = json.dumps(address), repr(round(at, 3))
        return f"{head}{a}{middle}{t}{tail}\n" if address_first else f"{head}{t}{middle}{a}{tail}\n"

    def _template(self, d: Decision) -> tuple[tuple[str, str, str], bool]:
        data = d.as_dict(address=self._ADDRESS, ts=self._TS)
        text = json.dumps(data, separators=(",", ":"), sort_keys=True, default=str)
        marks = json.dumps(self._ADDRESS), json.dumps(self._TS)
        first, second = sorted(marks, key=text.index)
        head, rest = text.split(first, 1)
        middle, tail = rest.split(second, 1)
        return (head, middle, tail), first == marks[0]


def cmd_decide(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence decide IP... --policy P``: one decision per address."""
    from geofence.context import Context
    from geofence.engine import Geofence

    if args.policy is None:
        # Never silently: an allow-all answer must not pass for a policy's.
        notice = "no --policy given; deciding with allow-all (allows every address)"
        print(f"geofence: {notice}", file=err)
        args.policy = "allow-all"
    gf = _engine(args)
    assert isinstance(gf, Geofence)
    ctx = _context(args)
    status = 0
    lines = _JsonLines()
    for text in _addresses(args.ips, sys.stdin):
        try:
            d = gf.decide(text, ctx if isinstance(ctx, Context) else None)
        except InvalidAddressError as exc:
            print(f"geofence: {exc}", file=err)
            status = 2
            continue
        if args.explain:
            print(d.with_address(text).explain() if d.address is None else d.explain(), file=out)
            print(file=out)
        elif args.json:
            out.write(lines.line(d, text, time.time()))
        else:
            route = f" -> {d.route}" if d.route else ""
            reasons = ", ".join(d.reasons)
            print(f"{text}: {d.action.value}{route} ({reasons}) [policy {d.policy_id}]", file=out)
    return status


def cmd_explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence explain IP...``: decisions in plain words."""
    args.explain = True
    args.json = False
    return cmd_decide(args, out, err)


def cmd_audit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence audit LOG... --policy P``: decide every line of access logs, summarise."""
    from geofence.audit import AuditOptions, FieldNames, run_audit
    from geofence.audit.progress import ProgressBar, throughput_line
    from geofence.audit.run import collect_less, without_pandas
    from geofence.audit.text import render_text
    from geofence.engine import Geofence
    from geofence.signals.proxy import TrustedProxies

    gf = _engine(args)
    assert isinstance(gf, Geofence)
    options = AuditOptions(
        format=args.format,
        fields=FieldNames.with_overrides(
            ip=args.ip_field, xff=args.xff_field, time=args.time_field, user=args.user_field
        ),
        trusted=TrustedProxies(cidrs=args.trusted_proxies or (), hops=args.trusted_hops),
        history=not args.no_history,
        examples=args.examples,
        vectorised=False if args.per_line else None,
    )
    bar = ProgressBar(err, enabled=not args.quiet)
    started = time.perf_counter()
    try:
        with collect_less(), without_pandas():
            summary = run_audit(gf, args.logs, options, progress=bar)
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    if args.report:
        from geofence.audit.report import write_report

        write_report(summary, args.report)
    if args.json:
        print(json.dumps(summary, indent=2, default=str), file=out)
    else:
        out.write(render_text(summary, top=args.top))
        if args.report:
            print(f"report: {args.report}", file=out)
    print(throughput_line(summary["lines"], elapsed), file=err)
    for problem in summary["read_problems"]:
        print(
            f"geofence: {problem['source']}: stopped after line {problem['after_line']}: "
            f"{problem['reason']}",
            file=err,
        )
    return 1 if summary["read_problems"] else 0


def cmd_policy_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence policy check FILE...``: validate policies (and compile them)."""
    from geofence.policy.parse import load_policy, preset_names

    if args.list:
        for name in preset_names():
            print(name, file=out)
        return 0
    status = 0
    for ref in args.files:
        try:
            params = json.loads(args.params) if args.params else None
            pol = load_policy(ref, params=params)
        except GeofenceError as exc:
            print(f"geofence: {exc}", file=err)
            status = 1
            continue
        print(
            f"{ref}: ok — policy {pol.id!r} version {pol.version or '-'}, "
            f"{len(pol.rules)} rules, {len(pol.exceptions)} exceptions, digest {pol.digest}",
            file=out,
        )
    return status


def _params(args: argparse.Namespace) -> dict[str, object] | None:
    if not getattr(args, "params", None):
        return None
    params = json.loads(args.params)
    if not isinstance(params, dict):
        raise GeofenceError("--params must be a JSON object")
    return params


def _date(args: argparse.Namespace) -> dt.date | None:
    if not getattr(args, "date", None):
        return None
    try:
        return dt.date.fromisoformat(args.date)
    except ValueError as exc:
        raise GeofenceError(f"--date {args.date!r}: expected YYYY-MM-DD") from exc


def cmd_export(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence export FORMAT --policy P``: the policy's IP-only verdicts for an edge."""
    from geofence.export import compile_for_edge, explain, export_table, verdict_table
    from geofence.export.api import ExportError, parse_teredo, write_text_atomic
    from geofence.export.formats import FORMATS

    if args.format not in FORMATS:
        raise ExportError(
            f"unknown export format {args.format!r}; expected one of {', '.join(FORMATS)}"
        )
    compiled = compile_for_edge(args.policy, args.snapshot, params=_params(args), today=_date(args))
    t_action, t_route = parse_teredo(args.teredo)
    table = verdict_table(
        compiled,
        teredo=t_action,
        teredo_route=t_route,
        expand_tunnels=args.tunnels == "expand",
    )
    if args.explain:
        print(explain(table), end="", file=out)
        if not args.output:
            return 0
    actions = args.actions.split(",") if args.actions else None
    result = export_table(
        table, args.format, actions=actions, name=args.name, nginx_style=args.nginx_style
    )
    if args.output:
        write_text_atomic(result.text, args.output)
        counts = ", ".join(f"{k} {a}+{b}" for k, (a, b) in result.entries.items())
        print(f"wrote {args.output}: {result.lines:,} lines ({counts})", file=err)
    else:
        out.write(result.text)
    return 0


def cmd_policy_diff(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence policy diff OLD NEW`` or ``--data OLD.gfs NEW.gfs``: verdict changes."""
    from geofence.export import diff, load_compiled

    today = _date(args)
    if args.data:
        if len(args.refs) != 1:
            raise GeofenceError(
                "with --data OLD NEW give one policy: policy diff POLICY --data ..."
            )
        old = load_compiled(args.refs[0], args.data[0], params=_params(args), today=today)
        new = load_compiled(args.refs[0], args.data[1], params=_params(args), today=today)
    else:
        if len(args.refs) != 2:
            raise GeofenceError("give two policies (policy diff OLD NEW), or --data OLD NEW")
        old = load_compiled(args.refs[0], args.snapshot, today=today)
        new = load_compiled(args.refs[1], old.snapshot, today=today)
    result = diff(old, new, top=args.top)
    out.write(result.to_json() + "\n" if args.json else result.table())
    return 0


def cmd_policy_test(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence policy test POLICY CASES.toml``: expected decisions; exit 1 on a failure."""
    from geofence.export import run_cases

    results = run_cases(
        args.policy, args.cases, snapshot=args.snapshot, params=_params(args), today=_date(args)
    )
    failed = [r for r in results if not r.passed]
    for r in results:
        if not r.passed or args.verbose:
            print(r.report(), file=out)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed ({args.cases})", file=out)
    return 1 if failed else 0


def cmd_data_info(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence data info [FILE]``: provenance, licences and age of a snapshot."""
    from geofence.snapshot.reader import Snapshot

    snap = _open_snapshot(args.file)
    assert isinstance(snap, Snapshot)
    if args.verify:
        snap.verify()
    age = snap.age()
    today = dt.datetime.now(dt.UTC).date()
    n4, n6 = snap.range_counts
    if args.json:
        print(
            json.dumps(
                {
                    "file": snap.origin,
                    "snapshot_id": snap.snapshot_id,
                    "digest": snap.digest,
                    "age_days": age.days if age else None,
                    "source_age_days": {
                        s.name: (today - s.data_date).days if s.data_date else None
                        for s in snap.sources
                    },
                    **snap.meta,
                },
                indent=2,
            ),
            file=out,
        )
    else:
        print(f"Snapshot {snap.snapshot_id}  ({snap.origin})", file=out)
        print(f"  name:       {snap.meta.get('name') or '-'}", file=out)
        print(f"  built:      {snap.meta.get('built_at')} by {snap.meta.get('built_by')}", file=out)
        age_text = f"{age.days} days old" if age is not None else "undated"
        print(f"  data date:  {snap.data_date} ({age_text})", file=out)
        print(f"  records:    {len(snap.records):,}; segments: {n4:,} IPv4, {n6:,} IPv6", file=out)
        print(f"  digest:     sha256:{snap.digest}", file=out)
        for s in snap.sources:
            print(f"  source {s.name} ({s.format}, version {s.version or '-'})", file=out)
            print(f"    licence:     {s.license or '-'}", file=out)
            print(f"    attribution: {s.attribution or '-'}", file=out)
            if s.url:
                print(f"    url:         {s.url}", file=out)
            source_age = (today - s.data_date).days if s.data_date else None
            aged = f" ({source_age} days old)" if source_age is not None else ""
            print(f"    data date:   {s.data_date or '-'}{aged}", file=out)
    if args.max_age_days is not None and age is not None and age.days > args.max_age_days:
        print(
            f"geofence: data is {age.days} days old (maximum {args.max_age_days}); "
            "run `geofence data update`",
            file=err,
        )
        return 1
    return 0


class _Progress:
    """Build progress on a terminal: one live status line; silent when stderr is not a terminal."""

    def __init__(self, err: TextIO, quiet: bool) -> None:
        self._err = err
        self._live = not quiet and err.isatty()
        self._start = time.monotonic()
        self._open = False  # a status line is shown and not ended

    @property
    def live(self) -> bool:
        """Whether messages are shown (a terminal, not --quiet)."""
        return self._live

    def __call__(self, message: str) -> None:
        """Show ``message``; counters ("...: 1,000,000 entries") overwrite each other."""
        if not self._live:
            return
        line = f"[{time.monotonic() - self._start:6.1f}s] {message}"
        counter = message.startswith("  ") and message.endswith(" entries")
        # \r and erase-line keep the counter on one line, like a progress bar.
        print(f"\r\x1b[K{line}", end="" if counter else "\n", file=self._err, flush=True)
        self._open = counter

    def close(self) -> None:
        """End a status line left open."""
        if self._open:
            print(file=self._err, flush=True)
            self._open = False


def _build_report(result: object, progress: _Progress, err: TextIO) -> None:
    """The skipped entries and the region mapping: shown live on a terminal, else printed here."""
    from geofence.snapshot.build import BuildResult

    assert isinstance(result, BuildResult)
    progress.close()
    if progress.live:
        return  # the builder already said it through the progress line
    for line in [*result.skipped.summary(), *result.regions.summary()]:
        print(f"geofence: {line}", file=err)


def _check_output_dir(output: str) -> None:
    """Refuse an output path whose directory is missing before any work is done.

    Otherwise the atomic write fails at the very end, naming its temporary file.
    """
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise SnapshotError(f"{output}: cannot write the snapshot: no directory {parent}")


def _cli_words(message: str) -> str:
    """Library advice in command-line words (the builder's guard says ``force=True``)."""
    return message.replace("pass force=True", "pass --force")


def cmd_data_build(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence data build --source KIND:PATH ... -o FILE``."""
    from geofence.snapshot.build import compile_snapshot, write_atomic
    from geofence.sources import open_source

    _check_output_dir(args.output)
    sources = [open_source(spec) for spec in args.source]
    priority = json.loads(args.field_priority) if args.field_priority else None
    progress = _Progress(err, args.quiet)
    try:
        result = compile_snapshot(
            sources,
            field_priority=priority,
            previous=args.previous or (args.output if os.path.exists(args.output) else None),
            force=args.force,
            strict=args.strict,
            progress=progress,
            name=args.name or "",
        )
    finally:
        progress.close()
    _build_report(result, progress, err)
    write_atomic(result.data, args.output)
    stats = result.stats
    print(
        f"wrote {args.output} ({len(result.data):,} bytes; {stats.records:,} records, "
        f"{stats.v4_ranges:,} IPv4 and {stats.v6_ranges:,} IPv6 ranges; "
        f"{result.skipped.total():,} entries skipped)",
        file=out,
    )
    return 0


def cmd_data_update(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence data update (--source KIND:URL ... -o FILE | --recipe default)``: refresh."""
    from geofence.snapshot.update import update_default, update_snapshot

    progress = _Progress(err, args.quiet)
    try:
        if args.recipe is not None:
            if args.source:
                raise GeofenceError("give either --recipe or --source, not both")
            target, data = update_default(output=args.output, force=args.force, progress=progress)
            print(f"updated {target} from the default recipe ({len(data):,} bytes)", file=out)
            return 0
        if not args.source or not args.output:
            raise GeofenceError("data update needs --source KIND:URL ... and -o FILE, or --recipe")
        _check_output_dir(args.output)
        update_snapshot(
            args.source,
            output=args.output,
            force=args.force,
            strict=args.strict,
            timeout=args.timeout,
            progress=progress,
        )
    finally:
        progress.close()
    print(f"updated {args.output}", file=out)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="geofence",
        description="Jurisdiction rules for API requests: lookups, decisions, data tooling.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def snap_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("--snapshot", help="snapshot file (default: the bundled data)")
        q.add_argument("--max-age-days", type=int, help="warn when the data is older")
        q.add_argument("--stale", choices=("warn", "error"), default="warn")

    def source_opts(q: argparse.ArgumentParser, metavar: str, hlp: str) -> None:
        q.add_argument("--source", action="append", required=True, metavar=metavar, help=hlp)
        q.add_argument("-o", "--output", required=True)

    q = sub.add_parser("lookup", help="where an address is and what network it is")
    q.add_argument("ips", nargs="*", help="addresses (or - / stdin)")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    snap_opts(q)
    q.set_defaults(func=cmd_lookup)

    for name, func, hlp in (
        ("decide", cmd_decide, "what the policy says about addresses"),
        ("explain", cmd_explain, "decisions in plain words"),
    ):
        q = sub.add_parser(name, help=hlp)
        q.add_argument("ips", nargs="*", help="addresses (or - / stdin)")
        q.add_argument(
            "--policy", help="policy file or preset name (default: allow-all, with a notice)"
        )
        q.add_argument("--params", help="JSON params for a parameterised preset")
        q.add_argument("--subject", help='subject JSON, e.g. {"nationality": ["US"]}')
        q.add_argument("--timezone", help="client IANA time zone")
        q.add_argument("--accept-language", help="client Accept-Language header")
        if name == "decide":
            q.add_argument("--json", action="store_true", help="one JSON audit line each")
            q.add_argument("--explain", action="store_true", help="plain-words explanation")
        snap_opts(q)
        q.set_defaults(func=func)

    q = sub.add_parser("audit", help="decide every line of access logs and summarise")
    q.add_argument("logs", nargs="+", help="log files (plain, .gz, .zst) or - for stdin")
    q.add_argument("--policy", required=True, help="policy file or preset name")
    q.add_argument("--params", help="JSON params for a parameterised preset")
    q.add_argument(
        "--format", default="auto", choices=("auto", "nginx", "combined", "jsonl", "csv")
    )
    q.add_argument("--ip-field", help="JSON/CSV key of the peer address")
    q.add_argument("--xff-field", help="JSON/CSV key of the X-Forwarded-For value")
    q.add_argument("--time-field", help="JSON/CSV key of the request time")
    q.add_argument("--user-field", help="JSON/CSV key of the user or account id")
    q.add_argument(
        "--trusted-proxies", help="CIDRs of your proxies: X-Forwarded-For is believed from them"
    )
    q.add_argument("--trusted-hops", type=int, default=0, help="right-most hops always trusted")
    q.add_argument("--no-history", action="store_true", help="skip the workaround signals")
    q.add_argument(
        "--per-line",
        action="store_true",
        help="parse and count line by line (the reference path; slower than the Arrow one)",
    )
    q.add_argument("--report", help="write a self-contained HTML report here")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.add_argument("--top", type=int, default=10, help="rows per table in the text summary")
    q.add_argument("--examples", type=int, default=5, help="examples kept per problem")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    snap_opts(q)
    q.set_defaults(func=cmd_audit)

    q = sub.add_parser("policy", help="policy tools")
    psub = q.add_subparsers(dest="policy_command", required=True)
    c = psub.add_parser("check", help="validate policy files or presets")
    c.add_argument("files", nargs="*", help="policy files or preset names")
    c.add_argument("--params", help="JSON params for a parameterised preset")
    c.add_argument("--list", action="store_true", help="list the bundled presets")
    c.set_defaults(func=cmd_policy_check)

    d = psub.add_parser("diff", help="address space whose verdict changes between policies")
    d.add_argument("refs", nargs="+", metavar="POLICY", help="OLD NEW (or one, with --data)")
    d.add_argument("--data", nargs=2, metavar=("OLD.gfs", "NEW.gfs"), help="compare snapshots")
    d.add_argument("--snapshot", help="snapshot file (default: the bundled data)")
    d.add_argument("--params", help="JSON params (with --data)")
    d.add_argument("--date", help="compile rules for this date (YYYY-MM-DD)")
    d.add_argument("--top", type=int, default=10, help="largest changed ranges per family")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_policy_diff)
    t = psub.add_parser("test", help="run expected decisions (a cases file) against a policy")
    t.add_argument("policy", help="policy file or preset name")
    t.add_argument("cases", help="cases file (TOML, [[case]] entries)")
    t.add_argument("--snapshot", help="snapshot file (default: the bundled data)")
    t.add_argument("--params", help="JSON params for a parameterised preset")
    t.add_argument("--date", help="compile rules for this date (YYYY-MM-DD)")
    t.add_argument("-v", "--verbose", action="store_true", help="also list passing cases")
    t.set_defaults(func=cmd_policy_test)

    q = sub.add_parser("export", help="the policy's IP-only verdicts for nginx, HAProxy, nft...")
    q.add_argument("format", help="nginx, haproxy, nftables, cidr or json")
    q.add_argument("--policy", required=True, help="policy file or preset name")
    q.add_argument("--params", help="JSON params for a parameterised preset")
    q.add_argument("--snapshot", help="snapshot file (default: the bundled data)")
    q.add_argument("--actions", help="values to list, e.g. deny,challenge (default: all but one)")
    q.add_argument("-o", "--output", help="write here atomically (default: stdout)")
    q.add_argument("--explain", action="store_true", help="what the edge can and cannot decide")
    q.add_argument("--name", default="geofence", help="prefix of variables, sets and tables")
    q.add_argument("--nginx-style", default="auto", choices=("auto", "cidr", "ranges"))
    q.add_argument("--teredo", help="action stated for Teredo (default: the most restrictive)")
    q.add_argument(
        "--tunnels",
        default="expand",
        choices=("expand", "state"),
        help="6to4/NAT64/IPv4-mapped: expand to IPv4 verdicts (exact) or state --teredo's",
    )
    q.add_argument("--date", help="compile rules for this date (YYYY-MM-DD)")
    q.set_defaults(func=cmd_export)

    q = sub.add_parser("data", help="snapshot tools")
    dsub = q.add_subparsers(dest="data_command", required=True)
    i = dsub.add_parser("info", help="provenance, licences and age of a snapshot")
    i.add_argument("file", nargs="?", help="snapshot file (default: the bundled data)")
    i.add_argument("--json", action="store_true")
    i.add_argument("--verify", action="store_true", help="also re-check ordering invariants")
    i.add_argument("--max-age-days", type=int, help="exit 1 when the data is older")
    i.set_defaults(func=cmd_data_info)

    b = dsub.add_parser("build", help="merge sources into a snapshot")
    source_opts(
        b, "KIND:PATH", "a source spec (repeat; first = highest priority); see docs/sources.md"
    )
    b.add_argument("--field-priority", help='JSON, e.g. {"asn": ["ipinfo", "dbip"]}')
    b.add_argument("--previous", help="previous snapshot for the shrink guard (default: -o)")
    b.add_argument("--force", action="store_true", help="write even an empty or shrunk build")
    b.add_argument(
        "--strict", action="store_true", help="refuse malformed values instead of skipping them"
    )
    b.add_argument("--name", help="name recorded in the snapshot")
    b.add_argument("-q", "--quiet", action="store_true")
    b.set_defaults(func=cmd_data_build)
    u = dsub.add_parser("update", help="download sources from their upstream URLs and rebuild")
    u.add_argument(
        "--source",
        action="append",
        metavar="KIND:URL",
        help="a source spec whose path is an http(s) or file URL, or a local path (repeat)",
    )
    u.add_argument("-o", "--output", help="snapshot to replace (with --recipe: default bundled)")
    u.add_argument(
        "--recipe",
        choices=("default",),
        help="rebuild the bundled default snapshot from its recipe and the installed packages",
    )
    u.add_argument("--force", action="store_true")
    u.add_argument("--strict", action="store_true", help="refuse malformed values in a source")
    u.add_argument("--timeout", type=float, default=60.0)
    u.add_argument("-q", "--quiet", action="store_true")
    u.set_defaults(func=cmd_data_update)
    return p


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the command line; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        status: int = args.func(args, out, err)
    except GeofenceError as exc:
        print(f"geofence: {_cli_words(str(exc))}", file=err)
        return 2
    except UnicodeDecodeError as exc:  # addresses on stdin, a --params file...
        print(f"geofence: input is not UTF-8 text: {exc}", file=err)
        return 2
    except BrokenPipeError:  # pragma: no cover - `geofence lookup ... | head`
        return 0
    except (OSError, json.JSONDecodeError) as exc:
        print(f"geofence: {exc}", file=err)
        return 2
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

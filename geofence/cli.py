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
from typing import TextIO

from geofence.errors import GeofenceError, InvalidAddressError

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


def cmd_decide(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence decide IP... --policy P``: one decision per address."""
    from geofence.context import Context
    from geofence.engine import Geofence

    gf = _engine(args)
    assert isinstance(gf, Geofence)
    ctx = _context(args)
    status = 0
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
            print(d.to_json(address=text), file=out)
        else:
            route = f" -> {d.route}" if d.route else ""
            print(f"{text}: {d.action.value}{route} ({', '.join(d.reasons)})", file=out)
    return status


def cmd_explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence explain IP...``: decisions in plain words."""
    args.explain = True
    args.json = False
    return cmd_decide(args, out, err)


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


def cmd_data_build(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``geofence data build --source KIND:PATH ... -o FILE``."""
    from geofence.snapshot.build import compile_snapshot, write_atomic
    from geofence.sources import open_source

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
        q.add_argument("--policy", default="allow-all", help="policy file or preset name")
        q.add_argument("--params", help="JSON params for a parameterised preset")
        q.add_argument("--subject", help='subject JSON, e.g. {"nationality": ["US"]}')
        q.add_argument("--timezone", help="client IANA time zone")
        q.add_argument("--accept-language", help="client Accept-Language header")
        if name == "decide":
            q.add_argument("--json", action="store_true", help="one JSON audit line each")
            q.add_argument("--explain", action="store_true", help="plain-words explanation")
        snap_opts(q)
        q.set_defaults(func=func)

    q = sub.add_parser("policy", help="policy tools")
    psub = q.add_subparsers(dest="policy_command", required=True)
    c = psub.add_parser("check", help="validate policy files or presets")
    c.add_argument("files", nargs="*", help="policy files or preset names")
    c.add_argument("--params", help="JSON params for a parameterised preset")
    c.add_argument("--list", action="store_true", help="list the bundled presets")
    c.set_defaults(func=cmd_policy_check)

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
        print(f"geofence: {exc}", file=err)
        return 2
    except BrokenPipeError:  # pragma: no cover - `geofence lookup ... | head`
        return 0
    except (OSError, json.JSONDecodeError) as exc:
        print(f"geofence: {exc}", file=err)
        return 2
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Tests of the command line, the data update path and the public testing helpers."""

from __future__ import annotations

import functools
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from geofence.cli import main
from geofence.snapshot.reader import Snapshot
from geofence.testing import make_geofence, make_snapshot


def run(
    *argv: str, stdin: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_lookup_bundled_data_shows_country_kind_and_provenance() -> None:
    """`lookup` on the bundled data prints a country, a kind, the network and attribution."""
    status, out, err = run("lookup", "8.8.8.8", "2a00:1450:4001::1")
    assert status == 0, err
    first, second, footer = out.splitlines()
    assert first.startswith("8.8.8.8: US; hosting")
    assert "[8.8.8.0/24]" in first
    assert second.startswith("2a00:1450:4001::1: DE")
    assert "DB-IP" in footer


def test_lookup_json_and_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """`lookup --json -` reads stdin and prints one JSON object per address."""
    status, out, _ = run(
        "lookup",
        "--json",
        "-",
        stdin="8.8.8.8\n# comment\n\n::ffff:8.8.8.8\n",
        monkeypatch=monkeypatch,
    )
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["country"] for r in rows] == ["US", "US"]
    assert rows[1]["tunnel"] == "ipv4_mapped"


def test_lookup_bad_address_goes_to_stderr_with_status_2() -> None:
    """An invalid address is reported on stderr and makes the exit status 2."""
    status, out, err = run("lookup", "8.8.8.8", "01.2.3.4")
    assert status == 2
    assert "leading zero" in err
    assert out.startswith("8.8.8.8:")


def test_lookup_reserved_address() -> None:
    """Reserved addresses are named as such, not looked up."""
    status, out, _ = run("lookup", "10.1.2.3")
    assert status == 0
    assert "reserved (private)" in out


def test_decide_json_is_an_audit_line(tmp_path: Path) -> None:
    """`decide --json` prints one JSON line with the action, rule, snapshot and policy digest."""
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[policy]\nid = "p"\n[[rules]]\nid = "us"\naction = "route:us-tier"\njurisdictions = ["US"]\n'
    )
    status, out, err = run("decide", "8.8.8.8", "--policy", str(policy), "--json")
    assert status == 0, err
    line = json.loads(out)
    assert line["action"] == "route"
    assert line["route"] == "us-tier"
    assert line["rule_id"] == "us"
    assert line["address"] == "8.8.8.8"
    assert len(line["snapshot_id"]) == 16
    assert len(line["policy_digest"]) == 16


def test_decide_with_subject_and_explain(tmp_path: Path) -> None:
    """A subject rule is evaluated with --subject, and `explain` says why in words."""
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[policy]\nid = "p"\non_unresolved = "challenge"\n'
        '[[rules]]\nid = "nat"\naction = "deny"\nsubject.nationality = ["IR"]\n'
    )
    _, out, _ = run(
        "decide", "8.8.8.8", "--policy", str(policy), "--subject", '{"nationality": ["IR"]}'
    )
    assert "deny" in out
    _, out, _ = run("decide", "8.8.8.8", "--policy", str(policy))
    assert "challenge" in out
    assert "unresolved:subject" in out
    status, out, _ = run("explain", "8.8.8.8", "--policy", str(policy))
    assert status == 0
    assert "on_unresolved applies" in out


def test_decide_bad_subject_json_is_a_clean_error() -> None:
    """Malformed --subject JSON gives exit status 2 and a message, not a traceback."""
    status, _, err = run("decide", "8.8.8.8", "--subject", "{nope")
    assert status == 2
    assert "--subject" in err


def test_policy_check_good_and_bad(tmp_path: Path) -> None:
    """`policy check` accepts a valid policy and reports an invalid one with exit 1."""
    good = tmp_path / "good.toml"
    good.write_text(
        '[policy]\nid = "g"\n[[rules]]\nid = "r"\naction = "deny"\njurisdictions = ["CU"]\n'
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[policy]\nid = "b"\n[[rules]]\nid = "r"\naction = "deny"\njurisdictions = ["XX"]\n'
    )
    status, out, _ = run("policy", "check", str(good))
    assert status == 0
    assert "ok" in out
    status, _, err = run("policy", "check", str(bad))
    assert status == 1
    assert "rule 'r'" in err
    assert "XX" in err


def test_policy_check_lists_presets() -> None:
    """`policy check --list` names the bundled presets."""
    status, out, _ = run("policy", "check", "--list")
    assert status == 0
    assert "allow-all" in out.split()


def test_data_info_shows_licence_and_age() -> None:
    """`data info` shows the sources' licences, attribution and the data's age."""
    status, out, _ = run("data", "info")
    assert status == 0
    assert "CC-BY-4.0" in out
    assert "days old" in out
    status, _, err = run("data", "info", "--max-age-days", "0")
    assert status == 1
    assert "days old" in err


def test_data_build_from_csv_and_refuses_empty(tmp_path: Path) -> None:
    """`data build` compiles a CSV source; an empty build is refused with status 2."""
    csv = tmp_path / "ranges.csv"
    csv.write_text("1.0.0.0,1.0.0.255,AU\n2001:200::,2001:200:ffff:ffff:ffff:ffff:ffff:ffff,JP\n")
    out_file = tmp_path / "snap.gfs"
    status, _out, err = run("data", "build", "--source", f"csv:{csv}", "-o", str(out_file))
    assert status == 0, err
    snap = Snapshot.open(out_file)
    rec = snap.lookup("1.0.0.7").record
    assert rec is not None
    assert rec.country == "AU"
    empty = tmp_path / "empty.csv"
    empty.write_text("# nothing\n")
    status, _, err = run("data", "build", "--source", f"csv:{empty}", "-o", str(tmp_path / "e.gfs"))
    assert status == 2
    assert "empty" in err


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A local HTTP server on 127.0.0.1 serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_data_update_fetches_builds_and_keeps_old_file_on_failure(
    http_root: tuple[Path, str], tmp_path: Path
) -> None:
    """`data update` downloads from a local server, rebuilds, and keeps the old file when a fetch fails."""
    root, base = http_root
    (root / "exits.txt").write_text("185.220.101.1\n185.220.101.2\n")
    (root / "feed.csv").write_text("192.88.100.0/24,DE,DE-BE,Berlin,\n")
    out_file = tmp_path / "live.gfs"
    status, _, err = run(
        "data",
        "update",
        "--source",
        f"tor:{base}/exits.txt",
        "--source",
        f"geofeed:{base}/feed.csv",
        "-o",
        str(out_file),
        "-q",
    )
    assert status == 0, err
    snap = Snapshot.open(out_file)
    rec = snap.lookup("185.220.101.2").record
    assert rec is not None
    assert rec.provider == "Tor"
    feed = snap.lookup("192.88.100.9").record
    assert feed is not None
    assert feed.subdivision == "DE-BE"
    assert any(s.url.startswith(base) for s in snap.sources)
    before = out_file.read_bytes()
    status, _, err = run(
        "data", "update", "--source", f"tor:{base}/missing.txt", "-o", str(out_file)
    )
    assert status == 2
    assert "download failed" in err
    assert out_file.read_bytes() == before


def test_make_geofence_helper_decides() -> None:
    """The public testing helper builds a working engine from a dict of networks."""
    gf = make_geofence(
        {"5.0.0.0/8": {"country": "IR"}, "8.8.8.0/24": {"country": "US", "kinds": ["hosting"]}},
        policy='[policy]\nid = "t"\n[[rules]]\nid = "ir"\naction = "deny"\njurisdictions = ["IR"]\n',
    )
    assert gf.decide("5.1.2.3").blocked
    assert not gf.decide("8.8.8.8").blocked
    snap = make_snapshot({"5.0.0.0/8": {"country": "IR"}})
    assert snap.lookup("5.0.0.0").record is not None

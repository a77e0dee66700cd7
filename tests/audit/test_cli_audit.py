"""`geofence audit` on the command line: text, JSON, report, progress and throughput."""

from __future__ import annotations

import io
import json
from pathlib import Path

from geofence.audit.progress import ProgressBar, throughput_line
from geofence.cli import main
from geofence.engine import Geofence
from tests.audit.helpers import counts, expected_actions


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _log(tmp_path: Path) -> tuple[Path, list[str]]:
    ips = ["5.1.2.3", "8.8.8.8", "46.1.1.1", "185.0.1.1", "2a00::1"] * 40
    path = tmp_path / "access.log"
    path.write_text(
        "".join(
            f'{ip} - - [01/Mar/2026:10:{i % 60:02d}:00 +0000] "GET / HTTP/1.1" 200 1 "-" "a" "-"\n'
            for i, ip in enumerate(ips)
        )
        + "junk line\n"
    )
    return path, ips


def _args(path: Path, snapshot_file: Path, policy_file: Path, *more: str) -> list[str]:
    return [
        "audit",
        str(path),
        "--policy",
        str(policy_file),
        "--snapshot",
        str(snapshot_file),
        *more,
    ]


def test_text_summary(
    tmp_path: Path, snapshot_file: Path, policy_file: Path, engine: Geofence
) -> None:
    """The text summary names the totals, each action with its count, and the junk line."""
    path, ips = _log(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert main(_args(path, snapshot_file, policy_file), out=out, err=err) == 0
    text = out.getvalue()
    assert f"Audit of {len(ips) + 1:,} lines" in text
    for action, n in expected_actions(engine, ips).items():
        assert any(line.split()[:2] == [action, f"{n:,}"] for line in text.splitlines()), action
    assert "not a recognised log line: 1" in text
    assert f"{path}:{len(ips) + 1}: junk line" in text
    assert "Top networks, deny:" in text
    assert "geofence audit: 201 lines in" in err.getvalue()
    assert "lines/s" in err.getvalue()
    assert "\r" not in err.getvalue()  # not a terminal: no progress bar


def test_json_and_report(
    tmp_path: Path, snapshot_file: Path, policy_file: Path, engine: Geofence
) -> None:
    """--json prints the summary; --report writes the HTML file that embeds it."""
    path, ips = _log(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    report = tmp_path / "r.html"
    status = main(
        _args(path, snapshot_file, policy_file, "--json", "--report", str(report)), out=out, err=err
    )
    assert status == 0
    summary = json.loads(out.getvalue())
    assert counts(summary["by_action"]) == expected_actions(engine, ips)
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert summary["policy_digest"] in page


def test_per_line_flag_gives_the_same_summary(
    tmp_path: Path, snapshot_file: Path, policy_file: Path
) -> None:
    """--per-line runs the reference path; its JSON summary equals the default one's."""
    path, _ = _log(tmp_path)
    summaries = []
    for more in ((), ("--per-line",)):
        out = io.StringIO()
        args = _args(path, snapshot_file, policy_file, "--json", "-q", *more)
        assert main(args, out=out, err=io.StringIO()) == 0
        summary = json.loads(out.getvalue())
        del summary["seconds"], summary["lines_per_second"]
        summaries.append(summary)
    assert summaries[0] == summaries[1]
    assert summaries[0]["unparsed"] == 1


def test_progress_bar_drawing() -> None:
    """On a terminal the bar is drawn in place, and cleared by close()."""
    bar_stream = _Terminal()
    bar = ProgressBar(bar_stream, interval=0.0)
    bar(500, 250, 1000)
    bar(1000, 1000, 1000)
    bar(10, 0, None)
    drawn = bar_stream.getvalue()
    assert "[#######-" in drawn
    assert " 25%" in drawn
    assert "[" + "#" * 30 + "] 100%" in drawn
    assert "[reading stdin] 10 lines" in drawn
    bar.close()
    assert bar_stream.getvalue().endswith("\r\x1b[K")
    quiet = ProgressBar(_Terminal(), enabled=False)
    quiet(1, 1, 1)
    assert quiet.stream.getvalue() == ""  # type: ignore[attr-defined]


def test_throughput_line() -> None:
    """The closing line: lines, seconds and the rate, with thousands separators."""
    assert throughput_line(1_500_000, 10.0) == (
        "geofence audit: 1,500,000 lines in 10.00 s (150,000 lines/s)"
    )
    assert throughput_line(0, 0.0).endswith("(0 lines/s)")


def test_bad_arguments(tmp_path: Path, snapshot_file: Path) -> None:
    """An unknown policy or an invalid trusted-proxy CIDR: exit 2 with a message, no traceback."""
    path, _ = _log(tmp_path)
    err = io.StringIO()
    assert (
        main(
            ["audit", str(path), "--policy", "no-such-preset", "--snapshot", str(snapshot_file)],
            out=io.StringIO(),
            err=err,
        )
        == 2
    )
    assert "no-such-preset" in err.getvalue()
    err = io.StringIO()
    args = ["audit", str(path), "--policy", "allow-all", "--trusted-proxies", "10.0.0.0/33"]
    assert main([*args, "--snapshot", str(snapshot_file)], out=io.StringIO(), err=err) == 2
    assert "10.0.0.0/33" in err.getvalue()


def test_progress_bar_in_a_real_terminal(
    tmp_path: Path, snapshot_file: Path, policy_file: Path
) -> None:
    """`geofence audit` with stderr on a pseudo-terminal draws the bar, then the throughput."""
    import os
    import subprocess
    import sys

    path = tmp_path / "big.log"
    line = '5.1.2.3 - - [01/Mar/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "a" "-"\n'
    path.write_text(line * 40_000)  # a few read blocks
    master, slave = os.openpty()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "geofence.cli", *_args(path, snapshot_file, policy_file)],
            stdout=subprocess.DEVNULL,
            stderr=slave,
            timeout=120,
            check=False,
        )
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert run.returncode == 0
    text = seen.decode()
    assert "\r[" in text  # drawn in place
    assert "lines/s" in text
    assert "geofence audit: 40,000 lines in" in text


def test_collect_less_restores_the_thresholds() -> None:
    """The CLI's garbage-collection setting is undone afterwards, also after an error."""
    import gc

    import pytest

    from geofence.audit.run import collect_less

    before = gc.get_threshold()
    with collect_less(123_456):
        assert gc.get_threshold()[0] == 123_456
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), collect_less():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before

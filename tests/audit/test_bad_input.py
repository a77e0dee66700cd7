"""Bad input: counted and reported, never a crash, never a silently dropped line."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.audit import AuditOptions, run_audit
from geofence.engine import Geofence
from tests.audit.helpers import accounted, counts, expected_actions


def _line(ip: str, second: int = 0, user: str = "-", xff: str = "-") -> str:
    return (
        f'{ip} - {user} [01/Mar/2026:10:00:{second % 60:02d} +0000] "GET /v1 HTTP/1.1" '
        f'200 12 "-" "agent/1.0" "{xff}"\n'
    )


_IPS = ["5.1.2.3", "8.8.8.8", "46.1.1.1", "185.0.1.1", "2a00::1", "31.0.0.5", "99.1.1.1"]


def _log(n: int = 300, seed: int = 1) -> tuple[str, list[str]]:
    r = random.Random(seed)
    ips = [r.choice(_IPS) for _ in range(n)]
    return "".join(_line(ip, i) for i, ip in enumerate(ips)), ips


def test_truncated_gzip(engine: Geofence, tmp_path: Path) -> None:
    """A gzip cut short: what was read is decided, the truncation is reported with a line."""
    text, _ = _log(20_000)
    blob = gzip.compress(text.encode())
    path = tmp_path / "cut.log.gz"
    path.write_bytes(blob[: len(blob) * 2 // 3])
    s = run_audit(engine, [str(path)], AuditOptions(history=False))
    (problem,) = s["read_problems"]
    assert "truncated gzip" in problem["reason"]
    assert problem["after_line"] == s["lines"] == accounted(s)
    assert 0 < s["decided"] < 20_000
    assert s["unparsed"] == 0


def test_corrupt_gzip_and_missing_file(engine: Geofence, tmp_path: Path) -> None:
    """Garbage after a gzip magic number, and a missing file: read problems, no exception."""
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
    s = run_audit(engine, [str(bad), str(tmp_path / "missing.log")], AuditOptions())
    reasons = [p["reason"] for p in s["read_problems"]]
    assert len(reasons) == 2
    assert "no such file" in reasons[1]
    assert s["lines"] == 0


def test_zstd_and_gzip_equal_plain(engine: Geofence, tmp_path: Path) -> None:
    """A .zst, a .gz and a gzip named .log give the same summary as the plain log."""
    zstandard = pytest.importorskip("zstandard", reason="the audit extra is not installed")
    text, ips = _log(5_000)
    plain = tmp_path / "a.log"
    plain.write_text(text)
    (tmp_path / "a.log.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    (tmp_path / "a.log.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "misnamed.log").write_bytes(gzip.compress(text.encode()))
    want = expected_actions(engine, ips)
    for name in ("a.log", "a.log.zst", "a.log.gz", "misnamed.log"):
        s = run_audit(engine, [str(tmp_path / name)], AuditOptions(history=False))
        assert counts(s["by_action"]) == want, name
        assert s["lines"] == 5_000
        assert not s["read_problems"]


def test_binary_junk_and_long_lines(engine: Geofence, tmp_path: Path) -> None:
    """Binary junk, NULs, form feeds, a 1 MB line: counted per line, neighbours decided."""
    r = random.Random(7)
    good = [r.choice(_IPS) for _ in range(50)]
    parts: list[bytes] = []
    for i, ip in enumerate(good):
        parts.append(_line(ip, i).encode())
        if i % 10 == 3:
            junk = bytes(r.randrange(256) for _ in range(200)).replace(b"\n", b"")
            parts.append(junk + b"\n")
    parts.insert(20, b"x" * (1 << 20) + b"\n")  # a 1 MB line
    parts.insert(30, _line("8.8.8.8").encode()[:-1] + b"\x00\x0c trailing\n")
    parts.append(b"\xff\xfe\x00 no newline at the end")
    data = b"".join(parts)
    path = tmp_path / "junk.log"
    path.write_bytes(data)
    s = run_audit(engine, [str(path)], AuditOptions(history=False))
    assert s["lines"] == data.count(b"\n") + 1 == accounted(s)
    assert counts(s["by_action"]) == expected_actions(engine, [*good, "8.8.8.8"])
    reasons = {r["reason"]: r for r in s["unparsed_reasons"]}
    oversized = reasons[f"line longer than {64 * 1024} bytes"]
    assert oversized["lines"] == 1
    assert oversized["examples"] == [f"{path}:21"]  # the true line number
    assert sum(r["lines"] for r in s["unparsed_reasons"]) == s["unparsed"] == 5 + 1 + 1


def test_a_line_longer_than_a_read_block(engine: Geofence, tmp_path: Path) -> None:
    """A 3 MB line spanning reads, last in the file without a newline: one oversized line."""
    path = tmp_path / "huge.log"
    path.write_bytes(_line("5.1.2.3").encode() + b"y" * (3 << 20))
    s = run_audit(engine, [str(path)], AuditOptions(history=False))
    assert s["lines"] == 2 == accounted(s)
    assert s["decided"] == 1
    assert s["unparsed_reasons"][0]["examples"] == [f"{path}:2"]


def test_mixed_formats_ports_brackets_unknown_fields(engine: Geofence, tmp_path: Path) -> None:
    """One file mixing combined, JSON and junk; peers with ports and brackets; odd JSON."""
    lines = [
        _line("5.1.2.3"),
        json.dumps({"remote_addr": "46.1.1.1", "time": 1772359200, "extra": {"x": 1}}) + "\n",
        _line("8.8.8.8:51234"),
        _line("[2a00::1]:443"),
        _line("[2a00::2]"),
        json.dumps({"client": "185.0.1.1:8080", "unknown_field": None}) + "\n",
        json.dumps({"host": "example.com"}) + "\n",  # no address field
        "[1, 2, 3]\n",
        "{not json\n",
        "\n",
        _line("not-an-ip"),
        _line("fe80::1%eth0"),
        '8.8.4.4 - - [01/Mar/2026:10:00:00 +0000] "GET /\\"q\\" HTTP/1.1" 200 1 "-" "a"\n',
    ]
    path = tmp_path / "mixed.log"
    path.write_text("".join(lines))
    s = run_audit(engine, [str(path)], AuditOptions(history=False))
    assert s["lines"] == len(lines) == accounted(s)
    clients = ["5.1.2.3", "46.1.1.1", "8.8.8.8", "2a00::1", "2a00::2", "185.0.1.1", "8.8.4.4"]
    clients.append("fe80::1%eth0")  # a zone id is allowed: link-local, reserved
    assert counts(s["by_action"]) == expected_actions(engine, clients)
    assert s["invalid"] == 1
    assert s["invalid_examples"] == [{"address": "not-an-ip", "lines": 1}]
    assert s["unknown_fields"] == [
        {"field": "extra", "lines": 1},
        {"field": "unknown_field", "lines": 1},
        {"field": "host", "lines": 1},
    ]
    reasons = {r["reason"] for r in s["unparsed_reasons"]}
    assert reasons == {
        "no address field (looked for remote_addr, client_ip, clientip, client_addr, "
        "remote_ip, ip, src_ip, c-ip, client)",
        "JSON line is not an object",
        "invalid JSON",
        "empty line",
    }


@pytest.mark.parametrize("fmt", ["auto", "csv"])
def test_first_line_that_breaks_the_csv_reader(engine: Geofence, tmp_path: Path, fmt: str) -> None:
    """A first line with a bare carriage return is no CSV header: counted, not a crash."""
    path = tmp_path / "cr.log"
    path.write_bytes(b"\r\x00\n" + _line("5.1.2.3").encode())
    s = run_audit(engine, [str(path)], AuditOptions(format=fmt))
    assert s["lines"] == 2 == accounted(s)
    assert s["decided"] == (1 if fmt == "auto" else 0)


def test_strict_format_rejects_other_lines(engine: Geofence, tmp_path: Path) -> None:
    """--format nginx counts JSON lines as unparsed (auto would decide them)."""
    path = tmp_path / "m.log"
    path.write_text(_line("5.1.2.3") + json.dumps({"remote_addr": "8.8.8.8"}) + "\n")
    s = run_audit(engine, [str(path)], AuditOptions(format="nginx"))
    assert (s["decided"], s["unparsed"]) == (1, 1)
    assert s["unparsed_reasons"][0]["reason"] == "not an nginx/combined line"


_POOL = st.sampled_from(
    [
        _line("5.1.2.3"),
        _line("2a00::1"),
        _line("8.8.8.8:80"),
        _line("bad"),
        '{"ip": "46.1.1.1"}\n',
        '{"ip": 5}\n',
        "\n",
        "\x00\x01\x02\n",
        "garbage\r\n",
        "\u2028 separator \x0c\x1c\n",
    ]
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_POOL, max_size=80))
def test_every_line_accounted(
    engine: Geofence, tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> None:
    """For any mix of lines: lines read == lines in the file == decided + invalid + unparsed."""
    path = tmp_path_factory.mktemp("prop") / "p.log"
    path.write_text("".join(lines), encoding="utf-8")
    s = run_audit(engine, [str(path)], AuditOptions(history=False))
    assert s["lines"] == len(lines) == accounted(s)
    assert s["invalid"] == sum(1 for x in lines if x == _line("bad"))


def test_cli_stdin_gzip_no_traceback(
    tmp_path: Path, snapshot_file: Path, policy_file: Path
) -> None:
    """`geofence audit -` reads a truncated gzip from stdin: exit 1, a message, no traceback."""
    text, _ = _log(20_000)
    blob = gzip.compress(text.encode())
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "geofence.cli",
            "audit",
            "-",
            "--policy",
            str(policy_file),
            "--snapshot",
            str(snapshot_file),
            "--json",
        ],
        input=blob[: len(blob) // 2],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert b"Traceback" not in run.stderr
    assert b"truncated gzip" in run.stderr
    summary = json.loads(run.stdout)
    assert summary["lines"] == summary["read_problems"][0]["after_line"] > 0
    assert b"lines/s" in run.stderr  # the throughput line


def test_zstd_truncated_corrupt_and_multi_frame(engine: Geofence, tmp_path: Path) -> None:
    """zstd: a cut stream and a corrupt one are read problems; concatenated frames read whole."""
    zstandard = pytest.importorskip("zstandard", reason="the audit extra is not installed")
    text, ips = _log(30_000)
    packed = zstandard.ZstdCompressor().compress(text.encode())
    cut = tmp_path / "cut.zst"
    cut.write_bytes(packed[: len(packed) // 2])
    s = run_audit(engine, [str(cut)], AuditOptions(history=False))
    (problem,) = s["read_problems"]
    assert problem["reason"].startswith("truncated zstd stream")
    assert problem["after_line"] == s["lines"] == accounted(s) > 0
    bad = tmp_path / "bad.zst"
    bad.write_bytes(packed[:4] + b"garbage" * 50)
    s = run_audit(engine, [str(bad)], AuditOptions(history=False))
    assert s["read_problems"][0]["reason"].startswith("corrupt zstd data")
    half = len(text) // 2
    half = text.index("\n", half) + 1
    frames = tmp_path / "frames.zst"
    c = zstandard.ZstdCompressor()
    frames.write_bytes(c.compress(text[:half].encode()) + c.compress(text[half:].encode()))
    s = run_audit(engine, [str(frames)], AuditOptions(history=False))
    assert not s["read_problems"]
    assert counts(s["by_action"]) == expected_actions(engine, ips)

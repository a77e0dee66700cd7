"""The vectorised audit path gives the reference path's summary, key for key and in order.

The reference (``AuditOptions(vectorised=False)``) parses, resolves, decides
and counts line by line; the vectorised path (:mod:`geofence.audit.columns`,
:mod:`geofence.audit.counting`) works on Arrow columns and per distinct value.
Every key of the summary must come out equal: counts per action, rule,
country, subdivision and kind, distinct addresses, top networks, the
timeline, unparsed lines with their examples, invalid addresses,
forwarding-header evidence, unknown fields, read problems and the workaround
view, for every format, on real nginx logs, on bad input and on generated
mixes of good and bad lines.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("pyarrow", reason="the audit extra (pyarrow) is not installed")
pytest.importorskip("numpy", reason="the audit extra (numpy) is not installed")

import pyarrow as pa

from geofence.audit import AuditOptions, Auditor, columns, run_audit
from geofence.audit.arrow import audit_lines, log_batches
from geofence.audit.formats import FORMATS
from geofence.audit.inputs import BLOCK, LogSource
from geofence.audit.run import ARROW_FROM
from geofence.engine import Geofence
from geofence.errors import GeofenceError
from geofence.signals.proxy import TrustedProxies
from tests.audit.helpers import accounted
from tests.audit.nginx_logs import Request, write_nginx_logs
from tests.strategies import LOG_CLIENTS, access_log_lines

_TRUSTED = TrustedProxies(cidrs=["127.0.0.1/32", "10.0.0.0/8"])
_TIMING = ("seconds", "lines_per_second")


def _audit(
    gf: Geofence, paths: list[Path], options: AuditOptions, block_size: int | None
) -> dict[str, Any]:
    auditor = Auditor(gf, options)
    for path in paths:
        size = block_size if block_size is not None else auditor.block_size
        auditor.feed(LogSource(str(path), max_line=options.max_line, block_size=size))
    summary = auditor.summary()
    for key in _TIMING:
        del summary[key]
    return summary


def assert_parity(
    gf: Geofence, paths: list[Path], block_size: int | None = None, **options: Any
) -> dict[str, Any]:
    """Audit ``paths`` both ways; the summaries must be equal. Returns the vectorised one."""
    vector = Auditor(gf, AuditOptions(vectorised=True, **options))
    assert vector.vectorised
    fast = _audit(gf, paths, AuditOptions(vectorised=True, **options), block_size)
    reference = _audit(gf, paths, AuditOptions(vectorised=False, **options), block_size)
    assert fast.keys() == reference.keys()
    for key in reference:
        assert fast[key] == reference[key], key
    assert fast == reference
    return fast


def test_vectorised_is_the_default_with_pyarrow(engine: Geofence) -> None:
    """With the audit extra installed an audit takes the vectorised path; it can be turned off."""
    assert Auditor(engine).vectorised
    assert Auditor(engine).block_size > Auditor(engine, AuditOptions(vectorised=False)).block_size
    assert not Auditor(engine, AuditOptions(vectorised=False)).vectorised


def test_without_pyarrow_the_reference_runs(
    engine: Geofence, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When pyarrow or numpy cannot be imported, an audit takes the per-line reference path."""
    monkeypatch.setattr(columns, "available", lambda: False)
    assert not Auditor(engine).vectorised
    assert Auditor(engine).block_size == BLOCK
    with pytest.raises(GeofenceError, match="needs pyarrow and numpy"):
        Auditor(engine, AuditOptions(vectorised=True))


@pytest.fixture(scope="module")
def real_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The main, combined and JSON logs nginx wrote, combined and JSON for proxied requests, users, odd agents."""
    try:
        return write_nginx_logs(
            tmp_path_factory.mktemp("nginx-parity"),
            [
                Request(
                    xff=LOG_CLIENTS[i % len(LOG_CLIENTS)]
                    + ("" if i % 4 else ", 10.1.2.3")
                    + ("" if i % 9 else ", spoofed"),
                    user=("alice", "bob", None, "dave")[i % 4],
                    agent=f'agent "{i}" \u00fc',
                    path=f"/v1/{i}?q=a%20b",
                )
                for i in range(150)
            ]
            + [Request(), Request(xff="unknown"), Request(xff="")],
        )
    except FileNotFoundError:
        pytest.skip("nginx is not installed (apt-get install nginx)")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("log", ["nginx", "combined", "jsonl"])
def test_real_nginx_logs(engine: Geofence, real_logs: dict[str, Path], log: str, fmt: str) -> None:
    """Each nginx-written log under each --format: equal summaries (history and XFF included)."""
    s = assert_parity(engine, [real_logs[log]], format=fmt, trusted=_TRUSTED)
    assert s["lines"] == accounted(s) == 153
    if fmt in ("auto", log) or (fmt == "nginx" and log == "combined"):
        assert s["decided"] > 100


def test_csv_logs(engine: Geofence, tmp_path: Path) -> None:
    """A CSV log (header, good rows, a short row, a bad address): equal summaries, csv and auto."""
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(["time", "client_ip", "user", "x_forwarded_for", "status"])
    r = random.Random(3)
    for i in range(400):
        out.writerow(
            [f"2026-03-01T10:{i % 60:02d}:00Z", r.choice(LOG_CLIENTS), "ann", "46.1.1.1", 200]
        )
    buffer.write("only,two\n")
    path = tmp_path / "log.csv"
    path.write_text(buffer.getvalue())
    for fmt in ("csv", "auto"):
        s = assert_parity(engine, [path], block_size=4096, format=fmt, trusted=_TRUSTED)
        assert s["headers"] == 1
        assert s["unparsed"] == 1


def test_bad_input(engine: Geofence, tmp_path: Path) -> None:
    """Truncated gzip, binary junk, oversized lines, a missing file: equal summaries."""
    r = random.Random(11)
    lines = []
    for i in range(30_000):
        peer = r.choice(LOG_CLIENTS)
        lines.append(
            f'{peer} - - [01/Mar/2026:10:{i // 600 % 60:02d}:{i % 60:02d} +0000] "GET / HTTP/1.1" '
            f'200 1 "-" "a" "{r.choice(["-", "5.1.2.3", "8.8.8.8, 10.0.0.1"])}"\n'
        )
        if i % 997 == 5:
            lines.append("\x00\x01 junk " + "x" * r.randrange(0, 400) + "\n")
    text = "".join(lines)
    cut = tmp_path / "cut.log.gz"
    blob = gzip.compress(text.encode())
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    plain = tmp_path / "plain.log"
    plain.write_bytes(text.encode() + b"\xff\xfe" + b"y" * 70_000 + b"\nlast line, no newline")
    s = assert_parity(
        engine, [cut, plain, tmp_path / "missing.log"], trusted=_TRUSTED, max_line=300
    )
    assert len(s["read_problems"]) == 2
    assert s["unparsed"] > 0
    assert s["client_signals"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    lines=st.lists(access_log_lines(), max_size=80),
    fmt=st.sampled_from(FORMATS),
    trusted=st.sampled_from([TrustedProxies(), _TRUSTED, TrustedProxies(hops=1)]),
    block_size=st.sampled_from([64, 700, 1 << 16]),
    crlf=st.booleans(),
)
def test_generated_mixes(
    engine: Geofence,
    lines: list[bytes],
    fmt: str,
    trusted: TrustedProxies,
    block_size: int,
    crlf: bool,
) -> None:
    """Any mix of nginx, combined, JSON and junk lines, any format and proxy setup: equal summaries."""
    data = (b"\r\n" if crlf else b"\n").join(lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mix.log"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hops without cidrs warns (TrustWarning)
            s = assert_parity(
                engine, [path], block_size=block_size, format=fmt, trusted=trusted, max_line=250
            )
    assert s["lines"] == accounted(s)
    assert s["lines"] == (data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0))


def test_default_blocks_and_run_audit(engine: Geofence, tmp_path: Path) -> None:
    """run_audit's own block sizes (4 MiB vectorised, 1 MiB reference) give equal summaries."""
    r = random.Random(5)
    path = tmp_path / "big.log"
    with path.open("w") as fh:
        for i in range(60_000):
            fh.write(
                f"{r.choice(LOG_CLIENTS)} - {r.choice(['-', 'u1', 'u2'])} "
                f"[01/Mar/2026:{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d} +0000] "
                f'"GET / HTTP/1.1" 200 1 "-" "a" "{r.choice(["-", "5.1.2.3"])}"\n'
            )
    fast = run_audit(engine, [str(path)], AuditOptions(vectorised=True, trusted=_TRUSTED))
    slow = run_audit(engine, [str(path)], AuditOptions(vectorised=False, trusted=_TRUSTED))
    for key in _TIMING:
        del fast[key], slow[key]
    assert fast == slow
    assert fast["workarounds"] is not None


def test_auto_mixes_columns_and_rows(engine: Geofence, tmp_path: Path) -> None:
    """By default Arrow starts on a big block; then blocks go as columns, small ones as rows."""
    r = random.Random(8)
    logs = {"big": 60_000, "medium": 11_000, "small": 50}  # 5.7 MB, 1 MB, 5 kB
    for name, n in logs.items():
        (tmp_path / name).write_text(
            "".join(
                f"{r.choice(LOG_CLIENTS)} - - [01/Mar/2026:10:{i // 60 % 60:02d}:{i % 60:02d} "
                f'+0000] "GET / HTTP/1.1" 200 1 "-" "a" "{r.choice(["-", "5.1.2.3"])}"\n'
                + ("junk\n" if i % 500 == 7 else "")
                for i in range(n)
            )
        )
    parsed: list[int] = []
    original = columns.ColumnParser.parse

    def spy(self: columns.ColumnParser, text: str, first_line: int) -> columns.Columns:
        parsed.append(len(text))
        return original(self, text, first_line)

    order = ["medium", "big", "small", "medium"]
    block = ARROW_FROM + 50_000
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(columns.ColumnParser, "parse", spy)
        auto = Auditor(engine, AuditOptions(trusted=_TRUSTED))
        for name in order:
            auto.feed(LogSource(str(tmp_path / name), block_size=block))
        got = auto.summary()
    reference = Auditor(engine, AuditOptions(vectorised=False, trusted=_TRUSTED))
    for name in order:
        reference.feed(LogSource(str(tmp_path / name), block_size=block))
    want = reference.summary()
    for key in _TIMING:
        del got[key], want[key]
    assert got == want
    # medium.log before Arrow started and small.log: rows; big.log's three blocks and
    # medium.log after them: columns.
    assert len(parsed) == 4
    assert parsed[-1] == (tmp_path / "medium").stat().st_size


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(access_log_lines(), max_size=60),
    fmt=st.sampled_from(FORMATS),
    nulls=st.integers(0, 2),
)
def test_audit_lines_both_ways(engine: Geofence, lines: list[bytes], fmt: str, nulls: int) -> None:
    """The engines' batch function gives the same rows parsed as columns or line by line."""
    texts: list[str | None] = [b.decode("utf-8", "replace") for b in lines]
    texts[len(texts) // 2 : len(texts) // 2] = [None] * nulls
    array = pa.array(texts, pa.string())
    fast = audit_lines(engine, array, fmt=fmt, trusted=_TRUSTED, vectorised=True)
    slow = audit_lines(engine, array, fmt=fmt, trusted=_TRUSTED, vectorised=False)
    assert fast.to_pylist() == slow.to_pylist()
    assert fast.num_rows == len(texts) + sum(t.count("\n") for t in texts if t)


def test_log_batches_both_ways(engine: Geofence, tmp_path: Path) -> None:
    """log_batches streams equal batches either way, oversized lines and read errors included."""
    r = random.Random(4)
    text = "".join(
        f'{r.choice(LOG_CLIENTS)} - - [01/Mar/2026:10:00:{i % 60:02d} +0000] "GET / HTTP/1.1" '
        f'200 1 "-" "a" "{r.choice(["-", "5.1.2.3, 10.0.0.1"])}"\n'
        + ('{"remote_addr": "46.1.1.1"}\n' if i % 100 == 3 else "")
        + ("z" * 70_000 + "\n" if i == 500 else "")
        for i in range(3_000)
    )
    path = tmp_path / "cut.log.gz"
    blob = gzip.compress(text.encode())
    path.write_bytes(blob[: len(blob) * 3 // 4])
    fast = log_batches(engine, str(path), trusted=_TRUSTED, vectorised=True).read_all()
    slow = log_batches(engine, str(path), trusted=_TRUSTED, vectorised=False).read_all()
    assert fast.equals(slow)
    errors = fast.column("error").to_pylist()
    assert "line too long" in errors
    assert errors[-1].startswith("read error")


def _as_lists(cols: columns.Columns) -> dict[str, Any]:
    fields = ("peer", "xff", "at", "minute", "user")
    return {
        **{name: getattr(cols, name).to_pylist() for name in fields},
        "failed": cols.failed,
        "headers": cols.headers,
    }


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.lists(access_log_lines(), min_size=1, max_size=5),
    second=st.lists(access_log_lines(), max_size=40),
    fmt=st.sampled_from(FORMATS),
)
def test_blocks_as_bytes_parse_as_their_text(
    first: list[bytes], second: list[bytes], fmt: str
) -> None:
    """A block handed over as the bytes read parses exactly as its decoded text (ASCII or not)."""
    from geofence.audit.formats import FieldNames, LineParser

    blocks = [b"".join(line + b"\n" for line in lines) for lines in (first, second)]
    as_bytes = columns.ColumnParser(LineParser(fmt, FieldNames()))
    as_text = columns.ColumnParser(LineParser(fmt, FieldNames()))
    number = 1
    for data in blocks:
        got = as_bytes.parse(data, number)
        want = as_text.parse(data.decode("utf-8", "replace"), number)
        assert _as_lists(got) == _as_lists(want)
        number += data.count(b"\n")

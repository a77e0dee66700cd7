"""``geofence decide --json``: the fast line renderer gives exactly Decision.to_json."""

from __future__ import annotations

import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.cli import _JsonLines, main
from geofence.engine import Geofence
from geofence.testing import make_geofence

_IPS = ["5.1.2.3", "31.0.9.9", "8.8.8.8", "46.2.2.2", "185.0.3.3", "2a00::5", "10.1.1.1"]


@settings(max_examples=80, deadline=None)
@given(
    ip=st.sampled_from(_IPS),
    shown=st.text(max_size=20),
    at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
)
def test_line_equals_to_json(engine: Geofence, ip: str, shown: str, at: float) -> None:
    """Any address text (quotes, unicode, control characters) and time: same line as to_json."""
    d = engine.decide(ip)
    lines = _JsonLines()
    assert lines.line(d, shown, at) == d.to_json(address=shown, at=at) + "\n"
    assert lines.line(d, shown, at) == d.to_json(address=shown, at=at) + "\n"  # cached


def test_line_for_per_request_decision() -> None:
    """A decision made for one request (it names its address) is rendered by to_json itself."""
    gf = make_geofence({"5.0.0.0/8": {"country": "IR"}})
    d = gf.decide("5.1.2.3").with_address("5.1.2.3")
    assert _JsonLines().line(d, "5.1.2.3", 12.5) == d.to_json(address="5.1.2.3", at=12.5) + "\n"


def test_cli_decide_json_stdin(monkeypatch: object, snapshot_file: object) -> None:
    """`decide - --json` over stdin: one line per address, the fields of decide()."""
    import sys

    ips = _IPS * 50
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO("\n".join(ips) + "\n")
    monkeypatch.setattr(sys, "stdin", stdin)  # type: ignore[attr-defined]
    status = main(
        [
            "decide",
            "-",
            "--json",
            "--policy",
            "us-ofac-comprehensive",
            "--snapshot",
            str(snapshot_file),
        ],
        out=out,
        err=err,
    )
    assert status == 0, err.getvalue()
    gf = Geofence(str(snapshot_file), "us-ofac-comprehensive")
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == len(ips)
    for ip, row in zip(ips, rows, strict=True):
        want = json.loads(gf.decide(ip).to_json(address=ip, at=0))
        row["ts"] = 0
        assert row == want

"""The ``geofence export``, ``policy diff`` and ``policy test`` commands."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

from geofence.cli import main
from geofence.snapshot.build import build_snapshot
from tests.policy.conftest import ADDR, BUILT_AT, _entries
from tests.strategies import make_source

POLICY = """
[policy]
id = "cli-sanctions"
version = "2026-11-01"
default = "allow"
on_unresolved = "challenge"
[[rules]]
id = "iran"
action = "deny"
jurisdictions = ["IR"]
"""


def run(*argv: str) -> tuple[int, str, str]:
    """Run the CLI; returns (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A world snapshot, a variant without the Iranian range, and two policies."""
    geo, kinds = _entries()
    world = tmp_path / "world.gfs"
    world.write_bytes(
        build_snapshot(
            [make_source("test-geo", geo), make_source("test-kinds", kinds)], built_at=BUILT_AT
        )
    )
    fewer = tmp_path / "fewer.gfs"
    kept = [e for e in geo if e.record.country != "IR"]
    fewer.write_bytes(build_snapshot([make_source("test-geo", kept)], built_at=BUILT_AT))
    base = tmp_path / "base.toml"
    base.write_text(POLICY)
    wider = tmp_path / "wider.toml"
    wider.write_text(POLICY + '[[rules]]\nid = "cuba"\naction = "deny"\njurisdictions = ["CU"]\n')
    return {"world": world, "fewer": fewer, "base": base, "wider": wider}


def test_export_writes_the_file(files: dict[str, Path], tmp_path: Path) -> None:
    """``export nginx -o FILE`` writes the geo map with its header and reports the counts."""
    target = tmp_path / "geofence.conf"
    status, out, err = run(
        "export",
        "nginx",
        "--policy",
        str(files["base"]),
        "--snapshot",
        str(files["world"]),
        "-o",
        str(target),
    )
    assert status == 0, err
    assert out == ""
    assert f"wrote {target}" in err
    assert "deny" in err
    text = target.read_text()
    assert text.startswith("# geofence edge export (nginx)")
    assert "policy cli-sanctions version 2026-11-01" in text
    assert "geo $geofence_action" in text


def test_export_to_stdout_and_explain(files: dict[str, Path]) -> None:
    """Without -o the export goes to stdout; --explain says what the edge decides."""
    status, out, _ = run(
        "export",
        "cidr",
        "--policy",
        str(files["base"]),
        "--snapshot",
        str(files["world"]),
        "--actions",
        "deny",
    )
    assert status == 0
    assert "1.0.3.0/24" in out.splitlines()  # the world's Iranian network
    status, out, _ = run(
        "export",
        "cidr",
        "--policy",
        str(files["base"]),
        "--snapshot",
        str(files["world"]),
        "--explain",
    )
    assert status == 0
    assert "the export is exact" in out
    assert "Teredo" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("export", "iptables"), "unknown export format 'iptables'"),
        (("export", "cidr", "--actions", "block"), "unknown action 'block'"),
        (("export", "cidr", "--actions", "review"), "nothing to export"),
        (("export", "nginx", "--teredo", "maybe"), "--teredo"),
    ],
)
def test_export_errors_leave_no_file(
    files: dict[str, Path], tmp_path: Path, argv: tuple[str, ...], message: str
) -> None:
    """Bad input exits 2 with a clear message and writes nothing."""
    target = tmp_path / "out.txt"
    status, _, err = run(
        *argv,
        "--policy",
        str(files["base"]),
        "--snapshot",
        str(files["world"]),
        "-o",
        str(target),
    )
    assert status == 2
    assert message in err
    assert not target.exists()


def test_export_unwritable_and_empty(files: dict[str, Path], tmp_path: Path) -> None:
    """An unwritable target and an all-allow policy are clear errors."""
    status, _, err = run(
        "export",
        "cidr",
        "--policy",
        str(files["base"]),
        "--snapshot",
        str(files["world"]),
        "-o",
        str(tmp_path / "missing" / "x.txt"),
    )
    assert status == 2
    assert "cannot write" in err
    status, _, err = run(
        "export", "nftables", "--policy", "allow-all", "--snapshot", str(files["world"])
    )
    assert status == 2
    assert "every address gets 'allow'" in err


def test_policy_diff(files: dict[str, Path]) -> None:
    """``policy diff OLD NEW`` shows the Cuban space turning deny; --json is parseable."""
    status, out, _ = run(
        "policy",
        "diff",
        str(files["base"]),
        str(files["wider"]),
        "--snapshot",
        str(files["world"]),
    )
    assert status == 0
    assert "CU" in out
    assert "allow -> deny" in out
    assert "1.0.4.0/24" in out
    status, out, _ = run(
        "policy",
        "diff",
        str(files["base"]),
        str(files["wider"]),
        "--snapshot",
        str(files["world"]),
        "--json",
    )
    data = json.loads(out)
    assert [(c["country"], c["old"], c["new"]) for c in data["changes"]] == [
        ("CU", "allow", "deny")
    ]


def test_data_diff(files: dict[str, Path]) -> None:
    """``policy diff POLICY --data OLD NEW``: the Iranian range leaving the data."""
    status, out, _ = run(
        "policy",
        "diff",
        str(files["base"]),
        "--data",
        str(files["world"]),
        str(files["fewer"]),
        "--json",
    )
    assert status == 0
    changes = json.loads(out)["changes"]
    assert {
        "country": "unknown",
        "old": "deny",
        "new": "allow",
        "ipv4_addresses": 256,
        "ipv6_addresses": 2**96,
        "ranges": 2,
    } in changes
    status, _, err = run("policy", "diff", str(files["base"]))
    assert status == 2
    assert "give two policies" in err


def test_policy_test_exit_status(files: dict[str, Path], tmp_path: Path) -> None:
    """``policy test`` exits 0 when every case passes and 1 with a FAIL block otherwise."""
    cases = tmp_path / "c.cases.toml"
    cases.write_text(
        textwrap.dedent(f"""
        [[case]]
        name = "iran denied"
        address = "{ADDR["ir"]}"
        action = "deny"
        rule = "iran"
    """)
    )
    argv = ("policy", "test", str(files["base"]), str(cases), "--snapshot", str(files["world"]))
    status, out, _ = run(*argv)
    assert status == 0
    assert "1 passed, 0 failed" in out
    cases.write_text(cases.read_text().replace('action = "deny"', 'action = "allow"'))
    status, out, _ = run(*argv)
    assert status == 1
    assert "FAIL iran denied" in out
    assert "expected: allow (rule iran)" in out
    assert "0 passed, 1 failed" in out


def test_export_tunnels_state(files: dict[str, Path]) -> None:
    """``--tunnels state`` lists 6to4 and NAT64 as one stated block each."""
    argv = ["export", "cidr", "--policy", str(files["base"]), "--snapshot", str(files["world"])]
    status, expanded, _ = run(*argv, "--actions", "deny")
    assert status == 0
    status, stated, _ = run(*argv, "--actions", "deny", "--tunnels", "state")
    assert status == 0
    assert "2002::/16" in stated.splitlines()
    assert "64:ff9b::/96" in stated.splitlines()
    assert "2002::/16" not in expanded.splitlines()
    assert "2002:100:300::/40" in expanded.splitlines()  # 6to4 of the world's 1.0.3.0/24

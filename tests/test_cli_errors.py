"""The command line reports every input error as one ``geofence:`` line and status 2.

Before, a non-UTF-8 policy file printed a traceback, a build into a missing
directory named a temporary file, and the shrink guard told command-line users
to "pass force=True".
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from geofence.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("geofence: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'[policy]\nid = "p"\ndescription = "\xff"\n', "not UTF-8 text: byte 0xff on line 3"),
        (b'[policy]\nid = "p"\n[groups]\nx = 5\n', "[groups] x must be a list"),
        (b'[policy]\nid = "p"\nx = ' + b"[" * 3000 + b"]" * 3000, "nested too deeply"),
        (b'[policy]\nid = "a\\n"\n', "[policy] id must be a short identifier"),
    ],
)
@pytest.mark.parametrize(
    ("command", "expected"), [(["policy", "check"], 1), (["decide", "8.8.8.8", "--policy"], 2)]
)
def test_bad_policy_files_give_one_line(
    tmp_path: Path, content: bytes, fragment: str, command: list[str], expected: int
) -> None:
    """Policy check (status 1: invalid) and decide --policy (2) name the file and the reason."""
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    status, _, err = run(*command, str(path))
    assert status == expected
    line = _one_error_line(err)
    assert str(path) in line
    assert fragment in line


def test_build_into_a_missing_directory_names_the_directory(tmp_path: Path) -> None:
    """The directory is checked before the build, and the message names it."""
    csv = tmp_path / "ranges.csv"
    csv.write_text("1.0.0.0,1.0.0.255,AU\n")
    target = tmp_path / "nowhere" / "snap.gfs"
    status, _, err = run("data", "build", "--source", f"csv:{csv}", "-o", str(target))
    assert status == 2
    line = _one_error_line(err)
    assert f"no directory {tmp_path / 'nowhere'}" in line
    assert ".snap.gfs." not in line  # not the temporary file of the atomic write


def test_shrink_guard_tells_cli_users_about_the_flag(tmp_path: Path) -> None:
    """A sharply shrunk build is refused with advice in command-line words."""
    big = tmp_path / "big.csv"
    big.write_text("".join(f"{i}.0.0.0,{i}.0.0.255,AU\n" for i in range(1, 60)))
    small = tmp_path / "small.csv"
    small.write_text("1.0.0.0,1.0.0.255,AU\n")
    target = tmp_path / "snap.gfs"
    assert run("data", "build", "--source", f"csv:{big}", "-o", str(target))[0] == 0
    status, _, err = run("data", "build", "--source", f"csv:{small}", "-o", str(target))
    assert status == 2
    line = _one_error_line(err)
    assert "pass --force" in line
    assert "force=True" not in line
    assert run("data", "build", "--source", f"csv:{small}", "-o", str(target), "--force")[0] == 0


def test_non_utf8_addresses_on_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undecodable standard input is one error line, not a traceback."""
    raw = io.TextIOWrapper(io.BytesIO(b"8.8.8.8\n\xff\xfe\n"), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", raw)
    status, _, err = run("lookup")
    assert status == 2
    assert "not UTF-8" in _one_error_line(err)

"""Expected decisions (``policy test``).

Every bundled preset's cases file holds on the bundled data; the runner reports
differences clearly and rejects malformed files.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from geofence.errors import PolicyError
from geofence.export import load_cases, run_cases
from geofence.policy.parse import preset_names, preset_path
from tests.export.conftest import bundled
from tests.policy.conftest import ADDR, build_world, policy

TODAY = dt.date(2026, 11, 27)


def _cases_file(preset: str) -> Path:
    return preset_path(preset).with_name(f"{preset}.cases.toml")


@pytest.mark.parametrize("preset", preset_names())
def test_preset_cases_hold_on_bundled_data(preset: str) -> None:
    """Each bundled preset ships a cases file, and every case passes on the bundled data."""
    path = _cases_file(preset)
    assert path.is_file(), f"{preset} has no cases file"
    results = run_cases(preset, path, snapshot=bundled(), today=TODAY)
    assert len(results) >= 4
    failed = [r.report() for r in results if not r.passed]
    assert not failed, "\n".join(failed)


def test_cases_files_are_not_presets() -> None:
    """The cases files beside the presets are not listed as presets."""
    assert not [n for n in preset_names() if n.endswith(".cases")]


POLICY = """
    [policy]
    id = "cases-test"
    default = "allow"
    on_unresolved = "challenge"
    [[rules]]
    id = "iran"
    action = "deny"
    jurisdictions = ["IR"]
    [[rules]]
    id = "home-nationals"
    action = "route:home"
    jurisdictions = ["US"]
    subject = { nationality = ["US"] }
"""


def test_failures_show_expected_and_got(tmp_path: Path) -> None:
    """A wrong expectation fails with expected vs got and the reasons; subjects are used."""
    path = tmp_path / "c.cases.toml"
    path.write_text(
        f"""
[[case]]
name = "iran denied"
address = "{ADDR["ir"]}"
action = "deny"
rule = "iran"

[[case]]
name = "a US national is routed home"
address = "{ADDR["us"]}"
action = "route:home"
rule = "home-nationals"
subject = {{ nationality = ["US"] }}

[[case]]
name = "wrongly expects allow"
address = "{ADDR["ir"]}"
action = "allow"

[[case]]
name = "wrong rule"
address = "{ADDR["us"]}"
action = "challenge"
rule = "iran"

[[case]]
name = "not an address"
address = "1.2.3"
action = "allow"
"""
    )
    results = run_cases(policy(POLICY), path, snapshot=build_world())
    assert [r.passed for r in results] == [True, True, False, False, False]
    report = results[2].report()
    assert "FAIL wrongly expects allow" in report
    assert "expected: allow" in report
    assert "got:      deny (rule iran; outcome rule)" in report
    assert "location IR" in report
    assert "expected: challenge (rule iran)" in results[3].report()
    assert "error:" in results[4].report()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no \\[\\[case\\]\\] entries"),
        ("[[case]]\nname='x'\naddress='1.1.1.1'\naction='block'", "unknown action"),
        ("[[case]]\nname='x'\naction='deny'", "needs an address"),
        ("[[case]]\naddress='1.1.1.1'\naction='deny'", "needs a name"),
        ("[[case]]\nname='x'\naddress='1.1.1.1'\naction='deny'\ncolour=1", "unknown keys"),
        (
            "[[case]]\nname='x'\naddress='1.1.1.1'\naction='deny'\nsubject={shoe=1}",
            "unknown subject fields",
        ),
        (
            "[[case]]\nname='x'\naddress='1.1.1.1'\naction='deny'\n"
            "[[case]]\nname='x'\naddress='1.1.1.2'\naction='deny'",
            "duplicate case names",
        ),
        ("[[case]\n", "not valid TOML"),
    ],
)
def test_malformed_cases_files(tmp_path: Path, text: str, message: str) -> None:
    """Malformed cases files are PolicyErrors naming the file and what is wrong."""
    path = tmp_path / "bad.cases.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message) as info:
        load_cases(path)
    assert str(path) in str(info.value)


def test_missing_cases_file(tmp_path: Path) -> None:
    """A missing cases file is a PolicyError."""
    with pytest.raises(PolicyError, match="cannot read"):
        load_cases(tmp_path / "none.toml")

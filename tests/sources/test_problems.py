"""Tests of geofence.sources.problems: malformed values counted and skipped, or refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from geofence.errors import SourceError
from geofence.snapshot.build import compile_snapshot
from geofence.snapshot.reader import Snapshot
from geofence.sources import open_source
from geofence.sources.problems import SkipLog, ValueProblem, collecting, report

from ._helpers import entries, write_text

BUILT_AT = dt.datetime(2026, 9, 2, tzinfo=dt.UTC)


def test_skip_log_counts_keeps_examples_and_refuses_when_strict() -> None:
    """The log counts per source and field, keeps the first examples, raises when strict."""
    log = SkipLog(examples=2)
    for k in range(5):
        log.add("a", ValueProblem(f"a.csv:{k}: country 'None'", field="country"))
    log.add("b", ValueProblem("b: x", field="asn"), count=3)
    assert log.total() == 8
    assert log.total("a") == 5
    assert log.as_dict() == {"a": {"country": 5}, "b": {"asn": 3}}
    assert log.summary() == [
        "a: skipped 5 entries with a bad country",
        "    e.g. a.csv:0: country 'None'",
        "    e.g. a.csv:1: country 'None'",
        "b: skipped 3 entries with a bad asn",
        "    e.g. b: x",
    ]
    strict = SkipLog(strict=True)
    with pytest.raises(ValueProblem, match="country 'None'"):
        strict.add("a", ValueProblem("a.csv:1: country 'None'", field="country"))


def test_report_raises_outside_a_collecting_build() -> None:
    """Without a collecting log a problem is raised, so nothing is dropped unasked."""
    problem = ValueProblem("x: country 'QQ'", field="country")
    with pytest.raises(SourceError, match="QQ"):
        report("x", problem)
    log = SkipLog()
    with collecting(log):
        report("x", problem)
    assert log.total("x") == 1
    with pytest.raises(SourceError):
        report("x", problem)  # the collector is gone after the block


CASES = [
    (
        "csv",
        "ranges.csv",
        "1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.255,None\n1.0.2.0,1.0.2.255,UA,RU-MOW\n",
        {"country": 1, "subdivision": 1},
        ("1.0.0.1", "1.0.1.1"),
    ),
    (
        "cidr",
        "list.txt",
        "1.0.0.0/24,AU\n1.0.1.0/24,QQ\n",
        {"country": 1},
        ("1.0.0.1", "1.0.1.1"),
    ),
    (
        "geofeed",
        "feed.csv",
        "1.0.0.0/24,AU,,,\n1.0.1.0/24,UA,UA43,,\n",
        {"region": 1},
        ("1.0.0.1", "1.0.1.1"),
    ),
    (
        "rir",
        "delegated-test-extended",
        "2|test|20240501|2|19830705|20240430|+0200\n"
        "test|AU|ipv4|1.0.0.0|256|19930901|allocated|a\n"
        "test|XX|ipv4|1.0.1.0|256|19930901|allocated|b\n",
        {"cc": 1},
        ("1.0.0.1", "1.0.1.1"),
    ),
]


@pytest.mark.parametrize(("kind", "name", "text", "counts", "ips"), CASES)
def test_text_sources_skip_and_count_bad_codes(
    tmp_path: Path, kind: str, name: str, text: str, counts: dict[str, int], ips: tuple[str, str]
) -> None:
    """A bad country or region in one line skips that line only, counted by field."""
    path = write_text(tmp_path / name, text)
    source = open_source(f"{kind}:{path}#name=s")
    result = compile_snapshot([source], built_at=BUILT_AT)
    assert result.skipped.as_dict() == {"s": counts}
    snap = Snapshot.from_bytes(result.data)
    good, bad = ips
    assert snap.lookup(good).record is not None
    assert snap.lookup(bad).record is None
    with pytest.raises(SourceError, match=f"{name}:"):
        compile_snapshot([source], built_at=BUILT_AT, strict=True)
    with pytest.raises(SourceError):
        entries(source)


def test_structural_errors_still_fail_the_build(tmp_path: Path) -> None:
    """A reversed range or a broken line is a clear error, never a counted skip."""
    path = write_text(tmp_path / "r.csv", "1.0.0.0,1.0.0.255,AU\n1.0.3.0,1.0.2.0,AU\n")
    with pytest.raises(SourceError, match="is after end"):
        compile_snapshot([open_source(f"csv:{path}")], built_at=BUILT_AT)

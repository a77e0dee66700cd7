from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.errors import SourceError
from geofence.records import NetworkRecord
from geofence.sources.rir import rir_source

from ._helpers import entries, spans, write_text

SAMPLE = """\
# comment lines and blank lines are allowed

2.3|ripencc|1714600799|7|19830705|20240501|+0200
ripencc|*|asn|*|1|summary
ripencc|*|ipv4|*|4|summary
ripencc|*|ipv6|*|2|summary
ripencc|FR|asn|3215|1|19930901|allocated|a1
ripencc|FR|ipv4|2.0.0.0|1048576|20100712|allocated|a1
ripencc|UA|ipv4|5.8.0.0|768|20120101|assigned|b2|e-stats
ripencc||ipv4|5.9.0.0|256||available|
ripencc|ZZ|ipv4|5.10.0.0|256|20120101|reserved|
ripencc|DE|ipv6|2001:608::|32|19990803|allocated|c3
ripencc||ipv6|2a10::|12||reserved|
"""


def test_records_give_registered_country(tmp_path: Path) -> None:
    """Allocated/assigned records state registered_country only; others are skipped."""
    source = rir_source(write_text(tmp_path / "delegated-ripencc-extended-latest", SAMPLE))
    assert spans(source) == [
        (4, "2.0.0.0", "2.15.255.255"),
        (4, "5.8.0.0", "5.8.2.255"),
        (6, "2001:608::", "2001:608:ffff:ffff:ffff:ffff:ffff:ffff"),
    ]
    assert [e.record for e in entries(source)] == [
        NetworkRecord(registered_country="FR"),
        NetworkRecord(registered_country="UA"),
        NetworkRecord(registered_country="DE"),
    ]


def test_info_from_version_line(tmp_path: Path) -> None:
    """Name, version and data date come from the version line; sha256 from the file."""
    path = write_text(tmp_path / "stats", SAMPLE)
    info = rir_source(path).info
    assert info.name == "rir-ripencc"
    assert info.format == "rir"
    assert info.version == "1714600799"
    assert info.data_date == dt.date(2024, 5, 1)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_date_from_serial_when_end_date_empty(tmp_path: Path) -> None:
    """A version line without an end date takes the date from a YYYYMMDD serial."""
    text = "2|apnic|20240430|1|19830613||+1000\napnic|JP|ipv4|1.0.16.0|4096|20110412|allocated\n"
    source = rir_source(write_text(tmp_path / "s", text))
    assert source.info.data_date == dt.date(2024, 4, 30)
    assert source.info.name == "rir-apnic"
    assert spans(source) == [(4, "1.0.16.0", "1.0.31.255")]


def test_plain_delegated_format(tmp_path: Path) -> None:
    """The non-extended format (7 fields, no opaque id) reads the same."""
    text = (
        "2|arin|20240501|1|19700101|20240430|-0400\n"
        "arin|US|ipv4|3.0.0.0|16777216|19880223|assigned\n"
    )
    assert spans(rir_source(write_text(tmp_path / "s", text))) == [(4, "3.0.0.0", "3.255.255.255")]


def test_truncated_file_fails_count_check(tmp_path: Path) -> None:
    """A file with fewer records than its version line announces raises SourceError."""
    truncated = SAMPLE.rsplit("\n", 3)[0] + "\n"
    source = rir_source(write_text(tmp_path / "s", truncated))
    with pytest.raises(SourceError, match="announces 7 records but the file has 5"):
        entries(source)
    assert len(entries(rir_source(tmp_path / "s", verify_counts=False))) == 2


def test_summary_mismatch(tmp_path: Path) -> None:
    """A per-type count that disagrees with the summary line raises SourceError."""
    text = SAMPLE.replace("ripencc|*|ipv6|*|2|summary", "ripencc|*|ipv6|*|3|summary")
    with pytest.raises(SourceError, match="summary line announces 3 ipv6 records"):
        entries(rir_source(write_text(tmp_path / "s", text)))


HEADER = "2|lacnic|20240501|1|19700101|20240501|-0300\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "lacnic|BR|ipv4|200.0.0.0|0|20000101|allocated",
            r"s:2: IPv4 address count must be at least 1",
        ),
        (
            "lacnic|BR|ipv4|255.255.255.0|512|20000101|allocated",
            r"s:2: 512 addresses from .* run past",
        ),
        ("lacnic|BR|ipv4|200.0.0.0|x|20000101|allocated", r"s:2: value 'x' is not a number"),
        (
            "lacnic|BR|ipv4|2001:db8::|256|20000101|allocated",
            r"s:2: start '2001:db8::' is not an IPv4",
        ),
        (
            "lacnic|BR|ipv6|2001:db8::1|32|20000101|allocated",
            r"s:2: 2001:db8::1/32 has host bits set",
        ),
        ("lacnic|BR|ipv6|2001:db8::|129|20000101|allocated", r"s:2: IPv6 prefix length /129"),
        ("lacnic|BR|ipv4|200.0.0.0|256|20000101|leased", r"s:2: unknown status 'leased'"),
        ("lacnic|BR|ipx|200.0.0.0|256|20000101|allocated", r"s:2: unknown record type 'ipx'"),
        ("lacnic|BR|ipv4|200.0.0.0|256", r"s:2: expected 'registry\|cc\|type"),
        ("lacnic|Brazil|ipv4|200.0.0.0|256|20000101|allocated", r"s:2: cc 'Brazil'"),
        ("lacnic|BR|ipv4|200.0.0|256|20000101|allocated", r"s:2: start: "),
    ],
)
def test_malformed_records(tmp_path: Path, line: str, message: str) -> None:
    """Malformed records raise SourceError naming the file, line and problem."""
    path = write_text(tmp_path / "s", HEADER + line + "\n")
    with pytest.raises(SourceError, match=message):
        entries(rir_source(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("# only a comment\n", "empty file"),
        ("lacnic|BR|ipv4|200.0.0.0|256|20000101|allocated\n", "expected the version line"),
        ("2|lacnic|20240501|many|19700101|20240501|-0300\n", "record count 'many'"),
    ],
)
def test_malformed_version_line(tmp_path: Path, text: str, message: str) -> None:
    """A missing or malformed version line raises SourceError when described."""
    with pytest.raises(SourceError, match=message):
        rir_source(write_text(tmp_path / "s", text))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, (1 << 32) - 1), st.integers(1, 1 << 24))
def test_ipv4_count_maps_to_exact_range(start: int, count: int) -> None:
    """An IPv4 record of any count (power of two or not) covers exactly start..start+count-1."""
    if start + count - 1 > (1 << 32) - 1:
        count = (1 << 32) - start
    text = HEADER + f"lacnic|BR|ipv4|{ipaddress.IPv4Address(start)}|{count}|20000101|allocated\n"
    with tempfile.TemporaryDirectory() as tmp:
        (got,) = entries(rir_source(write_text(Path(tmp) / "s", text)))
    assert (got.version, got.first, got.last) == (4, start, start + count - 1)

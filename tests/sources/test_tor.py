from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from geofence.errors import SourceError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.sources.tor import TOR_BULK_EXIT_LIST_URL, TOR_EXIT_ADDRESSES_URL, tor_exit_source

from ._helpers import entries, spans, write_text

EXIT_ADDRESSES = """\
ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E
Published 2024-04-30 12:34:56
LastStatus 2024-05-01 13:00:00
ExitAddress 192.0.2.10 2024-05-01 13:05:44
ExitNode 0111BD2485AD45D984EC4159C88FC066E5E3300F
Published 2024-04-29 01:00:00
LastStatus 2024-04-30 02:00:00
ExitAddress 192.0.2.11 2024-04-30 02:10:00
ExitAddress 2001:db8::11 2024-04-30 02:10:00
ExitNode 0211BD2485AD45D984EC4159C88FC066E5E33010
Published 2024-04-29 01:00:00
LastStatus 2024-04-30 02:00:00
ExitAddress 192.0.2.10 2024-04-30 03:00:00
"""


def test_bulk_exit_list(tmp_path: Path) -> None:
    """One address per line gives single-address TOR ranges; duplicates are stated once."""
    path = write_text(tmp_path / "torbulkexitlist", "192.0.2.1\n\n# c\n192.0.2.2\n192.0.2.1\n")
    source = tor_exit_source(path)
    assert spans(source) == [(4, "192.0.2.1", "192.0.2.1"), (4, "192.0.2.2", "192.0.2.2")]
    assert all(
        e.record == NetworkRecord(kinds=NetworkKind.TOR, provider="Tor") for e in entries(source)
    )
    info = source.info
    assert (info.name, info.format, info.url, info.data_date) == (
        "tor-exits",
        "tor",
        TOR_BULK_EXIT_LIST_URL,
        None,
    )


def test_exit_addresses_format(tmp_path: Path) -> None:
    """The TorDNSEL format gives its ExitAddress lines; the latest date is the data date."""
    source = tor_exit_source(write_text(tmp_path / "exit-addresses", EXIT_ADDRESSES))
    assert spans(source) == [
        (4, "192.0.2.10", "192.0.2.10"),
        (4, "192.0.2.11", "192.0.2.11"),
        (6, "2001:db8::11", "2001:db8::11"),
    ]
    assert source.info.data_date == dt.date(2024, 5, 1)
    assert source.info.version == "2024-05-01"
    assert source.info.url == TOR_EXIT_ADDRESSES_URL


def test_given_data_date_wins(tmp_path: Path) -> None:
    """A data_date argument overrides the date found in the file."""
    path = write_text(tmp_path / "exit-addresses", EXIT_ADDRESSES)
    assert tor_exit_source(path, data_date=dt.date(2024, 6, 1)).info.data_date == dt.date(
        2024, 6, 1
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("192.0.2.1\n192.0.2\n", r"t:2: "),
        ("192.0.2.1 extra\n", r"t:1: "),
        ("ExitNode X\nExitAddress 192.0.2.1 2024-05-01\n", r"t:2: expected 'ExitAddress"),
        ("ExitNode X\nExitAddress 192.0.2.1 2024-13-01 00:00:00\n", r"t:2: .*is not a 'YYYY-MM-DD"),
        ("ExitNode X\nExitAddress 999.0.2.1 2024-05-01 00:00:00\n", r"t:2: "),
        ("ExitNode X\nBogus 1\n", r"t:2: unknown keyword 'Bogus'"),
    ],
)
def test_malformed(tmp_path: Path, text: str, message: str) -> None:
    """Malformed lines raise SourceError naming the file and line."""
    path = write_text(tmp_path / "t", text)
    with pytest.raises(SourceError, match=message):
        entries(tor_exit_source(path))

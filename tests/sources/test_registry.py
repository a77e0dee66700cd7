from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from geofence.errors import SourceError
from geofence.kinds import NetworkKind
from geofence.sources import SOURCE_KINDS, open_source

from ._helpers import entries, write_mmdb, write_text


def _files(tmp_path: Path) -> dict[str, Path]:
    """One small valid input file per source kind."""
    aws = {"createDate": "2024-05-01-00-00-00", "prefixes": [{"ip_prefix": "3.5.140.0/22"}]}
    gcp = {"creationTime": "2024-05-01T00:00:00", "prefixes": [{"ipv4Prefix": "34.1.208.0/20"}]}
    azure = {"changeNumber": 1, "values": [{"properties": {"addressPrefixes": ["20.0.0.0/11"]}}]}
    oracle = {
        "last_updated_timestamp": "2024-05-01T00:00:00",
        "regions": [{"cidrs": [{"cidr": "129.146.0.0/21"}]}],
    }
    return {
        "mmdb": write_mmdb(tmp_path / "c.mmdb", [("1.2.3.0/24", {"country": {"iso_code": "FR"}})]),
        "csv": write_text(tmp_path / "r.csv", "1.2.3.0,1.2.3.255,FR\n"),
        "cidr": write_text(tmp_path / "l.txt", "1.2.3.0/24,FR\n"),
        "rir": write_text(
            tmp_path / "s",
            "2|ripencc|1|1|19830705|20240501|+0200\n"
            "ripencc|FR|ipv4|2.0.0.0|256|20100712|allocated\n",
        ),
        "geofeed": write_text(tmp_path / "g.csv", "192.0.2.0/24,US,US-CA,,\n"),
        "tor": write_text(tmp_path / "tor.txt", "192.0.2.1\n"),
        "relay": write_text(tmp_path / "e.csv", "172.224.226.0/27,GB,GB-EN,London,\n"),
        "aws": write_text(tmp_path / "aws.json", json.dumps(aws)),
        "gcp": write_text(tmp_path / "gcp.json", json.dumps(gcp)),
        "azure": write_text(tmp_path / "azure.json", json.dumps(azure)),
        "oracle": write_text(tmp_path / "oracle.json", json.dumps(oracle)),
    }


def test_every_kind_opens(tmp_path: Path) -> None:
    """Every registered kind opens its file through a KIND:PATH spec and yields an entry."""
    files = _files(tmp_path)
    assert set(files) == set(SOURCE_KINDS)
    for kind, path in files.items():
        source = open_source(f"{kind}:{path}")
        assert len(entries(source)) == 1, kind


def test_options(tmp_path: Path) -> None:
    """Options after '#' are percent-decoded keyword arguments, converted by name."""
    path = _files(tmp_path)["cidr"]
    source = open_source(
        f"cidr:{path}#name=my-vpn&kinds=vpn,hosting&provider=Example+VPN%20Co"
        "&data_date=2024-05-01&attribution=A%26B"
    )
    assert source.info.name == "my-vpn"
    assert source.info.attribution == "A&B"
    assert source.info.data_date == dt.date(2024, 5, 1)
    (got,) = entries(source)
    assert got.record.kinds == NetworkKind.VPN | NetworkKind.HOSTING
    assert got.record.provider == "Example VPN Co"


def test_bool_option(tmp_path: Path) -> None:
    """verify_counts=false is read as a boolean."""
    path = _files(tmp_path)["rir"]
    assert entries(open_source(f"rir:{path}#verify_counts=false"))
    with pytest.raises(SourceError, match="is not true or false"):
        open_source(f"rir:{path}#verify_counts=maybe")


def test_kind_is_case_insensitive(tmp_path: Path) -> None:
    """The kind may be written in upper case."""
    assert open_source(f"MMDB:{_files(tmp_path)['mmdb']}").info.format == "mmdb"


def test_hash_in_path_without_options(tmp_path: Path) -> None:
    """A '#' not followed by key=value pairs is part of the path."""
    path = write_text(tmp_path / "list#1.txt", "192.0.2.0/24,FR\n")
    assert len(entries(open_source(f"cidr:{path}"))) == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonsense", "is not KIND:PATH"),
        (":x", "is not KIND:PATH"),
        ("shapefile:x.shp", "unknown source kind 'shapefile'.*known kinds: mmdb, csv, cidr"),
        ("csv:", "names no file"),
        ("csv:missing.csv", "missing.csv: no such file"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    """Malformed specs, unknown kinds and missing files raise SourceError."""
    with pytest.raises(SourceError, match=message):
        open_source(spec)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("colour=red", "unknown option 'colour' for 'cidr' sources.*options: kinds, country"),
        ("name=a&name=b", "option 'name' is given twice"),
        ("kinds=teleport", "unknown network kind 'teleport'"),
        ("data_date=May", "option data_date='May'"),
    ],
)
def test_bad_options(tmp_path: Path, options: str, message: str) -> None:
    """Unknown, repeated or invalid options raise SourceError."""
    path = _files(tmp_path)["cidr"]
    with pytest.raises(SourceError, match=message):
        open_source(f"cidr:{path}#{options}")

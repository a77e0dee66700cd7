from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from geofence.errors import SourceError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.sources.cloud import (
    AWS_URL,
    aws_source,
    azure_source,
    gcp_source,
    oracle_source,
)

from ._helpers import entries, spans, write_text

AWS: dict[str, Any] = {
    "syncToken": "1714564800",
    "createDate": "2024-05-01-12-00-00",
    "prefixes": [
        {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "AMAZON"},
        {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "S3"},
        {"ip_prefix": "15.230.56.104/31", "region": "us-east-1", "service": "AMAZON"},
    ],
    "ipv6_prefixes": [
        {"ipv6_prefix": "2600:1f14::/35", "region": "us-west-2", "service": "EC2"},
    ],
}

GCP: dict[str, Any] = {
    "syncToken": "1714560000000",
    "creationTime": "2024-05-01T10:40:00.123456",
    "prefixes": [
        {"ipv4Prefix": "34.1.208.0/20", "service": "Google Cloud", "scope": "africa-south1"},
        {"ipv6Prefix": "2600:1900:8000::/44", "service": "Google Cloud", "scope": "us-east1"},
    ],
}

AZURE: dict[str, Any] = {
    "changeNumber": 271,
    "cloud": "Public",
    "values": [
        {
            "name": "ActionGroup",
            "id": "ActionGroup",
            "properties": {
                "changeNumber": 40,
                "region": "",
                "platform": "Azure",
                "systemService": "ActionGroup",
                "addressPrefixes": ["4.145.74.52/30", "2603:1030:c06:1::/64"],
            },
        },
        {
            "name": "AzureCloud",
            "id": "AzureCloud",
            "properties": {
                "changeNumber": 90,
                "addressPrefixes": ["4.145.74.52/30", "20.0.0.0/11"],
            },
        },
    ],
}

ORACLE: dict[str, Any] = {
    "last_updated_timestamp": "2024-04-30T22:12:01.405129",
    "regions": [
        {"region": "us-phoenix-1", "cidrs": [{"cidr": "129.146.0.0/21", "tags": ["OCI"]}]},
        {"region": "eu-frankfurt-1", "cidrs": [{"cidr": "130.61.0.0/16", "tags": ["OCI", "OSN"]}]},
    ],
}


def _write(path: Path, document: object) -> Path:
    return write_text(path, json.dumps(document))


def test_aws(tmp_path: Path) -> None:
    """AWS IPv4 and IPv6 prefixes are HOSTING, stated once, with createDate as data date."""
    path = _write(tmp_path / "ip-ranges.json", AWS)
    source = aws_source(path)
    assert spans(source) == [
        (4, "3.5.140.0", "3.5.143.255"),
        (4, "15.230.56.104", "15.230.56.105"),
        (6, "2600:1f14::", "2600:1f14:1fff:ffff:ffff:ffff:ffff:ffff"),
    ]
    assert all(
        e.record == NetworkRecord(kinds=NetworkKind.HOSTING, provider="Amazon AWS")
        for e in entries(source)
    )
    info = source.info
    assert (info.name, info.format, info.version, info.data_date, info.url) == (
        "aws",
        "aws",
        "1714564800",
        dt.date(2024, 5, 1),
        AWS_URL,
    )
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_gcp(tmp_path: Path) -> None:
    """GCP ipv4Prefix/ipv6Prefix entries are HOSTING with creationTime as data date."""
    source = gcp_source(_write(tmp_path / "cloud.json", GCP))
    assert spans(source) == [
        (4, "34.1.208.0", "34.1.223.255"),
        (6, "2600:1900:8000::", "2600:1900:800f:ffff:ffff:ffff:ffff:ffff"),
    ]
    assert entries(source)[0].record.provider == "Google Cloud"
    assert source.info.data_date == dt.date(2024, 5, 1)
    assert source.info.version == "1714560000000"


def test_azure(tmp_path: Path) -> None:
    """Azure service tag prefixes are stated once; the date comes from the file name."""
    source = azure_source(_write(tmp_path / "ServiceTags_Public_20240429.json", AZURE))
    assert spans(source) == [
        (4, "4.145.74.52", "4.145.74.55"),
        (6, "2603:1030:c06:1::", "2603:1030:c06:1:ffff:ffff:ffff:ffff"),
        (4, "20.0.0.0", "20.31.255.255"),
    ]
    assert entries(source)[0].record.provider == "Microsoft Azure"
    assert source.info.version == "271"
    assert source.info.data_date == dt.date(2024, 4, 29)


def test_azure_without_date_in_name(tmp_path: Path) -> None:
    """Without a date in the file name the data date is unknown unless given."""
    path = _write(tmp_path / "tags.json", AZURE)
    assert azure_source(path).info.data_date is None
    assert azure_source(path, data_date=dt.date(2024, 5, 6)).info.data_date == dt.date(2024, 5, 6)


def test_oracle(tmp_path: Path) -> None:
    """Oracle region CIDRs are HOSTING with last_updated_timestamp as data date."""
    source = oracle_source(_write(tmp_path / "public_ip_ranges.json", ORACLE))
    assert spans(source) == [
        (4, "129.146.0.0", "129.146.7.255"),
        (4, "130.61.0.0", "130.61.255.255"),
    ]
    assert entries(source)[0].record.provider == "Oracle Cloud"
    assert source.info.data_date == dt.date(2024, 4, 30)


def test_provider_can_be_renamed(tmp_path: Path) -> None:
    """The provider name is a parameter."""
    source = aws_source(_write(tmp_path / "a.json", AWS), provider="AWS", name="aws-2024")
    assert source.info.name == "aws-2024"
    assert entries(source)[0].record.provider == "AWS"


def test_invalid_json(tmp_path: Path) -> None:
    """Invalid JSON raises SourceError with the line and column."""
    path = write_text(tmp_path / "a.json", '{"prefixes": [\n  {"ip_prefix": "1.2.3.0/24",}\n]}')
    with pytest.raises(SourceError, match=r"a.json:2:\d+: invalid JSON"):
        aws_source(path)


@pytest.mark.parametrize(
    ("factory", "document", "message"),
    [
        (aws_source, [], "expected a JSON object at the top level"),
        (aws_source, {"createDate": "2024-05-01-12-00-00"}, "prefixes: expected a list"),
        (
            aws_source,
            {"prefixes": [{"ip_prefix": "3.5.140.1/22"}]},
            r"prefixes\[0\].ip_prefix: '3.5.140.1/22' has host bits set",
        ),
        (
            aws_source,
            {"prefixes": [{"ip_prefix": "2600::/32"}]},
            r"prefixes\[0\].ip_prefix: '2600::/32' is not an IPv4 prefix",
        ),
        (aws_source, {"prefixes": [{"service": "S3"}]}, r"prefixes\[0\].ip_prefix: None"),
        (aws_source, {"prefixes": ["3.5.140.0/22"]}, r"prefixes\[0\]: expected an object"),
        (aws_source, {"prefixes": [], "createDate": "yesterday"}, "createDate 'yesterday'"),
        (gcp_source, {"prefixes": [{"scope": "x"}]}, "exactly one of ipv4Prefix, ipv6Prefix"),
        (gcp_source, {"prefixes": [{"ipv6Prefix": "34.1.208.0/20"}]}, "is not an IPv6 prefix"),
        (azure_source, {"values": [{"name": "X"}]}, r"values\[0\].properties: expected an object"),
        (
            azure_source,
            {"values": [{"properties": {"addressPrefixes": [5]}}]},
            r"addressPrefixes\[0\]: 5 is not a prefix string",
        ),
        (
            oracle_source,
            {"regions": [{"cidrs": [{"cidr": "not-a-cidr"}]}]},
            r"regions\[0\].cidrs\[0\].cidr: ",
        ),
        (oracle_source, {"regions": {}}, "regions: expected a list"),
    ],
)
def test_malformed_documents(tmp_path: Path, factory: Any, document: object, message: str) -> None:
    """Documents of the wrong shape or with bad prefixes raise SourceError naming the JSON path."""
    path = _write(tmp_path / "doc.json", document)
    with pytest.raises(SourceError, match=message):
        entries(factory(path))


def test_missing_file(tmp_path: Path) -> None:
    """A missing file raises SourceError."""
    with pytest.raises(SourceError, match="no such file"):
        gcp_source(tmp_path / "cloud.json")

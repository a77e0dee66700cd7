"""decide_arrow's ``asn`` column: the address's AS number whenever the data has one.

A policy without ASN rules does not put AS numbers into its decisions (they
are not needed to decide); the column must still carry the ASN that the
snapshot's ASN table gives the address, as ``geofence explain`` and
``Snapshot.get`` do. A policy with ASN rules keeps its decisions' own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from pathlib import Path

import pytest

from geofence.engine import Geofence
from geofence.policy.parse import parse_policy
from geofence.records import NetworkRecord
from geofence.snapshot.build import build_snapshot
from geofence.sources.base import RangeEntry, Source
from tests.strategies import make_source

pa = pytest.importorskip("pyarrow", reason="the audit extra (pyarrow) is not installed")

from geofence.audit import AuditOptions, run_audit  # noqa: E402
from geofence.audit.arrow import audit_lines  # noqa: E402
from geofence.batch_arrow import decide_arrow  # noqa: E402


def _net(cidr: str, record: NetworkRecord) -> RangeEntry:
    net = ipaddress.ip_network(cidr)
    return RangeEntry(net.version, int(net.network_address), int(net.broadcast_address), record)


_COUNTRIES = make_source(
    "countries",
    [
        _net("8.0.0.0/8", NetworkRecord(country="US")),
        _net("9.0.0.0/8", NetworkRecord(country="IR")),
        _net("2a00::/16", NetworkRecord(country="DE")),
        _net("5.0.0.0/8", NetworkRecord(country="GB", asn=64999, as_org="Stated")),
    ],
)
_ASNS = dataclasses.replace(
    make_source(
        "asn",
        [
            _net("8.8.8.0/24", NetworkRecord(asn=15169, as_org="Google LLC")),
            _net("9.9.0.0/16", NetworkRecord(asn=64600, as_org="Example")),
            _net("2a00:1::/32", NetworkRecord(asn=64700)),
        ],
    ),
    asn_table=True,
)
_NO_ASN_RULES = """
[policy]
id = "no-asn-rules"
version = "2026-01-01"

[[rules]]
id = "iran"
action = "deny"
jurisdictions = ["IR"]
"""
_ASN_RULE = """
[policy]
id = "asn-rule"
version = "2026-01-01"

[[rules]]
id = "as64600"
action = "challenge"
asns = [64600]
"""
_ADDRESSES = [
    "8.8.8.8",  # ASN from the table
    "8.8.9.9",  # a country, no ASN anywhere
    "9.9.1.1",  # table, and the deny rule
    "2a00:1::5",  # table, IPv6
    "5.1.2.3",  # the record states its own ASN
    "::ffff:8.8.8.8",  # mapped: unwrapped like Snapshot.get
    "junk",
    None,
    "8.8.8.8",
]


@pytest.fixture(scope="module")
def snapshot_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot whose ASNs come from a separate ASN table."""
    path = tmp_path_factory.mktemp("asn") / "asn.gfs"
    sources: list[Source] = [_COUNTRIES, _ASNS]
    path.write_bytes(
        build_snapshot(sources, name="asn", built_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    )
    return path


def _table_asn(gf: Geofence, address: str | None) -> int | None:
    if address is None or address == "junk":
        return None
    record = gf.snapshot.get(address)
    return record.asn if record is not None else None


@pytest.mark.parametrize("policy", [_NO_ASN_RULES, _ASN_RULE])
def test_asn_column_carries_the_address_asn(snapshot_path: Path, policy: str) -> None:
    """With or without ASN rules, every valid address's row has the ASN the data gives it."""
    gf = Geofence(snapshot_path, parse_policy(policy, source="<test>"))
    batch = decide_arrow(gf, pa.array(_ADDRESSES))
    got = batch.column("asn").to_pylist()
    assert got == [_table_asn(gf, a) for a in _ADDRESSES]
    assert got[:6] == [15169, None, 64600, 64700, 64999, 15169]
    if policy is _ASN_RULE:  # the decision's own ASN is the one the rule matched
        assert batch.column("rule_id").to_pylist()[2] == "as64600"
    outcomes = batch.column("outcome").to_pylist()
    assert outcomes[6] == outcomes[7] == "invalid"


def test_decisions_without_asn_rules_lack_it(snapshot_path: Path) -> None:
    """The premise: decide() of a policy without ASN rules leaves ``asn`` unset."""
    gf = Geofence(snapshot_path, parse_policy(_NO_ASN_RULES, source="<test>"))
    assert gf.decide("8.8.8.8").asn is None
    assert gf.snapshot.get("8.8.8.8").asn == 15169  # type: ignore[union-attr]


def test_audit_lines_asn(snapshot_path: Path) -> None:
    """The engines' per-line batches carry the client's ASN too."""
    gf = Geofence(snapshot_path, parse_policy(_NO_ASN_RULES, source="<test>"))
    line = '{} - - [01/Mar/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "a" "-"'
    batch = audit_lines(gf, [line.format("8.8.8.8"), line.format("9.9.1.1"), "junk"])
    assert batch.column("asn").to_pylist() == [15169, 64600, None]


def test_audit_denied_table_names_the_asn(snapshot_path: Path, tmp_path: Path) -> None:
    """The summary's denied places list the addresses' ASNs from the table, not ``unknown``."""
    gf = Geofence(snapshot_path, parse_policy(_NO_ASN_RULES, source="<test>"))
    line = '{} - - [01/Mar/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "a" "-"\n'
    log = tmp_path / "a.log"
    log.write_text(line.format("9.9.1.1") * 3 + line.format("9.1.1.1") + line.format("8.8.8.8"))
    for vectorised in (True, False):
        s = run_audit(gf, [str(log)], AuditOptions(vectorised=vectorised))
        (place,) = s["denied"]
        assert (place["country"], place["requests"]) == ("IR", 4)
        assert place["asns"] == ["AS64600", "unknown"]
        assert s["non_allow"]["deny"]["asns"][0] == {
            "asn": "AS64600",
            "requests": 3,
            "addresses": 1,
        }

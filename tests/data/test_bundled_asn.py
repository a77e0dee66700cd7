"""The bundled snapshot's ASN table: lookups, the CLI, explain() and ASN rules show real ASNs."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator

import pytest

from geofence.cli import main
from geofence.engine import Geofence
from geofence.policy import parse_policy
from geofence.snapshot.reader import Snapshot

#: Well-known anycast addresses and their operators' AS numbers.
KNOWN = {
    "8.8.8.8": (15169, "Google"),
    "1.1.1.1": (13335, "Cloudflare"),
    "2001:4860:4860::8888": (15169, "Google"),
}


@pytest.fixture(scope="module")
def bundled() -> Snapshot:
    return Snapshot.default()


@pytest.mark.parametrize("ip", sorted(KNOWN))
def test_lookup_and_get_carry_the_asn(bundled: Snapshot, ip: str) -> None:
    asn, org = KNOWN[ip]
    for record in (bundled.lookup(ip).record, bundled.get(ip)):
        assert record is not None
        assert record.asn == asn
        assert org in (record.as_org or "")


def test_the_table_is_recorded_with_its_sources(bundled: Snapshot) -> None:
    """Both ASN sources are in the provenance, and the table covers most of IPv4."""
    names = [s.name for s in bundled.sources]
    assert {"dbip-asn-lite", "origin-asn"} <= set(names)
    stats = bundled.meta["asn"]
    assert stats["entries"] == len(bundled.asn_table) > 50_000
    # Of the 2^32 IPv4 addresses, about 3.7 billion are allocated and routed.
    assert stats["v4_addresses"] > 3_000_000_000
    # The records are not multiplied by the ASN boundaries (the full profile has ~178k).
    assert len(bundled.records) < 10_000


def test_cli_lookup_shows_the_asn() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["lookup", "8.8.8.8", "1.1.1.1"], out=out, err=err) == 0, err.getvalue()
    first, second = out.getvalue().splitlines()[:2]
    assert "AS15169" in first
    assert "AS13335" in second


POLICY = parse_policy(
    textwrap.dedent(
        """
        [policy]
        id = "deny-cloudflare"
        default = "allow"
        [[rules]]
        id = "deny-as13335"
        action = "deny"
        asns = [13335]
        """
    )
)


@pytest.fixture(scope="module")
def asn_gf(bundled: Snapshot) -> Iterator[Geofence]:
    with Geofence(bundled, POLICY, max_age=None) as gf:
        yield gf


def test_an_asn_rule_denies_with_the_bundled_data(asn_gf: Geofence) -> None:
    d = asn_gf.decide("1.1.1.1")
    assert (d.action.value, d.rule_id, d.asn) == ("deny", "deny-as13335", 13335)
    assert asn_gf.decide("8.8.8.8").action.value == "allow"


def test_explain_shows_the_asn_without_asn_rules(bundled: Snapshot) -> None:
    with Geofence(bundled, "us-ofac-comprehensive", max_age=None) as gf:
        assert gf.decide("8.8.8.8").asn is None  # precomputed decisions stay as they were
        assert "AS15169" in gf.explain("8.8.8.8")

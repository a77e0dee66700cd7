"""``hops`` never lets a client that reaches the application directly choose its address.

Before, ``TrustedProxies(hops=1)`` trusted every socket peer as the proxy, so
``curl -H 'X-Forwarded-For: 1.2.3.4'`` straight to the application was decided
as 1.2.3.4 with no signal. Now a peer must be in ``cidrs`` when they are given;
without them, configuring ``hops`` warns and every header-derived address
carries ``proxy_unverified``.
"""

from __future__ import annotations

import ipaddress
import logging
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.errors import TrustWarning
from geofence.signals.proxy import (
    SIGNAL_WEIGHTS,
    ClientAddress,
    ClientSource,
    TrustedProxies,
    resolve_client,
)
from tests.strategies import ip_objects

PROXIES = ("10.0.0.0/8", "fd00::/8")
ATTACKER = "203.0.113.66"
SPOOFED = "1.2.3.4"

#: What a client sends when it talks to the application directly, one variant per header form.
SPOOFS: dict[str, list[tuple[str, str]]] = {
    "xff": [("X-Forwarded-For", SPOOFED)],
    "xff_chain": [("X-Forwarded-For", f"{SPOOFED}, 198.51.100.7")],
    "xff_repeated": [("X-Forwarded-For", SPOOFED), ("X-Forwarded-For", "198.51.100.7")],
    "forwarded": [("Forwarded", f"for={SPOOFED}")],
    "forwarded_quoted_v6": [("Forwarded", 'for="[2001:db8::1]:4711"')],
    "x_real_ip": [("X-Real-IP", SPOOFED)],
    "cf": [("CF-Connecting-IP", SPOOFED)],
    "true_client_ip": [("True-Client-IP", SPOOFED)],
    "fastly": [("Fastly-Client-IP", SPOOFED)],
    "mixed": [("Forwarded", f"for={SPOOFED}"), ("X-Forwarded-For", SPOOFED)],
}
ALL_HEADERS = tuple(s.value for s in ClientSource if s is not ClientSource.PEER)


def _codes(result: ClientAddress) -> set[str]:
    return {s.code for s in result.signals}


def _quiet(**kwargs: object) -> TrustedProxies:
    """Build a configuration, swallowing the TrustWarning (tested on its own below)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrustWarning)
        return TrustedProxies(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(SPOOFS))
def test_hops_with_cidrs_ignores_headers_from_unknown_peers(name: str) -> None:
    """hops=1 plus cidrs: a direct client is its own address, and the headers are flagged."""
    config = TrustedProxies(hops=1, cidrs=PROXIES, headers=ALL_HEADERS)
    result = resolve_client(ATTACKER, SPOOFS[name], config)
    assert result.source is ClientSource.PEER
    assert str(result.address.ip) == ATTACKER  # type: ignore[union-attr]
    assert "header_untrusted" in _codes(result)


@pytest.mark.parametrize("name", sorted(SPOOFS))
def test_hops_with_cidrs_reads_headers_from_known_peers(name: str) -> None:
    """The same headers through a known proxy are believed, with no unverified signal."""
    config = TrustedProxies(hops=1, cidrs=PROXIES, headers=ALL_HEADERS)
    result = resolve_client("10.1.2.3", SPOOFS[name], config)
    assert result.source is not ClientSource.PEER
    assert "proxy_unverified" not in _codes(result)


@pytest.mark.parametrize("name", sorted(SPOOFS))
def test_hops_without_cidrs_flags_every_header_address(name: str) -> None:
    """hops=1 alone cannot verify the peer: the header's address carries proxy_unverified."""
    config = _quiet(hops=1, headers=ALL_HEADERS)
    result = resolve_client(ATTACKER, SPOOFS[name], config)
    assert result.source is not ClientSource.PEER
    assert "proxy_unverified" in _codes(result)
    detail = next(s.detail for s in result.signals if s.code == "proxy_unverified")
    assert ATTACKER in detail
    assert SIGNAL_WEIGHTS["proxy_unverified"] > 0


def test_hops_without_cidrs_warns_loudly_at_startup(caplog: pytest.LogCaptureFixture) -> None:
    """Configuring hops without cidrs emits a TrustWarning and a log warning naming the fix."""
    with (
        caplog.at_level(logging.WARNING, logger="geofence"),
        pytest.warns(TrustWarning, match="without cidrs trusts every socket peer"),
    ):
        TrustedProxies(hops=1)
    assert any("cidrs" in r.getMessage() for r in caplog.records)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrustWarning)
        TrustedProxies(hops=1, cidrs=PROXIES)  # verified: no warning
        TrustedProxies(cidrs=PROXIES)


def test_requests_without_forwarding_headers_are_unaffected() -> None:
    """A direct request with no header resolves to the peer, with no signal, in every mode."""
    for config in (_quiet(hops=1), TrustedProxies(hops=1, cidrs=PROXIES)):
        result = resolve_client(ATTACKER, {}, config)
        assert str(result.address.ip) == ATTACKER  # type: ignore[union-attr]
        assert result.signals == ()


_PEERS = st.one_of(ip_objects().map(str), st.sampled_from(["10.0.0.1", "fd00::2", ATTACKER]))
_HEADER_VALUES = st.one_of(
    ip_objects().map(str),
    st.lists(ip_objects().map(str), min_size=1, max_size=4).map(", ".join),
    st.text(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(
    peer=_PEERS,
    headers=st.lists(st.tuples(st.sampled_from(ALL_HEADERS), _HEADER_VALUES), max_size=4),
    hops=st.integers(1, 3),
    with_cidrs=st.booleans(),
)
def test_no_header_address_is_believed_unverified_without_saying_so(
    peer: str, headers: list[tuple[str, str]], hops: int, with_cidrs: bool
) -> None:
    """Whatever arrives: an unknown peer's headers are ignored (with cidrs) or flagged (without)."""
    config = (
        TrustedProxies(hops=hops, cidrs=PROXIES, headers=ALL_HEADERS)
        if with_cidrs
        else _quiet(hops=hops, headers=ALL_HEADERS)
    )
    result = resolve_client(peer, headers, config)
    ip = ipaddress.ip_address(peer)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket's form of an IPv4 peer
    known = any(ip in ipaddress.ip_network(net) for net in PROXIES)
    if with_cidrs and not known:
        assert result.source is ClientSource.PEER
    if result.source is not ClientSource.PEER and not known:
        assert "proxy_unverified" in _codes(result)

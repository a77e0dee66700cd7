"""Tests for geofence.signals.proxy: client address resolution through trusted proxies."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from geofence.addr import parse_address
from geofence.errors import InvalidAddressError, PolicyError
from geofence.signals.proxy import (
    SIGNAL_WEIGHTS,
    ClientAddress,
    ClientSource,
    TrustedProxies,
    resolve_client,
)
from tests.strategies import ip_objects

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

TRUSTED_NETS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
CIDRS = ("10.0.0.0/8", "fd00::/8")
BOTH = ("forwarded", "x-forwarded-for")


def codes(result: ClientAddress) -> set[str]:
    return {s.code for s in result.signals}


def text(result: ClientAddress) -> str | None:
    return result.address.text if result.address is not None else None


def trusting(*headers: str, **kwargs: object) -> TrustedProxies:
    return TrustedProxies(cidrs=CIDRS, headers=headers or ("x-forwarded-for",), **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- configuration


def test_default_trusts_nobody() -> None:
    """The default configuration ignores every header and reports the peer."""
    result = resolve_client(
        "198.51.100.7",
        {"X-Forwarded-For": "1.2.3.4", "Forwarded": "for=1.2.3.4", "CF-Connecting-IP": "1.2.3.4"},
        TrustedProxies(),
    )
    assert text(result) == "198.51.100.7"
    assert result.source is ClientSource.PEER
    assert result.chain == ("198.51.100.7",)
    assert codes(result) == {"header_untrusted"}
    (signal,) = result.signals
    assert signal.weight == SIGNAL_WEIGHTS["header_untrusted"]
    assert "cf-connecting-ip" in signal.detail


def test_no_headers_no_signals() -> None:
    """A plain request from an untrusted peer yields the peer and no signals."""
    result = resolve_client("203.0.113.9", {}, trusting())
    assert text(result) == "203.0.113.9"
    assert result.signals == ()


@pytest.mark.parametrize(
    "cidr",
    ["10.0.0.1/8", "10.0.0.0/33", "010.0.0.0/8", "nonsense", "", "fe80::/10%eth0", "10.0.0.0/8/8"],
)
def test_bad_cidr_raises_invalid_address(cidr: str) -> None:
    """A bad trusted CIDR is an InvalidAddressError (a ValueError) naming the value."""
    with pytest.raises(InvalidAddressError) as info:
        TrustedProxies(cidrs=[cidr])
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hops": -1},
        {"hops": 65},
        {"hops": True},
        {"hops": "1"},
        {"headers": ["x-forwarded-for", "X-Forwarded-For"]},
        {"headers": ["x-client-ip"]},
        {"headers": [1]},
        {"max_hops": 0},
        {"max_header_length": 10},
        {"trust_missing_peer": "yes"},
    ],
)
def test_bad_settings_raise_policy_error(kwargs: dict[str, object]) -> None:
    """Invalid hop counts, header names and limits are PolicyErrors."""
    with pytest.raises(PolicyError):
        TrustedProxies(**kwargs)  # type: ignore[arg-type]


def test_config_is_normalised() -> None:
    """CIDRs and header names are stored as tuples; header names as ClientSource."""
    config = TrustedProxies(cidrs=[" 10.0.0.0/8"], headers=["X-Forwarded-For", "CF-Connecting-IP"])
    assert config.cidrs == ("10.0.0.0/8",)
    assert config.headers == (ClientSource.X_FORWARDED_FOR, ClientSource.CF_CONNECTING_IP)
    assert config == TrustedProxies(
        cidrs=("10.0.0.0/8",), headers=("x-forwarded-for", "cf-connecting-ip")
    )


def test_from_config_accepts_strings_and_lists() -> None:
    """from_config reads comma-separated strings (as in environment variables) or lists."""
    config = TrustedProxies.from_config(
        {"cidrs": "127.0.0.1, 10.0.0.0/8 ::1", "headers": "forwarded,x-forwarded-for", "hops": 0}
    )
    assert config.cidrs == ("127.0.0.1", "10.0.0.0/8", "::1")
    assert config.headers == (ClientSource.FORWARDED, ClientSource.X_FORWARDED_FOR)
    assert TrustedProxies.from_config({"cidrs": ["10.0.0.0/8"]}).cidrs == ("10.0.0.0/8",)
    assert TrustedProxies(cidrs="10.0.0.0/8,192.168.0.0/16").cidrs == (
        "10.0.0.0/8",
        "192.168.0.0/16",
    )


def test_from_config_rejects_unknown_keys() -> None:
    """An unknown key is a PolicyError naming it; bad CIDRs stay InvalidAddressErrors."""
    with pytest.raises(PolicyError, match="trusted_cidrs"):
        TrustedProxies.from_config({"trusted_cidrs": ["10.0.0.0/8"]})
    with pytest.raises(InvalidAddressError):
        TrustedProxies.from_config({"cidrs": "10.0.0.300/32"})
    with pytest.raises(PolicyError):
        TrustedProxies.from_config({"cidrs": 10})


def test_is_trusted_merges_and_folds_mapped_networks() -> None:
    """Overlapping CIDRs merge; an IPv4-mapped CIDR trusts the IPv4 addresses it maps."""
    config = TrustedProxies(
        cidrs=["10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "::ffff:192.0.2.0/120"]
    )
    assert config.is_trusted(parse_address("10.255.255.255"))
    assert config.is_trusted(parse_address("10.0.0.0"))
    assert not config.is_trusted(parse_address("11.0.0.0"))
    assert not config.is_trusted(parse_address("9.255.255.255"))
    assert config.is_trusted(parse_address("192.0.2.77"))
    assert config.is_trusted(parse_address("::ffff:192.0.2.77"))
    assert not config.is_trusted(parse_address("192.0.3.1"))


# --------------------------------------------------------------------------- X-Forwarded-For


def test_xff_rightmost_untrusted_wins() -> None:
    """Trusted proxies are skipped from the right; a spoofed left-most entry loses."""
    result = resolve_client(
        "10.0.0.1", {"X-Forwarded-For": "6.6.6.6, 203.0.113.5, 10.0.0.2, 10.9.9.9"}, trusting()
    )
    assert text(result) == "203.0.113.5"
    assert result.source is ClientSource.X_FORWARDED_FOR
    assert result.chain == ("203.0.113.5", "10.0.0.2", "10.9.9.9", "10.0.0.1")
    assert codes(result) == {"client_behind_proxy"}


def test_xff_single_entry() -> None:
    """With one trusted proxy the only entry is the client, with no signals."""
    result = resolve_client("10.0.0.1", {"x-forwarded-for": "198.51.100.1"}, trusting())
    assert text(result) == "198.51.100.1"
    assert result.chain == ("198.51.100.1", "10.0.0.1")
    assert result.signals == ()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("198.51.100.1:5678", "198.51.100.1"),
        ("[2001:db8::1]:80", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("  198.51.100.1\t", "198.51.100.1"),
    ],
)
def test_xff_ports_and_brackets(entry: str, expected: str) -> None:
    """XFF entries may carry an IPv4 port or a bracketed IPv6 address with a port."""
    result = resolve_client("10.0.0.1", {"X-Forwarded-For": f"{entry},10.0.0.3"}, trusting())
    assert text(result) == expected
    assert result.text == entry.strip()


def test_multiple_header_lines_concatenate_in_order() -> None:
    """Repeated lines join in order, so the last line's entries are the nearest hops."""
    headers: list[tuple[str | bytes, str | bytes]] = [
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"x-forwarded-for", b"198.51.100.1, 10.0.0.7"),
        ("Accept", "*/*"),
        ("X-FORWARDED-FOR", "10.0.0.8"),
    ]
    result = resolve_client("10.0.0.1", headers, trusting())
    assert text(result) == "198.51.100.1"
    assert result.chain == ("198.51.100.1", "10.0.0.7", "10.0.0.8", "10.0.0.1")


def test_bytes_are_latin1() -> None:
    """Byte headers decode as Latin-1; non-ASCII garbage is malformed, never an error."""
    headers = [(b"x-forwarded-for", b"\xff\xfe, 198.51.100.1")]
    result = resolve_client("10.0.0.1", headers, trusting())
    assert text(result) == "198.51.100.1"
    assert "header_malformed" in codes(result)


def test_garbage_hop_stops_walk() -> None:
    """An unparseable hop between trusted hops stops the walk at the nearest trusted hop."""
    result = resolve_client(
        "10.0.0.1", {"X-Forwarded-For": "198.51.100.1, bogus, 10.0.0.2"}, trusting()
    )
    assert text(result) == "10.0.0.2"
    assert result.source is ClientSource.X_FORWARDED_FOR
    assert result.chain == ("bogus", "10.0.0.2", "10.0.0.1")
    assert "header_malformed" in codes(result)


def test_all_hops_trusted_gives_leftmost() -> None:
    """When every hop is a trusted address, the left-most is the client (internal traffic)."""
    result = resolve_client("10.0.0.1", {"X-Forwarded-For": "10.1.1.1, 10.0.0.2"}, trusting())
    assert text(result) == "10.1.1.1"
    assert result.signals == ()


def test_xff_unknown_is_obfuscated() -> None:
    """``unknown`` in XFF hides the client: the nearest trusted hop is reported."""
    result = resolve_client("10.0.0.1", {"X-Forwarded-For": "1.2.3.4, unknown"}, trusting())
    assert text(result) == "10.0.0.1"
    assert result.source is ClientSource.PEER
    assert codes(result) == {"client_obfuscated"}


def test_private_in_chain_and_client_behind_proxy() -> None:
    """Hops left of the client are reported, private ones separately."""
    result = resolve_client(
        "10.0.0.1", {"X-Forwarded-For": "192.168.1.20, 198.51.100.1"}, trusting()
    )
    assert text(result) == "198.51.100.1"
    assert codes(result) == {"client_behind_proxy", "private_in_chain"}


# --------------------------------------------------------------------------- Forwarded


def test_forwarded_quoted_ipv6_with_port() -> None:
    """RFC 7239 §7.4: a quoted, bracketed IPv6 node with a port."""
    result = resolve_client(
        "10.0.0.1",
        {"Forwarded": 'for="[2001:db8:cafe::17]:4711";proto=https;by=10.0.0.1'},
        trusting("forwarded"),
    )
    assert text(result) == "2001:db8:cafe::17"
    assert result.text == "[2001:db8:cafe::17]:4711"
    assert result.source is ClientSource.FORWARDED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('for="198.51.100.17:80"', "198.51.100.17"),
        ("for=198.51.100.17", "198.51.100.17"),
        ("For=198.51.100.17;Proto=http", "198.51.100.17"),
        ("FOR=198.51.100.17", "198.51.100.17"),
        ("proto=https;for=198.51.100.17;by=_proxy", "198.51.100.17"),
        ("for=198.51.100.17;;proto=http", "198.51.100.17"),
        ('for="198.51.100.17:_port"', "198.51.100.17"),
        ('for=192.0.2.43, for="[2001:db8:cafe::17]"', "2001:db8:cafe::17"),
        ('for="\\198.51.100.17"', "198.51.100.17"),
    ],
)
def test_forwarded_forms(value: str, expected: str) -> None:
    """Case-insensitive names, quoted values, ports, escapes, extra and empty pairs."""
    result = resolve_client("10.0.0.1", {"Forwarded": value}, trusting("forwarded"))
    assert text(result) == expected


def test_forwarded_walks_multiple_elements() -> None:
    """Elements are separated by commas and walked right to left like XFF."""
    result = resolve_client(
        "10.0.0.1",
        {"Forwarded": "for=6.6.6.6, for=198.51.100.1;proto=https, for=10.0.0.9"},
        trusting("forwarded"),
    )
    assert text(result) == "198.51.100.1"
    assert result.chain == ("198.51.100.1", "10.0.0.9", "10.0.0.1")


@pytest.mark.parametrize("hidden", ["for=_hidden", "for=unknown", 'for="_SEVKISEK"', "proto=https"])
def test_forwarded_obfuscated_stops_walk(hidden: str) -> None:
    """An obfuscated or unknown hop (or one without for=) stops the walk.

    The nearest trusted hop with an address is reported, with ``client_obfuscated``.
    """
    result = resolve_client(
        "10.0.0.1",
        {"Forwarded": f"for=198.51.100.1, {hidden}, for=10.0.0.2"},
        trusting("forwarded"),
    )
    assert text(result) == "10.0.0.2"
    assert result.source is ClientSource.FORWARDED
    assert codes(result) == {"client_obfuscated"}
    assert result.chain[-2:] == ("10.0.0.2", "10.0.0.1")


def test_forwarded_obfuscated_next_to_peer_reports_peer() -> None:
    """An obfuscated right-most element leaves only the peer to report."""
    result = resolve_client("10.0.0.1", {"Forwarded": "for=_x"}, trusting("forwarded"))
    assert text(result) == "10.0.0.1"
    assert result.source is ClientSource.PEER


def test_forwarded_unbalanced_quote_cannot_swallow_appended_hops() -> None:
    """A client's unterminated quote does not hide the elements proxies append after it."""
    for spoof in ['for="6.6.6.6', 'for="', '"\\', 'for=";by="', "for=\\"]:
        value = f'{spoof}, for="[2001:db8::5]:443", for=10.0.0.2'
        result = resolve_client("10.0.0.1", {"Forwarded": value}, trusting("forwarded"))
        assert text(result) == "2001:db8::5", spoof


@pytest.mark.parametrize(
    "value",
    ['for="198.51.100.1', "for", "for=198.51.100.1;for=198.51.100.2", "=x", 'for=a"b'],
)
def test_forwarded_malformed_element(value: str) -> None:
    """A malformed right-most element stops the walk: the peer is reported."""
    result = resolve_client("10.0.0.1", {"Forwarded": value}, trusting("forwarded"))
    assert text(result) == "10.0.0.1"
    assert "header_malformed" in codes(result)


def test_forwarded_conflict_prefers_first_configured() -> None:
    """Forwarded and XFF disagreeing gives forwarded_conflict; the first configured wins."""
    headers = {"Forwarded": "for=198.51.100.1", "X-Forwarded-For": "198.51.100.2"}
    result = resolve_client("10.0.0.1", headers, trusting(*BOTH))
    assert text(result) == "198.51.100.1"
    assert codes(result) == {"forwarded_conflict"}
    assert SIGNAL_WEIGHTS["forwarded_conflict"] == 1.0
    result = resolve_client("10.0.0.1", headers, trusting(*reversed(BOTH)))
    assert text(result) == "198.51.100.2"


def test_forwarded_and_xff_agreeing() -> None:
    """Headers that agree give no conflict, even in different notations."""
    headers = {"Forwarded": 'for="[2001:db8::1]:1"', "X-Forwarded-For": "2001:db8:0::1"}
    result = resolve_client("10.0.0.1", headers, trusting(*BOTH))
    assert text(result) == "2001:db8::1"
    assert result.signals == ()


def test_unconfigured_header_ignored_from_trusted_peer() -> None:
    """A trusted peer's Forwarded is ignored unless configured: only XFF by default."""
    headers = {"Forwarded": "for=6.6.6.6", "X-Forwarded-For": "198.51.100.1"}
    result = resolve_client("10.0.0.1", headers, trusting())
    assert text(result) == "198.51.100.1"
    assert result.signals == ()


def test_falls_back_to_next_header() -> None:
    """When the preferred header is absent the next configured one is used."""
    result = resolve_client(
        "10.0.0.1", {"X-Forwarded-For": "198.51.100.1"}, trusting("forwarded", "x-forwarded-for")
    )
    assert text(result) == "198.51.100.1"


# --------------------------------------------------------------------------- single-address headers


@pytest.mark.parametrize(
    "name", ["x-real-ip", "cf-connecting-ip", "true-client-ip", "fastly-client-ip"]
)
def test_single_address_headers(name: str) -> None:
    """Each single-address header is honoured when configured and the peer is trusted."""
    result = resolve_client("10.0.0.1", {name.upper(): "198.51.100.1"}, trusting(name))
    assert text(result) == "198.51.100.1"
    assert result.source == name
    assert result.chain == ("198.51.100.1", "10.0.0.1")
    untrusted = resolve_client("198.51.100.9", {name: "198.51.100.1"}, trusting(name))
    assert text(untrusted) == "198.51.100.9"
    assert codes(untrusted) == {"header_untrusted"}
    unconfigured = resolve_client("10.0.0.1", {name: "198.51.100.1"}, trusting())
    assert text(unconfigured) == "10.0.0.1"


def test_cdn_header_in_xff_is_consistent() -> None:
    """CF-Connecting-IP that also appears in XFF (as Cloudflare appends it) is consistent."""
    headers = {"CF-Connecting-IP": "198.51.100.1", "X-Forwarded-For": "6.6.6.6, 198.51.100.1"}
    result = resolve_client("10.0.0.1", headers, trusting("cf-connecting-ip"))
    assert text(result) == "198.51.100.1"
    assert result.signals == ()


def test_cdn_header_mismatch() -> None:
    """A CDN header missing from XFF, or two CDN headers disagreeing, is a mismatch."""
    headers = {"CF-Connecting-IP": "198.51.100.1", "X-Forwarded-For": "198.51.100.2"}
    result = resolve_client("10.0.0.1", headers, trusting("cf-connecting-ip"))
    assert text(result) == "198.51.100.1"
    assert codes(result) == {"cdn_header_mismatch"}
    headers = {"True-Client-IP": "198.51.100.1", "Fastly-Client-IP": "198.51.100.2"}
    result = resolve_client("10.0.0.1", headers, trusting("true-client-ip", "fastly-client-ip"))
    assert text(result) == "198.51.100.1"
    assert codes(result) == {"cdn_header_mismatch"}


@pytest.mark.parametrize("value", ["198.51.100.1, 198.51.100.2", "garbage", "unknown", "x" * 9000])
def test_bad_single_header_falls_back(value: str) -> None:
    """A list, garbage or oversized single-address value is ignored; the next header is used."""
    headers = {"X-Real-IP": value, "X-Forwarded-For": "198.51.100.3"}
    result = resolve_client("10.0.0.1", headers, trusting("x-real-ip", "x-forwarded-for"))
    assert text(result) == "198.51.100.3"
    assert codes(result) & {"header_malformed", "header_oversized"}
    alone = resolve_client("10.0.0.1", {"X-Real-IP": value}, trusting("x-real-ip"))
    assert text(alone) == "10.0.0.1"
    assert alone.source is ClientSource.PEER


def test_repeated_single_header_is_malformed() -> None:
    """Two X-Real-IP lines join into a list, which is not one address."""
    headers = [("X-Real-IP", "6.6.6.6"), ("X-Real-IP", "198.51.100.1")]
    result = resolve_client("10.0.0.1", headers, trusting("x-real-ip"))
    assert text(result) == "10.0.0.1"
    assert "header_malformed" in codes(result)


# --------------------------------------------------------------------------- limits


def test_oversized_header_uses_rightmost_part() -> None:
    """Beyond 8 KiB only the right-most part is walked: a stuffed prefix cannot hide the client."""
    value = "6.6.6.6, " * 2000 + "198.51.100.1, 10.0.0.2"
    result = resolve_client("10.0.0.1", {"X-Forwarded-For": value}, trusting())
    assert text(result) == "198.51.100.1"
    assert "header_oversized" in codes(result)
    assert SIGNAL_WEIGHTS["header_oversized"] > 0


def test_too_many_trusted_hops() -> None:
    """Beyond 64 hops the walk stops at the limit and reports the nearest trusted hop."""
    value = ", ".join(["198.51.100.1"] + [f"10.0.0.{i}" for i in range(1, 101)])
    result = resolve_client("10.0.0.254", {"X-Forwarded-For": value}, trusting())
    assert result.address is not None
    assert result.address.text == "10.0.0.37"  # the 64th hop from the right
    assert "header_oversized" in codes(result)
    assert len(result.chain) == 65


def test_limits_are_configurable() -> None:
    """max_hops bounds the walk."""
    value = "198.51.100.1, 10.0.0.3, 10.0.0.2"
    result = resolve_client("10.0.0.1", {"X-Forwarded-For": value}, trusting(max_hops=2))
    assert text(result) == "10.0.0.3"
    assert "header_oversized" in codes(result)


# --------------------------------------------------------------------------- hops mode


def test_hops_mode_like_envoy() -> None:
    """hops=2: the peer and one XFF entry are trusted; Envoy's documented example."""
    headers = {"X-Forwarded-For": "203.0.113.128, 203.0.113.10, 203.0.113.1"}
    result = resolve_client("192.0.2.5", headers, TrustedProxies(hops=2))
    assert text(result) == "203.0.113.10"
    assert result.chain == ("203.0.113.10", "203.0.113.1", "192.0.2.5")


def test_hops_one_takes_last_entry() -> None:
    """hops=1: any peer is the one proxy and the last entry is the client."""
    headers = {"X-Forwarded-For": "6.6.6.6, 198.51.100.1"}
    assert text(resolve_client("203.0.113.1", headers, TrustedProxies(hops=1))) == "198.51.100.1"


def test_hops_mode_passes_obfuscated_trusted_hops() -> None:
    """A hop trusted by position need not show its address."""
    headers = {"Forwarded": "for=198.51.100.1, for=_edge"}
    result = resolve_client("203.0.113.1", headers, TrustedProxies(hops=2, headers=["forwarded"]))
    assert text(result) == "198.51.100.1"


def test_hops_mode_short_chain() -> None:
    """Fewer entries than trusted hops: the left-most is reported with chain_too_short."""
    headers = {"X-Forwarded-For": "198.51.100.1"}
    result = resolve_client("203.0.113.1", headers, TrustedProxies(hops=3))
    assert text(result) == "198.51.100.1"
    assert codes(result) == {"chain_too_short", "proxy_unverified"}


def test_hops_and_cidrs_combine() -> None:
    """Past a known peer, a hop is trusted by position or by network."""
    config = TrustedProxies(hops=2, cidrs=["10.0.0.0/8"])
    headers = {"X-Forwarded-For": "198.51.100.1, 10.0.0.5, 203.0.113.7"}
    result = resolve_client("10.0.0.1", headers, config)
    assert text(result) == "198.51.100.1"
    assert "proxy_unverified" not in codes(result)


# --------------------------------------------------------------------------- peers


def test_ipv6_peer() -> None:
    """An IPv6 peer in a trusted IPv6 network is trusted."""
    result = resolve_client("fd00::1", {"X-Forwarded-For": "2001:db8::9, fd00::2"}, trusting())
    assert text(result) == "2001:db8::9"
    assert result.chain == ("2001:db8::9", "fd00::2", "fd00::1")


def test_ipv4_mapped_peer_matches_ipv4_cidr() -> None:
    """``::ffff:10.0.0.1`` from a dual-stack socket matches 10.0.0.0/8."""
    result = resolve_client("::ffff:10.0.0.1", {"X-Forwarded-For": "198.51.100.1"}, trusting())
    assert text(result) == "198.51.100.1"


def test_tunnelled_peer_is_not_trusted_by_embedded_ipv4() -> None:
    """A 6to4 or Teredo peer is matched by its IPv6 address, not the IPv4 inside it."""
    six_to_four = "2002:a00:1::1"  # embeds 10.0.0.1
    result = resolve_client(six_to_four, {"X-Forwarded-For": "198.51.100.1"}, trusting())
    assert result.source is ClientSource.PEER
    assert codes(result) == {"header_untrusted"}


def test_peer_with_port_and_brackets() -> None:
    """A peer given with a port or brackets is tolerated."""
    assert text(resolve_client("[2001:db8::1]:443", {}, trusting())) == "2001:db8::1"
    assert text(resolve_client("198.51.100.1:80", {}, trusting())) == "198.51.100.1"


def test_missing_peer_is_untrusted_by_default() -> None:
    """No peer (a Unix socket): headers are ignored and there is no address."""
    result = resolve_client(None, {"X-Forwarded-For": "198.51.100.1"}, trusting())
    assert result.address is None
    assert result.source is ClientSource.PEER
    assert result.chain == ()
    assert codes(result) == {"header_untrusted"}


def test_missing_peer_trusted_when_configured() -> None:
    """trust_missing_peer=True treats a Unix-socket peer as a trusted proxy."""
    config = trusting(trust_missing_peer=True)
    result = resolve_client(None, {"X-Forwarded-For": "198.51.100.1"}, config)
    assert text(result) == "198.51.100.1"
    assert result.chain == ("198.51.100.1",)
    hidden = resolve_client(None, {"X-Forwarded-For": "unknown"}, config)
    assert hidden.address is None
    assert codes(hidden) == {"client_obfuscated"}


def test_hops_mode_does_not_trust_missing_peer() -> None:
    """A missing peer is not counted as a hop unless trust_missing_peer is set."""
    headers = {"X-Forwarded-For": "198.51.100.1"}
    assert resolve_client(None, headers, TrustedProxies(hops=1)).address is None
    trusted = TrustedProxies(hops=1, trust_missing_peer=True)
    assert text(resolve_client(None, headers, trusted)) == "198.51.100.1"


@pytest.mark.parametrize("peer", ["testclient", "unix:/run/app.sock", ""])
def test_malformed_peer(peer: str) -> None:
    """A peer that is not an address gives no address and peer_malformed (weight 0)."""
    result = resolve_client(peer, {"X-Forwarded-For": "198.51.100.1"}, trusting())
    assert result.address is None
    assert "peer_malformed" in codes(result)
    assert SIGNAL_WEIGHTS["peer_malformed"] == 0.0


def test_bad_header_types_raise_type_error() -> None:
    """Only str and bytes are header names and values: anything else is a programming error."""
    with pytest.raises(TypeError):
        resolve_client("10.0.0.1", [("x-forwarded-for", 5)], trusting())  # type: ignore[list-item]


def test_as_dict_is_json_ready() -> None:
    """as_dict serialises to JSON for audit lines."""
    result = resolve_client("10.0.0.1", {"X-Forwarded-For": "6.6.6.6, 198.51.100.1"}, trusting())
    data = json.loads(json.dumps(result.as_dict()))
    assert data["address"] == "198.51.100.1"
    assert data["source"] == "x-forwarded-for"
    assert data["signals"][0]["code"] == "client_behind_proxy"


def test_signal_codes_have_weights() -> None:
    """Every signal a result carries uses its code's default weight, one per code."""
    result = resolve_client(
        "10.0.0.1",
        {"X-Forwarded-For": "bad, 192.168.0.1, ,198.51.100.1", "Forwarded": "for=1.1.1.1"},
        trusting(*BOTH),
    )
    seen = [s.code for s in result.signals]
    assert len(seen) == len(set(seen))
    for signal in result.signals:
        assert signal.weight == SIGNAL_WEIGHTS[signal.code]


# --------------------------------------------------------------------------- properties

_HEADER_NAMES = st.sampled_from(
    [
        "forwarded",
        "Forwarded",
        "X-Forwarded-For",
        "x-forwarded-for",
        "x-real-ip",
        "CF-Connecting-IP",
        "true-client-ip",
        "fastly-client-ip",
        "accept",
    ]
)
_ATOMS = st.sampled_from(
    [
        "for=",
        "For=",
        '"',
        "\\",
        ",",
        ";",
        "=",
        " ",
        "[",
        "]",
        ":",
        "_x",
        "unknown",
        "10.0.0.1",
        "198.51.100.1",
        "::1",
        "2001:db8::1",
        "::ffff:10.0.0.2",
        ":80",
        "proto=https",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=80),
    st.lists(_ATOMS, max_size=20).map("".join),
    st.binary(max_size=80),
)
_CONFIGS = st.builds(
    TrustedProxies,
    cidrs=st.sampled_from([(), CIDRS, ("0.0.0.0/0", "::/0"), ("198.51.100.0/24",)]),
    hops=st.integers(0, 3),
    headers=st.permutations(list(ClientSource)[1:]).flatmap(
        lambda names: st.integers(0, len(names)).map(lambda n: tuple(names[:n]))
    ),
    trust_missing_peer=st.booleans(),
)


@settings(max_examples=400)
@given(
    peer=st.one_of(st.none(), st.text(max_size=50), ip_objects().map(str)),
    headers=st.lists(st.tuples(_HEADER_NAMES, _VALUES), max_size=6),
    config=_CONFIGS,
)
@example(peer="10.0.0.1", headers=[("forwarded", 'for="\udc80"')], config=trusting("forwarded"))
def test_arbitrary_headers_never_crash(
    peer: str | None, headers: list[tuple[str, str | bytes]], config: TrustedProxies
) -> None:
    """Any header content gives a result; its address is the peer or appears in a header."""
    result = resolve_client(peer, headers, config)
    assert isinstance(result, ClientAddress)
    json.dumps(result.as_dict())
    assert len({s.code for s in result.signals}) == len(result.signals)
    if result.address is None:
        return
    if result.source is ClientSource.PEER:
        assert peer is not None
        assert result.chain[-1] == peer.strip(" \t")
    else:
        raw = "".join(v if isinstance(v, str) else v.decode("latin-1") for _, v in headers)
        assert result.text in raw.replace("\\", "")  # quoted-pair escapes removed


# Structured chains: each hop knows what it is, so an oracle can walk it.


@dataclass(frozen=True)
class Hop:
    kind: str  # "trusted", "public", "hidden", "garbage"
    ip: IP | None
    xff: str  # as an X-Forwarded-For entry
    fwd: str  # as a Forwarded element
    node: str = ""  # the Forwarded for= value, unquoted


def _public_v4() -> st.SearchStrategy[IP]:
    return st.integers(0x01000000, 0x09FFFFFF).map(ipaddress.IPv4Address)


def _public_v6() -> st.SearchStrategy[IP]:
    return st.integers(0, (1 << 112) - 1).map(lambda n: ipaddress.IPv6Address((0x2A00 << 112) | n))


def _trusted_ip() -> st.SearchStrategy[IP]:
    return st.one_of(
        st.integers(0, (1 << 24) - 1).map(lambda n: ipaddress.IPv4Address(0x0A000000 | n)),
        st.integers(0, (1 << 120) - 1).map(lambda n: ipaddress.IPv6Address((0xFD << 120) | n)),
    )


@st.composite
def _address_hop(draw: st.DrawFn, kind: str, ips: st.SearchStrategy[IP]) -> Hop:
    ip = draw(ips)
    port = draw(st.none() | st.integers(1, 65535).map(str))
    name = draw(st.sampled_from(["for", "For", "FOR"]))
    extra = draw(st.sampled_from(["", ";proto=https", ";by=_edge;host=example.com"]))
    if ip.version == 4:
        node = f"{ip}:{port}" if port else str(ip)
        fwd_value = f'"{node}"' if port or draw(st.booleans()) else node
    else:
        bracketed = draw(st.booleans()) or port is not None
        node = f"[{ip}]:{port}" if port else (f"[{ip}]" if bracketed else str(ip))
        fwd_value = f'"[{ip}]:{port}"' if port else f'"[{ip}]"'
    return Hop(kind, ip, node, f"{name}={fwd_value}{extra}", fwd_value.strip('"'))


_HIDDEN = st.sampled_from(
    [
        Hop("hidden", None, "unknown", "for=unknown"),
        Hop("hidden", None, "_h1", "for=_h1"),
        Hop("hidden", None, "_obf", "proto=https"),
    ]
)
_GARBAGE = st.sampled_from(
    [
        Hop("garbage", None, "bogus", "for=bogus"),
        Hop("garbage", None, "1.2.3", "nonsense"),
        Hop("garbage", None, "010.0.0.1", "for=010.0.0.1"),
        Hop("garbage", None, "[10.0.0.1]", 'for="[10.0.0.1]"'),
    ]
)
_HOPS = st.one_of(
    _address_hop("trusted", _trusted_ip()),
    _address_hop("public", _public_v4() | _public_v6()),
    _HIDDEN,
    _GARBAGE,
)


def _oracle(peer: IP, hops: Sequence[Hop], count: int, nets: Sequence[Network]) -> IP | None:
    """Walk right to left as documented: trusted by position or network, stop at the rest.

    The peer itself must be in ``nets`` when there are any; ``count`` alone
    vouches for it only when no networks are configured.
    """
    if not any(peer in net for net in nets) and (nets or count == 0):
        return peer
    last: IP | None = peer
    for pos, hop in enumerate(reversed(hops), start=1):
        by_count = pos < count
        if hop.ip is not None:
            if by_count or any(hop.ip in net for net in nets):
                last = hop.ip
                continue
            return hop.ip
        if by_count:
            continue
        return last
    return last


@st.composite
def _peers(draw: st.DrawFn) -> tuple[IP, str]:
    ip = draw(st.one_of(_trusted_ip(), _public_v4(), _public_v6()))
    if ip.version == 4 and draw(st.booleans()):
        return ip, f"::ffff:{ip}"  # as a dual-stack socket reports it
    return ip, str(ip)


@settings(max_examples=400)
@given(
    hops=st.lists(_HOPS, max_size=10),
    peer=_peers(),
    count=st.integers(0, 4),
    use_cidrs=st.booleans(),
    header=st.sampled_from(["x-forwarded-for", "forwarded"]),
)
def test_walk_matches_oracle(
    hops: list[Hop], peer: tuple[IP, str], count: int, use_cidrs: bool, header: str
) -> None:
    """The client is the oracle's: reached only through hops trusted by position or network."""
    nets = TRUSTED_NETS if use_cidrs else ()
    config = TrustedProxies(cidrs=CIDRS if use_cidrs else (), hops=count, headers=[header])
    peer_ip, peer_text = peer
    xff = header == "x-forwarded-for"
    value = ", ".join(h.xff if xff else h.fwd for h in hops)
    result = resolve_client(peer_text, {header: value} if hops else {}, config)
    assert result.address is not None
    assert result.address.ip == _oracle(peer_ip, hops, count, nets)
    if result.source is not ClientSource.PEER:
        # Every hop right of the reported address was trusted, by position or network.
        assert result.chain[-1] == peer_text
        by_text = {(h.xff if xff else h.node): h for h in hops}
        right = result.chain[result.chain.index(result.text) + 1 : -1]
        for pos, hop_text in enumerate(reversed(right), start=1):
            assert pos < count or by_text[hop_text].kind == "trusted"


@settings(max_examples=400)
@given(
    prefix=st.one_of(st.text(max_size=120), st.lists(_ATOMS, max_size=30).map("".join)),
    client=_address_hop("public", _public_v4() | _public_v6()),
    proxies=st.lists(_address_hop("trusted", _trusted_ip()), max_size=4),
    header=st.sampled_from(["x-forwarded-for", "forwarded"]),
    split_lines=st.booleans(),
)
def test_spoofed_prefix_never_wins(
    prefix: str, client: Hop, proxies: list[Hop], header: str, split_lines: bool
) -> None:
    """Whatever a client writes, the address the first trusted proxy appended wins."""
    config = TrustedProxies(cidrs=CIDRS, headers=[header])
    xff = header == "x-forwarded-for"
    appended = [h.xff if xff else h.fwd for h in (client, *proxies)]
    if split_lines:
        lines = [(header, prefix), *((header, a) for a in appended)]
        result = resolve_client("10.0.0.1", lines, config)
    else:
        value = ", ".join([prefix, *appended])
        result = resolve_client("10.0.0.1", {header: value}, config)
    assert result.address is not None
    assert result.address.ip == client.ip
    assert result.source == header


@given(peer=st.integers(0, (1 << 32) - 1).map(ipaddress.IPv4Address), value=_VALUES)
def test_ipv4_and_mapped_peer_resolve_alike(
    peer: ipaddress.IPv4Address, value: str | bytes
) -> None:
    """An IPv4 peer and its IPv4-mapped IPv6 form give the same client and signals."""
    config = trusting(*BOTH)
    headers = [("x-forwarded-for", value), ("forwarded", value)]
    plain = resolve_client(str(peer), headers, config)
    mapped = resolve_client(f"::ffff:{peer}", headers, config)
    assert text(plain) == text(mapped)
    assert plain.source == mapped.source
    assert codes(plain) == codes(mapped)


_FAST_PEERS = st.sampled_from(
    ["127.0.0.1", "10.0.0.1", "8.8.8.8", "::1", "::ffff:10.0.0.1", "2001:db8::1", "1.2.3.4:80", "x"]
)
_FAST_VALUES = st.one_of(
    st.sampled_from(
        [
            "8.8.8.8",
            " 1.2.3.4 ",
            "::1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "10.0.0.7",
            "",
            "1.1.1.1, 2.2.2.2",
            "junk",
            "[::1]:80",
            "fe80::1%eth0",
        ]
    ),
    st.text(max_size=20),
)


@given(
    peer=_FAST_PEERS,
    value=_FAST_VALUES,
    as_bytes=st.booleans(),
    cidrs=st.sampled_from([(), ("127.0.0.0/8",), ("10.0.0.0/8", "::1/128")]),
    extra=st.sampled_from([(), (("host", "example"),), (("x-real-ip", "9.9.9.9"),)]),
    with_xff=st.booleans(),
)
def test_fast_path_equals_general_resolution(
    peer: str,
    value: str,
    as_bytes: bool,
    cidrs: tuple[str, ...],
    extra: tuple[tuple[str, str], ...],
    with_xff: bool,
) -> None:
    """The fast path of resolve_client answers exactly what the general resolution answers."""
    from geofence.signals.proxy import _resolve_general

    # Shared across examples, so the per-instance peer trust cache is exercised
    # (a first sight of a peer, then cached answers).
    trusted = _SHARED_TRUST.setdefault(cidrs, TrustedProxies(cidrs=cidrs))
    pairs: list[tuple[str, str]] = list(extra)
    if with_xff:
        pairs.append(("X-Forwarded-For", value))
    headers: list[tuple[str | bytes, str | bytes]] = (
        [(n.encode(), v.encode("latin-1", "replace")) for n, v in pairs]
        if as_bytes
        else list(pairs)
    )
    expected = _resolve_general(peer, headers, trusted)
    assert resolve_client(peer, headers, trusted) == expected
    assert resolve_client(peer, headers, trusted) == expected


_SHARED_TRUST: dict[tuple[str, ...], TrustedProxies] = {}


def test_peer_trust_cache_is_bounded_and_per_instance() -> None:
    """The fast path remembers is_trusted per peer, per TrustedProxies, within a bound."""
    near, far = TrustedProxies(cidrs=["10.0.0.0/8"]), TrustedProxies(cidrs=["192.0.2.0/24"])
    near._peer_trust.maxsize = far._peer_trust.maxsize = 4  # a BoundedCache per instance
    xff = [("x-forwarded-for", "8.8.8.8")]
    for n in range(10):
        peer = f"10.0.0.{n}"
        assert resolve_client(peer, xff, near).source is ClientSource.X_FORWARDED_FOR
        assert resolve_client(peer, xff, far).source is ClientSource.PEER
        assert near._peer_trust[peer] is True
        assert far._peer_trust[peer] is False
        assert 1 <= len(near._peer_trust) <= 4
    assert near == TrustedProxies(cidrs=["10.0.0.0/8"])  # the cache is not part of equality
    assert hash(near) == hash(TrustedProxies(cidrs=["10.0.0.0/8"]))

"""Tests of geofence.addr: strict parsing, tunnel unwrapping, special ranges."""

from __future__ import annotations

import ipaddress
from itertools import pairwise
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.addr import (
    SPECIAL_RANGES,
    TUNNEL_RANGES,
    V4_MAX,
    V6_MAX,
    ParsedAddress,
    TunnelKind,
    address_text,
    parse_address,
    parse_plain,
    special_range,
    unwrap_ipv6,
)
from geofence.errors import InvalidAddressError
from geofence.kinds import SpecialRange
from tests.strategies import addresses, ip_objects, ipv4_ints

# Naive oracle for special_range: ipaddress networks covering each registry entry.
_SPECIAL_NETS = [
    (net, category)
    for version, first, last, category in SPECIAL_RANGES
    for net in ipaddress.summarize_address_range(
        *(
            (ipaddress.IPv4Address(first), ipaddress.IPv4Address(last))
            if version == 4
            else (ipaddress.IPv6Address(first), ipaddress.IPv6Address(last))
        )
    )
]


def _parse_any(value: object, **kwargs: Any) -> ParsedAddress:
    """Call parse_address with a value of a type its signature does not admit."""
    return parse_address(cast(Any, value), **kwargs)


# -- accepted inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "version", "number"),
    [
        ("0.0.0.0", 4, 0),
        ("8.8.8.8", 4, 0x08080808),
        ("255.255.255.255", 4, V4_MAX),
        ("::", 6, 0),
        ("2a00:1450:4001:81b::200e", 6, 0x2A00_1450_4001_081B_0000_0000_0000_200E),
        ("2A00:1450:4001:081B:0:0:0:200E", 6, 0x2A00_1450_4001_081B_0000_0000_0000_200E),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 6, V6_MAX),
    ],
)
def test_text_forms(value: str, version: int, number: int) -> None:
    """Dotted-quad IPv4 and every RFC 4291 IPv6 spelling parse to the right integer."""
    parsed = parse_address(value)
    assert (parsed.version, parsed.value, parsed.tunnel, parsed.zone) == (
        version,
        number,
        None,
        None,
    )


@pytest.mark.parametrize(
    "value",
    [
        b"\x08\x08\x08\x08",
        bytearray(b"\x08\x08\x08\x08"),
        memoryview(b"\x08\x08\x08\x08"),
        0x08080808,
        ipaddress.IPv4Address("8.8.8.8"),
        "8.8.8.8",
    ],
)
def test_ipv4_input_types(value: object) -> None:
    """Packed bytes, bytearray, memoryview, int+version and IPv4Address all give 8.8.8.8."""
    kwargs = {"version": 4} if isinstance(value, int) else {}
    parsed = _parse_any(value, **kwargs)
    assert (parsed.version, parsed.value) == (4, 0x08080808)
    assert parsed.text == "8.8.8.8"


@pytest.mark.parametrize(
    "value",
    [
        ipaddress.IPv6Address("2a00::1").packed,
        0x2A00 << 112 | 1,
        ipaddress.IPv6Address("2a00::1"),
        "2a00::1",
        "2A00:0:0::0001",
    ],
)
def test_ipv6_input_types(value: object) -> None:
    """Packed 16 bytes, int+version, IPv6Address and text all give 2a00::1."""
    kwargs = {"version": 6} if isinstance(value, int) else {}
    parsed = _parse_any(value, **kwargs)
    assert (parsed.version, parsed.value) == (6, 0x2A00 << 112 | 1)
    assert parsed.text == "2a00::1"
    assert parsed.ip == ipaddress.IPv6Address("2a00::1")


def test_matching_version_is_accepted() -> None:
    """An explicit version that matches a non-int value is accepted."""
    assert parse_address("8.8.8.8", version=4).value == 0x08080808
    assert parse_address(b"\x00" * 16, version=6).version == 6


def test_integer_edges_are_accepted() -> None:
    """0 and the top of each family are valid integer addresses."""
    assert parse_address(0, version=4).special is SpecialRange.UNSPECIFIED
    assert parse_address(V4_MAX, version=4).text == "255.255.255.255"
    assert parse_address(0, version=6).text == "::"
    assert parse_address(V6_MAX, version=6).text == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


# -- zone ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "zone"), [("fe80::1%eth0", "eth0"), ("fe80::1%25", "25"), ("::1%lo", "lo")]
)
def test_zone_id_is_kept_and_ignored(text: str, zone: str) -> None:
    """An IPv6 zone id is accepted, kept in .zone and does not change the address."""
    parsed = parse_address(text)
    assert parsed.zone == zone
    assert parsed.value == parse_address(text.partition("%")[0]).value
    assert parsed.original_text == text


def test_zone_id_from_ipaddress_object() -> None:
    """The scope id of an IPv6Address becomes the zone."""
    parsed = parse_address(ipaddress.IPv6Address("fe80::1%eth1"))
    assert (parsed.zone, parsed.value) == ("eth1", 0xFE80 << 112 | 1)


def test_zone_id_on_ipv4_is_refused() -> None:
    """A zone id on an IPv4 address is refused with a message saying why."""
    with pytest.raises(InvalidAddressError, match="only valid on IPv6"):
        parse_address("192.0.2.1%eth0")


@pytest.mark.parametrize(
    "text",
    [
        "fe80::1%",
        "fe80::1%a%b",
        "fe80::1%a b",
        "fe80::1%a/64",
        "fe80::1%[x]",
        "fe80::1%" + "x" * 65,
        "fe80::1%eth0\nforged-log-line",
        "fe80::1%eth0\r",
        "fe80::1%\x1b[31m",
        "fe80::1%\ud800",
    ],
)
def test_invalid_zone_ids_are_refused(text: str) -> None:
    """Empty, nested, spaced, bracketed, overlong, control-character and surrogate zones fail."""
    with pytest.raises(InvalidAddressError):
        parse_address(text)


# -- refused inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        (" ", "empty"),
        ("\t\n", "empty"),
        (" 8.8.8.8", "whitespace"),
        ("8.8.8.8 ", "whitespace"),
        ("8.8.8.8\n", "whitespace"),
        ("\u00a08.8.8.8", "whitespace"),
        ("example.com", "hostname"),
        ("localhost", "not a valid"),
        ("dns.google.", "hostname"),
        ("010.0.0.1", "leading zero"),
        ("8.8.8.08", "leading zero"),
        ("00.0.0.0", "leading zero"),
        ("256.0.0.1", "out of range"),
        ("1.2.3.999", "out of range"),
        ("8.8.8.8/32", "network"),
        ("2001:db8::/32", "network"),
        ("1.2.3", "not a valid"),
        ("1.2.3.4.5", "not a valid"),
        ("[::1]", "not a valid"),
        ("1::2::3", "not a valid"),
        (":::", "not a valid"),
        ("::ffff:01.2.3.4", "not a valid"),
        ("12345::", "not a valid"),
        ("\x00", "NUL"),
        ("8.8.8.8\x00", "NUL"),
        ("1" * 200, "too long"),
        ("\ud800", None),
        ("8.8.8.8\udcff", None),
        ("garbage", "not a valid"),
    ],
)
def test_bad_text_is_refused(value: str, message: str | None) -> None:
    """Each malformed text raises InvalidAddressError naming the rule it breaks."""
    with pytest.raises(InvalidAddressError, match=message) as info:
        parse_address(value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("value", "version", "message"),
    [
        (-1, 4, "out of range"),
        (V4_MAX + 1, 4, "out of range"),
        (-1, 6, "out of range"),
        (V6_MAX + 1, 6, "out of range"),
        (1, None, "needs version"),
        (1, 5, "needs version"),
    ],
)
def test_bad_integers_are_refused(value: int, version: int | None, message: str) -> None:
    """Out-of-range integers and integers without a valid version are refused."""
    with pytest.raises(InvalidAddressError, match=message):
        parse_address(value, version=version)


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("version", [None, 4, 6])
def test_bool_is_refused(value: bool, version: int | None) -> None:
    """A bool is never taken for the integer 0 or 1."""
    with pytest.raises(InvalidAddressError, match="bool"):
        parse_address(value, version=version)


@pytest.mark.parametrize("size", [0, 1, 3, 5, 15, 17, 32])
def test_wrong_length_bytes_are_refused(size: int) -> None:
    """Packed addresses must be exactly 4 or 16 bytes."""
    with pytest.raises(InvalidAddressError, match=f"got {size} bytes"):
        parse_address(bytes(size))


@pytest.mark.parametrize("value", [None, 1.5, [8, 8, 8, 8], (8, 8, 8, 8), object(), {"ip": 1}])
def test_unsupported_types_are_refused(value: object) -> None:
    """Other types raise InvalidAddressError naming the type."""
    with pytest.raises(InvalidAddressError, match="unsupported address type"):
        _parse_any(value)


@pytest.mark.parametrize(
    ("value", "version"),
    [("8.8.8.8", 6), ("::1", 4), (b"\x00" * 4, 6), (ipaddress.IPv6Address("::1"), 4)],
)
def test_mismatched_version_is_refused(value: object, version: int) -> None:
    """An explicit version that contradicts the value is refused."""
    with pytest.raises(InvalidAddressError, match=f"version={version}"):
        _parse_any(value, version=version)


def test_long_values_are_shortened_in_messages() -> None:
    """Messages quote at most a bounded prefix of a huge input."""
    with pytest.raises(InvalidAddressError) as info:
        parse_address("x" * 10_000)
    assert len(str(info.value)) < 200


# -- tunnels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tunnel", "inner"),
    [
        ("::ffff:8.8.4.4", TunnelKind.IPV4_MAPPED, "8.8.4.4"),
        ("::ffff:0:0", TunnelKind.IPV4_MAPPED, "0.0.0.0"),
        ("::ffff:255.255.255.255", TunnelKind.IPV4_MAPPED, "255.255.255.255"),
        ("2002:0808:0404::1", TunnelKind.SIXTOFOUR, "8.8.4.4"),
        ("2002:c000:022d:1:2:3:4:5", TunnelKind.SIXTOFOUR, "192.0.2.45"),
        # RFC 4380 section 4 example: client 192.0.2.45 stored inverted as 3fff:fdd2.
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", TunnelKind.TEREDO, "192.0.2.45"),
        ("2001::f7f7:fbfb", TunnelKind.TEREDO, "8.8.4.4"),
        ("64:ff9b::8.8.4.4", TunnelKind.NAT64, "8.8.4.4"),
        ("64:ff9b::c000:22d", TunnelKind.NAT64, "192.0.2.45"),
    ],
)
def test_tunnels_are_unwrapped_and_recorded(text: str, tunnel: TunnelKind, inner: str) -> None:
    """Each tunnel form yields the embedded IPv4 address and records the tunnel and outer address."""
    parsed = parse_address(text)
    outer = int(ipaddress.IPv6Address(text))
    assert parsed.version == 4
    assert parsed.text == inner
    assert parsed.tunnel is tunnel
    assert parsed.outer == outer
    assert parsed.original_text == str(ipaddress.IPv6Address(text)) or (
        ipaddress.IPv6Address(parsed.original_text) == ipaddress.IPv6Address(text)
    )
    assert parsed.special == special_range(4, int(ipaddress.IPv4Address(inner)))
    assert unwrap_ipv6(outer) == (tunnel, int(ipaddress.IPv4Address(inner)))


def test_teredo_rfc_example_is_documentation_address() -> None:
    """The RFC 4380 Teredo example unwraps to 192.0.2.45, a documentation address."""
    parsed = parse_address("2001:0:4136:e378:8000:63bf:3fff:fdd2")
    assert parsed.text == "192.0.2.45"
    assert parsed.special is SpecialRange.DOCUMENTATION


def test_packed_and_integer_tunnels_are_unwrapped() -> None:
    """Tunnel unwrapping applies to every input type, not only text."""
    mapped = ipaddress.IPv6Address("::ffff:8.8.4.4")
    for value in (mapped, mapped.packed, int(mapped)):
        kwargs = {"version": 6} if isinstance(value, int) else {}
        parsed = _parse_any(value, **kwargs)
        assert (parsed.version, parsed.text, parsed.tunnel) == (
            4,
            "8.8.4.4",
            TunnelKind.IPV4_MAPPED,
        )


def test_unwrap_false_keeps_ipv6() -> None:
    """With unwrap=False a tunnelled address stays IPv6 with no tunnel recorded."""
    parsed = parse_address("::ffff:8.8.4.4", unwrap=False)
    assert (parsed.version, parsed.tunnel, parsed.outer) == (6, None, None)
    assert parsed.value == int(ipaddress.IPv6Address("::ffff:8.8.4.4"))


@pytest.mark.parametrize(
    "text", ["2001:db8::1", "2003::1", "64:ff9b:1::1", "::1.2.3.4", "2001:1::1"]
)
def test_near_tunnel_prefixes_are_not_unwrapped(text: str) -> None:
    """Addresses next to (but outside) the tunnel prefixes stay IPv6."""
    parsed = parse_address(text)
    assert (parsed.version, parsed.tunnel) == (6, None)


# -- special ranges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("0.0.0.0", SpecialRange.UNSPECIFIED),
        ("10.1.2.3", SpecialRange.PRIVATE),
        ("172.31.255.255", SpecialRange.PRIVATE),
        ("192.168.0.1", SpecialRange.PRIVATE),
        ("100.64.0.1", SpecialRange.SHARED),
        ("127.0.0.1", SpecialRange.LOOPBACK),
        ("169.254.1.1", SpecialRange.LINK_LOCAL),
        ("192.0.2.1", SpecialRange.DOCUMENTATION),
        ("198.51.100.1", SpecialRange.DOCUMENTATION),
        ("203.0.113.255", SpecialRange.DOCUMENTATION),
        ("224.0.0.1", SpecialRange.MULTICAST),
        ("255.255.255.255", SpecialRange.RESERVED),
        ("198.18.0.1", SpecialRange.RESERVED),
        ("::", SpecialRange.UNSPECIFIED),
        ("::1", SpecialRange.LOOPBACK),
        ("::2", SpecialRange.RESERVED),
        ("fe80::1", SpecialRange.LINK_LOCAL),
        ("fd12:3456::1", SpecialRange.PRIVATE),
        ("2001:db8::1", SpecialRange.DOCUMENTATION),
        ("3fff::1", SpecialRange.DOCUMENTATION),
        ("ff02::1", SpecialRange.MULTICAST),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", SpecialRange.MULTICAST),
        ("::ffff:10.0.0.1", SpecialRange.PRIVATE),
        ("64:ff9b::127.0.0.1", SpecialRange.LOOPBACK),
        ("8.8.8.8", None),
        ("172.32.0.0", None),
        ("2a00:1450::1", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_special_ranges(text: str, category: SpecialRange | None) -> None:
    """Well-known special-purpose addresses are classified (after unwrapping); global ones are not."""
    assert parse_address(text).special is category


def test_special_ranges_are_sorted_and_disjoint() -> None:
    """SPECIAL_RANGES is sorted and disjoint per family, and within each family's space."""
    for version, top in ((4, V4_MAX), (6, V6_MAX)):
        spans = [(f, la) for v, f, la, _ in SPECIAL_RANGES if v == version]
        assert spans == sorted(spans)
        for (_, last), (first, _) in pairwise(spans):
            assert last < first
        assert all(0 <= f <= la <= top for f, la in spans)


def test_tunnel_ranges_do_not_overlap_special_ranges() -> None:
    """Tunnel prefixes and IPv6 special ranges are disjoint (the reader overlays both)."""
    spans = sorted(
        [(f, la) for v, f, la, _ in SPECIAL_RANGES if v == 6]
        + [(f, la) for _, f, la in TUNNEL_RANGES]
    )
    for (_, last), (first, _) in pairwise(spans):
        assert last < first


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=300)
@given(ip_objects())
def test_text_of_ipaddress_parses_to_its_integer(
    obj: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    """parse(str(obj)) gives int(obj) (as the outer address when a tunnel was unwrapped)."""
    raw = parse_address(str(obj), unwrap=False)
    assert (raw.version, raw.value) == (obj.version, int(obj))
    assert ipaddress.ip_address(raw.text) == obj
    parsed = parse_address(str(obj))
    assert (parsed.outer if parsed.tunnel else parsed.value) == int(obj)


@settings(max_examples=200)
@given(ip_objects())
def test_all_input_types_agree(obj: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    """Text, packed bytes, int+version and the ipaddress object parse identically."""
    expected = parse_address(str(obj))
    assert parse_address(obj.packed) == expected
    assert parse_address(int(obj), version=obj.version) == expected
    assert parse_address(obj) == expected


@settings(max_examples=200)
@given(ipv4_ints())
def test_ipv4_and_mapped_forms_agree(value: int) -> None:
    """An IPv4 text and its ::ffff: form have the same effective version, value and category."""
    text = str(ipaddress.IPv4Address(value))
    plain = parse_address(text)
    mapped = parse_address("::ffff:" + text)
    assert (mapped.version, mapped.value, mapped.special) == (
        plain.version,
        plain.value,
        plain.special,
    )
    assert mapped.tunnel is TunnelKind.IPV4_MAPPED


@settings(max_examples=300)
@given(addresses())
def test_special_range_matches_naive_oracle(address: tuple[int, int]) -> None:
    """special_range agrees with membership in ipaddress networks built from SPECIAL_RANGES."""
    version, value = address
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
        ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
    )
    expected = next(
        (cat for net, cat in _SPECIAL_NETS if net.version == version and ip in net), None
    )
    assert special_range(version, value) is expected


@settings(max_examples=200)
@given(addresses())
def test_address_text_round_trips(address: tuple[int, int]) -> None:
    """address_text output parses back to the same integer (unwrapping disabled)."""
    version, value = address
    parsed = parse_address(address_text(version, value), unwrap=False)
    assert (parsed.version, parsed.value) == (version, value)


_ADDRESSY = st.text(alphabet="0123456789abcdefABCDEF.:%/[] x\t\u0660\uff11", max_size=50)
# Any code point, and a mix rich in lone surrogates, controls, odd spaces and digits.
_ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=60)
_ODD_TEXT = st.text(
    alphabet=st.one_of(st.characters(categories=["Cs", "Cc", "Zs", "Nd"]), st.sampled_from(".:%")),
    max_size=30,
)


@settings(max_examples=400)
@given(st.one_of(_ADDRESSY, _ANY_TEXT, _ODD_TEXT, st.binary(max_size=20)))
def test_garbage_never_raises_anything_else(value: str | bytes) -> None:
    """Arbitrary text and bytes either parse or raise InvalidAddressError, nothing else."""
    try:
        parsed = parse_address(value)
    except InvalidAddressError:
        return
    if isinstance(value, str):
        # Whatever we accept, ipaddress accepts too and reads the same way.
        raw = parse_address(value, unwrap=False)
        assert int(ipaddress.ip_address(value)) == raw.value
    else:
        assert len(value) in (4, 16)
    assert parsed.version in (4, 6)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _naive_unwrap(value: int) -> tuple[TunnelKind, int] | None:
    """unwrap_ipv6 by the stdlib's own reading of each tunnel form (no top-bits shortcut)."""
    ip = ipaddress.IPv6Address(value)
    if ip.ipv4_mapped is not None:
        return TunnelKind.IPV4_MAPPED, int(ip.ipv4_mapped)
    if ip in _NAT64:
        return TunnelKind.NAT64, value & V4_MAX  # RFC 6052: the last 32 bits
    if ip.teredo is not None:
        return TunnelKind.TEREDO, int(ip.teredo[1])  # (server, client); client un-inverted
    if ip.sixtofour is not None:
        return TunnelKind.SIXTOFOUR, int(ip.sixtofour)
    return None


@settings(max_examples=400)
@given(addresses().filter(lambda a: a[0] == 6).map(lambda a: a[1]))
def test_unwrap_matches_a_plain_scan(value: int) -> None:
    """unwrap_ipv6 agrees with the stdlib on every tunnel form; its top-16-bits shortcut skips none."""
    assert unwrap_ipv6(value) == _naive_unwrap(value)


def _texts_of(address: tuple[int, int]) -> st.SearchStrategy[str]:
    version, value = address
    text = address_text(version, value)
    if version == 4:
        return st.just(text)
    ip = ipaddress.IPv6Address(value)
    return st.sampled_from([text, ip.exploded, ip.exploded.upper(), f"{text}%eth0"])


@settings(max_examples=500)
@given(
    st.one_of(
        addresses().flatmap(_texts_of),
        _ADDRESSY,
        _ODD_TEXT,
        st.sampled_from(["01.2.3.4", "1.2.3.4 ", " ::1", "::ffff:1.2.3.4", "1.2.3.4\x00", ""]),
    )
)
def test_parse_plain_agrees_with_parse_address(text: str) -> None:
    """parse_plain is parse_address for text without a zone, and None where it would raise."""
    fast = parse_plain(text)
    try:
        expected = parse_address(text)
    except InvalidAddressError:
        assert fast is None
        return
    if "%" in text:
        assert fast is None  # zone ids take the general path
    else:
        assert fast == expected

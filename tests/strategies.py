"""Hypothesis strategies shared by the property tests.

Addresses are drawn as ``(version, integer)`` pairs or :mod:`ipaddress` objects,
with a bias towards the edges that break code: the ends of both address
spaces and the boundaries of every special-purpose range and tunnel prefix.
Records use a small fixed vocabulary (real ISO 3166 codes, subdivisions that
belong to their country) so that different sources often agree or collide, and
range entries cluster around a few anchors so that sources overlap.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Sequence
from typing import Final

from hypothesis import strategies as st

from geofence.addr import SPECIAL_RANGES, TUNNEL_RANGES, V4_MAX, V6_MAX
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.sources.base import RangeEntry, Source, SourceInfo

__all__ = [
    "COUNTRIES",
    "LOG_CLIENTS",
    "SUBDIVISIONS",
    "V4_EDGES",
    "V6_EDGES",
    "access_log_lines",
    "address_texts",
    "addresses",
    "entries_of_source",
    "ip_objects",
    "ipv4_ints",
    "ipv6_ints",
    "make_source",
    "network_records",
    "networks",
    "range_entries",
    "source_sets",
    "top_of",
]

#: ISO 3166-1 alpha-2 codes the strategies draw from.
COUNTRIES: Final = ("UA", "RU", "US", "DE", "GB", "CU", "IR", "KP")

#: ISO 3166-2 codes per country (every code starts with its country's code).
SUBDIVISIONS: Final[dict[str, tuple[str, ...]]] = {
    "UA": ("UA-43", "UA-40", "UA-14", "UA-09", "UA-23", "UA-65"),
    "RU": ("RU-MOW", "RU-SPE"),
    "US": ("US-CA", "US-NY"),
    "DE": ("DE-BE", "DE-BY"),
    "GB": ("GB-ENG", "GB-SCT"),
    "CU": ("CU-03",),
}

_ALL_SUBDIVISIONS: Final = tuple(code for codes in SUBDIVISIONS.values() for code in codes)
_CITIES: Final = ("Kyiv", "Simferopol", "Moscow", "Berlin", "Havana")
_ASNS: Final = (13335, 15169, 16509, 64512, 4_200_000_000)
_ORGS: Final = ("Cloudflare", "Google", "Amazon", "Example Net")
_PROVIDERS: Final = ("Amazon AWS", "Apple Private Relay", "Tor Project")
_FLAGS: Final = tuple(k for k in NetworkKind if k.value)


def top_of(version: int) -> int:
    """The largest address of a family."""
    return V4_MAX if version == 4 else V6_MAX


def _edges(version: int) -> tuple[int, ...]:
    top = top_of(version)
    points = {0, 1, top - 1, top}
    bounds = [(first, last) for v, first, last, _ in SPECIAL_RANGES if v == version]
    if version == 6:
        bounds += [(first, last) for _, first, last in TUNNEL_RANGES]
    for first, last in bounds:
        points |= {first - 1, first, last, last + 1}
    return tuple(sorted(p for p in points if 0 <= p <= top))


#: Edge addresses of each family: both ends and around every special range / tunnel.
V4_EDGES: Final = _edges(4)
V6_EDGES: Final = _edges(6)


def ipv4_ints() -> st.SearchStrategy[int]:
    """IPv4 addresses as integers, often an edge value."""
    return st.one_of(st.sampled_from(V4_EDGES), st.integers(0, V4_MAX))


def ipv6_ints() -> st.SearchStrategy[int]:
    """IPv6 addresses as integers: edges, uniform values and tunnelled IPv4 addresses."""
    v4 = ipv4_ints()
    tunnelled = st.one_of(
        v4.map(lambda a: (0xFFFF << 32) | a),  # IPv4-mapped
        v4.map(lambda a: (0x0064FF9B << 96) | a),  # NAT64 well-known prefix
        st.tuples(v4, st.integers(0, (1 << 80) - 1)).map(  # 6to4
            lambda t: (0x2002 << 112) | (t[0] << 80) | t[1]
        ),
        st.tuples(v4, st.integers(0, (1 << 64) - 1)).map(  # Teredo, client inverted
            lambda t: (0x20010000 << 96) | (t[1] << 32) | (t[0] ^ V4_MAX)
        ),
    )
    return st.one_of(st.sampled_from(V6_EDGES), st.integers(0, V6_MAX), tunnelled)


def addresses() -> st.SearchStrategy[tuple[int, int]]:
    """``(version, value)`` pairs of both families."""
    return st.one_of(
        ipv4_ints().map(lambda a: (4, a)),
        ipv6_ints().map(lambda a: (6, a)),
    )


def ip_objects() -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """:mod:`ipaddress` address objects of both families."""
    return st.one_of(
        ipv4_ints().map(ipaddress.IPv4Address),
        ipv6_ints().map(ipaddress.IPv6Address),
    )


def networks(
    version: int | None = None,
) -> st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """CIDR networks of one family (or both when ``version`` is ``None``)."""
    if version is None:
        return st.one_of(networks(4), networks(6))
    if version == 4:
        return st.tuples(ipv4_ints(), st.integers(0, 32)).map(
            lambda t: ipaddress.IPv4Network(t, strict=False)
        )
    return st.tuples(ipv6_ints(), st.integers(0, 128)).map(
        lambda t: ipaddress.IPv6Network(t, strict=False)
    )


@st.composite
def network_records(draw: st.DrawFn) -> NetworkRecord:
    """Records with valid ISO codes, a subdivision only within its country, any kinds.

    A record may state a subdivision without a country; the code still implies it.
    """
    country = draw(st.none() | st.sampled_from(COUNTRIES))
    subdivision = None
    if country is None:  # a subdivision alone still names its country ("UA-43")
        subdivision = draw(st.none() | st.sampled_from(_ALL_SUBDIVISIONS))
    elif country in SUBDIVISIONS:
        subdivision = draw(st.none() | st.sampled_from(SUBDIVISIONS[country]))
    coordinate = st.none() | st.floats(-90, 90, allow_nan=False, allow_subnormal=False)
    kinds = NetworkKind.UNKNOWN
    for flag in draw(st.sets(st.sampled_from(_FLAGS), max_size=3)):
        kinds |= flag
    return NetworkRecord(
        country=country,
        subdivision=subdivision,
        registered_country=draw(st.none() | st.sampled_from(COUNTRIES)),
        city=draw(st.none() | st.sampled_from(_CITIES)),
        asn=draw(st.none() | st.sampled_from(_ASNS)),
        as_org=draw(st.none() | st.sampled_from(_ORGS)),
        provider=draw(st.none() | st.sampled_from(_PROVIDERS)),
        kinds=kinds,
        latitude=draw(coordinate),
        longitude=draw(coordinate),
        accuracy_km=draw(st.none() | st.integers(1, 1000)),
    )


def _anchors(version: int) -> tuple[int, ...]:
    if version == 4:
        return (0, 0x01000000, 0x08080800, 0x0A000000, 0xC0000200, 0xDF000000, V4_MAX - 255)
    return (
        0,
        0xFFFF << 32,  # IPv4-mapped space: shadowed by the tunnel overlay
        0x20010000 << 96,  # Teredo
        0x2002 << 112,  # 6to4
        0x2A00 << 112,
        0xFE80 << 112,  # link-local
        V6_MAX - 0xFFFF,
    )


@st.composite
def range_entries(draw: st.DrawFn, version: int) -> RangeEntry:
    """One entry of one family, near an anchor so that entries of a set overlap."""
    top = top_of(version)
    anchor = draw(st.sampled_from(_anchors(version)))
    if draw(st.booleans()):  # a CIDR block of a typical size around the anchor
        lengths = (
            (0, 8, 16, 20, 24, 28, 30, 32)
            if version == 4
            else (
                0,
                16,
                32,
                48,
                64,
                96,
                112,
                120,
                126,
                128,
            )
        )
        length = draw(st.sampled_from(lengths))
        bits = 32 if version == 4 else 128
        size = 1 << (bits - length)
        base = min(top, anchor + draw(st.integers(0, 4096))) & ~(size - 1)
        first, last = base, base + size - 1
    else:  # an arbitrary span, possibly crossing a CIDR or special-range boundary
        first = min(top, max(0, anchor + draw(st.integers(-300, 300))))
        last = min(top, first + draw(st.integers(0, 600)))
    return RangeEntry(version, first, last, draw(network_records()))


def entries_of_source(max_size: int = 8) -> st.SearchStrategy[list[RangeEntry]]:
    """The entries of one source: both families, possibly overlapping each other."""
    return st.lists(st.one_of(range_entries(4), range_entries(6)), max_size=max_size)


def source_sets(
    min_sources: int = 1, max_sources: int = 4, max_entries: int = 8
) -> st.SearchStrategy[list[list[RangeEntry]]]:
    """Several sources' entries (in priority order) that overlap within and between sources."""
    return st.lists(entries_of_source(max_entries), min_size=min_sources, max_size=max_sources)


def make_source(
    name: str,
    entries: Sequence[RangeEntry],
    *,
    data_date: dt.date | None = None,
    version: str = "",
    license: str = "",
    attribution: str = "",
    url: str = "",
) -> Source:
    """Wrap ``entries`` as a :class:`Source` named ``name`` (format ``"test"``)."""
    frozen = tuple(entries)
    info = SourceInfo(
        name=name,
        format="test",
        version=version,
        license=license,
        attribution=attribution,
        url=url,
        data_date=data_date,
    )
    return Source(info=info, read=lambda: frozen)


#: Characters that address text is made of, plus the ones that break it.
_TEXT_ALPHABET: Final = "0123456789abcdefABCDEF:.:.%/ x\x00\u0663\uff11\u00e9"


@st.composite
def address_texts(draw: st.DrawFn) -> str:
    """Address text near the edge of what the strict parsers accept.

    Canonical and expanded forms of edge addresses (both families, tunnel forms,
    IPv4 tails), then perhaps mutated: a character inserted, dropped or
    replaced (leading zeros, a fifth group, a stray ``.``/``:``, a zone, a
    non-ASCII digit), or text drawn freely from the address alphabet.
    """
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.text(alphabet=_TEXT_ALPHABET, max_size=48))
    version, value = draw(addresses())
    if version == 4:
        text = str(ipaddress.IPv4Address(value))
    else:
        v6 = ipaddress.IPv6Address(value)
        forms = [str(v6), v6.exploded, v6.exploded.replace("0000", "0")]
        if value >> 32 == 0xFFFF or value >> 32 == 0:
            forms.append(
                ("::ffff:" if value >> 32 else "::") + str(ipaddress.IPv4Address(value & V4_MAX))
            )
        text = draw(st.sampled_from(forms))
        if draw(st.booleans()):
            text = text.upper()
    if kind <= 2:
        return text
    chars = list(text)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(chars)))
        op = draw(st.integers(0, 2))
        if op == 0 or not chars:
            chars.insert(at, draw(st.sampled_from(_TEXT_ALPHABET)))
        elif op == 1:
            del chars[min(at, len(chars) - 1)]
        else:
            chars[min(at, len(chars) - 1)] = draw(st.sampled_from(_TEXT_ALPHABET))
    return "".join(chars)


#: Peers and forwarded clients of generated access-log lines: decided ones, ports and
#: brackets, a zone, invalid text, and the trusted proxy (10.0.0.7).
LOG_CLIENTS: Final = (
    "5.1.2.3",
    "31.0.0.9",
    "41.2.3.4",
    "8.8.8.8",
    "46.1.1.1",
    "185.0.2.2",
    "2a00::1",
    "10.0.0.7",
    "8.8.8.8:8080",
    "[2a00::1]:443",
    "[2001:4860::8]",
    "fe80::1%eth0",
    "::ffff:5.1.2.3",
    "999.1.1.1",
    "not-an-ip",
)
_LOG_XFF: Final = (
    "-",
    "",
    "5.1.2.3",
    "46.1.1.1",
    "8.8.8.8, 10.1.2.3",
    "spoofed, 41.2.3.4",
    "unknown",
    "[2001:4860::1]:443",
    "185.0.2.2,2a00::1",
    "1.2.3.4.5",
)
_LOG_USERS: Final = ("-", "-", "alice", "bob", "b\u00f8b", "carol\u00a0x")
_LOG_FIELDS: Final = (
    "GET /v1/models HTTP/1.1",
    "POST /v1/chat?q=a b HTTP/2.0",
    "-",
    "",
    "Mozilla/5.0 (X11; \u00dcnic\u00f6de)",
    'GET /\\"quoted\\" HTTP/1.1',
    "curl/8.5.0",
)
_LOG_JUNK: Final = (
    b"",
    b"   ",
    b"\x00\x01\x02 binary",
    b"\xff\xfe\xfd not utf-8",
    b"\x0c\x1c separators \xe2\x80\xa8",
    b"[1, 2, 3]",
    b"{not json",
    b"garbage",
)


@st.composite
def _log_times(draw: st.DrawFn) -> str:
    """An nginx time text: mostly the usual form, sometimes one the converters must reject or bend."""
    minute, second = draw(st.integers(0, 59)), draw(st.integers(0, 60))
    usual = f"01/Mar/2026:10:{minute:02d}:{second:02d} +0000"
    return draw(
        st.sampled_from(
            [
                usual,
                usual,
                usual.replace("+0000", "-0700"),
                f"1/Mar/2026:10:{minute:02d}:00 +0000",
                "31/Feb/2026:10:00:00 +0000",
                "01/mar/2026:10:00:00 +0000",
                "01/Mar/2026:10:00:0\u0663 +0000",
                "not a time",
                "01/Mar/2026:10:00:00+0000 ",
            ]
        )
    )


@st.composite
def access_log_lines(draw: st.DrawFn) -> bytes:
    r"""One access-log line (without its newline) of any format a mixed log may hold.

    nginx ``main`` and ``combined`` lines (peers with ports, brackets, zones or
    junk; forwarded chains, obfuscated and malformed ``X-Forwarded-For``;
    non-ASCII users and agents; Apache ``\"`` escapes; unusual times), JSON
    lines, and junk (empty, binary, not UTF-8). Lines may end in ``\r``.
    """
    kind = draw(st.sampled_from(["nginx", "nginx", "nginx", "combined", "json", "junk"]))
    if kind == "junk":
        line = draw(st.sampled_from(_LOG_JUNK) | st.binary(max_size=40))
        return line.replace(b"\n", b"")
    peer = draw(st.sampled_from(LOG_CLIENTS))
    user = draw(st.sampled_from(_LOG_USERS))
    when = draw(_log_times())
    xff = draw(st.sampled_from(_LOG_XFF))
    if kind == "json":
        record: dict[str, object] = {"remote_addr": peer, "time": when, "user": user}
        if draw(st.booleans()):
            record["http_x_forwarded_for"] = xff
        if draw(st.booleans()):
            record["extra"] = 1
        return json.dumps(record).encode()
    request, referrer, agent = (draw(st.sampled_from(_LOG_FIELDS)) for _ in range(3))
    text = (
        f'{peer} - {user} [{when}] "{request}" {draw(st.sampled_from(["200", "451"]))} 12 '
        f'"{referrer}" "{agent}"'
    )
    if kind == "nginx":
        text += f' "{xff}"'
    if draw(st.integers(0, 9)) == 0:
        text += draw(st.sampled_from([' "extra"', " trailing", "\r"]))
    if draw(st.integers(0, 19)) == 0:
        text = text.replace(" ", "\t", 1)
    return text.encode()

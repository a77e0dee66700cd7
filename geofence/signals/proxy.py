"""Client address resolution through trusted proxies.

A request's socket peer is the only address nobody upstream can forge.
Forwarding headers (RFC 7239 ``Forwarded``, the de-facto ``X-Forwarded-For``
and single-address headers such as ``CF-Connecting-IP``) are believed only when
the peer is a configured trusted proxy (:class:`TrustedProxies`), and then only
as far as the chain of trusted hops reaches: the chain is walked right to left,
trusted proxies are skipped, and the right-most untrusted address is the
client. Anything a client writes itself sits to the left of that address and
never wins.

:func:`resolve_client` never raises on header content. Inconsistent, malformed
or oversized headers become :class:`~geofence.signals.base.Signal` evidence on
the result; see ``docs/signals.md`` for the reason codes and their weights.
"""

from __future__ import annotations

import bisect
import enum
import ipaddress
import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from geofence._cache import BoundedCache
from geofence.addr import V4_MAX, ParsedAddress, TunnelKind, parse_address, parse_plain
from geofence.errors import InvalidAddressError, PolicyError, TrustWarning
from geofence.signals.base import Signal

__all__ = [
    "SIGNAL_WEIGHTS",
    "ClientAddress",
    "ClientSource",
    "TrustedProxies",
    "resolve_client",
]


class ClientSource(enum.StrEnum):
    """Where a resolved client address came from (also the header names honoured)."""

    PEER = "peer"
    """The socket peer: no forwarding header was trusted or usable."""

    FORWARDED = "forwarded"
    """The RFC 7239 ``Forwarded`` header (``for=`` parameters), a chain."""

    X_FORWARDED_FOR = "x-forwarded-for"
    """The de-facto ``X-Forwarded-For`` header, a comma-separated chain."""

    X_REAL_IP = "x-real-ip"
    """``X-Real-IP`` as set by nginx and others: one address, no chain."""

    CF_CONNECTING_IP = "cf-connecting-ip"
    """``CF-Connecting-IP`` set by Cloudflare: one address, no chain."""

    TRUE_CLIENT_IP = "true-client-ip"
    """``True-Client-IP`` set by Akamai and Cloudflare Enterprise: one address."""

    FASTLY_CLIENT_IP = "fastly-client-ip"
    """``Fastly-Client-IP`` set by Fastly: one address."""


_CHAIN_HEADERS = frozenset({ClientSource.FORWARDED, ClientSource.X_FORWARDED_FOR})
_KNOWN_HEADERS: dict[str, ClientSource] = {s.value: s for s in ClientSource if s != "peer"}

#: Default weight of every reason code :func:`resolve_client` can emit.
SIGNAL_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "header_untrusted": 0.1,
        "header_malformed": 0.3,
        "header_oversized": 0.5,
        "forwarded_conflict": 1.0,
        "cdn_header_mismatch": 0.5,
        "client_obfuscated": 0.3,
        "client_behind_proxy": 0.2,
        "private_in_chain": 0.1,
        "chain_too_short": 0.3,
        "peer_malformed": 0.0,
        "proxy_unverified": 0.5,
    }
)

_SHOW_MAX = 60
log = logging.getLogger("geofence")
_OBF_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _show(text: str) -> str:
    """Quote untrusted text for a signal detail: escaped and shortened."""
    shown = repr(text)
    return shown if len(shown) <= _SHOW_MAX else shown[: _SHOW_MAX - 3] + "..."


# --------------------------------------------------------------------------- configuration


def _parse_cidr(text: str) -> tuple[int, int, int]:
    """Parse one trusted CIDR into ``(version, first, last)``.

    IPv4-mapped IPv6 networks (``::ffff:10.0.0.0/104``) are folded into IPv4,
    because :func:`~geofence.addr.parse_address` unwraps mapped peers.
    """
    if not isinstance(text, str):
        raise InvalidAddressError(f"trusted proxy CIDR must be a string, got {text!r}")
    stripped = text.strip()
    if not stripped or "%" in stripped:
        raise InvalidAddressError(f"trusted proxy CIDR {_show(text)} is not a network")
    try:
        net = ipaddress.ip_network(stripped, strict=True)
    except ValueError as exc:
        raise InvalidAddressError(f"trusted proxy CIDR {_show(text)} is invalid: {exc}") from None
    first, last = int(net.network_address), int(net.broadcast_address)
    mapped = 0xFFFF << 32
    if net.version == 6 and first >= mapped and last <= mapped | V4_MAX:
        return 4, first & V4_MAX, last & V4_MAX
    return net.version, first, last


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Merge overlapping or adjacent ranges into sorted ``(starts, ends)``."""
    merged: list[list[int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return tuple(r[0] for r in merged), tuple(r[1] for r in merged)


def _split_config_list(value: object, what: str) -> tuple[str, ...]:
    """Accept a comma/space separated string or an iterable of strings."""
    if isinstance(value, str):
        return tuple(part for part in value.replace(",", " ").split() if part)
    if isinstance(value, Iterable):
        items = tuple(value)
        for item in items:
            if not isinstance(item, str):
                raise PolicyError(f"{what} must be strings, got {item!r}")
        return items
    raise PolicyError(f"{what} must be a string or a list of strings, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustedProxies:
    """Which peers may speak for the client, and through which headers.

    Two ways to say who is trusted, which may be combined:

    * ``cidrs``: a hop is a trusted proxy when its address lies in one of these
      networks (like uvicorn ``--forwarded-allow-ips`` or nginx
      ``set_real_ip_from`` with ``real_ip_recursive on``).
    * ``hops``: the right-most ``hops`` hops, counting the socket peer as the
      first, are trusted whatever their address (like Envoy
      ``xff_num_trusted_hops``; ``hops=1`` means "the peer is my one proxy,
      the client is the last header entry").

    A hop is trusted when either rule says so, except the socket peer: when
    ``cidrs`` are given, the peer must lie in them (a known proxy) before any
    header is read, whatever ``hops`` says. ``hops`` without ``cidrs`` cannot
    tell the proxy from a client that reaches the application directly and
    writes its own ``X-Forwarded-For``: it warns (:class:`~geofence.errors.TrustWarning`)
    when configured, and every client address it reads from a header carries
    the ``proxy_unverified`` signal. The default trusts nobody: every header is
    ignored and the peer is the client.

    Raises:
        InvalidAddressError: A CIDR is not a valid network (host bits set,
            leading zeros, zone id, garbage).
        PolicyError: ``hops``, ``headers`` or a limit is invalid.
    """

    cidrs: Iterable[str] = ()
    """Trusted proxy networks (``"10.0.0.0/8"``, ``"2001:db8::/32"``, a bare address).
    A string is read as a comma- or space-separated list. Stored as a tuple."""

    hops: int = 0
    """Number of right-most hops (the peer included) trusted regardless of address."""

    headers: Iterable[str] = (ClientSource.X_FORWARDED_FOR,)
    """Headers honoured from a trusted peer, most preferred first (names as in
    :class:`ClientSource`, case-insensitive). Configure only headers your own
    proxies set or overwrite: a header they pass through untouched is the
    client's to write. Stored as a tuple of :class:`ClientSource`."""

    trust_missing_peer: bool = False
    """Treat a request without a peer address (a Unix socket behind a local
    proxy) as coming from a trusted proxy."""

    max_header_length: int = 8192
    """Characters of a header value examined; a chain header keeps its right-most part."""

    max_hops: int = 64
    """Hops of a chain header examined, counted from the right."""

    _v4: tuple[tuple[int, ...], tuple[int, ...]] = field(
        init=False, repr=False, compare=False, default=((), ())
    )
    _v6: tuple[tuple[int, ...], tuple[int, ...]] = field(
        init=False, repr=False, compare=False, default=((), ())
    )
    _order: tuple[ClientSource, ...] = field(init=False, repr=False, compare=False, default=())
    # Whether X-Forwarded-For alone is honoured, by address (the fast path's case).
    _xff_only: bool = field(init=False, repr=False, compare=False, default=False)
    # Whether any peer is trusted by position alone (hops without cidrs).
    _unverified: bool = field(init=False, repr=False, compare=False, default=False)
    # Peer text -> is_trusted(peer), for the fast path (peers repeat; bounded).
    _peer_trust: BoundedCache[str, bool] = field(
        init=False, repr=False, compare=False, default_factory=lambda: BoundedCache(4096)
    )

    def __post_init__(self) -> None:
        cidrs = _split_cidrs(self.cidrs)
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for text in cidrs:
            version, first, last = _parse_cidr(text)
            ranges[version].append((first, last))
        object.__setattr__(self, "cidrs", tuple(c.strip() for c in cidrs))
        object.__setattr__(self, "_v4", _merge(ranges[4]))
        object.__setattr__(self, "_v6", _merge(ranges[6]))

        names = _split_config_list(self.headers, "header names")
        parsed: list[ClientSource] = []
        for name in names:
            key = name.strip().lower()
            if key not in _KNOWN_HEADERS:
                known = ", ".join(_KNOWN_HEADERS)
                raise PolicyError(f"unknown forwarding header {name!r}; known headers: {known}")
            if _KNOWN_HEADERS[key] in parsed:
                raise PolicyError(f"forwarding header {name!r} is listed twice")
            parsed.append(_KNOWN_HEADERS[key])
        object.__setattr__(self, "headers", tuple(parsed))
        object.__setattr__(self, "_order", tuple(parsed))
        object.__setattr__(
            self,
            "_xff_only",
            not self.hops and self._order == (ClientSource.X_FORWARDED_FOR,),
        )

        for attr, low in (("max_header_length", 256), ("max_hops", 1)):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PolicyError(f"{attr} must be an integer >= {low}, got {value!r}")
        if isinstance(self.hops, bool) or not isinstance(self.hops, int):
            raise PolicyError(f"hops must be an integer, got {self.hops!r}")
        if not 0 <= self.hops <= self.max_hops:
            raise PolicyError(
                f"hops must be between 0 and max_hops={self.max_hops}, got {self.hops}"
            )
        if not isinstance(self.trust_missing_peer, bool):
            raise PolicyError(f"trust_missing_peer must be a bool, got {self.trust_missing_peer!r}")
        unverified = bool(self.hops) and not cidrs
        object.__setattr__(self, "_unverified", unverified)
        if unverified:
            message = (
                f"TrustedProxies(hops={self.hops}) without cidrs trusts every socket peer as a "
                "proxy: a client that reaches the application directly chooses its own "
                "address with X-Forwarded-For. Give the proxies' networks in cidrs; until "
                "then every header-derived address carries the 'proxy_unverified' signal"
            )
            log.warning("geofence: %s", message)
            warnings.warn(message, TrustWarning, stacklevel=3)

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> TrustedProxies:
        """Build from a plain mapping, such as a TOML table or environment-derived dict.

        Recognised keys: ``cidrs`` (list or comma-separated string), ``hops``,
        ``headers`` (list or comma-separated string), ``trust_missing_peer``,
        ``max_header_length``, ``max_hops``.

        Args:
            config: The settings.

        Returns:
            The validated configuration.

        Raises:
            PolicyError: An unknown key or a value of the wrong type.
            InvalidAddressError: A CIDR is invalid.
        """
        allowed = {"cidrs", "hops", "headers", "trust_missing_peer", "max_header_length"}
        allowed.add("max_hops")
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise PolicyError(
                f"unknown trusted proxy setting(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(allowed))}"
            )
        kwargs: dict[str, object] = dict(config)
        if "cidrs" in kwargs:
            kwargs["cidrs"] = _split_config_list(kwargs["cidrs"], "cidrs")
        if "headers" in kwargs:
            kwargs["headers"] = _split_config_list(kwargs["headers"], "header names")
        return cls(**kwargs)  # type: ignore[arg-type]  # each value is validated in __post_init__

    def is_trusted(self, address: ParsedAddress) -> bool:
        """Whether an address lies in the trusted networks (``hops`` is not considered).

        An IPv4-mapped address is matched as its IPv4 address. Other tunnels
        (6to4, Teredo, NAT64) are matched by their outer IPv6 address: the
        embedded IPv4 address is not the host that connected.

        Args:
            address: A parsed address.
        """
        if address.tunnel is None or address.tunnel is TunnelKind.IPV4_MAPPED:
            version, value = address.version, address.value
        else:
            version, value = 6, address.outer if address.outer is not None else address.value
        starts, ends = self._v4 if version == 4 else self._v6
        index = bisect.bisect_right(starts, value) - 1
        return index >= 0 and value <= ends[index]


def _split_cidrs(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return _split_config_list(value, "cidrs")
    if isinstance(value, Iterable):
        return tuple(value)
    raise InvalidAddressError(f"cidrs must be a list of networks, got {value!r}")


# --------------------------------------------------------------------------- results


# A plain slotted class, as ParsedAddress: built once per request, read-only by use.
@dataclass(slots=True, unsafe_hash=True)
class ClientAddress:
    """The client address a request is decided on, and how it was found (read-only)."""

    address: ParsedAddress | None
    """The parsed client address; ``None`` only when nothing usable was available
    (no peer and no trusted header address)."""

    text: str
    """The address as it appeared (``"[2001:db8::1]:4711"``, ``"203.0.113.9"``)."""

    source: ClientSource
    """Which header gave the address, or :attr:`ClientSource.PEER`."""

    chain: tuple[str, ...] = ()
    """The hops walked, left to right: the client (or the hop where the walk
    stopped) first, the socket peer last. Untrusted text left of the client is
    not included."""

    signals: tuple[Signal, ...] = ()
    """Evidence of spoofing or inconsistency, at most one signal per code."""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready mapping for audit lines."""
        return {
            "address": self.address.text if self.address is not None else None,
            "text": self.text,
            "source": self.source.value,
            "chain": list(self.chain),
            "signals": [s.as_dict() for s in self.signals],
        }


# --------------------------------------------------------------------------- parsing


class _Kind(enum.Enum):
    ADDRESS = "address"  # a parsed IP address
    OBFUSCATED = "obfuscated"  # RFC 7239 "unknown" or "_hidden", or an element without for=
    MALFORMED = "malformed"  # anything else
    TRUNCATED = "truncated"  # the limit was reached: more hops lie to the left
    MISSING = "missing"  # no peer address (Unix socket)


@dataclass(frozen=True, slots=True)
class _Hop:
    kind: _Kind
    text: str
    address: ParsedAddress | None = None


def _valid_port(text: str) -> bool:
    """RFC 7239 node-port: 1-5 digits, or an obfuscated port (``_abc``)."""
    if text.isascii() and text.isdigit():
        return len(text) <= 5
    return len(text) > 1 and text[0] == "_" and all(c in _OBF_CHARS for c in text)


def _parse_node(text: str) -> _Hop:
    """Parse one hop: an address with optional port, ``unknown`` or ``_obfuscated``.

    Forms (RFC 7239 §6 node, also used by X-Forwarded-For in practice):
    ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]``,
    ``[2001:db8::1]:4711``.
    """
    text = text.strip(" \t")
    if not text:
        return _Hop(_Kind.MALFORMED, text)
    if text.lower() == "unknown":
        return _Hop(_Kind.OBFUSCATED, text)
    if text[0] == "_":
        kind = _Kind.OBFUSCATED if all(c in _OBF_CHARS for c in text[1:]) else _Kind.MALFORMED
        return _Hop(kind, text) if len(text) > 1 else _Hop(_Kind.MALFORMED, text)
    host = text
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            return _Hop(_Kind.MALFORMED, text)
        host, rest = text[1:end], text[end + 1 :]
        if ":" not in host or (rest and (rest[0] != ":" or not _valid_port(rest[1:]))):
            return _Hop(_Kind.MALFORMED, text)
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _valid_port(port):
            return _Hop(_Kind.MALFORMED, text)
    try:
        address = parse_address(host)
    except ValueError:  # InvalidAddressError, and UnicodeError for lone surrogates
        return _Hop(_Kind.MALFORMED, text)
    return _Hop(_Kind.ADDRESS, text, address)


def _split_rtl(value: str, *, quoted: bool, limit: int) -> tuple[list[str], bool]:
    """Split a list header at commas, right-most element first.

    Scanning from the right keeps the elements that trusted proxies appended
    intact whatever a client wrote before them: an unbalanced quote on the
    left cannot swallow them (``quoted`` turns RFC 9110 quoted-string
    awareness on, for ``Forwarded``).

    Returns:
        At most ``limit`` elements, right-most first, and whether more text
        was left unsplit on the left.
    """
    if not quoted or '"' not in value:
        # Fast path for X-Forwarded-For and quote-free Forwarded: a C-level split.
        parts = value.rsplit(",", limit)
        more = len(parts) > limit
        if more:
            del parts[0]
        parts.reverse()
        return parts, more
    out: list[str] = []
    end = len(value)
    in_quote = False
    i = end - 1
    while i >= 0:
        char = value[i]
        if quoted and char == '"':
            if not in_quote:
                in_quote = True
            else:
                # Scanning leftwards, a quote preceded by an odd number of
                # backslashes is an escaped quote inside the string.
                j = i - 1
                while j >= 0 and value[j] == "\\":
                    j -= 1
                if (i - 1 - j) % 2 == 0:
                    in_quote = False
        elif char == "," and not in_quote:
            out.append(value[i + 1 : end])
            end = i
            if len(out) == limit:
                return out, True
        i -= 1
    out.append(value[:end])
    return out, False


def _unquote(value: str) -> str | None:
    """Return the content of a token or RFC 9110 quoted-string, or ``None`` if invalid."""
    if not value.startswith('"'):
        return None if '"' in value or "\\" in value else value
    if len(value) < 2 or not value.endswith('"'):
        return None
    out: list[str] = []
    body = value[1:-1]
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            if i + 1 >= len(body):
                return None
            out.append(body[i + 1])
            i += 2
            continue
        if char == '"':
            return None
        out.append(char)
        i += 1
    return "".join(out)


def _parse_forwarded_element(element: str) -> _Hop:
    """Return the ``for=`` hop of one RFC 7239 forwarded-element.

    Pairs are separated by ``;``, names are case-insensitive, each may occur
    once (RFC 7239 §4). An element without ``for=`` says nothing about the
    previous hop and counts as obfuscated.
    """
    pairs: dict[str, str] = {}
    for raw in _split_outside_quotes(element, ";"):
        pair = raw.strip(" \t")
        if not pair:
            continue  # RFC 7239 allows empty pairs: "for=a;;proto=http"
        name, sep, raw_value = pair.partition("=")
        name = name.strip(" \t").lower()
        value = _unquote(raw_value.strip(" \t"))
        if not sep or not name or value is None or name in pairs:
            return _Hop(_Kind.MALFORMED, element.strip(" \t"))
        pairs[name] = value
    if "for" not in pairs:
        return _Hop(_Kind.OBFUSCATED, element.strip(" \t"))
    hop = _parse_node(pairs["for"])
    return hop if hop.text else _Hop(_Kind.MALFORMED, element.strip(" \t"))


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    start = 0
    in_quote = False
    escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif in_quote and char == "\\":
            escaped = True
        elif char == '"':
            in_quote = not in_quote
        elif char == sep and not in_quote:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


@dataclass(frozen=True, slots=True)
class _Chain:
    hops: tuple[_Hop, ...]  # right-most first; may end with a TRUNCATED hop
    oversized: bool


def _parse_chain(name: ClientSource, value: str, trusted: TrustedProxies) -> _Chain:
    """Parse the right-most part of a chain header within the configured limits."""
    sliced = len(value) > trusted.max_header_length
    if sliced:
        value = value[-trusted.max_header_length :]
    quoted = name is ClientSource.FORWARDED
    parts, more = _split_rtl(value, quoted=quoted, limit=trusted.max_hops)
    if sliced and not more:
        parts.pop()  # the left-most part was cut in the middle
    parse = _parse_forwarded_element if quoted else _parse_node
    hops = [parse(part) for part in parts]
    oversized = sliced or more
    if oversized:
        hops.append(_Hop(_Kind.TRUNCATED, "..."))
    return _Chain(tuple(hops), oversized)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("latin-1")  # RFC 9110 §5.5: field values are octets
    raise TypeError(f"header names and values must be str or bytes, got {type(value).__name__}")


def _collect(
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]],
) -> dict[ClientSource, str]:
    """Gather the known forwarding headers; repeated lines join with ``", "`` in order."""
    items: Iterable[tuple[object, object]]
    items = headers.items() if isinstance(headers, Mapping) else headers
    lines: dict[ClientSource, list[str]] = {}
    for name, value in items:
        source = _KNOWN_HEADERS.get(_text(name).lower())
        if source is not None:
            line = _text(value).strip(" \t")
            if line:
                lines.setdefault(source, []).append(line)
    return {source: ", ".join(parts) for source, parts in lines.items()}


# --------------------------------------------------------------------------- resolution


class _Signals:
    """Collects at most one signal per code, merging details."""

    __slots__ = ("_details",)

    def __init__(self) -> None:
        self._details: dict[str, list[str]] = {}

    def add(self, code: str, detail: str) -> None:
        details = self._details.setdefault(code, [])
        if detail not in details:
            details.append(detail)

    def freeze(self) -> tuple[Signal, ...]:
        return tuple(
            Signal(code=code, weight=SIGNAL_WEIGHTS[code], detail="; ".join(details))
            for code, details in self._details.items()
        )


def _key(address: ParsedAddress) -> tuple[int, int]:
    return address.version, address.value


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one header says: the hop reported as client and the hops walked."""

    client: int  # index into hops of the reported address hop, -1 if none
    reached: int  # index of the left-most hop walked
    hops: tuple[_Hop, ...]  # peer first, then the header's hops right to left


def _walk(
    name: ClientSource,
    peer: _Hop,
    chain: _Chain,
    trusted: TrustedProxies,
    signals: _Signals,
) -> _Outcome:
    """Walk a chain right to left from the (trusted) peer; see the module docstring."""
    hops = (peer, *chain.hops)
    last = 0 if peer.kind is _Kind.ADDRESS else -1
    for pos in range(1, len(hops)):
        hop = hops[pos]
        by_count = pos < trusted.hops
        if hop.address is not None:
            if by_count or trusted.is_trusted(hop.address):
                last = pos
                continue
            _left_of_client(name, hops[pos + 1 :], signals)
            return _Outcome(pos, pos, hops)
        if hop.kind is _Kind.TRUNCATED:
            signals.add(
                "header_oversized",
                f"{name}: walk reached the examined limit with every hop trusted",
            )
            return _Outcome(last, pos - 1, hops)
        if by_count:
            continue  # a hop trusted by position; its own identity is not needed
        if hop.kind is _Kind.OBFUSCATED:
            signals.add(
                "client_obfuscated",
                f"{name}: hop {_show(hop.text)} hides the address beyond it; "
                "reporting the nearest trusted hop",
            )
        else:
            signals.add(
                "header_malformed",
                f"{name}: walk stopped at unparseable hop {_show(hop.text)}",
            )
        return _Outcome(last, pos, hops)
    if trusted.hops and len(hops) <= trusted.hops:
        signals.add(
            "chain_too_short",
            f"{name}: {len(hops) - 1} hop(s) but hops={trusted.hops} are trusted; "
            "a proxy layer was bypassed or the hop count is wrong",
        )
    return _Outcome(last, len(hops) - 1, hops)


def _left_of_client(name: ClientSource, left: tuple[_Hop, ...], signals: _Signals) -> None:
    """Signal hops that a client or its own forward proxies wrote before the client."""
    if not left:
        return
    signals.add(
        "client_behind_proxy",
        f"{name}: {len(left)} hop(s) left of the client (a forward proxy, or spoofing)",
    )
    private = [h.text for h in left if h.address is not None and h.address.special is not None]
    if private:
        signals.add(
            "private_in_chain",
            f"{name}: non-public address(es) left of the client: "
            + ", ".join(_show(t) for t in private[:3]),
        )


def _peer_result(peer: _Hop | None, signals: _Signals) -> ClientAddress:
    if peer is None or peer.kind is not _Kind.ADDRESS:
        return ClientAddress(
            address=None,
            text=peer.text if peer is not None else "",
            source=ClientSource.PEER,
            chain=(peer.text,) if peer is not None and peer.text else (),
            signals=signals.freeze(),
        )
    return ClientAddress(
        address=peer.address,
        text=peer.text,
        source=ClientSource.PEER,
        chain=(peer.text,),
        signals=signals.freeze(),
    )


def _single(name: ClientSource, value: str, trusted: TrustedProxies, signals: _Signals) -> _Hop:
    """Parse a single-address header; a list or anything unparseable is malformed."""
    if len(value) > trusted.max_header_length:
        signals.add("header_oversized", f"{name}: {len(value)} characters; ignored")
        return _Hop(_Kind.MALFORMED, "")
    hop = _parse_node(value) if "," not in value else _Hop(_Kind.MALFORMED, value)
    if hop.kind is not _Kind.ADDRESS:
        signals.add("header_malformed", f"{name}: {_show(value)} is not one address; ignored")
    return hop


# Lower-case header names (str and bytes) that the fast path must notice.
_FORWARDING_NAMES: frozenset[str | bytes] = frozenset(
    {*(s.value for s in ClientSource if s is not ClientSource.PEER)}
    | {s.value.encode() for s in ClientSource if s is not ClientSource.PEER}
)
_XFF_NAMES: frozenset[str | bytes] = frozenset({"x-forwarded-for", b"x-forwarded-for"})
_FAST_MAX = 45  # longest textual IPv6 address
_PEERS: BoundedCache[str, ParsedAddress] = BoundedCache(4096)


def _fast_path(
    peer: str | None,
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]],
    trusted: TrustedProxies,
) -> ClientAddress | None:
    """The two shapes nearly every request has, without the general machinery.

    (1) No forwarding header at all and a plain peer address: the peer is the
    client. (2) A trusted peer, ``X-Forwarded-For`` as the only configured and
    the only present forwarding header, holding exactly one plain address: that
    address is the client. Anything else returns ``None`` and takes the general
    path, which gives the same answer for these shapes (a property test checks it).
    Serves the middleware, which resolves every request.
    """
    if type(peer) is not str or len(peer) > _FAST_MAX:
        return None
    items: Iterable[tuple[object, object]]
    # A list of pairs is what ASGI, WSGI adapters and the gate pass: skip the
    # (slower) abstract Mapping check for it.
    items = (
        headers
        if type(headers) is list
        else (headers.items() if isinstance(headers, Mapping) else headers)
    )
    xff: object = None
    for name, value in items:
        lowered = name.lower() if isinstance(name, (str, bytes)) else None
        if lowered is None:
            return None  # let the general path raise its TypeError
        if lowered in _FORWARDING_NAMES:
            if lowered not in _XFF_NAMES or xff is not None:
                return None
            xff = value
    if xff is None:
        peer_addr = _peer_address(peer)
        return None if peer_addr is None else ClientAddress(peer_addr, peer, _PEER, (peer,))
    if not trusted._xff_only:
        return None
    # Whether the peer is trusted, remembered by its text: a proxy's requests
    # need no parse of the peer at all.
    trust = trusted._peer_trust
    ok = trust.get(peer)
    if ok is None:
        peer_addr = _peer_address(peer)
        if peer_addr is None:
            return None
        ok = trust.put(peer, trusted.is_trusted(peer_addr))
    if not ok:
        return None
    text = xff.decode("latin-1") if isinstance(xff, bytes) else xff
    if not isinstance(text, str):
        return None
    text = text.strip(" \t")
    if not text or len(text) > _FAST_MAX or "," in text:
        return None
    client = parse_plain(text)  # None for "%" (a zone id) or anything invalid
    if client is None:
        return None
    return ClientAddress(client, text, _XFF, (text, peer))


def _peer_address(peer: str) -> ParsedAddress | None:
    """The parsed peer address (remembered), or ``None`` for the general path."""
    peer_addr = _PEERS.get(peer)
    if peer_addr is None:
        # Peers repeat (the same few proxies, keep-alive clients): remember their
        # parses. ParsedAddress is immutable, so sharing is safe across threads.
        try:
            peer_addr = parse_address(peer)
        except InvalidAddressError:
            return None
        if peer_addr.zone is not None:
            return None
        _PEERS.put(peer, peer_addr)
    return peer_addr


# Enum members as module constants (a class attribute lookup through the enum
# machinery costs ~60 ns per request otherwise).
_XFF = ClientSource.X_FORWARDED_FOR
_PEER = ClientSource.PEER


def resolve_client(
    peer: str | None,
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]],
    trusted: TrustedProxies,
) -> ClientAddress:
    """Resolve the client address of a request.

    Headers are considered only when the peer is trusted (its address is in
    ``trusted.cidrs``, or ``trusted.hops > 0``, or it is missing and
    ``trusted.trust_missing_peer`` is set). Otherwise the peer is the client
    and any forwarding header present yields ``header_untrusted``.

    From a trusted peer, the configured headers are tried in order and the
    first usable one decides:

    * chain headers (``Forwarded``, ``X-Forwarded-For``) are walked right to
      left; trusted hops are skipped and the first untrusted address is the
      client. A hop that hides its address (``unknown``, ``_hidden``, an
      element without ``for=``), an unparseable hop, or the examined limit
      stops the walk: the nearest trusted hop with an address is reported,
      with ``client_obfuscated``, ``header_malformed`` or
      ``header_oversized``. If every hop is trusted the left-most is the client.
    * single-address headers (``X-Real-IP``, ``CF-Connecting-IP``, ...) give
      the client directly; a list or garbage is ignored (``header_malformed``).

    Args:
        peer: The socket peer's address as text (a port or brackets are
            tolerated), or ``None`` when there is none (Unix socket).
        headers: Request headers as a mapping or as ``(name, value)`` pairs,
            ``str`` or ``bytes`` (decoded as Latin-1, as ASGI delivers them).
            Names are case-insensitive; repeated lines are joined in order.
        trusted: Who is trusted to speak for the client.

    Returns:
        The resolved address with its source, the hops walked and signals.

    Raises:
        TypeError: ``headers`` holds something other than ``str``/``bytes`` pairs.
    """
    fast = _fast_path(peer, headers, trusted)
    if fast is not None:
        return fast
    return _resolve_general(peer, headers, trusted)


def _resolve_general(
    peer: str | None,
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]],
    trusted: TrustedProxies,
) -> ClientAddress:
    """The full resolution described in :func:`resolve_client`."""
    signals = _Signals()
    fields = _collect(headers)
    peer_hop: _Hop | None = None
    if peer is not None:
        peer_hop = _parse_node(_text(peer))
        if peer_hop.kind is not _Kind.ADDRESS:
            signals.add("peer_malformed", f"peer {_show(peer)} is not an IP address")
            peer_hop = _Hop(_Kind.MISSING, peer_hop.text)

    by_position = False  # the peer is trusted only because of `hops` (no cidrs to check)
    if peer_hop is not None and peer_hop.address is not None:
        known = trusted.is_trusted(peer_hop.address)
        peer_trusted = known or trusted._unverified
        by_position = not known
    else:
        peer_trusted = trusted.trust_missing_peer
    if not peer_trusted:
        if fields:
            names = ", ".join(sorted(fields))
            origin = f"untrusted peer {_show(peer)}" if peer is not None else "no peer address"
            signals.add("header_untrusted", f"{names} ignored: {origin}")
        return _peer_result(peer_hop, signals)

    base = peer_hop if peer_hop is not None else _Hop(_Kind.MISSING, "")
    chains = {
        name: _parse_chain(name, value, trusted)
        for name, value in fields.items()
        if name in _CHAIN_HEADERS
    }
    result: ClientAddress | None = None
    outcomes: dict[ClientSource, _Outcome] = {}
    singles: dict[ClientSource, _Hop] = {}
    for name in trusted._order:
        if name not in fields:
            continue
        if name in _CHAIN_HEADERS:
            chain = chains[name]
            if chain.oversized:
                signals.add("header_oversized", f"{name}: only the right-most part examined")
            for hop in chain.hops:
                if hop.kind is _Kind.MALFORMED:
                    signals.add("header_malformed", f"{name}: unparseable hop {_show(hop.text)}")
            outcome = _walk(name, base, chain, trusted, signals)
            outcomes[name] = outcome
            if result is None:
                result = _from_outcome(name, outcome, signals)
        else:
            hop = _single(name, fields[name], trusted, signals)
            if hop.address is not None:
                singles[name] = hop
                if result is None:
                    result = ClientAddress(
                        address=hop.address,
                        text=hop.text,
                        source=name,
                        chain=(hop.text, base.text) if base.text else (hop.text,),
                    )

    _check_consistency(outcomes, singles, chains, signals)
    if result is None:
        return _peer_result(peer_hop, signals)
    if by_position and result.source is not ClientSource.PEER:
        signals.add(
            "proxy_unverified",
            f"peer {_show(peer or '')} trusted by position only (hops={trusted.hops}, no "
            f"cidrs): {result.source} could have been written by the client itself",
        )
    return ClientAddress(
        address=result.address,
        text=result.text,
        source=result.source,
        chain=result.chain,
        signals=signals.freeze(),
    )


def _from_outcome(name: ClientSource, outcome: _Outcome, signals: _Signals) -> ClientAddress:
    walked = outcome.hops[: outcome.reached + 1]
    chain = tuple(h.text for h in reversed(walked) if h.kind is not _Kind.MISSING or h.text)
    if outcome.client < 0:
        return ClientAddress(address=None, text="", source=ClientSource.PEER, chain=chain)
    hop = outcome.hops[outcome.client]
    return ClientAddress(
        address=hop.address,
        text=hop.text,
        source=name if outcome.client > 0 else ClientSource.PEER,
        chain=chain,
    )


def _check_consistency(
    outcomes: Mapping[ClientSource, _Outcome],
    singles: Mapping[ClientSource, _Hop],
    chains: Mapping[ClientSource, _Chain],
    signals: _Signals,
) -> None:
    """Cross-check the headers a trusted peer sent."""
    fwd = outcomes.get(ClientSource.FORWARDED)
    xff = outcomes.get(ClientSource.X_FORWARDED_FOR)
    if fwd is not None and xff is not None:
        a = fwd.hops[fwd.client].address if fwd.client >= 0 else None
        b = xff.hops[xff.client].address if xff.client >= 0 else None
        if (a is None) != (b is None) or (a is not None and b is not None and _key(a) != _key(b)):
            signals.add(
                "forwarded_conflict",
                f"Forwarded gives {_show(a.text if a else '-')}, "
                f"X-Forwarded-For gives {_show(b.text if b else '-')}",
            )
    seen: dict[tuple[int, int], ClientSource] = {}
    for name, hop in singles.items():
        if hop.address is None:
            continue
        key = _key(hop.address)
        if seen and key not in seen:
            other = next(iter(seen.values()))
            signals.add("cdn_header_mismatch", f"{name} disagrees with {other}")
        seen.setdefault(key, name)
        for chain_name, chain in chains.items():
            # Only chains a CDN appends to: X-Forwarded-For always, Forwarded when
            # configured (a client's own proxy may add a Forwarded header of its own).
            if chain_name is ClientSource.FORWARDED and chain_name not in outcomes:
                continue
            listed = {_key(h.address) for h in chain.hops if h.address is not None}
            if key not in listed:
                signals.add(
                    "cdn_header_mismatch",
                    f"{name} {_show(hop.text)} does not appear in {chain_name}",
                )

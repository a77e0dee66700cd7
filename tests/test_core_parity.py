"""Parity: the compiled core (``geofence._core``) answers exactly like its pure-Python twin.

Both lookups are built over the same compiled state, so a decision from the table is
the very same object either way; whatever the fast path hands back goes to the same
general path. Checked over random and mutated address text, every boundary of the
bundled data carved by the OFAC preset, the tunnel forms, bad input, random policies
over random data, and the batch entry points. Skipped when the compiled core is not
active (not built, or ``GEOFENCE_PURE_PYTHON=1``): the rest of the suite then runs
against the twin.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from array import array
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofence.addr import TUNNEL_RANGES, TunnelKind, parse_address
from geofence.engine import Geofence
from geofence.snapshot.partition import V4_TOP, V6_TOP, Partitions
from geofence.snapshot.reader import Snapshot, _record_of
from geofence.snapshot.search import _CORE, PyLookup, make_lookup, plain_address
from tests.policy.conftest import TODAY
from tests.policy.test_properties import _cidr_pool, _near, _snapshot, policies
from tests.strategies import address_texts, addresses, source_sets

pytestmark = pytest.mark.skipif(
    _CORE is None, reason="the compiled core is not active (not built, or GEOFENCE_PURE_PYTHON=1)"
)

Pair = tuple[Any, PyLookup]


def _pair(gf: Geofence) -> Pair:
    """The engine's compiled lookup and a pure twin over the very same state."""
    state = gf._state
    c = state.compiled
    twin = make_lookup(
        c.partitions, c.table, partial(gf._decide_general, state), pure=True, parsed=True
    )
    assert type(state.decide) is _CORE.Lookup
    return state.decide, twin


def _outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What a call returns, or the type and message of what it raises."""
    try:
        return "ok", fn(*args)
    except Exception as exc:  # the parity is over any outcome
        return "raised", (type(exc), str(exc))


def _same(pair: Pair, *args: Any) -> None:
    fast, twin = pair
    got, want = _outcome(fast, *args), _outcome(twin, *args)
    assert got == want, args
    if got[0] == "ok":
        assert got[1] is want[1] or got[1] == want[1], args


@pytest.fixture(scope="module")
def ofac() -> Iterator[Geofence]:
    with Geofence(None, "us-ofac-comprehensive") as gf:
        yield gf


# -- the parsers ------------------------------------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(address_texts())
def test_parser_accepts_exactly_what_inet_pton_accepts(text: str) -> None:
    assert _CORE.parse(text) == plain_address(text)


def test_parser_on_a_seeded_million_of_near_misses() -> None:
    """Random strings over the address alphabet, weighted towards almost-valid text."""
    rng = random.Random(16)
    alphabet = "0123456789abcdefABCDEF:::...%"
    mismatches = []
    for _ in range(200_000):
        if rng.random() < 0.5:
            value = rng.getrandbits(128) >> rng.choice((0, 64, 96, 112, 120))
            text = str(ipaddress.IPv6Address(value))
            chars = list(text)
            at = rng.randrange(len(chars) + 1)
            chars.insert(at, rng.choice(alphabet))
            text = "".join(chars)
        else:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 20)))
        if _CORE.parse(text) != plain_address(text):
            mismatches.append(text)
    assert mismatches == []


@pytest.mark.parametrize(
    "text",
    [
        "0.0.0.0", "255.255.255.255", "256.0.0.0", "1.2.3", "1.2.3.4.", ".1.2.3.4", "1..2.3",
        "01.2.3.4", "1.2.3.00", "1.2.3.0", "::", ":::", "::1", "1::", "1:::2", ":1::", "1::2::3",
        "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7",
        "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "12345::", "::ffff:1.2.3.4",
        "::ffff:01.2.3.4", "::1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4",
        "::1.2.3.4:5", "1.2.3.4::", "fe80::1%eth0", "[::1]", "::1 ", " ::1", "0x1.2.3.4",
        "1.2.3.4/32", "FFFF::", "ffff::FFFF", "1:2:3:4:5:6::1.2.3.4", "::0:1.2.3.4",
        "2001:db8::1.2.3.4", "1::2:3:4:5:6:7", "1::2:3:4:5:6:7:8",
    ],
)  # fmt: skip
def test_parser_on_the_classic_edge_cases(text: str) -> None:
    assert _CORE.parse(text) == plain_address(text)


# -- decide over the bundled data ----------------------------------------------------------------


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(address_texts())
def test_decide_parity_on_address_text(ofac: Geofence, text: str) -> None:
    _same(_pair(ofac), text)


@settings(max_examples=2000, deadline=None)
@given(addresses())
def test_decide_parity_on_random_addresses(ofac: Geofence, address: tuple[int, int]) -> None:
    version, value = address
    text = str(ipaddress.IPv6Address(value) if version == 6 else ipaddress.IPv4Address(value))
    _same(_pair(ofac), text)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(addresses(), st.booleans())
def test_decide_parity_on_parsed_addresses(
    ofac: Geofence, address: tuple[int, int], unwrap: bool
) -> None:
    """What the middleware passes: a ParsedAddress, unwrapped or not (tunnel prefixes)."""
    version, value = address
    _same(_pair(ofac), parse_address(value, version=version, unwrap=unwrap))


def _boundaries(parts: Partitions) -> tuple[list[int], list[int]]:
    """Every segment's start and start - 1 (the end and end + 1 of the one before)."""
    v4 = {V4_TOP}
    for s in parts.v4_starts:
        v4.update((s - 1, s) if s else (s,))
    v6 = {V6_TOP}
    for h, lo in zip(parts.v6_hi, parts.v6_lo, strict=True):
        s = (h << 64) | lo
        v6.update((s - 1, s) if s else (s,))
    return sorted(v4), sorted(v6)


def test_every_boundary_of_the_bundled_data(ofac: Geofence) -> None:
    """start, start - 1, end and end + 1 of every segment, as text and packed, both cores.

    The compiled OFAC partitions hold every boundary of the bundled snapshot plus
    those of the policy's CIDRs.
    """
    fast, twin = _pair(ofac)
    v4, v6 = _boundaries(ofac.compiled.partitions)
    assert len(v4) > 2 * 300_000
    assert len(v6) > 2 * 300_000
    packed4 = b"".join(v.to_bytes(4, "big") for v in v4)
    packed6 = b"".join(v.to_bytes(16, "big") for v in v6)
    want4 = twin.many_v4(packed4)
    want6 = twin.many_v6(packed6)
    assert fast.many_v4(packed4) == want4
    assert fast.many_v6(packed6) == want6
    texts4 = [
        socket.inet_ntop(socket.AF_INET, packed4[k : k + 4]) for k in range(0, len(packed4), 4)
    ]
    texts6 = [
        socket.inet_ntop(socket.AF_INET6, packed6[k : k + 16]) for k in range(0, len(packed6), 16)
    ]
    assert [fast(t) for t in texts4] == want4
    assert [fast(t) for t in texts6] == want6
    assert fast.many(texts4 + texts6) == want4 + want6


def _tunnel_forms(v4: int) -> list[str]:
    ip = ipaddress.IPv4Address(v4)
    out = [f"::ffff:{ip}", str(ipaddress.IPv6Address((0xFFFF << 32) | v4))]
    for kind, first, _last in TUNNEL_RANGES:
        if kind is TunnelKind.SIXTOFOUR:
            out.append(str(ipaddress.IPv6Address(first | (v4 << 80) | 1)))
        elif kind is TunnelKind.TEREDO:
            out.append(str(ipaddress.IPv6Address(first | (~v4 & 0xFFFFFFFF))))
        elif kind is TunnelKind.NAT64:
            out.append(str(ipaddress.IPv6Address(first | v4)))
            out.append(f"64:ff9b::{ip}")
    return out


def test_tunnel_forms_go_to_the_general_path(ofac: Geofence) -> None:
    """Every tunnel form of IPv4 boundaries: same decision, tunnel recorded, both cores."""
    pair = _pair(ofac)
    starts = ofac.compiled.partitions.v4_starts
    for k in range(0, len(starts), 97):
        for v in (starts[k], max(starts[k] - 1, 0)):
            for text in _tunnel_forms(v):
                _same(pair, text)
                assert pair[0](text).tunnel is not None, text


class _Text(str):
    pass


BAD: list[Any] = [
    "1.2.3.4\x00",
    "\x00",
    "\u0661.\u0662.\u0663.\u0664",  # Arabic-Indic digits
    "\uff11.2.3.4",  # a fullwidth digit
    "1" * 10_000,
    "1.2.3.4" + " " * 10_000,
    "\ud800",
    "1.2.3.4\ud800",
    "::1\udfff",
    "",
    " 1.2.3.4",
    "1.2.3.4 ",
    "fe80::1%",
    "fe80::1%eth0\n",
    "example.com",
    "1.2.3.4/24",
    "01.2.3.4",
    "1.2.3.256",
    b"1.2.3.4",
    b"\x01\x02\x03",
    bytearray(b"\x01\x02\x03\x04"),
    None,
    1.5,
    16843009,
    True,
    _Text("1.2.3.4"),
    _Text("01.2.3.4"),
    _Text("::ffff:1.2.3.4"),
    ipaddress.ip_address("8.8.8.8"),
]


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_bad_input_gets_the_same_answer(ofac: Geofence, value: Any) -> None:
    """NUL, non-ASCII digits, 10 KB text, surrogates, str subclasses, bytes: same outcome."""
    pair = _pair(ofac)
    _same(pair, value)
    fast, twin = pair
    assert _outcome(ofac.decide, value) == _outcome(twin, value)
    assert _outcome(fast.many, [value]) == _outcome(twin.many, [value])


def test_context_and_keywords_are_forwarded(ofac: Geofence) -> None:
    from geofence.context import Context

    fast, twin = _pair(ofac)
    ctx = Context()
    assert fast("8.8.8.8", ctx) == twin("8.8.8.8", ctx)
    assert fast("8.8.8.8", context=ctx) == twin("8.8.8.8", context=ctx)
    assert fast("8.8.8.8", None) is twin("8.8.8.8")


# -- random policies over random data ------------------------------------------------------------


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(entry_sets=source_sets(max_sources=3, max_entries=6), data=st.data())
def test_random_policies_decide_alike(entry_sets: list[Any], data: st.DataObject) -> None:
    snapshot = _snapshot(entry_sets)
    edges = _near(entry_sets)
    pol = data.draw(policies(_cidr_pool(edges)), label="policy")
    with Geofence(snapshot, pol, today=lambda: TODAY) as gf:
        pair = _pair(gf)
        v4, v6 = _boundaries(gf.compiled.partitions)
        picked = [(4, v) for v in v4] + [(6, v) for v in v6]
        picked += data.draw(st.lists(addresses(), max_size=20), label="addresses")
        for version, value in picked:
            ip = ipaddress.IPv6Address(value) if version == 6 else ipaddress.IPv4Address(value)
            _same(pair, str(ip))
            if version == 4:
                for text in _tunnel_forms(value):
                    _same(pair, text)


# -- batches -------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(address_texts() | st.sampled_from(BAD), max_size=40))
def test_many_equals_one_by_one(ofac: Geofence, items: list[Any]) -> None:
    fast, twin = _pair(ofac)
    assert _outcome(fast.many, items) == _outcome(twin.many, items)
    assert _outcome(fast.many, tuple(items)) == _outcome(lambda xs: [twin(x) for x in xs], items)


def test_packed_batches_check_their_length(ofac: Geofence) -> None:
    fast, twin = _pair(ofac)
    for method in ("many_v4", "many_v6"):
        assert _outcome(getattr(fast, method), b"\x01\x02\x03") == _outcome(
            getattr(twin, method), b"\x01\x02\x03"
        )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.none() | address_texts(), max_size=30))
def test_utf8_batches_equal_one_by_one(ofac: Geofence, items: list[str | None]) -> None:
    fast, twin = _pair(ofac)
    data = bytearray()
    bounds = array("q")
    for item in items:
        if item is None:
            bounds.extend((-1, -1))
            continue
        raw = item.encode("utf-8", "surrogatepass")
        bounds.extend((len(data), len(data) + len(raw)))
        data += raw
    got = _outcome(fast.many_utf8, bytes(data), bounds)
    want = _outcome(twin.many_utf8, bytes(data), bounds)
    assert got == want


def test_utf8_bounds_outside_the_data_are_refused(ofac: Geofence) -> None:
    fast, twin = _pair(ofac)
    bounds = array("q", [0, 100])
    assert _outcome(fast.many_utf8, b"1.2.3.4", bounds) == _outcome(
        twin.many_utf8, b"1.2.3.4", bounds
    )
    assert _outcome(fast.many_utf8, b"1.2.3.4", bounds)[0] == "raised"


# -- Snapshot.get --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(address_texts())
def test_snapshot_get_parity(text: str) -> None:
    snap = _bundled()
    parts = snap.partitions
    table = (*snap.records, *(None for _ in range(19)))
    twin = make_lookup(parts, table, partial(_record_of, parts, table), pure=True)
    # The core's lookup (``get`` then fills the ASN from the table, the same in both cores).
    assert _outcome(snap._get, text) == _outcome(twin, text)


def _bundled_factory() -> Callable[[], Snapshot]:
    cache: list[Snapshot] = []

    def get() -> Snapshot:
        if not cache:
            cache.append(Snapshot.default())
        return cache[0]

    return get


_bundled = _bundled_factory()


# -- inconsistent arrays never make the C search read out of bounds ------------------------------


def test_corrupt_columns_are_searched_within_bounds() -> None:
    """Bucket bounds past the end, negative ones, ids past the table: no read outside.

    Run under AddressSanitizer or valgrind in CI, this proves the clamps hold; here it
    checks that every answer comes from the table or the fallback.
    """
    starts = array("I", [0, 10, 20])
    ids = array("i", [0, 1, 99])
    index = array("i", [1 << 30, -5] * 32768 + [7])
    hi = array("Q", [0, 1 << 60])
    lo = array("Q", [0, 0])
    ids6 = array("i", [-1000, 1])
    index6 = array("i", [-1] * 65537)
    parts = Partitions(starts, ids, index, hi, lo, ids6, index6)
    table = ["a", "b"]
    fallback_calls: list[Any] = []

    def fallback(ip: Any, context: Any = None) -> str:
        fallback_calls.append(ip)
        return "fallback"

    fast = _CORE.Lookup(parts, table, fallback, -19, -16)
    answers = [
        fast(t) for t in ("0.0.0.1", "0.0.0.15", "0.0.0.25", "255.255.255.255", "::1", "f000::")
    ]
    assert set(answers) <= {"a", "b", "fallback"}
    assert fast.many_v4(bytes(range(64))) is not None
    assert fast.many_v6(bytes(range(64))) is not None
    with pytest.raises(ValueError, match="inconsistent"):
        _CORE.Lookup(parts._replace(v4_index=array("i", [0])), table, fallback, -19, -16)
    with pytest.raises(TypeError):
        _CORE.Lookup(parts._replace(v6_hi=array("I", [0, 1])), table, fallback, -19, -16)

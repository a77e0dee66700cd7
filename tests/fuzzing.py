"""Mutators and checkers shared by the fuzz tests and ``benchmarks/fuzz_long.py``.

Each ``check_*`` function takes one generated input and returns ``None`` when the
library behaved as documented, or an :class:`Outcome` saying what went wrong:

* a **crash** is any exception outside the documented ones for that input
  (``PolicyError`` for policy text, ``SnapshotError`` for snapshot bytes,
  ``ContextError`` when a context is built, nothing at all for headers);
* a **wrong answer** is a result that breaks an invariant: a parsed policy
  holding a non-finite number or an id with a control character, an opened
  snapshot whose indexed search disagrees with a plain bisect, a decision whose
  risk or audit line is not finite JSON, a client address that an untrusted peer
  chose or that appears nowhere in the request.

Mutators take a :class:`random.Random`, so the Hypothesis tests (``st.randoms``)
and the seeded long run share them.
"""

from __future__ import annotations

import functools
import json
import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from geofence.context import Context, Subject
from geofence.engine import Geofence
from geofence.errors import ContextError, PolicyError, SnapshotError
from geofence.policy.parse import parse_policy
from geofence.signals.base import Signal
from geofence.signals.proxy import ClientSource, TrustedProxies, resolve_client
from geofence.snapshot.partition import locate6
from geofence.snapshot.reader import Snapshot
from geofence.testing import make_snapshot
from tests.snapshot.resum import resum, section_spans

__all__ = [
    "Outcome",
    "build_context",
    "check_context",
    "check_headers",
    "check_policy",
    "check_snapshot",
    "mutate_policy",
    "mutate_snapshot",
    "random_context",
    "random_headers",
    "seed_policies",
    "seed_snapshot",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What went wrong with one input."""

    kind: str
    """``"crash"`` or ``"wrong"``."""

    detail: str
    """The exception or the broken invariant."""


# ------------------------------------------------------------------------------ seeds


@functools.cache
def seed_policies() -> tuple[str, ...]:
    """The bundled presets plus a policy using every rule key."""
    root = Path(__file__).resolve().parent.parent / "data" / "policies"
    texts = [p.read_text(encoding="utf-8") for p in sorted(root.glob("*.toml"))]
    texts.append(
        '[policy]\nid = "all-keys"\ndefault = "allow"\non_unresolved = "review"\n'
        '[groups]\nsanctioned = ["CU", "IR", "KP", "SY"]\n'
        "[signal_weights]\ntz_mismatch = 1.5\n"
        '[[exceptions]]\nid = "office"\ncidrs = ["192.0.2.0/24"]\n'
        '[[rules]]\nid = "sanctions"\naction = "deny"\njurisdictions = ["@sanctioned", "UA-43"]\n'
        'effective_from = 2020-01-01\ncitation = "EO 13685"\n'
        '[[rules]]\nid = "risky"\naction = "challenge"\nsignals = ["tz_mismatch"]\nmin_risk = 1.0\n'
        '[[rules]]\nid = "vpn"\naction = "review"\nkinds = ["vpn", "tor"]\nasns = [64500]\n'
        '[[rules]]\nid = "nets"\naction = "route:eu"\ncidrs = ["2001:db8::/32", "10.0.0.0/8"]\n'
        'subject = { nationality = ["US"], verified = true }\n'
    )
    return tuple(texts)


@functools.cache
def seed_snapshot() -> bytes:
    """A small snapshot with both families, several records and IPv6 high-half ties."""
    snap = make_snapshot(
        {
            "1.0.0.0/24": {"country": "US", "asn": 64500},
            "1.0.3.0/24": {"country": "IR"},
            "5.5.0.0/16": {"country": "UA", "subdivision": "UA-43"},
            "81.2.69.0/24": {"country": "GB", "latitude": 51.5, "longitude": -0.1},
            "2a00:2::/64": {"country": "DE"},
            "2a00:2:0:0:8000::/65": {"country": "FR"},
            "2a01::/32": {"country": "IR"},
        }
    )
    return _snapshot_bytes(snap)


def _snapshot_bytes(snap: Snapshot) -> bytes:
    from geofence.snapshot.build import encode_snapshot

    v4 = list(snap.ranges(4))
    v6 = list(snap.ranges(6))
    return encode_snapshot(
        meta=snap.meta,
        records=snap.records,
        v4=([f for f, _, _ in v4], [i for _, _, i in v4]),
        v6=([f for f, _, _ in v6], [i for _, _, i in v6]),
    )


# ------------------------------------------------------------------------------ policies

#: Fragments that broke parsers before: odd numbers, control characters, nesting, types.
_TOKENS: Final = (
    "nan",
    "inf",
    "-inf",
    "-1",
    "1e309",
    "0x7fffffffffffffff",
    '"\\n"',
    '"a\\u0000"',
    '"\\u00e9"',
    "[",
    "]",
    "[[rules]]",
    "{",
    "}",
    "= 5",
    "= []",
    "= {}",
    "= [1, 2]",
    '= ["@nowhere"]',
    "true",
    "1979-05-27T07:32:00Z",
    "2090-01-01",
    '"2002:c000:200::/40"',
    '"64:ff9b::/96"',
    '"tz_mismtach"',
    '"::ffff:1.2.3.0/120"',
    "[" * 40 + "]" * 40,
    "\n",
    '"',
    "#",
    "'''",
)


def mutate_policy(text: str, rng: random.Random) -> str:
    """One to four random edits: delete, duplicate or swap spans, insert tokens."""
    out = text
    for _ in range(rng.randint(1, 4)):
        if not out:
            out = rng.choice(seed_policies())
        a = rng.randrange(len(out))
        b = min(len(out), a + rng.randint(1, 40))
        edit = rng.randrange(5)
        if edit == 0:
            out = out[:a] + out[b:]
        elif edit == 1:
            out = out[:b] + out[a:b] + out[b:]
        elif edit == 2:
            out = out[:a] + rng.choice(_TOKENS) + out[a:]
        elif edit == 3:
            out = out[:a] + rng.choice(_TOKENS) + out[b:]
        else:
            c = rng.randrange(len(out))
            out = out[:a] + out[c : c + (b - a)] + out[b:]
    return out


def check_policy(text: str) -> Outcome | None:
    """Parse (and if valid, compile and decide with) one policy text."""
    try:
        pol = parse_policy(text, source="fuzz.toml")
    except PolicyError:
        return None
    except Exception as exc:
        return Outcome("crash", f"parse: {type(exc).__name__}: {exc}"[:300])
    for rule in (*pol.rules, *pol.exceptions):
        if rule.min_risk is not None and not math.isfinite(rule.min_risk):
            return Outcome("wrong", f"rule {rule.id!r}: min_risk {rule.min_risk}")
        if not rule.id.isprintable():
            return Outcome("wrong", f"rule id {rule.id!r} has control characters")
    if any(not math.isfinite(w) or w < 0 for _, w in pol.signal_weights):
        return Outcome("wrong", f"signal weights {pol.signal_weights}")
    try:
        gf = Geofence(_world(), pol)
        for ip in ("1.0.0.1", "1.0.3.7", "5.5.5.5", "2a01::1", "10.1.1.1", "2002:100:301::1"):
            gf.decide(ip)
            gf.decide(ip, Context(signals=(Signal(code="tz_mismatch", weight=1.0),)))
        gf.close()
    except Exception as exc:
        return Outcome("crash", f"engine: {type(exc).__name__}: {exc}"[:300])
    return None


@functools.cache
def _world() -> Snapshot:
    return Snapshot.from_bytes(seed_snapshot(), origin="<fuzz-world>")


# ------------------------------------------------------------------------------ snapshots

_TABLES: Final = (b"V4ST", b"V4ID", b"V4IX", b"V6HI", b"V6LO", b"V6ID", b"V6IX")
_JSON_BITS: Final = (b"[" * 5000, b"NaN", b"1e999", b"\xff", b'"x"', b"-1", b"9" * 5000, b"{}")


def mutate_snapshot(data: bytes, rng: random.Random) -> bytes:
    """Edit bytes anywhere (a flipped bit, an overwritten word, a JSON splice), then re-sum.

    The checksum is recomputed, so only the reader's structural checks stand
    between the edit and a search.
    """
    out = bytearray(data)
    spans = section_spans(data)
    for _ in range(rng.randint(1, 3)):
        edit = rng.randrange(4)
        if edit == 0:  # a bit anywhere after the header
            i = rng.randrange(64, len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif edit == 1:  # a word in a table
            offset, length = spans[rng.choice(_TABLES)]
            if length >= 8:
                i = offset + rng.randrange(0, length - 4, 4)
                out[i : i + 4] = rng.randbytes(4)
        elif edit == 2:  # a small integer change in a table (keeps values plausible)
            offset, length = spans[rng.choice(_TABLES)]
            if length >= 8:
                i = offset + rng.randrange(0, length - 4, 4)
                value = int.from_bytes(out[i : i + 4], "little", signed=True)
                value += rng.choice((-2, -1, 1, 2))
                if -(2**31) <= value < 2**31:
                    out[i : i + 4] = value.to_bytes(4, "little", signed=True)
        else:  # a splice into a JSON section (same length, so the layout holds)
            offset, length = spans[rng.choice((b"META", b"RECS"))]
            bit = rng.choice(_JSON_BITS)[: max(1, length // 2)]
            i = offset + rng.randrange(max(1, length - len(bit)))
            out[i : i + len(bit)] = bit
    return resum(out)


def check_snapshot(data: bytes, probes: int = 200, seed: int = 0) -> Outcome | None:
    """Open mutated bytes; if they open, every probe's indexed search must equal a bisect."""
    try:
        snap = Snapshot.from_bytes(data, origin="fuzz.gfs")
    except SnapshotError:
        return None
    except Exception as exc:
        return Outcome("crash", f"open: {type(exc).__name__}: {exc}"[:300])
    rng = random.Random(seed)
    try:
        starts = snap._v4_starts
        hi, lo = snap._v6_hi, snap._v6_lo
        for _ in range(probes):
            v4 = rng.randrange(1 << 32)
            if snap.lookup_id(4, v4)[0] != bisect_right(starts, v4) - 1:
                return Outcome("wrong", f"IPv4 {v4}: indexed search disagrees with bisect")
            v6 = rng.randrange(1 << 128)
            if snap.lookup_id(6, v6)[0] != locate6(hi, lo, v6):
                return Outcome("wrong", f"IPv6 {v6:#x}: indexed search disagrees with bisect")
            snap.lookup(v4, version=4)
            snap.lookup(v6, version=6)
        snap.verify()
    except Exception as exc:
        return Outcome("crash", f"lookup: {type(exc).__name__}: {exc}"[:300])
    return None


# ------------------------------------------------------------------------------ contexts

_NUMBERS: Final = (0.0, 1.0, -1.0, 1e6, 1e300, math.nan, math.inf, -math.inf, 1.7e9)
_FUZZ_POLICY: Final = (
    '[policy]\nid = "ctx"\ndefault = "allow"\n[signal_weights]\ncustom = 2.0\n'
    '[[rules]]\nid = "risk"\naction = "challenge"\nmin_risk = 2.5\n'
    '[[rules]]\nid = "subj"\naction = "deny"\nsubject = { nationality = ["IR"] }\n'
)


def random_context(rng: random.Random) -> dict[str, object]:
    """Keyword arguments for a Context: mostly plausible, sometimes hostile."""
    nums = [rng.choice(_NUMBERS) if rng.random() < 0.3 else rng.uniform(-200, 200) for _ in "ab"]
    signals = tuple(
        (rng.choice(("tz_mismatch", "custom", "network_vpn", "x")), rng.choice(_NUMBERS))
        for _ in range(rng.randint(0, 5))
    )
    return {
        "subject": {
            "id": rng.choice((None, "u1", "", "\n")),
            "nationality": rng.choice(([], ["IR"], ["US", "ir"], ["XX"])),
            "verified": rng.choice((None, True, False)),
        },
        "timezone": rng.choice((None, "Europe/Berlin", "Bogus/Zone", "", "\x00")),
        "accept_language": rng.choice((None, "de-DE,de;q=0.9", ";;;", "x" * 300)),
        "declared_location": rng.choice((None, (nums[0], nums[1]))),
        "signals": signals,
        "at": rng.choice((None, rng.choice(_NUMBERS))),
    }


def build_context(spec: dict[str, object]) -> Context:
    """The Context a :func:`random_context` spec describes.

    Raises:
        ContextError: A number or signal is refused (so is ``ValueError`` from
            ``Subject.from_mapping``, for a wrongly typed subject field).
    """
    raw_signals = spec["signals"]
    if not isinstance(raw_signals, tuple):
        raise TypeError(f"signals spec must be a tuple, got {raw_signals!r}")
    signals = tuple(Signal(code=c, weight=w) for c, w in raw_signals)
    return Context(
        subject=Subject.from_mapping(spec["subject"]),  # type: ignore[arg-type]
        timezone=spec["timezone"],  # type: ignore[arg-type]
        accept_language=spec["accept_language"],  # type: ignore[arg-type]
        declared_location=spec["declared_location"],  # type: ignore[arg-type]
        signals=signals,
        at=spec["at"],  # type: ignore[arg-type]
    )


def check_context(spec: dict[str, object]) -> Outcome | None:
    """Build the context (ContextError allowed), decide, and check the audit line."""
    try:
        ctx = build_context(spec)
    except (ContextError, ValueError):
        return None
    except Exception as exc:
        return Outcome("crash", f"context: {type(exc).__name__}: {exc}"[:300])
    try:
        decision = _context_engine().decide("1.0.3.7", ctx)
        line = decision.to_json(at=0.0)
    except Exception as exc:
        return Outcome("crash", f"decide: {type(exc).__name__}: {exc}"[:300])
    if decision.risk is None or not math.isfinite(decision.risk):
        return Outcome("wrong", f"risk {decision.risk}")
    try:
        json.loads(line, parse_constant=_refuse_constant)
    except ValueError as exc:
        return Outcome("wrong", f"audit line is not strict JSON: {exc}")
    return None


def _refuse_constant(token: str) -> object:
    raise ValueError(f"non-finite number {token}")


@functools.cache
def _context_engine() -> Geofence:
    from geofence.signals.pipeline import SignalPipeline

    return Geofence(_world(), parse_policy(_FUZZ_POLICY), signals=SignalPipeline())


# ------------------------------------------------------------------------------ headers

_HEADER_NAMES: Final = tuple(s.value for s in ClientSource if s is not ClientSource.PEER)
_HOPS: Final = (
    "198.51.100.7",
    "10.0.0.2",
    "2001:db8::1",
    "[2001:db8::2]:443",
    "unknown",
    "_hidden",
    '"for=1.2.3.4"',
    "1.2.3.4:80",
    "::ffff:10.0.0.9",
    "999.1.1.1",
    "",
    " ",
    "for=203.0.113.9",
    'for="[2001:db8::3]"',
    "\x00",
    "é",
)


def random_headers(rng: random.Random) -> tuple[str | None, list[tuple[str, str]], int]:
    """(peer, headers, config index): forwarding headers built from plausible and odd hops."""
    peer = rng.choice((None, "10.0.0.1", "203.0.113.66", "::1", "garbage", "[::1]:80"))
    headers = []
    for _ in range(rng.randint(0, 4)):
        name = rng.choice(_HEADER_NAMES)
        hops = [rng.choice(_HOPS) for _ in range(rng.randint(1, 5))]
        sep = "; " if rng.random() < 0.2 else ", "
        value = sep.join(
            f"for={h}" if name == "forwarded" and rng.random() < 0.7 else h for h in hops
        )
        headers.append((rng.choice((name, name.upper(), name.title())), value))
    return peer, headers, rng.randrange(len(_configs()))


@functools.cache
def _configs() -> tuple[TrustedProxies, ...]:
    import warnings

    from geofence.errors import TrustWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrustWarning)
        return (
            TrustedProxies(),
            TrustedProxies(cidrs=["10.0.0.0/8", "::1/128"], headers=_HEADER_NAMES),
            TrustedProxies(hops=1, cidrs=["10.0.0.0/8"]),
            TrustedProxies(hops=2),
        )


def check_headers(peer: str | None, headers: list[tuple[str, str]], config: int) -> Outcome | None:
    """Resolve the client: never raises, and never believes what an untrusted peer says."""
    trusted = _configs()[config]
    try:
        result = resolve_client(peer, headers, trusted)
        json.dumps(result.as_dict())
    except Exception as exc:
        return Outcome("crash", f"resolve: {type(exc).__name__}: {exc}"[:300])
    if result.address is None or result.source is ClientSource.PEER:
        return None
    raw = " ".join(v for _, v in headers)
    if result.text not in raw:
        return Outcome("wrong", f"{result.text!r} appears in no header")
    peer_known = peer is not None and peer.strip("[]").split("]")[0] in ("10.0.0.1", "::1")
    if not trusted.hops and not trusted.cidrs:
        return Outcome("wrong", "a header was believed with nobody trusted")
    if trusted.cidrs and not peer_known:
        return Outcome("wrong", f"a header from unknown peer {peer!r} was believed")
    if (
        trusted.hops
        and not trusted.cidrs
        and "proxy_unverified" not in {s.code for s in result.signals}
    ):
        return Outcome("wrong", "a header believed by position only carries no signal")
    return None

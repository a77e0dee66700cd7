"""Labelled synthetic traffic over the bundled snapshot: does the signal pipeline catch evasion?

Usage (from a checkout)::

    python benchmarks/traffic.py                      # 5,000 subjects, seed 20261127
    python benchmarks/traffic.py --smoke              # 600 subjects (CI, a few seconds)
    python benchmarks/traffic.py --policy benchmarks/policies/evasion-naive.toml
    python benchmarks/traffic.py --json out.json

A seeded generator draws subjects of several behaviour patterns, gives each a timeline of
requests with real addresses of the bundled snapshot (chosen by country and network kind),
client hints and an account country, and runs every request, in time order, through
``Geofence.decide(ip, context)`` with the default :class:`SignalPipeline` (in-process
history) and ``benchmarks/policies/evasion.toml``.

A request is **flagged** when its action is not ``allow`` (deny, challenge, review, route).
Patterns that SHOULD be flagged: ``vpn_evader`` (requests after a denial, through a VPN, a
server or another country), ``careful_evader`` (someone in a sanctioned country who only
ever connects through a VPN or a server abroad: no denial in the history), ``tor`` and
``sanctioned_direct`` (requests from a sanctioned country itself, decided by the address
alone). Patterns that should NOT: ``ordinary``,
``traveller``, ``relay``, ``office_nat``, and four extra honest cases: ``commuter``
(home in one country, office in the neighbouring one), ``cloud_client`` (API keys used
from servers), ``privacy_vpn`` (people who use a commercial VPN for privacy) and
``sanctioned_visitor`` (someone back home after a trip to a sanctioned country: their
requests at home).

Every synthetic choice is a model, not a measurement of real traffic: the rates printed
describe how this policy treats these patterns, not how many real users it would flag.
Ordinary users sit on ranges the data gives no network kind, so data misclassification
(a home ISP labelled hosting) is not part of the false-positive rate.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from _common import DEFAULT_SEED, ROOT

from geofence.context import Context, Subject
from geofence.decision import Action
from geofence.engine import Geofence
from geofence.kinds import NetworkKind
from geofence.signals.hints import country_centroid, haversine_km
from geofence.signals.pipeline import SignalConfig, SignalPipeline
from geofence.snapshot.reader import Snapshot

DEFAULT_POLICY: Final = ROOT / "benchmarks" / "policies" / "evasion.toml"
DEFAULT_SUBJECTS: Final = 5000
SMOKE_SUBJECTS: Final = 600
#: Request times start here (2026-11-02 00:00 UTC) and span about three weeks.
T0: Final = 1_793_577_600.0
HOUR: Final = 3600.0
DAY: Final = 86400.0
#: Ranges kept per (kind, country, family) when indexing the snapshot (reservoir sample).
POOL_CAP: Final = 400

SANCTIONED: Final = frozenset({"CU", "IR", "KP"})

#: country -> (time zones, language tag, weight as a home country)
PROFILES: Final[dict[str, tuple[tuple[str, ...], str, float]]] = {
    "US": (
        ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"),
        "en-US",
        20,
    ),
    "DE": (("Europe/Berlin",), "de-DE", 8),
    "GB": (("Europe/London",), "en-GB", 7),
    "FR": (("Europe/Paris",), "fr-FR", 6),
    "JP": (("Asia/Tokyo",), "ja-JP", 6),
    "BR": (("America/Sao_Paulo",), "pt-BR", 5),
    "IN": (("Asia/Kolkata",), "en-IN", 6),
    "CA": (("America/Toronto", "America/Vancouver"), "en-CA", 4),
    "AU": (("Australia/Sydney", "Australia/Melbourne"), "en-AU", 3),
    "NL": (("Europe/Amsterdam",), "nl-NL", 3),
    "ES": (("Europe/Madrid",), "es-ES", 3),
    "IT": (("Europe/Rome",), "it-IT", 3),
    "KR": (("Asia/Seoul",), "ko-KR", 3),
    "MX": (("America/Mexico_City",), "es-MX", 2),
    "PL": (("Europe/Warsaw",), "pl-PL", 2),
    "SE": (("Europe/Stockholm",), "sv-SE", 1),
    "SG": (("Asia/Singapore",), "en-SG", 1),
    "AE": (("Asia/Dubai",), "ar-AE", 1),
    "TR": (("Europe/Istanbul",), "tr-TR", 2),
}
#: Sanctioned homes of evaders: (time zone, language tag, weight).
SANCTIONED_PROFILES: Final[dict[str, tuple[str, str, float]]] = {
    "IR": ("Asia/Tehran", "fa-IR", 8),
    "CU": ("America/Havana", "es-CU", 1.5),
    "KP": ("Asia/Pyongyang", "ko-KP", 0.5),
}
#: Airport hubs where connecting travellers make a request.
HUBS: Final = ("AE", "SG", "NL", "GB", "TR", "DE", "US")
#: Countries of popular cloud regions (for API clients and self-run VPN servers).
CLOUD_COUNTRIES: Final = ("US", "DE", "NL", "GB", "FR", "SG", "JP", "CA", "SE")
#: (home, work) countries of cross-border commuters; both must be in PROFILES.
COMMUTES: Final = (("FR", "DE"), ("NL", "DE"), ("PL", "DE"), ("CA", "US"), ("MX", "US"))
#: Permitted countries near sanctioned ones, where an evader may get a plain connection.
NEARBY: Final = ("AE", "TR", "DE", "NL", "GB", "ES", "MX", "KR", "CA")

#: (pattern, should be flagged, share of subjects)
PATTERNS: Final[tuple[tuple[str, bool, float], ...]] = (
    ("ordinary", False, 0.33),
    ("traveller", False, 0.10),
    ("relay", False, 0.10),
    ("office_nat", False, 0.14),
    ("commuter", False, 0.03),
    ("cloud_client", False, 0.05),
    ("privacy_vpn", False, 0.05),
    ("sanctioned_visitor", False, 0.03),
    ("vpn_evader", True, 0.09),
    ("careful_evader", True, 0.03),
    ("tor", True, 0.05),
)
#: Reported as a pattern of its own: requests from a sanctioned country (evaders before
#: they evade, visitors while there). Flagged by the address alone.
DIRECT: Final = "sanctioned_direct"


# ------------------------------------------------------------------------------ addresses


class Pools:
    """Real address ranges of the snapshot by (kind, country, family), reservoir-sampled."""

    def __init__(self, snapshot: Snapshot, rng: random.Random) -> None:
        self._rng = rng
        self._ranges: dict[tuple[str, str, int], list[tuple[int, int]]] = defaultdict(list)
        seen: Counter[tuple[str, str, int]] = Counter()
        records = snapshot.records
        for version in (4, 6):
            for first, last, rid in snapshot.ranges(version):
                if rid < 0:
                    continue  # gaps, special ranges, tunnel prefixes
                record = records[rid]
                if record.country is None:
                    continue
                key = (_kind(record.kinds), record.country, version)
                seen[key] += 1
                pool = self._ranges[key]
                if len(pool) < POOL_CAP:
                    pool.append((first, last))
                else:
                    j = rng.randrange(seen[key])
                    if j < POOL_CAP:
                        pool[j] = (first, last)

    def countries(self, kind: str, version: int = 4) -> list[str]:
        """Countries with ranges of ``kind`` (sorted, reproducible)."""
        return sorted(
            cc for (k, cc, v), pool in self._ranges.items() if k == kind and v == version and pool
        )

    def has(self, kind: str, country: str, version: int = 4) -> bool:
        """Whether any range of ``kind`` in ``country`` and family ``version`` is known."""
        return bool(self._ranges.get((kind, country, version)))

    def address(self, kind: str, country: str, *, v6_share: float = 0.0) -> str:
        """A random address of ``kind`` in ``country`` (IPv6 with probability ``v6_share``)."""
        rng = self._rng
        version = 6 if rng.random() < v6_share and self.has(kind, country, 6) else 4
        pool = self._ranges[(kind, country, version)]
        first, last = pool[rng.randrange(len(pool))]
        if version == 4:
            value = rng.randint(first, last)
            return ".".join(str((value >> s) & 255) for s in (24, 16, 8, 0))
        value = rng.randint(first, min(last, first + (1 << 64) - 1))
        return _v6_text(value)


def _kind(kinds: NetworkKind) -> str:
    if not kinds:
        return "plain"
    for flag, name in (
        (NetworkKind.TOR, "tor"),
        (NetworkKind.RELAY, "relay"),
        (NetworkKind.VPN, "vpn"),
        (NetworkKind.RESIDENTIAL_PROXY, "residential_proxy"),
        (NetworkKind.PUBLIC_PROXY, "public_proxy"),
        (NetworkKind.HOSTING, "hosting"),
    ):
        if kinds & flag:
            return name
    return "other"  # CDN, bot


def _v6_text(value: int) -> str:
    import ipaddress

    return str(ipaddress.IPv6Address(value))


# ------------------------------------------------------------------------------ requests


@dataclass(frozen=True, slots=True)
class Request:
    """One labelled request."""

    at: float
    subject: str
    pattern: str
    should_flag: bool
    address: str
    timezone: str | None = None
    language: str | None = None
    account_country: str | None = None

    def context(self) -> Context:
        """The request context the engine sees."""
        return Context(
            subject=Subject(id=self.subject, account_country=self.account_country),
            timezone=self.timezone,
            accept_language=self.language,
            at=self.at,
        )


@dataclass(slots=True)
class Hints:
    """What a subject's client says about itself."""

    timezone: str | None
    language: str | None


def _language(tag: str) -> str:
    return f"{tag},{tag.split('-', maxsplit=1)[0]};q=0.9"


class Generator:
    """Draws subjects and their timelines; every random choice comes from one seeded RNG."""

    def __init__(self, pools: Pools, rng: random.Random) -> None:
        self.pools = pools
        self.rng = rng
        homes = [cc for cc in PROFILES if pools.has("plain", cc)]
        self.homes = homes
        self.home_weights = [PROFILES[cc][2] for cc in homes]
        self.relay_homes = [
            cc for cc in homes if pools.has("relay", cc) or pools.has("relay", cc, 6)
        ]
        self.vpn_exits = [cc for cc in pools.countries("vpn") if cc not in SANCTIONED]
        self.tor_exits = [cc for cc in pools.countries("tor") if cc not in SANCTIONED]
        self.hosting = [cc for cc in CLOUD_COUNTRIES if pools.has("hosting", cc)]
        self.out: list[Request] = []

    # -- helpers ---------------------------------------------------------------------------

    def home(self, choices: Sequence[str] | None = None) -> str:
        """A home country, weighted by :data:`PROFILES` (among ``choices`` if given)."""
        if choices is None:
            return self.rng.choices(self.homes, self.home_weights)[0]
        weights = [PROFILES[cc][2] for cc in choices]
        return self.rng.choices(list(choices), weights)[0]

    def hints(
        self, country: str, *, api_share: float = 0.2, default_en_share: float = 0.3
    ) -> Hints:
        """Hints of an honest client at home: some API clients send none, many browsers en-US."""
        rng = self.rng
        zones, tag, _ = PROFILES[country]
        if rng.random() < api_share:
            return Hints(None, None)
        language = "en-US,en;q=0.9" if rng.random() < default_en_share else _language(tag)
        return Hints(rng.choice(zones), language)

    def times(self, start: float, span: float, n: int) -> list[float]:
        """``n`` sorted uniform times in ``[start, start + span)``."""
        return sorted(start + self.rng.random() * span for _ in range(n))

    def emit(
        self,
        at: float,
        subject: str,
        pattern: str,
        should_flag: bool,
        address: str,
        hints: Hints,
        account: str | None,
    ) -> None:
        """Add one request."""
        self.out.append(
            Request(
                at, subject, pattern, should_flag, address, hints.timezone, hints.language, account
            )
        )

    def flight(self, a: str, b: str) -> float:
        """Seconds of a plausible trip: cruise at 750 km/h plus 2.5-4.5 h on the ground.

        Distances are between the same representative points the history signals use, so
        a flight is never "impossible travel" by construction.
        """
        pa, pb = country_centroid(a), country_centroid(b)
        km = haversine_km(pa, pb) if pa and pb else 5000.0
        return (km / 750.0 + 2.5 + self.rng.random() * 2) * HOUR

    # -- patterns --------------------------------------------------------------------------

    def ordinary(self, sid: str) -> None:
        """Stable home country, one to three home ISPs; some expatriates, some API clients."""
        rng = self.rng
        cc = self.home()
        hints = self.hints(cc)
        account = cc
        if rng.random() < 0.05:  # an expatriate: account and language from elsewhere
            account = self.home([c for c in self.homes if c != cc])
            if hints.language is not None:
                hints.language = _language(PROFILES[account][1])
        isps = [self.pools.address("plain", cc, v6_share=0.3) for _ in range(rng.randint(1, 3))]
        for at in self.times(T0, 20 * DAY, rng.randint(3, 15)):
            self.emit(at, sid, "ordinary", False, rng.choice(isps), hints, account)

    def traveller(self, sid: str) -> None:
        """Home, a plausible flight (sometimes via a hub), a stay abroad, home again."""
        rng = self.rng
        cc = self.home()
        hints = self.hints(cc, api_share=0.05)
        dest = self.home([c for c in self.homes if c != cc])
        home_isp = self.pools.address("plain", cc, v6_share=0.3)
        t = T0 + rng.random() * 5 * DAY
        for at in self.times(T0, t - T0, rng.randint(1, 4)):
            self.emit(at, sid, "traveller", False, home_isp, hints, cc)
        here = cc
        if rng.random() < 0.3:  # a connecting flight, with a request at the hub
            hub = rng.choice(
                [h for h in HUBS if h not in (cc, dest) and self.pools.has("plain", h)]
            )
            t += self.flight(here, hub)
            self.emit(
                t + rng.random() * HOUR,
                sid,
                "traveller",
                False,
                self.pools.address("plain", hub),
                self.updated(hints, hub),
                cc,
            )
            t += 1.5 * HOUR
            here = hub
        t += self.flight(here, dest)
        stay = (2 + rng.random() * 6) * DAY
        away = self.updated(hints, dest)
        hotel = [self.pools.address("plain", dest) for _ in range(2)]
        for at in self.times(t, stay, rng.randint(2, 8)):
            self.emit(at, sid, "traveller", False, rng.choice(hotel), away, cc)
        t += stay + self.flight(dest, cc)
        for at in self.times(t, 4 * DAY, rng.randint(1, 4)):
            self.emit(at, sid, "traveller", False, home_isp, hints, cc)

    def updated(self, hints: Hints, country: str) -> Hints:
        """Phones update the time zone on arrival; one laptop in seven keeps the home zone."""
        if hints.timezone is None or self.rng.random() < 0.15:
            return hints
        return Hints(self.rng.choice(PROFILES[country][0]), hints.language)

    def relay(self, sid: str, relay_addresses: dict[str, list[str]]) -> None:
        """Private Relay (iCloud) for Safari, the home ISP for other apps; shared egress."""
        rng = self.rng
        cc = self.home(self.relay_homes)
        hints = self.hints(cc, api_share=0.0)
        shared = relay_addresses.setdefault(
            cc, [self.pools.address("relay", cc, v6_share=0.7) for _ in range(15)]
        )
        isp = self.pools.address("plain", cc, v6_share=0.3)
        for at in self.times(T0, 20 * DAY, rng.randint(4, 15)):
            address = rng.choice(shared) if rng.random() < 0.6 else isp
            self.emit(at, sid, "relay", False, address, hints, cc)

    def office(self, first_sid: int, size: int) -> int:
        """``size`` employees behind one NAT address on a few workdays; some work from home."""
        rng = self.rng
        cc = self.home()
        nat = self.pools.address("plain", cc)
        days = sorted(rng.sample(range(20), rng.randint(3, 8)))
        for k in range(size):
            sid = f"office-{first_sid + k}"
            hints = self.hints(cc, api_share=0.1)
            home_isp = self.pools.address("plain", cc, v6_share=0.3)
            for day in days:
                at_office = rng.random() < 0.8
                address = nat if at_office else home_isp
                start = T0 + day * DAY + 8 * HOUR
                for at in self.times(start, 9 * HOUR, rng.randint(1, 4)):
                    self.emit(at, sid, "office_nat", False, address, hints, cc)
        return size

    def commuter(self, sid: str) -> None:
        """Home ISP in one country, the office network in the neighbouring one, each workday.

        Country-level data puts both ends at their countries' representative points, which
        for some neighbours (US-CA, US-MX, FR-DE) are farther apart than a short commute.
        """
        rng = self.rng
        pairs = [
            p for p in COMMUTES if self.pools.has("plain", p[0]) and self.pools.has("plain", p[1])
        ]
        home_cc, work_cc = rng.choice(pairs)
        hints = self.hints(home_cc, api_share=0.1)
        home = self.pools.address("plain", home_cc, v6_share=0.3)
        work = self.pools.address("plain", work_cc)
        for day in sorted(rng.sample(range(20), rng.randint(3, 10))):
            morning = T0 + day * DAY + (6.5 + rng.random()) * HOUR
            arrive = morning + (0.5 + rng.random()) * HOUR  # 30-90 min door to desk
            leave = arrive + 8 * HOUR
            if rng.random() < 0.6:
                self.emit(morning, sid, "commuter", False, home, hints, home_cc)
            for at in self.times(arrive, leave - arrive, rng.randint(1, 4)):
                self.emit(at, sid, "commuter", False, work, hints, home_cc)
            if rng.random() < 0.6:
                self.emit(
                    leave + (1 + rng.random() * 3) * HOUR,
                    sid,
                    "commuter",
                    False,
                    home,
                    hints,
                    home_cc,
                )

    def cloud_client(self, sid: str) -> None:
        """An API key used from one to three servers in a cloud region; no client hints."""
        rng = self.rng
        cc = self.home()
        region = cc if cc in self.hosting and rng.random() < 0.5 else rng.choice(self.hosting)
        servers = [self.pools.address("hosting", region) for _ in range(rng.randint(1, 3))]
        no_hints = Hints(None, None)
        for at in self.times(T0, 20 * DAY, rng.randint(5, 30)):
            self.emit(at, sid, "cloud_client", False, rng.choice(servers), no_hints, cc)

    def privacy_vpn(self, sid: str) -> None:
        """Home ISP most of the time, a commercial VPN (exit often abroad) the rest."""
        rng = self.rng
        cc = self.home()
        hints = self.hints(cc, api_share=0.05)
        isp = self.pools.address("plain", cc, v6_share=0.3)
        exit_cc = cc if cc in self.vpn_exits and rng.random() < 0.4 else rng.choice(self.vpn_exits)
        vpn = self.pools.address("vpn", exit_cc)
        for at in self.times(T0, 20 * DAY, rng.randint(4, 15)):
            address = vpn if rng.random() < 0.4 else isp
            self.emit(at, sid, "privacy_vpn", False, address, hints, cc)

    def sanctioned_visitor(self, sid: str) -> None:
        """A trip to a sanctioned country (denied there), then home again."""
        rng = self.rng
        cc = self.home()
        hints = self.hints(cc, api_share=0.05)
        isp = self.pools.address("plain", cc)
        t = T0 + rng.random() * 5 * DAY
        for at in self.times(T0, t - T0, rng.randint(1, 3)):
            self.emit(at, sid, "sanctioned_visitor", False, isp, hints, cc)
        t += self.flight(cc, "IR")
        stay = (2 + rng.random() * 8) * DAY
        there = Hints("Asia/Tehran" if hints.timezone else None, hints.language)
        local = self.pools.address("plain", "IR")
        for at in self.times(t, stay, rng.randint(1, 4)):
            self.emit(at, sid, DIRECT, True, local, there, cc)
        t += stay + self.flight("IR", cc)
        for at in self.times(t, 6 * DAY, rng.randint(2, 8)):
            self.emit(at, sid, "sanctioned_visitor", False, isp, hints, cc)

    def vpn_evader(self, sid: str) -> None:
        """Denied at home in a sanctioned country, then back another way.

        Through a VPN, a server or a plain connection in a permitted country; two in five
        align their client hints with the exit.
        """
        rng = self.rng
        names = list(SANCTIONED_PROFILES)
        cc = rng.choices(names, [SANCTIONED_PROFILES[c][2] for c in names])[0]
        tz, tag, _ = SANCTIONED_PROFILES[cc]
        hints = Hints(tz, _language(tag)) if rng.random() < 0.85 else Hints(None, None)
        account = rng.choice(("AE", "TR", "DE", "GB", "US", "CA")) if rng.random() < 0.7 else cc
        home = self.pools.address("plain", cc)
        t = T0 + rng.random() * 10 * DAY
        for at in self.times(t, 2 * HOUR, rng.randint(1, 3)):
            self.emit(at, sid, DIRECT, True, home, hints, account)
        t += 2 * HOUR + math.exp(rng.uniform(math.log(120), math.log(3 * DAY)))
        channel = rng.choices(("vpn", "hosting", "plain"), (0.45, 0.30, 0.25))[0]

        def exit_address() -> tuple[str, str]:
            if channel == "vpn":
                country = rng.choice(self.vpn_exits)
            elif channel == "hosting":
                country = rng.choice(self.hosting)
            else:
                country = rng.choice([c for c in NEARBY if self.pools.has("plain", c)])
            return country, self.pools.address(channel, country)

        exit_cc, address = exit_address()
        spoof = rng.random() < 0.4
        for at in self.times(t, (0.5 + rng.random() * 9.5) * DAY, rng.randint(3, 12)):
            if channel == "vpn" and rng.random() < 0.3:
                exit_cc, address = exit_address()  # another server of the same VPN
            seen = (
                self.updated(Hints(tz, _language(PROFILES[exit_cc][1])), exit_cc)
                if spoof and exit_cc in PROFILES
                else hints
            )
            self.emit(at, sid, "vpn_evader", True, address, seen, account)

    def careful_evader(self, sid: str) -> None:
        """Lives in a sanctioned country but never connects directly.

        Always a VPN or a server abroad, so there is no denial in the history to remember.
        """
        rng = self.rng
        names = list(SANCTIONED_PROFILES)
        cc = rng.choices(names, [SANCTIONED_PROFILES[c][2] for c in names])[0]
        tz, tag, _ = SANCTIONED_PROFILES[cc]
        hints = Hints(tz, _language(tag)) if rng.random() < 0.85 else Hints(None, None)
        account = rng.choice(("AE", "TR", "DE", "GB", "US", "CA")) if rng.random() < 0.7 else cc
        channel = "vpn" if rng.random() < 0.6 else "hosting"
        exit_cc = rng.choice(self.vpn_exits if channel == "vpn" else self.hosting)
        address = self.pools.address(channel, exit_cc)
        if rng.random() < 0.4 and exit_cc in PROFILES:  # hints aligned with the exit
            hints = Hints(rng.choice(PROFILES[exit_cc][0]), _language(PROFILES[exit_cc][1]))
        for at in self.times(T0, 20 * DAY, rng.randint(3, 12)):
            self.emit(at, sid, "careful_evader", True, address, hints, account)

    def tor(self, sid: str) -> None:
        """Tor Browser reports UTC and en-US; torsocks API clients send nothing."""
        rng = self.rng
        cc = self.home()
        hints = Hints("UTC", "en-US,en;q=0.5") if rng.random() < 0.8 else Hints(None, None)
        for at in self.times(T0, 20 * DAY, rng.randint(3, 12)):
            exit_cc = rng.choice(self.tor_exits)
            self.emit(at, sid, "tor", True, self.pools.address("tor", exit_cc), hints, cc)


def generate(snapshot: Snapshot, subjects: int, seed: int) -> list[Request]:
    """Draw ``subjects`` subjects over the patterns and return their requests in time order."""
    rng = random.Random(seed)
    gen = Generator(Pools(snapshot, rng), rng)
    relay_addresses: dict[str, list[str]] = {}
    counts = {name: max(1, round(subjects * share)) for name, _, share in PATTERNS}
    single: dict[str, Callable[[str], None]] = {
        "ordinary": gen.ordinary,
        "traveller": gen.traveller,
        "cloud_client": gen.cloud_client,
        "commuter": gen.commuter,
        "privacy_vpn": gen.privacy_vpn,
        "sanctioned_visitor": gen.sanctioned_visitor,
        "vpn_evader": gen.vpn_evader,
        "careful_evader": gen.careful_evader,
        "tor": gen.tor,
    }
    for name, make in single.items():
        for i in range(counts[name]):
            make(f"{name}-{i}")
    for i in range(counts["relay"]):
        gen.relay(f"relay-{i}", relay_addresses)
    made = 0
    while made < counts["office_nat"]:
        size = min(rng.randint(20, 60), counts["office_nat"] - made)
        made += gen.office(made, size)
    return sorted(gen.out, key=lambda r: (r.at, r.subject))


# ------------------------------------------------------------------------------ scoring


@dataclass(slots=True)
class Tally:
    """Confusion counts of one pattern (requests) plus per-subject views."""

    should_flag: bool
    requests: int = 0
    flagged: int = 0
    denied: int = 0
    subjects: set[str] = field(default_factory=set)
    flagged_subjects: set[str] = field(default_factory=set)
    rules: Counter[str] = field(default_factory=Counter)
    first_caught: int = 0
    firsts: int = 0

    @property
    def tp(self) -> int:
        """True positives."""
        return self.flagged if self.should_flag else 0

    @property
    def fp(self) -> int:
        """False positives."""
        return 0 if self.should_flag else self.flagged

    @property
    def fn(self) -> int:
        """False negatives."""
        return self.requests - self.flagged if self.should_flag else 0

    @property
    def tn(self) -> int:
        """True negatives."""
        return 0 if self.should_flag else self.requests - self.flagged

    def row(self) -> dict[str, object]:
        """JSON-ready counts and rates."""
        return {
            "should_flag": self.should_flag,
            "subjects": len(self.subjects),
            "requests": self.requests,
            "flagged": self.flagged,
            "denied": self.denied,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "precision": _div(self.tp, self.tp + self.fp),
            "recall": _div(self.tp, self.tp + self.fn),
            "fp_rate": _div(self.fp, self.fp + self.tn),
            "subjects_flagged": _div(len(self.flagged_subjects), len(self.subjects)),
            "first_request_caught": _div(self.first_caught, self.firsts),
            "deciding_rules": dict(self.rules.most_common()),
        }


def _div(a: int, b: int) -> float | None:
    return a / b if b else None


def run(gf: Geofence, requests: Iterable[Request]) -> tuple[dict[str, Tally], float]:
    """Decide every request in order; returns the tallies and the seconds spent deciding."""
    tallies: dict[str, Tally] = {}
    started_evasion: set[str] = set()
    spent = 0.0
    for req in requests:
        ctx = req.context()
        t = time.perf_counter()
        d = gf.decide(req.address, ctx)
        spent += time.perf_counter() - t
        tally = tallies.get(req.pattern)
        if tally is None:
            tally = tallies[req.pattern] = Tally(req.should_flag)
        flagged = d.action is not Action.ALLOW
        tally.requests += 1
        tally.subjects.add(req.subject)
        if flagged:
            tally.flagged += 1
            tally.flagged_subjects.add(req.subject)
            tally.rules[d.rule_id or d.outcome] += 1
        if d.action is Action.DENY:
            tally.denied += 1
        if req.pattern == "vpn_evader" and req.subject not in started_evasion:
            started_evasion.add(req.subject)
            tally.firsts += 1
            tally.first_caught += flagged
    return tallies, spent


def _pct(x: object) -> str:
    """A share as a percentage, or a dash when undefined."""
    return f"{100 * x:5.1f}" if isinstance(x, (int, float)) else "    —"


def report(tallies: dict[str, Tally]) -> dict[str, object]:
    """Print the table; return the JSON-ready results."""
    order = [name for name, _, _ in PATTERNS if name in tallies]
    order.insert(order.index("vpn_evader"), DIRECT)
    print(
        f"{'pattern':<19}{'flag?':>6}{'subj':>7}{'reqs':>8}{'flagged%':>9}{'denied%':>8}"
        f"{'TP':>7}{'FP':>6}{'FN':>6}{'TN':>7}{'prec%':>7}{'recall%':>8}{'FPrate%':>8}"
        f"{'subj-flag%':>11}"
    )
    rows: dict[str, object] = {}
    for name in order:
        t = tallies.get(name)
        if t is None:
            continue
        r = t.row()
        rows[name] = r
        print(
            f"{name:<19}{'yes' if t.should_flag else 'no':>6}{len(t.subjects):>7}{t.requests:>8}"
            f"{_pct(t.flagged / t.requests):>9}{_pct(t.denied / t.requests):>8}"
            f"{t.tp:>7}{t.fp:>6}{t.fn:>6}{t.tn:>7}"
            f"{_pct(r['precision']):>7}{_pct(r['recall']):>8}{_pct(r['fp_rate']):>8}"
            f"{_pct(r['subjects_flagged']):>11}"
        )

    def total(names: Iterable[str]) -> dict[str, object]:
        sel = [tallies[n] for n in names if n in tallies]
        tp, fp = sum(t.tp for t in sel), sum(t.fp for t in sel)
        fn, tn = sum(t.fn for t in sel), sum(t.tn for t in sel)
        return {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "precision": _div(tp, tp + fp),
            "recall": _div(tp, tp + fn),
            "fp_rate": _div(fp, fp + tn),
        }

    every = total(order)
    # Without the requests the address alone decides (Tor, sanctioned countries): what the
    # context (history, hints) adds.
    context_only = total(n for n in order if n not in ("tor", DIRECT))
    for label, tot in (("ALL", every), ("context-decided", context_only)):
        print(
            f"{label:<19}{'':>6}{'':>7}{'':>8}{'':>9}{'':>8}"
            f"{tot['tp']:>7}{tot['fp']:>6}{tot['fn']:>6}{tot['tn']:>7}"
            f"{_pct(tot['precision']):>7}{_pct(tot['recall']):>8}{_pct(tot['fp_rate']):>8}"
        )
    evader = tallies.get("vpn_evader")
    if evader is not None and evader.firsts:
        print(
            f"\nvpn_evader subjects flagged on their first evasion request: "
            f"{evader.first_caught}/{evader.firsts} ({evader.first_caught / evader.firsts:.1%})"
        )
    for name in ("ordinary", "relay"):
        t = tallies.get(name)
        if t is not None:
            print(
                f"false-positive rate, {name}: {t.fp}/{t.requests} requests "
                f"({_pct(t.fp / t.requests).strip()} %), {len(t.flagged_subjects)}/"
                f"{len(t.subjects)} subjects flagged at least once"
            )
    print("\nwhat flagged each pattern (deciding rule: requests):")
    for name in order:
        t = tallies.get(name)
        if t is not None and t.rules:
            causes = ", ".join(f"{rule} {n}" for rule, n in t.rules.most_common(4))
            print(f"  {name:<19}{causes}")
    return {"patterns": rows, "all": every, "context_decided": context_only}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--subjects", type=int, help=f"subjects to draw (default {DEFAULT_SUBJECTS:,})"
    )
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_SUBJECTS} subjects (CI)")
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY, help="policy TOML")
    parser.add_argument(
        "--relay-untrusted",
        action="store_true",
        help="SignalConfig(relay_trusted=False): relays weigh 2.0 like a VPN",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    subjects = args.subjects or (SMOKE_SUBJECTS if args.smoke else DEFAULT_SUBJECTS)
    if subjects < 50:
        parser.error("--subjects must be at least 50")

    started = time.perf_counter()
    config = SignalConfig(relay_trusted=not args.relay_untrusted)
    gf = Geofence(policy=args.policy, signals=SignalPipeline(config))
    snapshot = gf.snapshot
    requests = generate(snapshot, subjects, args.seed)
    generated = time.perf_counter() - started
    print(
        f"snapshot {snapshot.snapshot_id} ({snapshot.data_date}); policy {gf.policy.id} "
        f"@ {gf.policy.digest} ({args.policy.name}); seed {args.seed}"
        + ("; relays NOT trusted" if args.relay_untrusted else "")
    )
    print(
        f"{subjects:,} subjects, {len(requests):,} requests over "
        f"{(requests[-1].at - requests[0].at) / DAY:.0f} days (generated in {generated:.1f} s)\n"
    )
    tallies, spent = run(gf, requests)
    results = report(tallies)
    per = spent / len(requests) * 1e6
    print(f"\n{len(requests):,} decisions with context in {spent:.2f} s ({per:.1f} µs each)")
    if args.json:
        results.update(
            seed=args.seed,
            subjects=subjects,
            requests=len(requests),
            policy=str(args.policy.name),
            relay_trusted=not args.relay_untrusted,
            policy_digest=gf.policy.digest,
            snapshot_id=snapshot.snapshot_id,
            us_per_decision=per,
        )
        args.json.write_text(json.dumps(results, indent=2, default=list) + "\n", encoding="utf-8")
    gf.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

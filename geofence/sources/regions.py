"""Region names to ISO 3166-2 subdivision codes (build time only).

Some sources name the region instead of coding it: DB-IP City Lite states
``subdivisions[0].names.en = "Lviv"`` and no ``iso_code``. :func:`subdivision_for_name`
maps such a name, under the country the source gives, to a code:

1. the reviewed override table ``geofence/_data/subdivision-names.toml``
   (source spellings that pycountry's names do not match, each with a reason);
2. otherwise pycountry's ISO 3166-2 names, compared after normalising both
   sides: case, accents and apostrophes are dropped, punctuation becomes a
   space, and words that only say what kind of unit it is (``Oblast``,
   ``City``, ``Region``, ``Respublika``, ``Kray``, ...) are left out; a
   bracketed alternative (``Bender [Tighina]``) is a name too. A normalised
   name that fits two codes of one country matches neither.

A name that matches nothing gives ``None``: the range keeps its country and no
subdivision, and :class:`RegionStats` counts it (with the name) so the build
reports the mapping rate per country. Nothing is guessed.

Territories: the mapping is made under the country the *source* states.
DB-IP files Crimea and Sevastopol under RU with region names ``"Crimea"`` and
``"Sebastopol City"``; ISO 3166-2 has no RU code for them, so
``subdivision_for_name("RU", "Crimea")`` is ``None`` and the name is counted
as unmapped under RU. The territory step of the default recipe decides what
such ranges mean: it passes a :class:`RegionResolver` with ``extra`` entries
(``{("RU", "Crimea"): "UA-43"}``) to the MMDB adapter, and an ``extra`` code
may belong to another country than the source's. Under UA the override table
maps the same names to UA-43 and UA-40.
"""

from __future__ import annotations

import contextlib
import functools
import re
import tomllib
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from importlib import resources

from geofence.errors import SourceError

__all__ = [
    "RegionResolver",
    "RegionStats",
    "collecting",
    "current_stats",
    "fold_name",
    "load_overrides",
    "normalize_name",
    "subdivision_for_name",
]

# Words that say what kind of unit a region is, in the languages pycountry and
# the sources use: left out when names are compared. A city word and an area
# word tell a city from the region around it (Kyiv City, UA-30, and Kyiv
# Oblast, UA-32); the neutral words say neither.
_CITY_WORDS = frozenset({"city", "municipality", "municipiul", "shi", "teukbyeolsi", "gwangyeoksi"})
_AREA_WORDS = frozenset(
    {
        "oblast",
        "oblasti",
        "region",
        "district",
        "raion",
        "raionul",
        "respublika",
        "republic",
        "kray",
        "krai",
        "okrug",
        "province",
        "prefecture",
        "governorate",
        "county",
        "territory",
        "territorial",
        "state",
        "department",
        "sheng",
        "zizhiqu",
        "do",
        "lan",
    }
)
_NEUTRAL_WORDS = frozenset({"avtonomnyy", "avtonomnaya", "autonomous", "the", "of"})
_KIND_WORDS = _CITY_WORDS | _AREA_WORDS | _NEUTRAL_WORDS
# Apostrophes and their look-alikes (U+2019, U+2018, U+02BC, grave, acute).
_APOSTROPHES = re.compile("['\u2019\u2018\u02bc`\u00b4]")
_NOT_WORD = re.compile(r"[^0-9a-z]+")
_BRACKETED = re.compile(r"^(.*?)\s*\[(.*)\]\s*$")


def fold_name(name: str) -> str:
    """Case, accents and apostrophes dropped, punctuation as spaces: the override key."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(_NOT_WORD.sub(" ", _APOSTROPHES.sub("", plain)).split())


def _split_kind(name: str) -> tuple[str, frozenset[str]]:
    """The name without kind words, and the kinds (``"city"``, ``"area"``) those words say."""
    words = fold_name(name).split()
    kinds = {"city" for w in words if w in _CITY_WORDS} | {
        "area" for w in words if w in _AREA_WORDS
    }
    return " ".join(w for w in words if w not in _KIND_WORDS), frozenset(kinds)


def normalize_name(name: str) -> str:
    """The comparison form of a region name: ``"Kharkivs'ka Oblast'"`` -> ``"kharkivska"``."""
    return _split_kind(name)[0]


@functools.cache
def _pycountry_index(country: str) -> Mapping[str, tuple[str, frozenset[str]]]:
    """Normalised pycountry names of ``country``'s subdivisions -> (code, kind words).

    Only unambiguous names are kept; the kinds come from the name and the
    subdivision's type (``"City"``, ``"Region"``), so ``"Kyiv Oblast"`` is not
    taken for the city of Kyiv.
    """
    import pycountry  # imported on first use: loading its tables takes a while

    found: dict[str, set[str]] = defaultdict(set)
    top: dict[str, set[str]] = defaultdict(set)
    kinds: dict[str, frozenset[str]] = {}
    subdivisions = pycountry.subdivisions.get(country_code=country)  # type: ignore[no-untyped-call]  # pycountry is untyped
    for sub in subdivisions or ():
        code = str(sub.code)
        names = [str(sub.name)]
        bracketed = _BRACKETED.match(names[0])
        if bracketed:
            names = [bracketed.group(1), bracketed.group(2)]
        own = _split_kind(str(getattr(sub, "type", "") or ""))[1]
        for name in names:
            key, words = _split_kind(name)
            if key:
                found[key].add(code)
                kinds[code] = kinds.get(code, frozenset()) | words | own
                if getattr(sub, "parent_code", None) is None:
                    top[key].add(code)
    index: dict[str, tuple[str, frozenset[str]]] = {}
    for key, codes in found.items():
        # One code: take it. Several: a single first-level one wins, else none.
        if len(codes) == 1:
            chosen = next(iter(codes))
        elif len(top.get(key, ())) == 1:
            chosen = next(iter(top[key]))
        else:
            continue
        index[key] = (chosen, kinds[chosen])
    return index


def load_overrides(text: str, where: str) -> dict[tuple[str, str], str]:
    """Parse an override table: ``[CC]`` tables of ``"Name" = {code, why}``.

    Raises:
        SourceError: The table is malformed, an entry has no reason, or a code
            is not an ISO 3166-2 code of that country.
    """
    import pycountry

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SourceError(f"{where}: not valid TOML: {exc}") from exc
    table: dict[tuple[str, str], str] = {}
    for country, entries in data.items():
        if not isinstance(entries, dict):
            raise SourceError(f"{where}: [{country}] is not a table")
        subdivisions = pycountry.subdivisions.get(country_code=country)  # type: ignore[no-untyped-call]  # pycountry is untyped
        known = {str(s.code) for s in subdivisions or ()}
        for name, entry in entries.items():
            spot = f"{where}: [{country}] {name!r}"
            if not isinstance(entry, dict) or set(entry) != {"code", "why"}:
                raise SourceError(f"{spot} must be {{ code = ..., why = ... }}")
            code, why = entry["code"], entry["why"]
            if not isinstance(why, str) or not why.strip():
                raise SourceError(f"{spot} has no reason (why)")
            if code not in known:
                raise SourceError(f"{spot}: {code!r} is not an ISO 3166-2 code of {country}")
            table[(country, fold_name(name))] = code
    return table


@functools.cache
def _bundled_overrides() -> Mapping[tuple[str, str], str]:
    name = "subdivision-names.toml"
    text = resources.files("geofence").joinpath("_data", name).read_text(encoding="utf-8")
    return load_overrides(text, f"geofence/_data/{name}")


class RegionResolver:
    """Maps ``(country, region name)`` to an ISO 3166-2 code; see the module docs."""

    def __init__(self, extra: Mapping[tuple[str, str], str] | None = None) -> None:
        """Create a resolver.

        Args:
            extra: ``(country, name)`` -> code entries tried first (names are
                normalised); a code may belong to another country (territories).
        """
        self._extra = {(c, fold_name(n)): code for (c, n), code in (extra or {}).items()}

    def __call__(self, country: str, name: str) -> str | None:
        """The code for ``name`` under ``country``, or ``None`` when nothing matches."""
        folded = fold_name(name)
        found = self._extra.get((country, folded)) or _bundled_overrides().get((country, folded))
        if found:
            return found
        key, words = _split_kind(name)
        match = _pycountry_index(country).get(key)
        if match is None:
            return None
        code, kinds = match
        # A name that says its kind must agree with the subdivision's kind.
        return code if not words or words & kinds else None


def subdivision_for_name(country: str, name: str) -> str | None:
    """Map a region name under ``country`` to an ISO 3166-2 code (overrides, then pycountry).

    >>> subdivision_for_name("UA", "Kyiv City")
    'UA-30'
    >>> subdivision_for_name("RU", "Crimea") is None
    True
    """
    return _DEFAULT(country, name)


_DEFAULT = RegionResolver()


class RegionStats:
    """How many ranges (and IPv4 addresses) carried a region name, and how many were mapped."""

    def __init__(self) -> None:
        """Create empty counts."""
        # country -> [mapped ranges, ranges, mapped IPv4 addresses, IPv4 addresses]
        self.countries: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self.unmapped: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, country: str, name: str, code: str | None, addresses: int) -> None:
        """Count one range of ``addresses`` IPv4 addresses (0 for IPv6) named ``name``."""
        row = self.countries[country]
        row[1] += 1
        row[3] += addresses
        if code is None:
            self.unmapped[country][name] += max(addresses, 1)
        else:
            row[0] += 1
            row[2] += addresses

    def rate(self, country: str) -> float:
        """Share of ``country``'s named IPv4 addresses (ranges, without IPv4) that were mapped."""
        mapped_ranges, ranges, mapped, addresses = self.countries.get(country, [0, 0, 0, 0])
        if addresses:
            return mapped / addresses
        return mapped_ranges / ranges if ranges else 1.0

    def as_dict(self) -> dict[str, list[int]]:
        """Per country ``[mapped ranges, ranges, mapped IPv4 addresses, IPv4 addresses]``."""
        return {c: list(row) for c, row in sorted(self.countries.items())}

    def summary(self, limit: int = 12) -> list[str]:
        """Readable lines: the overall rate, then the countries with most unmapped addresses."""
        if not self.countries:
            return []
        mapped = sum(r[2] for r in self.countries.values())
        total = sum(r[3] for r in self.countries.values())
        lines = [
            f"subdivisions: {mapped:,} of {total:,} named IPv4 addresses mapped "
            f"({mapped / total if total else 1.0:.1%}) in {len(self.countries)} countries"
        ]
        worst = sorted(self.unmapped, key=lambda c: -sum(self.unmapped[c].values()))
        for country in worst[:limit]:
            examples = ", ".join(f"{n!r} ({k:,})" for n, k in self.unmapped[country].most_common(3))
            lines.append(f"  {country}: {self.rate(country):.1%} mapped; unmapped: {examples}")
        return lines


_CURRENT: ContextVar[RegionStats | None] = ContextVar("geofence_region_stats", default=None)


@contextlib.contextmanager
def collecting(stats: RegionStats) -> Iterator[RegionStats]:
    """Route the region counts of sources read while the block runs to ``stats``."""
    token = _CURRENT.set(stats)
    try:
        yield stats
    finally:
        _CURRENT.reset(token)


def current_stats() -> RegionStats | None:
    """The :class:`RegionStats` of the build in progress, if any."""
    return _CURRENT.get()

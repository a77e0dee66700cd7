"""Client-hint signals: time zone, Accept-Language, declared country and distance.

Each function compares something the client (or its account) says about
itself with the country of its IP address and returns a
:class:`~geofence.signals.base.Signal` when they disagree, or ``None``. Hints
are easy to set and easy to get wrong innocently (a traveller, a laptop set up
abroad, ``en-US`` as everybody's default), so the default weights are low;
see ``docs/signals.md``.

Time-zone data comes from the IANA tz database as shipped in the ``tzdata``
package, read lazily once on first use:

* ``zone1970.tab`` gives, per zone, every country whose clocks have agreed
  with it since 1970 (``Europe/Berlin`` covers DE, DK, NO, SE and SJ);
* ``zone.tab`` gives one country per zone name, including names that are
  links since 2022 (``Europe/Oslo`` -> NO), and a representative coordinate;
* links (``Europe/Kiev`` -> ``Europe/Kyiv``, ``US/Eastern`` ->
  ``America/New_York``) are resolved with the ``L`` lines of ``tzdata.zi``,
  the compact zic source that every ``tzdata`` release ships (the separate
  ``backward`` file is not shipped).

A name's countries are the union of what these say about the name itself and
about the zone it links to, so a hint only disagrees when no table allows it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

from geofence.errors import PolicyError
from geofence.signals.base import Signal

__all__ = [
    "SIGNAL_WEIGHTS",
    "LatLon",
    "countries_for_timezone",
    "country_centroid",
    "declared_country_signal",
    "distance_signal",
    "haversine_km",
    "language_regions",
    "language_signal",
    "tz_data_version",
    "tz_signal",
]

LatLon = tuple[float, float]
"""A point as ``(latitude, longitude)`` in decimal degrees (WGS 84)."""

#: Default weight of every reason code this module emits.
SIGNAL_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "tz_mismatch": 0.5,
        "language_region_mismatch": 0.2,
        "declared_country_mismatch": 0.5,
        "location_distance": 0.5,
    }
)

#: Mean Earth radius (IUGG), in kilometres.
EARTH_RADIUS_KM = 6371.0088

# Legacy names that describe a rule or an offset, not a place. Since tz 2024b
# they are links to one representative city (CET -> Europe/Brussels), which
# would wrongly narrow them to that city's countries.
_RULE_NAMES = frozenset(
    {"CET", "CST6CDT", "EET", "EST", "EST5EDT", "HST", "MET", "MST", "MST7MDT", "PST8PDT", "WET"}
)

# Kosovo's user-assigned code XK is used by IP data vendors and CLDR but is not
# in the tz tables; its clocks follow Europe/Belgrade.
_EXTRA_COUNTRIES = {"Europe/Belgrade": frozenset({"XK"})}

_TZ_NAME_MAX = 64
_ACCEPT_LANGUAGE_MAX = 4096
_LANGUAGE_RANGES_MAX = 32
_EMPTY: frozenset[str] = frozenset()

_ISO6709 = re.compile(r"([+-])(\d{2})(\d{2})(\d{2})?([+-])(\d{3})(\d{2})(\d{2})?", flags=re.ASCII)
_QVALUE = re.compile(r"0(?:\.\d{0,3})?|1(?:\.0{0,3})?", flags=re.ASCII)

# BCP 47 region subtags: deprecated codes and their preferred values (IANA
# Language Subtag Registry), plus "UK", which is not a subtag but is often sent
# for the United Kingdom (ISO 3166 reserves it for GB).
_REGION_ALIASES = {"BU": "MM", "DD": "DE", "FX": "FR", "TP": "TL", "YD": "YE", "ZR": "CD"}
_REGION_ALIASES["UK"] = "GB"
# Private-use region codes (BCP 47 §2.2.4, e.g. Android's en-XA pseudo-locale),
# except XK, which CLDR and IP data use for Kosovo.
_PRIVATE_REGIONS = frozenset(
    {"AA", "ZZ"}
    | {f"Q{c}" for c in "MNOPQRSTUVWXYZ"}
    | {f"X{c}" for c in "ABCDEFGHIJLMNOPQRSTUVWXYZ"}
)


# --------------------------------------------------------------------------- tz tables


@dataclass(frozen=True, slots=True)
class _TzTables:
    countries: Mapping[str, frozenset[str]]
    """Zone or link name -> ISO 3166-1 alpha-2 codes."""
    folded: Mapping[str, str]
    """Case-folded name -> name, for clients that send ``europe/berlin``."""
    centroids: Mapping[str, LatLon]
    """Country -> spherical mean of its zone.tab coordinates."""
    version: str
    """Release of the tz database read (``"2026f"``)."""


def _read(name: str) -> str:
    return (resources.files("tzdata") / "zoneinfo" / name).read_text(encoding="utf-8")


def _rows(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


def _parse_iso6709(text: str) -> LatLon | None:
    """Parse ``+DDMM[SS]+DDDMM[SS]`` as used in zone.tab into decimal degrees."""
    match = _ISO6709.fullmatch(text)
    if match is None:
        return None
    lat_sign, lat_d, lat_m, lat_s, lon_sign, lon_d, lon_m, lon_s = match.groups()
    lat = int(lat_d) + int(lat_m) / 60 + int(lat_s or 0) / 3600
    lon = int(lon_d) + int(lon_m) / 60 + int(lon_s or 0) / 3600
    return (-lat if lat_sign == "-" else lat, -lon if lon_sign == "-" else lon)


def _spherical_mean(points: list[LatLon]) -> LatLon:
    """Mean of points on the sphere, via the mean of their unit vectors."""
    x = y = z = 0.0
    for lat, lon in points:
        phi, lam = math.radians(lat), math.radians(lon)
        x += math.cos(phi) * math.cos(lam)
        y += math.cos(phi) * math.sin(lam)
        z += math.sin(phi)
    if math.hypot(x, y, z) < 1e-9 * len(points):
        return points[0]  # the points cancel out: no meaningful mean
    return (math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x)))


@functools.cache
def _tables() -> _TzTables:
    """Load the tz tables once. A race on first use only computes them twice."""
    zone1970: dict[str, frozenset[str]] = {}
    for row in _rows(_read("zone1970.tab")):
        if len(row) >= 3:
            zone1970[row[2]] = frozenset(row[0].split(","))
    zone_tab: dict[str, str] = {}
    points: dict[str, list[LatLon]] = {}
    for row in _rows(_read("zone.tab")):
        if len(row) >= 3:
            zone_tab[row[2]] = row[0]
            point = _parse_iso6709(row[1])
            if point is not None:
                points.setdefault(row[0], []).append(point)
    links: dict[str, str] = {}
    version = ""
    for line in _read("tzdata.zi").splitlines():
        if line.startswith("L "):
            parts = line.split()
            if len(parts) == 3:
                links[parts[2]] = parts[1]
        elif line.startswith("# version "):
            version = line.removeprefix("# version ").strip()

    def canonical(name: str) -> str:
        seen = {name}
        while name in links and links[name] not in seen:
            name = links[name]
            seen.add(name)
        return name

    countries: dict[str, frozenset[str]] = {}
    for name in {*zone1970, *zone_tab, *links}:
        target = canonical(name)
        if name in _RULE_NAMES or name.startswith("Etc/") or target.startswith("Etc/"):
            continue
        found = set(zone1970.get(name, _EMPTY) | zone1970.get(target, _EMPTY))
        found.update(zone_tab[n] for n in (name, target) if n in zone_tab)
        found.update(_EXTRA_COUNTRIES.get(target, _EMPTY))
        if found:
            countries[name] = frozenset(found)
    return _TzTables(
        countries=MappingProxyType(countries),
        folded=MappingProxyType({name.casefold(): name for name in countries}),
        centroids=MappingProxyType({cc: _spherical_mean(p) for cc, p in points.items()}),
        version=version,
    )


def tz_data_version() -> str:
    """Release of the IANA tz database the hint tables come from (``"2026f"``)."""
    return _tables().version


def countries_for_timezone(tz: str) -> frozenset[str]:
    """Countries where an IANA time zone name is in use.

    Args:
        tz: A zone or link name such as ``"Europe/Kyiv"`` or ``"Europe/Kiev"``;
            matched case-insensitively when the exact name is unknown.

    Returns:
        ISO 3166-1 alpha-2 codes; empty for unknown names, ``UTC``, ``Etc/*``
        and rule names such as ``CET`` or ``EST5EDT`` that name no place.
    """
    if not isinstance(tz, str) or not tz or len(tz) > _TZ_NAME_MAX:
        return _EMPTY
    tables = _tables()
    found = tables.countries.get(tz)
    if found is not None:
        return found
    name = tables.folded.get(tz.strip().casefold())
    return tables.countries[name] if name is not None else _EMPTY


def _country(code: str | None) -> str | None:
    """Normalise an ISO 3166-1 alpha-2 code, or ``None`` if it is not shaped like one."""
    if not isinstance(code, str):
        return None
    code = code.strip().upper()
    return code if len(code) == 2 and code.isascii() and code.isalpha() else None


def _weight(code: str, weight: float | None) -> float:
    return SIGNAL_WEIGHTS[code] if weight is None else weight


def tz_signal(
    tz: str | None, ip_country: str | None, *, weight: float | None = None
) -> Signal | None:
    """Signal ``tz_mismatch`` when a client's time zone is not used in its IP's country.

    Args:
        tz: The client's IANA time zone (``Intl.DateTimeFormat().resolvedOptions().timeZone``).
        ip_country: ISO 3166-1 alpha-2 code of the IP address.
        weight: Overrides the default weight.

    Returns:
        The signal, or ``None`` when either side is unknown or they agree.
    """
    country = _country(ip_country)
    if country is None or tz is None:
        return None
    countries = countries_for_timezone(tz)
    if not countries or country in countries:
        return None
    return Signal(
        code="tz_mismatch",
        weight=_weight("tz_mismatch", weight),
        detail=f"time zone {tz!r} is used in {', '.join(sorted(countries))}; IP country {country}",
    )


# --------------------------------------------------------------------------- Accept-Language


def _region(tag: str) -> str | None:
    """Return the ISO 3166-1 region subtag of a language range, if any.

    Follows the subtag order of BCP 47 (RFC 5646 §2.1): language, extlang (3
    letters), script (4 letters), then region (2 letters or 3 digits). Numeric
    UN M.49 regions (``es-419``) and private-use codes name no single country.
    """
    subtags = tag.split("-")
    if not all(0 < len(s) <= 8 and s.isascii() and s.isalnum() for s in subtags):
        return None
    if not subtags[0].isalpha() or len(subtags[0]) == 1:
        return None  # "*", "x-..." private use, "i-..." grandfathered
    for sub in subtags[1:]:
        if len(sub) == 2 and sub.isalpha():
            region = sub.upper()
            region = _REGION_ALIASES.get(region, region)
            return None if region in _PRIVATE_REGIONS else region
        if (len(sub) == 3 and sub.isalpha()) or (len(sub) == 4 and sub.isalpha()):
            continue  # extlang or script
        return None  # numeric region, variant, extension or private use
    return None


def language_regions(header: str | bytes | None) -> tuple[str, ...]:
    """Region subtags named by an ``Accept-Language`` header, most preferred first.

    Parses RFC 9110 §12.5.4: comma-separated language ranges with optional
    ``;q=`` weights. Malformed ranges and weights are skipped, ranges with
    ``q=0`` ("not acceptable") are ignored, equal weights keep header order,
    and only the first 4096 characters and 32 ranges are read.

    Args:
        header: The header value (``bytes`` are decoded as Latin-1).

    Returns:
        Distinct ISO 3166-1 alpha-2 codes, e.g. ``("GB", "US")`` for
        ``"en-GB,en;q=0.9,en-US;q=0.8"``.
    """
    if header is None:
        return ()
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    if not isinstance(text, str):
        return ()
    if len(text) > _ACCEPT_LANGUAGE_MAX:
        text = text[:_ACCEPT_LANGUAGE_MAX].rpartition(",")[0]
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(text.split(",")[:_LANGUAGE_RANGES_MAX]):
        tag, *params = part.split(";")
        quality: float | None = 1.0
        for param in params:
            name, sep, value = param.strip(" \t").partition("=")
            if name.strip(" \t").lower() != "q" or not sep:
                quality = None
                break
            value = value.strip(" \t")
            quality = float(value) if _QVALUE.fullmatch(value) else None
            if quality is None:
                break
        if not quality:  # malformed (None) or not acceptable (0)
            continue
        region = _region(tag.strip(" \t"))
        if region is not None:
            ranked.append((-quality, index, region))
    ranked.sort()
    return tuple(dict.fromkeys(region for _, _, region in ranked))


def language_signal(
    header: str | bytes | None, ip_country: str | None, *, weight: float | None = None
) -> Signal | None:
    """Signal ``language_region_mismatch`` when no Accept-Language region is the IP's country.

    Only regions count: ``en`` or ``es-419`` name no country and never
    disagree. ``en-US`` is many browsers' default everywhere, hence the low weight.

    Args:
        header: The ``Accept-Language`` header value.
        ip_country: ISO 3166-1 alpha-2 code of the IP address.
        weight: Overrides the default weight.

    Returns:
        The signal, or ``None`` when there is nothing to compare or a region matches.
    """
    country = _country(ip_country)
    if country is None:
        return None
    regions = language_regions(header)
    if not regions or country in regions:
        return None
    return Signal(
        code="language_region_mismatch",
        weight=_weight("language_region_mismatch", weight),
        detail=f"Accept-Language regions {', '.join(regions[:5])}; IP country {country}",
    )


# --------------------------------------------------------------------------- declared country


def declared_country_signal(
    declared: str | None, ip_country: str | None, *, weight: float | None = None
) -> Signal | None:
    """Signal ``declared_country_mismatch`` when an account's country differs from the IP's.

    Args:
        declared: The account's or billing country (ISO 3166-1 alpha-2).
        ip_country: ISO 3166-1 alpha-2 code of the IP address.
        weight: Overrides the default weight.

    Returns:
        The signal, or ``None`` when either is unknown (or not a two-letter
        code) or they agree.
    """
    claimed, seen = _country(declared), _country(ip_country)
    if claimed is None or seen is None or claimed == seen:
        return None
    return Signal(
        code="declared_country_mismatch",
        weight=_weight("declared_country_mismatch", weight),
        detail=f"declared country {claimed}; IP country {seen}",
    )


# --------------------------------------------------------------------------- distance


def haversine_km(a: LatLon, b: LatLon) -> float:
    """Great-circle distance between two points on a spherical Earth, in kilometres.

    Uses the mean radius :data:`EARTH_RADIUS_KM`; the error against the
    ellipsoid is below 0.5 %, far below the error of IP geolocation.

    Args:
        a: ``(latitude, longitude)`` in degrees.
        b: ``(latitude, longitude)`` in degrees.
    """
    phi1, phi2 = math.radians(a[0]), math.radians(b[0])
    dphi = phi2 - phi1
    dlam = math.radians(b[1] - a[1])
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def country_centroid(cc: str | None) -> LatLon | None:
    """A representative point of a country, from the tz database.

    This is the spherical mean of the coordinates ``zone.tab`` gives for the
    country's zones (principal cities such as Berlin and Büsingen for DE), not
    a geometric centroid of its territory: good enough to tell Germany from
    Brazil, not to measure within a country.

    Args:
        cc: ISO 3166-1 alpha-2 code.

    Returns:
        ``(latitude, longitude)``, or ``None`` for codes the tz database lacks.
    """
    code = _country(cc)
    return _tables().centroids.get(code) if code is not None else None


def _point(location: LatLon | str | None) -> LatLon | None:
    if isinstance(location, str):
        return country_centroid(location)
    if not isinstance(location, tuple) or len(location) != 2:
        return None
    lat, lon = location
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lat, lon)):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return (float(lat), float(lon))


def distance_signal(
    ip_location: LatLon | str | None,
    declared_location: LatLon | str | None,
    threshold_km: float = 500.0,
    *,
    weight: float | None = None,
) -> Signal | None:
    """Signal ``location_distance`` when the IP's location is far from a declared one.

    Args:
        ip_location: ``(lat, lon)`` of the IP (from city data), or its country
            code, which stands for :func:`country_centroid`.
        declared_location: ``(lat, lon)`` or country code the client or account declares.
        threshold_km: Distances above this raise the signal.
        weight: Overrides the default weight.

    Returns:
        The signal, or ``None`` when either location is unknown or invalid, or
        the distance is within the threshold.

    Raises:
        PolicyError: ``threshold_km`` is negative or not finite.
    """
    if isinstance(threshold_km, bool) or not isinstance(threshold_km, (int, float)):
        raise PolicyError(f"threshold_km must be a number, got {threshold_km!r}")
    if not math.isfinite(threshold_km) or threshold_km < 0:
        raise PolicyError(f"threshold_km must be finite and >= 0, got {threshold_km!r}")
    here, there = _point(ip_location), _point(declared_location)
    if here is None or there is None:
        return None
    km = haversine_km(here, there)
    if km <= threshold_km:
        return None
    return Signal(
        code="location_distance",
        weight=_weight("location_distance", weight),
        detail=f"IP location is {km:,.0f} km from the declared location "
        f"(threshold {threshold_km:,.0f} km)",
    )

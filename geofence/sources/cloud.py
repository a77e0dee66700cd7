"""Cloud providers' published address ranges (AWS, Google Cloud, Azure, Oracle).

Each provider publishes a JSON file of the prefixes its customers' workloads
use. Every prefix is stated as ``kinds=HOSTING`` with the provider's name; a
prefix listed several times in one file (once per service or region) is
stated once. Overlaps between providers or with other sources are left to the
builder.

=========  ===============================  ======================================
provider   prefixes                         version / data date
=========  ===============================  ======================================
AWS        ``prefixes[].ip_prefix``,        ``syncToken`` / ``createDate``
           ``ipv6_prefixes[].ipv6_prefix``  (``YYYY-MM-DD-hh-mm-ss``)
GCP        ``prefixes[].ipv4Prefix`` or     ``syncToken`` / ``creationTime``
           ``prefixes[].ipv6Prefix``
Azure      ``values[].properties.           ``changeNumber`` / the date in the
           addressPrefixes[]``              file name (``ServiceTags_Public_
                                            YYYYMMDD.json``), if any
Oracle     ``regions[].cidrs[].cidr``       ``last_updated_timestamp``
=========  ===============================  ======================================
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geofence.errors import SourceError
from geofence.kinds import NetworkKind
from geofence.records import NetworkRecord
from geofence.sources._common import (
    StrPath,
    display,
    entry,
    file_sha256,
    parse_network,
    require_file,
    show,
)
from geofence.sources.base import RangeEntry, Source, SourceInfo
from geofence.sources.containers import corrupt_as_source_error, open_text

__all__ = [
    "AWS_URL",
    "AZURE_URL",
    "GCP_URL",
    "ORACLE_URL",
    "aws_source",
    "azure_source",
    "gcp_source",
    "oracle_source",
]

AWS_URL = "https://ip-ranges.amazonaws.com/ip-ranges.json"
"""Where AWS publishes ``ip-ranges.json``."""

GCP_URL = "https://www.gstatic.com/ipranges/cloud.json"
"""Where Google publishes ``cloud.json``."""

AZURE_URL = "https://www.microsoft.com/en-us/download/details.aspx?id=56519"
"""The download page of Azure's weekly "Service Tags - Public Cloud" file."""

ORACLE_URL = "https://docs.oracle.com/en-us/iaas/tools/public_ip_ranges.json"
"""Where Oracle publishes ``public_ip_ranges.json``."""

# One prefix as found in the file: its JSON path, its value, and the family it
# must have (None when the format does not say).
_Prefix = tuple[str, object, int | None]
_Meta = tuple[str, dt.date | None]


@dataclass(frozen=True, slots=True)
class _Layout:
    format: str
    name: str
    meta: Callable[[dict[str, Any], str, Path], _Meta]
    prefixes: Callable[[dict[str, Any], str], Iterator[_Prefix]]


def aws_source(
    path: StrPath,
    *,
    name: str | None = None,
    provider: str = "Amazon AWS",
    license: str = "",
    attribution: str = "",
    url: str = AWS_URL,
    data_date: dt.date | None = None,
) -> Source:
    """Describe AWS ``ip-ranges.json`` as a source of ``HOSTING`` ranges.

    Args:
        path: The JSON file.
        name: Source name; defaults to ``"aws"``.
        provider: Provider stated for every prefix.
        license: Licence of the data.
        attribution: Attribution text the licence requires.
        url: Where the file comes from.
        data_date: Overrides the date taken from ``createDate``.

    Returns:
        The source.

    Raises:
        SourceError: The file is missing, not JSON, or not laid out as AWS's.
    """
    return _source(_AWS, path, name, provider, license, attribution, url, data_date)


def gcp_source(
    path: StrPath,
    *,
    name: str | None = None,
    provider: str = "Google Cloud",
    license: str = "",
    attribution: str = "",
    url: str = GCP_URL,
    data_date: dt.date | None = None,
) -> Source:
    """Describe Google Cloud's ``cloud.json`` as a source of ``HOSTING`` ranges.

    Args:
        path: The JSON file.
        name: Source name; defaults to ``"gcp"``.
        provider: Provider stated for every prefix.
        license: Licence of the data.
        attribution: Attribution text the licence requires.
        url: Where the file comes from.
        data_date: Overrides the date taken from ``creationTime``.

    Returns:
        The source.

    Raises:
        SourceError: The file is missing, not JSON, or not laid out as GCP's.
    """
    return _source(_GCP, path, name, provider, license, attribution, url, data_date)


def azure_source(
    path: StrPath,
    *,
    name: str | None = None,
    provider: str = "Microsoft Azure",
    license: str = "",
    attribution: str = "",
    url: str = AZURE_URL,
    data_date: dt.date | None = None,
) -> Source:
    """Describe an Azure Service Tags JSON file as a source of ``HOSTING`` ranges.

    The file carries no date; the date in its published name
    (``ServiceTags_Public_20240429.json``) is used when present.

    Args:
        path: The JSON file.
        name: Source name; defaults to ``"azure"``.
        provider: Provider stated for every prefix.
        license: Licence of the data.
        attribution: Attribution text the licence requires.
        url: Where the file comes from.
        data_date: Date the file describes; overrides the file-name date.

    Returns:
        The source.

    Raises:
        SourceError: The file is missing, not JSON, or not laid out as Azure's.
    """
    return _source(_AZURE, path, name, provider, license, attribution, url, data_date)


def oracle_source(
    path: StrPath,
    *,
    name: str | None = None,
    provider: str = "Oracle Cloud",
    license: str = "",
    attribution: str = "",
    url: str = ORACLE_URL,
    data_date: dt.date | None = None,
) -> Source:
    """Describe Oracle Cloud's ``public_ip_ranges.json`` as a source of ``HOSTING`` ranges.

    Args:
        path: The JSON file.
        name: Source name; defaults to ``"oracle"``.
        provider: Provider stated for every prefix.
        license: Licence of the data.
        attribution: Attribution text the licence requires.
        url: Where the file comes from.
        data_date: Overrides the date taken from ``last_updated_timestamp``.

    Returns:
        The source.

    Raises:
        SourceError: The file is missing, not JSON, or not laid out as Oracle's.
    """
    return _source(_ORACLE, path, name, provider, license, attribution, url, data_date)


def _source(
    layout: _Layout,
    path: StrPath,
    name: str | None,
    provider: str,
    license: str,
    attribution: str,
    url: str,
    data_date: dt.date | None,
) -> Source:
    """The source behind every public reader: ``layout`` says how its file is laid out."""
    file = require_file(path)
    shown = display(path)
    document = _load(file, shown)
    version, date = layout.meta(document, shown, file)
    # Walk the prefixes once now so that a file of the wrong layout fails here.
    for _ in _entries(layout, document, shown, NetworkRecord()):
        pass
    info = SourceInfo(
        name=name or layout.name,
        format=layout.format,
        version=version,
        license=license,
        attribution=attribution,
        url=url,
        data_date=data_date or date,
        sha256=file_sha256(file),
    )
    record = NetworkRecord(kinds=NetworkKind.HOSTING, provider=provider or None)

    def read() -> Iterator[RangeEntry]:
        return _entries(layout, _load(file, shown), shown, record)

    return Source(info=info, read=read)


def _load(file: Path, shown: str) -> dict[str, Any]:
    try:
        with corrupt_as_source_error(file), open_text(file) as fh:
            document = json.load(fh)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{shown}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise SourceError(f"{shown}: not valid UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise SourceError(f"{shown}: cannot read: {exc.strerror or exc}") from exc
    if not isinstance(document, dict):
        raise SourceError(f"{shown}: expected a JSON object at the top level")
    return document


def _entries(
    layout: _Layout, document: dict[str, Any], shown: str, record: NetworkRecord
) -> Iterator[RangeEntry]:
    seen: set[tuple[int, int, int]] = set()
    for where, value, family in layout.prefixes(document, shown):
        if not isinstance(value, str):
            raise SourceError(f"{where}: {show(value)} is not a prefix string")
        version, first, last = parse_network(value.strip(), where)
        if family is not None and version != family:
            raise SourceError(f"{where}: {value!r} is not an IPv{family} prefix")
        if (version, first, last) not in seen:
            seen.add((version, first, last))
            yield entry(version, first, last, record)


def _list(parent: dict[str, Any], key: str, where: str, *, required: bool = True) -> list[Any]:
    value = parent.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise SourceError(f"{where}: {key}: expected a list, got {show(value)}")
    return value


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SourceError(f"{where}: expected an object, got {show(value)}")
    return value


def _text(document: dict[str, Any], key: str, shown: str) -> str:
    value = document.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SourceError(f"{shown}: {key}: expected text, got {show(value)}")
    return str(value)


def _date(text: str, shown: str, key: str, parse: Callable[[str], dt.datetime]) -> dt.date | None:
    if not text:
        return None
    try:
        return parse(text).date()
    except ValueError as exc:
        raise SourceError(f"{shown}: {key} {show(text)} is not a date-time") from exc


# --- AWS ip-ranges.json --------------------------------------------------------


def _aws_meta(document: dict[str, Any], shown: str, _file: Path) -> _Meta:
    created = _text(document, "createDate", shown)
    date = _date(
        created,
        shown,
        "createDate",
        lambda t: dt.datetime.strptime(t, "%Y-%m-%d-%H-%M-%S"),
    )
    return _text(document, "syncToken", shown) or created, date


def _aws_prefixes(document: dict[str, Any], shown: str) -> Iterator[_Prefix]:
    for key, field, family, required in (
        ("prefixes", "ip_prefix", 4, True),
        ("ipv6_prefixes", "ipv6_prefix", 6, False),
    ):
        for index, item in enumerate(_list(document, key, shown, required=required)):
            where = f"{shown}: {key}[{index}]"
            yield f"{where}.{field}", _object(item, where).get(field), family


_AWS = _Layout("aws", "aws", _aws_meta, _aws_prefixes)


# --- Google Cloud cloud.json ------------------------------------------------------


def _gcp_meta(document: dict[str, Any], shown: str, _file: Path) -> _Meta:
    created = _text(document, "creationTime", shown)
    date = _date(created, shown, "creationTime", dt.datetime.fromisoformat)
    return _text(document, "syncToken", shown) or created, date


def _gcp_prefixes(document: dict[str, Any], shown: str) -> Iterator[_Prefix]:
    for index, item in enumerate(_list(document, "prefixes", shown)):
        where = f"{shown}: prefixes[{index}]"
        obj = _object(item, where)
        found = [(k, f) for k, f in (("ipv4Prefix", 4), ("ipv6Prefix", 6)) if k in obj]
        if len(found) != 1:
            raise SourceError(f"{where}: expected exactly one of ipv4Prefix, ipv6Prefix")
        key, family = found[0]
        yield f"{where}.{key}", obj[key], family


_GCP = _Layout("gcp", "gcp", _gcp_meta, _gcp_prefixes)


# --- Azure Service Tags -------------------------------------------------------------

_AZURE_FILE_DATE = re.compile(r"_(\d{8})\.json$", re.IGNORECASE)


def _azure_meta(document: dict[str, Any], shown: str, file: Path) -> _Meta:
    date: dt.date | None = None
    match = _AZURE_FILE_DATE.search(file.name)
    if match:
        try:
            date = dt.datetime.strptime(match.group(1), "%Y%m%d").date()
        except ValueError:
            date = None  # a number that is not a date: the name tells nothing
    return _text(document, "changeNumber", shown), date


def _azure_prefixes(document: dict[str, Any], shown: str) -> Iterator[_Prefix]:
    for index, item in enumerate(_list(document, "values", shown)):
        where = f"{shown}: values[{index}]"
        obj = _object(item, where)
        properties = _object(obj.get("properties"), f"{where}.properties")
        for j, prefix in enumerate(_list(properties, "addressPrefixes", f"{where}.properties")):
            yield f"{where}.properties.addressPrefixes[{j}]", prefix, None


_AZURE = _Layout("azure", "azure", _azure_meta, _azure_prefixes)


# --- Oracle Cloud public_ip_ranges.json ---------------------------------------------


def _oracle_meta(document: dict[str, Any], shown: str, _file: Path) -> _Meta:
    updated = _text(document, "last_updated_timestamp", shown)
    date = _date(updated, shown, "last_updated_timestamp", dt.datetime.fromisoformat)
    return updated, date


def _oracle_prefixes(document: dict[str, Any], shown: str) -> Iterator[_Prefix]:
    for index, item in enumerate(_list(document, "regions", shown)):
        where = f"{shown}: regions[{index}]"
        region = _object(item, where)
        for j, cidr in enumerate(_list(region, "cidrs", where)):
            cidr_where = f"{where}.cidrs[{j}]"
            yield f"{cidr_where}.cidr", _object(cidr, cidr_where).get("cidr"), None


_ORACLE = _Layout("oracle", "oracle", _oracle_meta, _oracle_prefixes)

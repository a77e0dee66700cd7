"""Helpers shared by the source adapters (build time only).

Every adapter reports malformed input as :class:`~geofence.errors.SourceError`
whose message starts with *where* the problem is (``file:line``, a JSON path or
an MMDB network) and then says what is wrong. The helpers here take that
location as ``where`` so that the messages stay uniform.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from geofence.addr import V4_MAX, V6_MAX, address_text, parse_address
from geofence.errors import InvalidAddressError, SourceError
from geofence.records import NetworkRecord
from geofence.sources.base import RangeEntry, SourceInfo
from geofence.sources.containers import corrupt_as_source_error, open_text
from geofence.sources.problems import ValueProblem

__all__ = [
    "StrPath",
    "country_code",
    "dated_file_info",
    "display",
    "entry",
    "file_sha256",
    "is_header",
    "iter_csv_rows",
    "iter_lines",
    "parse_address_text",
    "parse_date",
    "parse_network",
    "require_file",
    "show",
    "slug",
    "subdivision_code",
]

StrPath = str | os.PathLike[str]
"""A filesystem path as the adapters accept it."""

_CHUNK = 1 << 20

# Codes that publishers use where they do not know the country, or for a
# region larger than a country. They are read as "no country stated" (None):
# ZZ (ISO 3166 user-assigned "unknown"), EU and AP (Europe, Asia/Pacific in RIR
# and legacy MaxMind data) and the legacy MaxMind markers A1 (anonymous proxy),
# A2 (satellite) and O1 (other).
_NO_COUNTRY = frozenset({"", "ZZ", "EU", "AP", "A1", "A2", "O1"})

# Well-formed codes outside ISO 3166-1 that publishers use for real places.
# XK is the user-assigned code for Kosovo used by the European Commission,
# MaxMind, DB-IP and others.
_EXTRA_COUNTRIES = frozenset({"XK"})

_COUNTRY_RE = re.compile(r"[A-Z]{2}")
# ISO 3166-2: the alpha-2 country code, a hyphen, then 1-3 alphanumerics.
_SUBDIVISION_RE = re.compile(r"([A-Z]{2})-([A-Z0-9]{1,3})")
_BARE_SUBDIVISION_RE = re.compile(r"[A-Z0-9]{1,3}")

# IPv4-mapped IPv6 addresses (RFC 4291 section 2.5.5.2): ::ffff:0:0/96.
_MAPPED_FIRST = 0xFFFF << 32
_MAPPED_LAST = _MAPPED_FIRST | V4_MAX

_SHOW_MAX = 60


def display(path: StrPath) -> str:
    """The path as the caller gave it, for messages."""
    return os.fspath(path)


def show(value: object) -> str:
    """``repr`` of a value, shortened for messages."""
    text = repr(value)
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 3] + "..."


def require_file(path: StrPath) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path` if it is a readable regular file.

    Raises:
        SourceError: The path does not exist or is not a regular file.
    """
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{display(path)}: no such file")
    if not p.is_file():
        raise SourceError(f"{display(path)}: not a regular file")
    return p


def file_sha256(path: StrPath) -> str:
    """SHA-256 of a file's bytes as lower-case hex, read in chunks.

    Raises:
        SourceError: The file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise SourceError(f"{display(path)}: cannot read: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def dated_file_info(
    file: Path,
    *,
    name: str,
    format: str,
    license: str,
    attribution: str,
    url: str,
    data_date: dt.date | None,
) -> SourceInfo:
    """Provenance of a one-file source whose format carries no version.

    The data date (if any) doubles as the version, and the file's SHA-256 is
    recorded.

    Raises:
        SourceError: The file cannot be read.
    """
    return SourceInfo(
        name=name,
        format=format,
        version=data_date.isoformat() if data_date else "",
        license=license,
        attribution=attribution,
        url=url,
        data_date=data_date,
        sha256=file_sha256(file),
    )


def iter_lines(path: StrPath) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of a UTF-8 text file.

    Line numbers start at 1; the line ending is removed, a leading byte-order
    mark is dropped. Gzip and Zstandard files are decompressed
    (:mod:`geofence.sources.containers`).

    Raises:
        SourceError: The file cannot be read, is not valid UTF-8, or its
            compressed body is corrupt or truncated.
    """
    lineno = 0
    try:
        with corrupt_as_source_error(path), open_text(path, newline="") as fh:
            for lineno, line in enumerate(fh, start=1):
                yield lineno, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{display(path)}:{lineno + 1}: not valid UTF-8 text ({exc.reason})"
        ) from exc
    except OSError as exc:
        raise SourceError(f"{display(path)}: cannot read: {exc.strerror or exc}") from exc


def iter_csv_rows(path: StrPath) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each CSV record of a text file.

    Blank lines and lines whose first non-blank character is ``#`` are
    skipped. Each line is one record (RFC 4180 quoting within a line is
    understood; quoted line breaks are not); fields are stripped.

    Raises:
        SourceError: The file cannot be read, or a line is not valid CSV.
    """
    for lineno, line in iter_lines(path):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            fields = next(csv.reader([line], strict=True))
        except csv.Error as exc:
            raise SourceError(f"{display(path)}:{lineno}: malformed CSV: {exc}") from exc
        yield lineno, [f.strip() for f in fields]


_HEADER_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_ .-]*")


def is_header(fields: list[str]) -> bool:
    """Whether a first CSV row is a header: its first field is a word, not an address.

    An IPv4 address starts with a digit and an IPv6 address contains a colon,
    so a first field that starts with a letter and has neither cannot be data.
    """
    return bool(fields) and _HEADER_FIELD.fullmatch(fields[0]) is not None


def parse_address_text(text: str, where: str) -> tuple[int, int]:
    """Parse one IP address strictly into ``(version, value)``.

    Uses :func:`geofence.addr.parse_address` without unwrapping, so the same
    rules apply as at request time (no leading zeros in IPv4 octets, no
    hostnames). Zone ids are refused: they name a local interface.

    Raises:
        SourceError: ``text`` is not an IP address.
    """
    try:
        parsed = parse_address(text, unwrap=False)
    except InvalidAddressError as exc:
        raise SourceError(f"{where}: {exc}") from exc
    if parsed.zone is not None:
        raise SourceError(f"{where}: address {show(text)} has a zone id, which data cannot use")
    return parsed.version, parsed.value


def parse_network(text: str, where: str, *, allow_address: bool = True) -> tuple[int, int, int]:
    """Parse a CIDR prefix (or, if allowed, a single address) into a range.

    Args:
        text: ``"192.0.2.0/24"``, ``"2001:db8::/32"`` or, with
            ``allow_address``, ``"192.0.2.1"``.
        where: Location for error messages.
        allow_address: Accept an address without ``/len`` as a host prefix.

    Returns:
        ``(version, first, last)`` with inclusive integer bounds.

    Raises:
        SourceError: Not a prefix, a bad length, or host bits set.
    """
    body, slash, length_text = text.partition("/")
    version, value = parse_address_text(body, where)
    bits = 32 if version == 4 else 128
    if not slash:
        if not allow_address:
            raise SourceError(f"{where}: {show(text)} is an address, expected a CIDR prefix")
        return version, value, value
    if not (length_text.isascii() and length_text.isdigit()) or len(length_text) > 3:
        raise SourceError(f"{where}: prefix length {show(length_text)} is not a number")
    length = int(length_text)
    if length > bits:
        raise SourceError(
            f"{where}: prefix length /{length} is longer than IPv{version} allows (/{bits})"
        )
    host = (1 << (bits - length)) - 1
    if value & host:
        network = value & ~host & (V4_MAX if version == 4 else V6_MAX)
        raise SourceError(
            f"{where}: {show(text)} has host bits set "
            f"(the network is {address_text(version, network)}/{length})"
        )
    return version, value, value | host


def entry(version: int, first: int, last: int, record: NetworkRecord) -> RangeEntry:
    """Build a :class:`RangeEntry`, stating IPv4-mapped IPv6 ranges as IPv4.

    Addresses in ``::ffff:0:0/96`` are unwrapped to IPv4 at lookup time
    (:mod:`geofence.addr`), so a source that states such a range really
    speaks about the IPv4 addresses.
    """
    if version == 6 and first >= _MAPPED_FIRST and last <= _MAPPED_LAST:
        return RangeEntry(4, first & V4_MAX, last & V4_MAX, record)
    return RangeEntry(version, first, last, record)


@functools.cache
def _iso_countries() -> frozenset[str]:
    # Imported on first use: loading pycountry's tables costs time at import.
    import pycountry

    return frozenset(str(c.alpha_2) for c in pycountry.countries) | _EXTRA_COUNTRIES


def country_code(
    value: object, where: str, *, field: str = "country", fold_case: bool = False
) -> str | None:
    """Validate a country code; return it, or ``None`` for "no country".

    Empty values and the placeholders ``ZZ``, ``EU``, ``AP``, ``A1``, ``A2``
    and ``O1`` mean that the publisher does not state a country, and give
    ``None``. Other values must be two upper-case letters naming an ISO 3166-1
    country (or ``XK``, Kosovo).

    Args:
        value: The raw value (``None`` is accepted and gives ``None``).
        where: Location for error messages.
        field: Field name for error messages.
        fold_case: Accept lower case (RFC 8805 feeds are case-insensitive).

    Raises:
        SourceError: The value is not a code, or names no country.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueProblem(f"{where}: {field} {show(value)} is not a string", field=field)
    code = value.strip()
    if fold_case:
        code = code.upper()
    if code in _NO_COUNTRY:
        return None
    if not _COUNTRY_RE.fullmatch(code):
        raise ValueProblem(
            f"{where}: {field} {show(value)} is not an ISO 3166-1 alpha-2 code "
            "(two upper-case letters)",
            field=field,
        )
    if code not in _iso_countries():
        raise ValueProblem(
            f"{where}: {field} {show(value)} is not an assigned ISO 3166-1 code", field=field
        )
    return code


def subdivision_code(
    value: object,
    country: str | None,
    where: str,
    *,
    field: str = "subdivision",
    fold_case: bool = False,
    allow_bare: bool = False,
) -> str | None:
    """Validate a subdivision code; return the full ISO 3166-2 code or ``None``.

    The code is checked for its form (``CC-XXX``: the country, a hyphen and 1-3
    letters or digits) and for agreeing with ``country``; it is not checked
    against a list, because publishers follow ISO 3166-2 changes at their own
    pace.

    Args:
        value: ``"UA-43"``, or with ``allow_bare`` also ``"43"``; empty or
            ``None`` gives ``None``.
        country: The record's country (already validated), used to complete a
            bare code and to check a full one.
        where: Location for error messages.
        field: Field name for error messages.
        fold_case: Accept lower case (RFC 8805 feeds are case-insensitive).
        allow_bare: Accept a code without the country prefix (MaxMind's
            ``iso_code``); it is completed with ``country``, or dropped
            (``None``) when no country is known.

    Raises:
        SourceError: Malformed, or its country prefix differs from ``country``.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueProblem(f"{where}: {field} {show(value)} is not a string", field=field)
    code = value.strip()
    if fold_case:
        code = code.upper()
    if not code:
        return None
    match = _SUBDIVISION_RE.fullmatch(code)
    if match is None:
        if allow_bare and _BARE_SUBDIVISION_RE.fullmatch(code):
            return f"{country}-{code}" if country else None
        raise ValueProblem(
            f"{where}: {field} {show(value)} is not an ISO 3166-2 code like 'UA-43'", field=field
        )
    if country is None:
        raise ValueProblem(
            f"{where}: {field} {show(value)} is given without a country", field=field
        )
    if match.group(1) != country:
        raise ValueProblem(
            f"{where}: {field} {show(value)} does not belong to country {country!r}", field=field
        )
    return code


def parse_date(text: str, where: str, fmt: str, field: str) -> dt.date:
    """Parse a date with :meth:`datetime.datetime.strptime`.

    Raises:
        SourceError: The text does not match ``fmt``.
    """
    try:
        return dt.datetime.strptime(text, fmt).date()
    except ValueError as exc:
        raise SourceError(f"{where}: {field} {show(text)} is not a date ({exc})") from exc


def slug(text: str) -> str:
    """Lower-case ``text`` and join its alphanumeric runs with ``-``."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))

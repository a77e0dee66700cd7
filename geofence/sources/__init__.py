"""Source adapters: raw data formats read into ranges for the builder (build time only).

Each adapter is a function returning a :class:`~geofence.sources.base.Source`;
:data:`SOURCE_KINDS` names them for the command line, where a source is
written as a *spec* and opened with :func:`open_source`::

    KIND:PATH[#OPTIONS]

``KIND`` is one of the keys of :data:`SOURCE_KINDS` (``mmdb``, ``csv``,
``cidr``, ``rir``, ``geofeed``, ``tor``, ``relay``, ``aws``, ``gcp``,
``azure``, ``oracle``). ``PATH`` is the input file. ``OPTIONS`` are
``key=value`` pairs joined by ``&`` and percent-encoded as in a URL query
(``%20`` or ``+`` for a space, ``%26`` for ``&``, ``%23`` for ``#``); each key
is a keyword argument of the adapter::

    mmdb:GeoLite2-Country.mmdb#name=geolite2-country&license=CC-BY-SA-4.0
    cidr:lists/vpn.txt#kinds=vpn&provider=Example+VPN&country=NL
    rir:delegated-ripencc-extended-latest#verify_counts=false
    azure:ServiceTags_Public.json#data_date=2024-04-29

Values are text, except ``kinds`` (kind names separated by ``,``, ``+`` or
spaces: ``kinds=vpn,hosting``), ``data_date`` (``YYYY-MM-DD``) and
``verify_counts`` (``true``/``false``). A ``#`` followed by text that is not
``key=value`` pairs is taken as part of the path.

Importing this package imports no heavy dependency: ``maxminddb`` is imported
when an MMDB source is opened.
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
from collections.abc import Callable
from urllib.parse import parse_qsl

from geofence.errors import SourceError
from geofence.kinds import kinds_from_names
from geofence.sources.base import RangeEntry, Source, SourceInfo
from geofence.sources.cloud import aws_source, azure_source, gcp_source, oracle_source
from geofence.sources.csvranges import cidr_list_source, csv_ranges_source
from geofence.sources.geofeed import geofeed_source
from geofence.sources.mmdb import mmdb_source
from geofence.sources.relay import relay_source
from geofence.sources.rir import rir_source
from geofence.sources.tor import tor_exit_source

__all__ = [
    "SOURCE_KINDS",
    "RangeEntry",
    "Source",
    "SourceInfo",
    "aws_source",
    "azure_source",
    "cidr_list_source",
    "csv_ranges_source",
    "gcp_source",
    "geofeed_source",
    "mmdb_source",
    "open_source",
    "oracle_source",
    "relay_source",
    "rir_source",
    "tor_exit_source",
]

SOURCE_KINDS: dict[str, Callable[..., Source]] = {
    "mmdb": mmdb_source,
    "csv": csv_ranges_source,
    "cidr": cidr_list_source,
    "rir": rir_source,
    "geofeed": geofeed_source,
    "tor": tor_exit_source,
    "relay": relay_source,
    "aws": aws_source,
    "gcp": gcp_source,
    "azure": azure_source,
    "oracle": oracle_source,
}
"""Adapters by the ``KIND`` used in specs; each is called as ``adapter(path, **options)``."""

_OPTIONS_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=[^&]*(&[A-Za-z_][A-Za-z0-9_]*=[^&]*)*")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def open_source(spec: str) -> Source:
    """Open a source from a ``KIND:PATH[#OPTIONS]`` spec (see the module docstring).

    Args:
        spec: E.g. ``"mmdb:GeoLite2-Country.mmdb#name=geolite2-country"``.

    Returns:
        The source, as the adapter for ``KIND`` describes it.

    Raises:
        SourceError: The spec is malformed, the kind or an option is unknown,
            an option value is invalid, or the adapter cannot open the file.
    """
    kind, colon, rest = spec.partition(":")
    kind = kind.strip().lower()
    known = ", ".join(SOURCE_KINDS)
    if not colon or not kind:
        raise SourceError(f"source spec {spec!r} is not KIND:PATH (kinds: {known})")
    factory = SOURCE_KINDS.get(kind)
    if factory is None:
        raise SourceError(f"unknown source kind {kind!r} in {spec!r}; known kinds: {known}")
    path, options = _split_options(rest)
    if not path:
        raise SourceError(f"source spec {spec!r} names no file")
    kwargs = _options(kind, factory, options, spec)
    return factory(path, **kwargs)


def _split_options(rest: str) -> tuple[str, str]:
    path, hash_sign, fragment = rest.rpartition("#")
    if hash_sign and _OPTIONS_RE.fullmatch(fragment):
        return path, fragment
    return rest, ""


def _options(
    kind: str, factory: Callable[..., Source], options: str, spec: str
) -> dict[str, object]:
    accepted = [
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    kwargs: dict[str, object] = {}
    if not options:
        return kwargs
    for key, value in parse_qsl(options, keep_blank_values=True):
        if key not in accepted:
            raise SourceError(
                f"unknown option {key!r} for {kind!r} sources in {spec!r}; "
                f"options: {', '.join(accepted)}"
            )
        if key in kwargs:
            raise SourceError(f"option {key!r} is given twice in {spec!r}")
        kwargs[key] = _convert(key, value, spec)
    return kwargs


def _convert(key: str, value: str, spec: str) -> object:
    try:
        if key == "kinds":
            return kinds_from_names([n for n in re.split(r"[,+\s|]+", value) if n])
        if key == "data_date":
            return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise SourceError(f"option {key}={value!r} in {spec!r}: {exc}") from exc
    if key == "verify_counts":
        lowered = value.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise SourceError(f"option {key}={value!r} in {spec!r} is not true or false")
        return lowered in _TRUE
    return value

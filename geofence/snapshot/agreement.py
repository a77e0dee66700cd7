"""Source agreement: mark ranges where two independent country sources disagree.

The default snapshot takes its country from DB-IP and checks it against a
second, independent source (registry-based). Where the two name different
countries and either one is a country that a bundled preset restricts, the
derived source made here states ``alt_country`` and ``dispute`` for that range;
the policy then applies ``on_disputed`` when the two answers lead to different
actions (see :mod:`geofence.policy.evaluate`).

Inside an occupied territory (see :mod:`geofence.snapshot.territories`) a
second source naming one of the countries the territory is filed under (RU for
Crimea) agrees: both place the range in the same territory, under another
jurisdiction of record.

Build time only; nothing here is imported on the request path.
"""

from __future__ import annotations

import heapq
import itertools
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from geofence.errors import SourceError
from geofence.records import NetworkRecord
from geofence.snapshot.territories import TerritoryTable
from geofence.sources.base import RangeEntry, Source, SourceInfo

__all__ = [
    "CountryRange",
    "country_ranges",
    "disagreement_source",
    "first_of",
    "overlay",
    "restricted_countries",
]


class CountryRange(NamedTuple):
    """A range and the single value one source states for it."""

    version: int
    first: int
    last: int
    value: str


def country_ranges(source: Source, field: str = "country") -> dict[int, list[CountryRange]]:
    """One field of a source as sorted, disjoint ranges per address family.

    Args:
        source: The source.
        field: The record field to keep (``"country"``, ``"subdivision"``).

    Returns:
        ``{4: [...], 6: [...]}``; entries without a value are left out.

    Raises:
        SourceError: Two entries of the source overlap (this step needs a
            source that states one value per address, like an MMDB).
    """
    out: dict[int, list[CountryRange]] = {4: [], 6: []}
    for entry in source.entries():
        value = getattr(entry.record, field)
        if value is not None:
            out[entry.version].append(CountryRange(entry.version, entry.first, entry.last, value))
    for version, ranges in out.items():
        ranges.sort()
        for a, b in itertools.pairwise(ranges):
            if b.first <= a.last:
                raise SourceError(
                    f"{source.info.name}: IPv{version} entries overlap at {b.first} "
                    f"({a.value} and {b.value}); agreement needs one value per address"
                )
    return out


def overlay(
    layers: Sequence[Sequence[CountryRange]],
) -> Iterator[tuple[int, int, tuple[str | None, ...]]]:
    """Cut sorted, disjoint layers at every boundary of any of them.

    Yields:
        ``(first, last, values)`` for each piece covered by at least one layer;
        ``values[i]`` is layer ``i``'s value there, or ``None``.
    """
    events: list[tuple[int, int, int]] = []  # (point, +1 start / -1 end, layer)
    for i, layer in enumerate(layers):
        for r in layer:
            events.append((r.first, 1, i))
            events.append((r.last + 1, -1, i))
    heapq.heapify(events)
    current: list[str | None] = [None] * len(layers)
    position = [0] * len(layers)
    start: int | None = None
    while events:
        point = events[0][0]
        if start is not None and any(v is not None for v in current):
            yield start, point - 1, tuple(current)
        while events and events[0][0] == point:
            _, kind, i = heapq.heappop(events)
            if kind > 0:
                current[i] = layers[i][position[i]].value
            else:
                current[i] = None
                position[i] += 1
        start = point


def first_of(layers: Sequence[dict[int, list[CountryRange]]]) -> dict[int, list[CountryRange]]:
    """Stack country layers: each address takes the first layer's value that has one.

    Used to give the agreement step the country the snapshot will record when
    several sources of one vendor state it (a finer source over a coarser one).
    """
    out: dict[int, list[CountryRange]] = {4: [], 6: []}
    for version in (4, 6):
        pieces = overlay([layer.get(version, []) for layer in layers])
        for first, last, values in pieces:
            value = next(v for v in values if v is not None)
            ranges = out[version]
            if ranges and ranges[-1].value == value and ranges[-1].last + 1 == first:
                ranges[-1] = ranges[-1]._replace(last=last)
            else:
                ranges.append(CountryRange(version, first, last, value))
    return out


def restricted_countries(policy_files: Iterable[Path]) -> frozenset[str]:
    """Countries the given policy files restrict by location.

    A country counts when a rule names it, or one of its subdivisions, in
    ``jurisdictions`` or ``partial_jurisdictions`` (``not_jurisdictions``, the
    "domestic only" form, restricts everything else and is left out).

    Raises:
        SourceError: A file cannot be read as TOML.
    """
    found: set[str] = set()
    for path in policy_files:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SourceError(f"{path}: cannot read policy: {exc}") from exc
        for rule in [*data.get("rules", []), *data.get("exceptions", [])]:
            for key in ("jurisdictions", "partial_jurisdictions"):
                for code in rule.get(key, []):
                    if isinstance(code, str) and len(code) >= 2 and code[:2].isalpha():
                        found.add(code[:2].upper())
    return frozenset(found)


def disagreement_source(
    primary: Callable[[], dict[int, list[CountryRange]]],
    alternative: Callable[[], dict[int, list[CountryRange]]],
    *,
    names: tuple[str, str],
    restricted: frozenset[str],
    info: SourceInfo,
    territories: tuple[TerritoryTable, Callable[[], dict[int, list[CountryRange]]]] | None = None,
    counts: Counter[tuple[str, str]] | None = None,
) -> Source:
    """A source marking the ranges where two country sources disagree.

    Args:
        primary: Country ranges of the source whose answer the snapshot records.
        alternative: Country ranges of the independent second source.
        names: Source names of ``primary`` and ``alternative`` (quoted in ``dispute``).
        restricted: Only disagreements in which either country is in this set
            are marked (see :func:`restricted_countries`).
        info: Provenance of the derived source.
        territories: The territory table and the territory codes per range (as
            ``CountryRange`` values); inside a territory the primary answer is
            the territory's country and an alternative naming a country the
            territory is filed under agrees.
        counts: When given, filled with the number of marked ranges per
            ``(recorded country, alternative country)`` (the recorded country is
            the territory's inside a territory).

    Returns:
        The derived source: ``alt_country`` and ``dispute`` only, no location.
    """
    first_name, second_name = names

    def read() -> Iterator[RangeEntry]:
        if counts is not None:
            counts.clear()
        prim, alt = primary(), alternative()
        table, terr_ranges = territories if territories is not None else (None, None)
        terr = terr_ranges() if terr_ranges is not None else {4: [], 6: []}
        made: dict[tuple[str, str], NetworkRecord] = {}
        for version in (4, 6):
            layers = (prim.get(version, []), alt.get(version, []), terr.get(version, []))
            for first, last, (stated_country, other, code) in overlay(layers):
                if stated_country is None or other is None:
                    continue
                said = stated = stated_country
                place = table.get(code) if code is not None and table is not None else None
                if place is not None:
                    said = place.country
                    if other in place.filed_under:
                        continue
                    stated = f"{stated} ({place.code} by the territory table)"
                if said == other or not ({said, other} & restricted):
                    continue
                record = made.get((stated, other))
                if record is None:
                    record = made[(stated, other)] = NetworkRecord(
                        alt_country=other,
                        dispute=f"{first_name} says {stated}, {second_name} says {other}",
                    )
                if counts is not None:
                    counts[(said, other)] += 1
                yield RangeEntry(version, first, last, record)

    return Source(info=info, read=read)

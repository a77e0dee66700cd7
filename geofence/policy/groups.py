"""Named jurisdiction groups usable in any policy as ``@NAME``.

Groups are facts with a date; each carries its source. A policy may define
its own groups in ``[groups]`` (they take precedence over these).
"""

from __future__ import annotations

from typing import Final

__all__ = ["BUILTIN_GROUPS"]

#: Member states of the European Union (27 since 1 February 2020, when the United
#: Kingdom left). Source:
#: https://european-union.europa.eu/principles-countries-history/eu-countries_en
EU: Final = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()  # noqa: SIM905 - reads like the official list
)

#: European Economic Area: the EU plus Iceland, Liechtenstein and Norway.
EEA: Final = EU | {"IS", "LI", "NO"}

BUILTIN_GROUPS: Final[dict[str, frozenset[str]]] = {"EU": EU, "EEA": EEA}

"""The audit line's JSON: exactly ``Decision.to_json``, built from cached templates.

Shared decisions (the precomputed ones, the same object for every address of a
network) keep a template of their line with their own members already
encoded, so a line only encodes the request's fields. Parity with
:meth:`geofence.decision.Decision.to_json` is tested byte for byte.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii

from geofence._cache import BoundedCache
from geofence.decision import Decision

__all__ = ["LineEncoder"]

#: A line template: (fixed text, name of the member whose value follows it, or None).
_Template = tuple[tuple[str, str | None], ...]
_encode = encode_basestring_ascii


def dumps(value: object) -> str:
    """The audit line's JSON form: compact, sorted keys, unknown types as ``str``."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def encode_value(value: object) -> str:
    """``value`` exactly as :func:`dumps` writes it inside an object.

    Strings, ``None``, booleans, integers, finite floats and lists of strings
    (nearly every audit field) skip the ``json.dumps`` call; the rest goes
    through it.
    """
    if type(value) is float and math.isfinite(value):  # the timestamp
        return float.__repr__(value)
    if type(value) is list and all(type(item) is str for item in value):  # the client chain
        return "[" + ",".join([_encode(item) for item in value]) + "]"
    if isinstance(value, str):
        text = _encode(value)
    elif value is None:
        text = "null"
    elif value is True:
        text = "true"
    elif value is False:
        text = "false"
    elif isinstance(value, int):  # IntEnum and IntFlag too, as json writes them
        text = int.__repr__(value)
    elif isinstance(value, float) and math.isfinite(value):
        text = float.__repr__(value)
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        text = "[" + ",".join([_encode(item) for item in value]) + "]"
    else:
        text = dumps(value)
    return text


def _template(decision: Decision, keys: tuple[str, ...]) -> _Template:
    """The template of the lines of a shared decision with extra members ``keys``.

    Filling it in gives exactly what ``json.dumps(..., separators=(",", ":"),
    sort_keys=True)`` writes for the decision's fields updated with the extra
    members, ``address`` and ``ts``.
    """
    own = decision.as_dict()
    filled = {*keys, "address", "ts"}
    out: list[tuple[str, str | None]] = []
    fixed: list[str] = []
    for position, key in enumerate(sorted({*own, *filled})):
        comma = "," if position else "{"
        if key in filled:
            fixed.append(comma + _encode(key) + ":")
            out.append(("".join(fixed), key))
            fixed = []
        else:
            fixed.append(comma + _encode(key) + ":" + encode_value(own[key]))
    fixed.append("}")
    out.append(("".join(fixed), None))
    return tuple(out)


class LineEncoder:
    """Encodes audit lines, keeping the templates of shared decisions.

    Args:
        size: Shared decisions whose templates are kept (a policy has few).
    """

    __slots__ = ("_templates",)

    def __init__(self, size: int = 4096) -> None:
        # id(decision) -> (decision, extra keys, template); the decision is kept so
        # that its id cannot be reused by another object while the entry lives.
        self._templates: BoundedCache[int, tuple[Decision, tuple[str, ...], _Template]] = (
            BoundedCache(size)
        )

    def line(
        self,
        decision: Decision,
        address: str | None,
        extra: Mapping[str, object],
        *,
        at: float | None = None,
    ) -> str:
        """Exactly ``decision.to_json(address=address, at=at, **extra)``.

        Args:
            decision: The decision.
            address: The address decided (default: :attr:`Decision.address`).
            extra: More keys (they override the decision's own).
            at: Unix time of the decision (default: now).
        """
        stamp = round(time.time() if at is None else at, 3)
        if decision.address is not None:  # made for one request: nothing to reuse
            data = decision.as_dict(**extra)
            data["address"] = address if address is not None else decision.address
            data["ts"] = stamp
            return dumps(data)
        keys = tuple(extra)
        cached = self._templates.get(id(decision))
        if cached is None or cached[0] is not decision or cached[1] != keys:
            cached = self._templates.put(id(decision), (decision, keys, _template(decision, keys)))
        # The template alternates fixed text (the decision's own members in key
        # order, then the separator and key of the next member filled in here)
        # and the names of those members.
        values = {**extra, "address": address, "ts": stamp}
        parts: list[str] = []
        for piece, key in cached[2]:
            parts.append(piece)
            if key is not None:
                value = values[key]
                parts.append(_encode(value) if type(value) is str else encode_value(value))
        return "".join(parts)

"""Path prefixes matched at segment boundaries (exemptions, per-route policies).

``/metrics`` covers ``/metrics``, ``/metrics/`` and ``/metrics/x``, never
``/metricsx``: a prefix ends where a path segment ends. A prefix written with a
trailing slash (``/static/``) covers what starts with it, and ``/`` covers
everything. Paths are compared as the framework routes them (decoded, without
the query string, case-sensitive).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["PathPrefixes", "under"]


def under(path: str, prefix: str) -> bool:
    """Whether ``path`` lies under ``prefix`` at a segment boundary."""
    if not path.startswith(prefix):
        return False
    return prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/"


def _first_segment(path: str) -> str:
    """``/a`` for ``/a``, ``/a/`` and ``/a/b``; the whole path when it has one segment."""
    end = path.find("/", 1)
    return path if end < 0 else path[:end]


class PathPrefixes:
    """A set of path prefixes; :meth:`match` finds the longest one covering a path.

    Prefixes are grouped by their first segment, so a path no prefix covers
    costs one dictionary lookup however many prefixes there are (every request
    is checked against the exemptions).

    Args:
        prefixes: Prefixes starting with ``/``.

    Raises:
        ValueError: A prefix is not a string starting with ``/``.
    """

    __slots__ = ("_all", "_by_segment", "prefixes")

    def __init__(self, prefixes: Iterable[str]) -> None:
        ordered = sorted(set(prefixes), key=len, reverse=True)
        for prefix in ordered:
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ValueError(f"path prefixes must start with '/', got {prefix!r}")
        self.prefixes: tuple[str, ...] = tuple(ordered)
        """The prefixes, longest first."""
        self._all = "/" in ordered
        groups: dict[str, list[str]] = {}
        for prefix in ordered:
            if prefix != "/":
                groups.setdefault(_first_segment(prefix.rstrip("/") or "/"), []).append(prefix)
        self._by_segment = {segment: tuple(group) for segment, group in groups.items()}

    def match(self, path: str) -> str | None:
        """The longest prefix covering ``path``, or ``None``."""
        end = path.find("/", 1)  # _first_segment, inline: every request asks
        candidates = self._by_segment.get(path if end < 0 else path[:end])
        if candidates is not None:
            for prefix in candidates:
                if under(path, prefix):
                    return prefix
        return "/" if self._all else None

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.match(path) is not None

    def __bool__(self) -> bool:
        return bool(self.prefixes)

    def __repr__(self) -> str:
        return f"PathPrefixes({list(self.prefixes)!r})"

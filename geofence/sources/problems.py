"""Malformed values in sources: counted and skipped, or refused (build time only).

Real files carry bad values: the Geoacumen Country database states the text
``"None"`` as ``country.iso_code`` for 400,000 networks. An adapter that meets
one raises :class:`ValueProblem` (a :class:`~geofence.errors.SourceError`
that names the field) and hands it to :func:`report`:

* inside :func:`collecting` with a non-strict :class:`SkipLog` (what
  :func:`geofence.snapshot.build.build_snapshot` sets up by default), the
  entry is skipped and counted per source and field, with the first examples;
* otherwise (``strict=True``, or an adapter read outside a build) the problem
  is raised, so nothing is dropped without a caller asking for it.

A skipped entry is dropped whole: a network whose country is malformed does not
keep its city or its subdivision, so no range is ever stated with a wrong mix
of fields.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from contextvars import ContextVar

from geofence.errors import SourceError

__all__ = ["SkipLog", "ValueProblem", "collecting", "report"]


class ValueProblem(SourceError):
    """A malformed value in a source; ``field`` names where it was found."""

    def __init__(self, message: str, *, field: str) -> None:
        """Create the error.

        Args:
            message: The full message, starting with where the value is.
            field: The field that holds the value (``"country.iso_code"``).
        """
        super().__init__(message)
        self.field = field


class SkipLog:
    """Entries skipped during one build, per source and field, with the first examples."""

    def __init__(self, *, strict: bool = False, examples: int = 3) -> None:
        """Create an empty log.

        Args:
            strict: Raise every problem instead of counting it.
            examples: How many example messages to keep per source and field.
        """
        self.strict = strict
        self._keep = examples
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.examples: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))

    def add(self, source: str, problem: ValueProblem, count: int = 1) -> None:
        """Count ``count`` entries of ``source`` skipped for ``problem``.

        Raises:
            ValueProblem: The log is strict.
        """
        if self.strict:
            raise problem
        self.counts[source][problem.field] += count
        kept = self.examples[source][problem.field]
        if len(kept) < self._keep:
            kept.append(str(problem))

    def total(self, source: str | None = None) -> int:
        """Entries skipped (by one source, or by all)."""
        names = [source] if source is not None else list(self.counts)
        return sum(sum(self.counts.get(n, {}).values()) for n in names)

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Counts as plain nested dicts, sources and fields sorted (for the snapshot metadata)."""
        return {
            source: dict(sorted(fields.items()))
            for source, fields in sorted(self.counts.items())
            if fields
        }

    def summary(self) -> list[str]:
        """Readable lines: per source and field, the count and the first examples."""
        lines: list[str] = []
        for source, fields in sorted(self.counts.items()):
            for field, count in sorted(fields.items()):
                lines.append(f"{source}: skipped {count:,} entries with a bad {field}")
                lines.extend(f"    e.g. {example}" for example in self.examples[source][field])
        return lines


_CURRENT: ContextVar[SkipLog | None] = ContextVar("geofence_skip_log", default=None)


@contextlib.contextmanager
def collecting(log: SkipLog) -> Iterator[SkipLog]:
    """Route :func:`report` calls made while the block runs to ``log``."""
    token = _CURRENT.set(log)
    try:
        yield log
    finally:
        _CURRENT.reset(token)


def report(source: str, problem: ValueProblem, count: int = 1) -> None:
    """Skip ``count`` entries of ``source`` for ``problem``, or raise it.

    Raises:
        ValueProblem: No non-strict :class:`SkipLog` is collecting.
    """
    log = _CURRENT.get()
    if log is None:
        raise problem
    log.add(source, problem, count)

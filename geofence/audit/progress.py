"""Progress on a terminal for long audits, and the throughput line at the end."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["ProgressBar", "throughput_line"]

_WIDTH = 30


class ProgressBar:
    """A one-line progress bar redrawn in place (only when ``stream`` is a terminal).

    The fraction is the bytes of the current source read, as stored (compressed
    bytes for a compressed log), over its size; stdin has no size, so only the
    line count and rate are shown.

    Args:
        stream: Where to draw (standard error).
        enabled: Draw at all (``False`` for ``--quiet``); a non-terminal never gets a bar.
        interval: Least seconds between redraws.
    """

    def __init__(self, stream: TextIO, *, enabled: bool = True, interval: float = 0.2) -> None:
        self.stream = stream
        self.enabled = enabled and _isatty(stream)
        self.interval = interval
        self._started = time.perf_counter()
        self._last = 0.0
        self._drawn = False
        self.source = ""

    def __call__(self, lines: int, consumed: int, size: int | None) -> None:
        """Redraw after a block: lines so far, bytes of the current source read, its size."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = lines / max(now - self._started, 1e-9)
        if size:
            done = min(consumed / size, 1.0)
            filled = int(done * _WIDTH)
            bar = "#" * filled + "-" * (_WIDTH - filled)
            head = f"[{bar}] {done:4.0%}"
        else:
            head = "[reading stdin]"
        self.stream.write(f"\r{head} {lines:,} lines, {rate:,.0f} lines/s {self.source}\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Clear the bar's line."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def throughput_line(lines: int, seconds: float) -> str:
    """``geofence audit: N lines in S s (R lines/s)``."""
    rate = lines / seconds if seconds > 0 else 0.0
    return f"geofence audit: {lines:,} lines in {seconds:.2f} s ({rate:,.0f} lines/s)"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

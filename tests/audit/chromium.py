"""Load a page in a real headless Chromium: its DOM after scripts ran, errors, a screenshot.

Two channels report script errors, so that neither can hide one:

* the console: Chromium started with ``--enable-logging=stderr --v=0`` logs every
  console message and uncaught exception as a ``CONSOLE`` line on stderr;
* the DOM: ``--dump-dom`` prints the document after its scripts ran, where a page
  may record errors (the audit report sets ``data-errors`` on ``<html>``).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]
_CONSOLE = re.compile(r":CONSOLE(?::\d+|\(\d+\))\] (.*)")


@dataclass(frozen=True)
class Page:
    """What Chromium saw."""

    dom: str
    console: list[str]
    """Console messages and uncaught exceptions (from both runs)."""

    @property
    def dom_errors(self) -> str | None:
        """The ``data-errors`` the page recorded on ``<html>``, if any."""
        m = re.search(r'<html[^>]*\sdata-errors="([^"]*)"', self.dom)
        return m.group(1) if m else None

    @property
    def rendered(self) -> bool:
        """Whether the page marked itself rendered (``data-rendered="1"`` on ``<html>``)."""
        return re.search(r'<html[^>]*\sdata-rendered="1"', self.dom) is not None


def _run(args: list[str]) -> tuple[str, list[str]]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="geofence-chromium-") as profile:
        run = subprocess.run(
            [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if run.returncode != 0:
        raise RuntimeError(f"chromium exited {run.returncode}: {run.stderr[-2000:]}")
    return run.stdout, _CONSOLE.findall(run.stderr)


def load(page: Path, screenshot: Path | None = None, size: tuple[int, int] = (1200, 2000)) -> Page:
    """Load ``page`` from disk (no server); optionally save a PNG screenshot of it."""
    dom, console = _run(["--dump-dom", page.resolve().as_uri()])
    if screenshot is not None:
        _, more = _run(
            [
                f"--screenshot={screenshot}",
                f"--window-size={size[0]},{size[1]}",
                page.resolve().as_uri(),
            ]
        )
        console += more
    return Page(dom=dom, console=console)


def png_stats(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the pixel data) of a PNG: 1-2 for a blank page."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))

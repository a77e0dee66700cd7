"""``geofence data update``: fetch sources from their upstream URLs and rebuild.

Each source is a spec like the builder's, with an ``http(s)`` URL in place of
the path (``tor:https://check.torproject.org/torbulkexitlist#name=tor``). The
files are downloaded to a temporary directory, read by the same adapters, and
merged with the same shrink guard against the current output file, which is
replaced atomically only when everything succeeded. Build time only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit

from geofence.errors import SourceError
from geofence.snapshot.build import build_snapshot, write_atomic

__all__ = ["update_snapshot"]

_MAX_BYTES = 2 * 1024**3  # refuse absurd downloads rather than fill the disk


def _download(url: str, target: Path, timeout: float) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SourceError(f"{url!r}: only http and https URLs can be fetched")
    request = urllib.request.Request(url, headers={"User-Agent": "geofence-data-update"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, target.open("wb") as fh:
            copied = 0
            while chunk := response.read(1 << 20):
                copied += len(chunk)
                if copied > _MAX_BYTES:
                    raise SourceError(f"{url}: download larger than {_MAX_BYTES:,} bytes")
                fh.write(chunk)
    except OSError as exc:
        raise SourceError(f"{url}: download failed: {exc}") from exc


def update_snapshot(
    specs: Sequence[str],
    *,
    output: str | os.PathLike[str],
    force: bool = False,
    timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> bytes:
    """Download each source, rebuild, and replace ``output`` atomically.

    Args:
        specs: ``KIND:URL[#OPTIONS]`` specs, highest priority first.
        output: The snapshot file to replace (also the shrink guard's baseline).
        force: Accept an empty or sharply shrunk build.
        timeout: Per-download timeout in seconds.
        progress: Called with progress messages.

    Returns:
        The new snapshot's bytes.

    Raises:
        SourceError: A download or a source failed (``output`` is untouched).
        SnapshotError: The build was refused (``output`` is untouched).
    """
    from geofence.sources import open_source

    say = progress or (lambda _m: None)
    tmp = Path(tempfile.mkdtemp(prefix="geofence-update-"))
    try:
        sources = []
        for k, spec in enumerate(specs):
            kind, _, rest = spec.partition(":")
            url, sep, options = rest.partition("#")
            if not url.startswith(("http://", "https://")):
                raise SourceError(f"{spec!r}: data update takes KIND:URL specs")
            name = Path(urlsplit(url).path).name or f"source{k}"
            target = tmp / f"{k}-{name}"
            say(f"fetching {url}")
            _download(url, target, timeout)
            extra = []
            if "name=" not in options:
                extra.append(f"name={quote(kind + '-' + name)}")
            if "url=" not in options:
                extra.append(f"url={quote(url, safe='')}")
            joined = "&".join(filter(None, [options, *extra]))
            try:
                sources.append(open_source(f"{kind}:{target}{sep or '#'}{joined}"))
            except SourceError as exc:
                if "unknown option 'url'" not in str(exc):
                    raise
                sources.append(
                    open_source(f"{kind}:{target}#{options}" if options else f"{kind}:{target}")
                )
        previous = output if Path(output).exists() else None
        data = build_snapshot(
            sources, previous=previous, force=force, progress=say, name=Path(output).stem
        )
        write_atomic(data, output)
        return data
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""``geofence data update``: fetch sources from their upstream URLs and rebuild.

Each source is a spec like the builder's, with a URL in place of the path
(``tor:https://check.torproject.org/torbulkexitlist#name=tor``): ``http``,
``https`` or ``file`` URLs, or a local path (a mirror, a file fetched by other
means). Remote files are downloaded to a temporary directory; all are read by
the same adapters and merged with the same shrink guard against the current
output file, which is replaced atomically only when everything succeeded.

:func:`update_default` rebuilds the bundled default snapshot from its recipe
(``data/build_default.py`` in a source checkout). Build time only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from urllib.parse import quote, urlsplit
from urllib.request import url2pathname

from geofence.errors import GeofenceError, SourceError
from geofence.snapshot.build import build_snapshot, write_atomic

__all__ = ["update_default", "update_snapshot"]

_MAX_BYTES = 2 * 1024**3  # refuse absurd downloads rather than fill the disk


def _local_file(location: str) -> Path | None:
    """The local file a ``file://`` URL or a plain path names; ``None`` for a remote URL.

    Raises:
        SourceError: An unsupported scheme, a ``file://`` URL naming another
            host, or a local file that does not exist.
    """
    parts = urlsplit(location)
    if parts.scheme in ("http", "https"):
        return None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise SourceError(f"{location!r}: file URLs must name a local file (no host)")
        path = Path(url2pathname(parts.path))
    elif parts.scheme and len(parts.scheme) > 1:  # one letter: a Windows drive
        raise SourceError(f"{location!r}: only http, https and file URLs or paths can be read")
    else:
        path = Path(location)
    if not path.is_file():
        raise SourceError(f"{location}: no such file")
    return path


def _download(url: str, target: Path, timeout: float) -> None:
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
    strict: bool = False,
    timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> bytes:
    """Download each source, rebuild, and replace ``output`` atomically.

    Args:
        specs: ``KIND:URL[#OPTIONS]`` specs, highest priority first; the URL
            is ``http(s)://``, ``file://`` or a local path.
        output: The snapshot file to replace (also the shrink guard's baseline).
        force: Accept an empty or sharply shrunk build.
        strict: Refuse a source with a malformed value instead of skipping it.
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
            kind, colon, rest = spec.partition(":")
            url, sep, options = rest.partition("#")
            if not colon or not url:
                raise SourceError(f"{spec!r}: data update takes KIND:URL specs")
            name = Path(urlsplit(url).path).name or f"source{k}"
            local = _local_file(url)
            if local is None:
                target = tmp / f"{k}-{name}"
                say(f"fetching {url}")
                _download(url, target, timeout)
            else:
                target = local
                say(f"reading {local}")
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
            sources,
            previous=previous,
            force=force,
            strict=strict,
            progress=say,
            name=Path(output).stem,
        )
        write_atomic(data, output)
        return data
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _recipe_module() -> ModuleType:
    """The default recipe's builder, ``data/build_default.py`` of a source checkout.

    Raises:
        GeofenceError: This installation has no recipe (a wheel without the
            ``data/`` directory).
    """
    script = Path(__file__).resolve().parents[2] / "data" / "build_default.py"
    if not script.is_file():
        raise GeofenceError(
            "the default recipe (data/build_default.py) is not part of this installation; "
            "run `geofence data update --recipe default` from a source checkout with "
            "pip install -e '.[data]'"
        )
    spec = importlib.util.spec_from_file_location("geofence_build_default", script)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise GeofenceError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would: its dataclasses look it up.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def update_default(
    *,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, bytes]:
    """Rebuild the bundled default snapshot from its recipe and the installed data packages.

    Calls ``build_default`` of ``data/build_default.py`` (the recipe's own
    builder: pinned packages verified by version and SHA-256) with the current
    file as the shrink guard's baseline, and replaces the file atomically.

    Args:
        output: Where to write (default: the recipe's output, the bundled file).
        force: Accept an empty or sharply shrunk build.
        progress: Called with progress messages.

    Returns:
        The file written and its bytes.

    Raises:
        GeofenceError: No recipe in this installation, the installed packages
            do not match its pins, or the build failed or was refused.
    """
    module = _recipe_module()
    try:
        recipe = module.load_recipe()
        target = Path(output) if output is not None else module.ROOT / recipe.output
        data = module.build_default(
            recipe,
            previous=target if target.is_file() else None,
            force=force,
            progress=progress,
        )
    except module.RecipeError as exc:
        raise GeofenceError(f"default recipe: {exc}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(data, target)
    return target, data

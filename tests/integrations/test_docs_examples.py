"""The Python examples in docs/middleware.md run as written.

Each fenced ``python`` block is a complete program, run as ``__main__`` in its
own interpreter (Django's settings are process-wide), from the project root.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "middleware.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    """(id, code) of every python block, named after the heading above it."""
    text = DOC.read_text(encoding="utf-8")
    out: list[tuple[str, str]] = []
    for match in _BLOCK.finditer(text):
        headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.M)
        name = re.sub(r"\W+", "-", headings[-1] if headings else "top").strip("-").lower()
        out.append((f"{len(out) + 1}-{name}", match.group(1)))
    return out


BLOCKS = _blocks()

# A settings.py fragment only assigns names; this epilogue checks that Django can
# build the engine from them (preset names, option names and values are real).
_SETTINGS_CHECK = """

import django
from django.conf import settings as _settings

_settings.configure(MIDDLEWARE=MIDDLEWARE, GEOFENCE=GEOFENCE, SECRET_KEY="docs")
django.setup()
from geofence.integrations.django import get_gate

_gate = get_gate()
assert _gate.config.exempt_paths == frozenset(GEOFENCE["exempt_paths"])
_gate.geofence.close()
if "INSTALLED_APPS" in dir():
    from geofence.integrations.django import check_settings

    assert check_settings() == [], check_settings()
"""


def test_the_document_has_examples() -> None:
    """The extraction finds the FastAPI, Flask and Django examples, challenge paths included."""
    code = "\n".join(body for _, body in BLOCKS)
    assert len(BLOCKS) >= 9
    needles = (
        "fastapi",
        "flask",
        "django",
        "GeofenceMiddleware",
        "GeofenceDependency",
        "RouteDependency",  # the model-routing example
        "upstreams.resolve",  # the reverse-proxy example
        "follow_redirects=True",  # Flask's challenge path
        "follow=True",  # Django's challenge path
        'call_command("check")',  # Django's system checks
        "InMemorySpanExporter",  # OpenTelemetry
    )
    for needle in needles:
        assert needle in code, needle


@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[name for name, _ in BLOCKS])
def test_example_runs(name: str, code: str, tmp_path: Path) -> None:
    """The block exits 0 (its own asserts hold)."""
    script = tmp_path / f"example_{name.replace('-', '_')}.py"
    if re.search(r"^GEOFENCE = \{", code, re.M) and "settings.configure" not in code:
        code += _SETTINGS_CHECK
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"

"""The documentation site builds in strict mode: broken links and anchors fail (CI does too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_strict_build(tmp_path: Path) -> None:
    """`mkdocs build --strict` succeeds on docs/ with mkdocs.yml's navigation."""
    pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "middleware" / "index.html").is_file()

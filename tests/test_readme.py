"""The README's API snippet runs and shows a real decision, not a reserved address."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _api_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## In your API server") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the section has a python block"
    return match.group(1)


def test_readme_api_snippet_decides_a_real_address(tmp_path: Path) -> None:
    """The snippet's address is denied by a named OFAC rule; its explanation names the policy."""
    script = tmp_path / "snippet.py"
    script.write_text(_api_snippet(), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Action: deny" in result.stdout
    assert "Why: rule 'ofac-" in result.stdout
    assert "Policy: us-ofac-comprehensive" in result.stdout
    assert "reserved" not in result.stdout

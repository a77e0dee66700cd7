"""What `geofence audit` loads: pyarrow without pandas, in a fresh interpreter."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from geofence.audit.run import ARROW_FROM

# Runs the CLI's audit in a fresh interpreter, then reports which modules it loaded and
# whether pandas can still be imported and used by pyarrow afterwards.
_CHILD = """
import importlib.util, json, sys
from geofence.cli import main
status = main(sys.argv[1:])
loaded = {"pyarrow": "pyarrow" in sys.modules, "pandas": "pandas" in sys.modules}
after = None
if importlib.util.find_spec("pandas") is not None:
    import pyarrow as pa
    after = type(pa.array([1, 2]).to_pandas()).__name__
print(json.dumps({"status": status, "loaded": loaded, "after": after}))
"""


def _big_log(tmp_path: Path) -> Path:
    """An nginx log large enough for the vectorised path."""
    path = tmp_path / "access.log"
    line = '5.1.2.3 - - [01/Mar/2026:10:00:{s:02d} +0000] "GET / HTTP/1.1" 200 1 "-" "a" "-"\n'
    with path.open("w") as fh:
        for i in range(ARROW_FROM // 70 + 1_000):
            fh.write(line.format(s=i % 60))
    return path


def test_the_cli_audit_uses_arrow_without_importing_pandas(
    tmp_path: Path, snapshot_file: Path, policy_file: Path
) -> None:
    """The vectorised audit runs without pandas; pyarrow still reaches pandas after it."""
    pytest.importorskip("pyarrow")
    log = _big_log(tmp_path)
    args = ["audit", str(log), "--policy", str(policy_file), "--snapshot", str(snapshot_file)]
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, *args, "--json", "-q"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    report = json.loads(run.stdout.splitlines()[-1])
    assert report["status"] == 0
    assert report["loaded"] == {"pyarrow": True, "pandas": False}
    installed = importlib.util.find_spec("pandas") is not None
    assert report["after"] == ("Series" if installed else None)


def test_without_pandas_blocks_the_import_only_inside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside the block importing pandas fails; afterwards the import machinery is as before."""
    import importlib

    from geofence.audit.run import without_pandas

    monkeypatch.delitem(sys.modules, "pandas", raising=False)
    before = list(sys.meta_path)
    with (
        without_pandas(),
        pytest.raises(ImportError, match="not imported during `geofence audit`"),
    ):
        importlib.import_module("pandas")
    assert sys.meta_path == before


def test_without_pandas_leaves_an_imported_pandas_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that has pandas already keeps it usable inside the block."""
    import importlib
    import types

    from geofence.audit.run import without_pandas

    stand_in = types.ModuleType("pandas")
    monkeypatch.setitem(sys.modules, "pandas", stand_in)
    before = list(sys.meta_path)
    with without_pandas():
        assert sys.meta_path == before
        assert importlib.import_module("pandas") is stand_in

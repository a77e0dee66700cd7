"""The fast path's wiring: which core is active, and how ``Geofence.decide`` reaches it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import geofence
from geofence.context import Context
from geofence.decision import Decision
from geofence.engine import Geofence
from geofence.snapshot.search import _CORE, ACTIVE, PyLookup, plain_address


@pytest.fixture(scope="module")
def gf() -> Iterator[Geofence]:
    with Geofence(None, "us-ofac-comprehensive") as engine:
        yield engine


def _core_in_subprocess(env_value: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "GEOFENCE_PURE_PYTHON"}
    if env_value is not None:
        env["GEOFENCE_PURE_PYTHON"] = env_value
    code = (
        "import json, geofence; from geofence import Geofence;"
        "gf = Geofence(None, 'us-ofac-comprehensive');"
        "d = gf.decide('8.8.8.8');"
        "print(json.dumps({**geofence.core_info(), 'type': type(gf.decide).__name__,"
        " 'action': str(d.action.value)}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_pure_python_can_be_forced() -> None:
    info = _core_in_subprocess("1")
    assert info["core"] == "python"
    assert "GEOFENCE_PURE_PYTHON" in info["reason"]
    assert info["type"] == "PyLookup"
    assert info["action"] == "allow"


def test_the_default_core_is_the_compiled_one_when_built() -> None:
    info = _core_in_subprocess(None)
    if importlib.util.find_spec("geofence._core") is None:
        assert info == {**info, "core": "python", "type": "PyLookup"}
        assert "not built" in info["reason"]
    else:
        assert info == {**info, "core": "compiled", "type": "Lookup"}


def test_core_info_matches_the_engine(gf: Geofence) -> None:
    assert geofence.core_info()["core"] == ACTIVE
    if ACTIVE == "compiled":
        assert type(gf.decide) is _CORE.Lookup
    else:
        assert isinstance(gf.decide, PyLookup)


def test_decide_is_the_fast_path_itself_and_follows_reloads(gf: Geofence) -> None:
    """No Python frame between the caller and the core: gf.decide is the state's lookup."""
    assert gf.decide is gf._state.decide
    before = gf.decide
    gf.reload(policy="us-ofac-comprehensive")
    assert gf.decide is gf._state.decide
    assert gf.decide is not before
    assert gf.decide("8.8.8.8") == before("8.8.8.8")


def test_a_subclass_that_overrides_decide_keeps_its_method() -> None:
    class Counting(Geofence):
        calls = 0

        def decide(self, ip: Any, context: Context | None = None) -> Decision:
            Counting.calls += 1
            return super().decide(ip, context)

    with Counting(None, "allow-all") as engine:
        engine.decide("8.8.8.8")
        assert Counting.calls == 1
        assert "decide" not in vars(engine)


def test_the_python_method_and_the_fast_path_agree(gf: Geofence) -> None:
    for ip in ("8.8.8.8", "2a00:1450:4001::1", "::ffff:5.61.16.1", "fe80::1%eth0"):
        assert Geofence.decide(gf, ip) is gf.decide(ip)
    ctx = Context()
    assert Geofence.decide(gf, "5.61.16.1", ctx) == gf.decide("5.61.16.1", ctx)


def test_the_pure_cache_returns_the_same_decisions() -> None:
    """cache_size puts a per-address cache in front of the pure core (not the compiled one)."""
    with Geofence(None, "us-ofac-comprehensive", cache_size=2) as cached:
        with Geofence(None, "us-ofac-comprehensive") as plain:
            for ip in ("8.8.8.8", "5.61.16.1", "8.8.8.8", "2a00:1450:4001::1", "8.8.8.8"):
                assert cached.decide(ip) == plain.decide(ip)
        if ACTIVE == "python":
            assert type(cached.decide).__name__ == "_Cached"
        else:
            assert cached.decide is cached._state.lookup


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", (4, 0x01020304)),
        ("::1", (6, 1)),
        ("::ffff:1.2.3.4", (6, (0xFFFF << 32) | 0x01020304)),
        ("01.2.3.4", None),
        ("fe80::1%eth0", None),
        (" 1.2.3.4", None),
        ("1.2.3.4\x00", None),
        ("\ud800", None),
    ],
)
def test_plain_address(text: str, expected: tuple[int, int] | None) -> None:
    assert plain_address(text) == expected

"""Path prefixes at segment boundaries: exemptions, per-route policies, challenge targets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.integrations.paths import PathPrefixes, under

_SEGMENT = st.sampled_from(["metrics", "metricsx", "api", "v1", "static", "a", ""])
_PATHS = st.lists(_SEGMENT, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
_PREFIXES = st.one_of(_PATHS, _PATHS.map(lambda p: p.rstrip("/") + "/"))


@pytest.mark.parametrize(
    ("path", "covered"),
    [
        ("/metrics", True),
        ("/metrics/", True),
        ("/metrics/x", True),
        ("/metrics/x/y", True),
        ("/metricsx", False),
        ("/metric", False),
        ("/", False),
        ("/api/metrics", False),
    ],
)
def test_metrics_prefix_semantics(path: str, covered: bool) -> None:
    """``/metrics`` covers itself, ``/metrics/`` and below, never ``/metricsx``."""
    assert (path in PathPrefixes(["/metrics"])) is covered


def test_longest_prefix_wins_and_slash_covers_everything() -> None:
    """match() names the longest covering prefix; ``/`` covers every path."""
    prefixes = PathPrefixes(["/api", "/api/internal", "/static/"])
    assert prefixes.match("/api/internal/x") == "/api/internal"
    assert prefixes.match("/api/x") == "/api"
    assert prefixes.match("/static/app.js") == "/static/"
    assert prefixes.match("/static") is None  # "/static/" asks for what is below it
    assert PathPrefixes(["/"]).match("/anything/at/all") == "/"
    assert not PathPrefixes([])
    with pytest.raises(ValueError, match="start with '/'"):
        PathPrefixes(["metrics"])


@settings(max_examples=400, deadline=None)
@given(prefixes=st.lists(_PREFIXES, max_size=5), path=_PATHS)
def test_match_equals_the_naive_scan(prefixes: list[str], path: str) -> None:
    """Property: the segment-indexed match equals trying every prefix, longest first."""
    expected = next(
        (p for p in sorted(set(prefixes), key=len, reverse=True) if under(path, p)), None
    )
    found = PathPrefixes(prefixes).match(path)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert len(found) == len(expected)  # a longest covering prefix (ties are equal length)
        assert under(path, found)

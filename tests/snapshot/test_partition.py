"""Partition arithmetic: the /16 bucket index and the runs of relabelled ids."""

from __future__ import annotations

from array import array
from bisect import bisect_left

from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.snapshot.partition import index16, relabel_runs


def _naive_index(starts: list[int], shift: int) -> list[int]:
    """Entry p: the position of the last start below bucket p, 0 when there is none."""
    return [max(bisect_left(starts, p << shift) - 1, 0) for p in range(65537)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), unique=True, max_size=300).map(sorted))
def test_index16_of_ipv4_starts(starts: list[int]) -> None:
    assert list(index16(array("I", starts))) == _naive_index(starts, 16)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.integers(0, 2**64 - 1) | st.integers(0, 2**20) | st.integers(2**64 - 2**48, 2**64 - 1),
        max_size=300,
    ).map(sorted)
)
def test_index16_of_ipv6_high_halves(highs: list[int]) -> None:
    """High halves repeat when several IPv6 starts share them."""
    assert list(index16(array("Q", highs), 48)) == _naive_index(highs, 48)


def test_relabel_runs_merges_equal_neighbours() -> None:
    """Negative ids count from the end of the relabelling, as in a compiled table."""
    ids = array("i", [0, 1, 2, -1, -2, 3, 3])
    relabel = array("i", [7, 7, 8, 8, 9, 9])  # -1 is id 5, -2 is id 4
    assert relabel_runs(ids, relabel) == (array("i", [0, 2, 3, 5]), array("i", [7, 8, 9, 8]))
    assert relabel_runs(array("i"), relabel) == (array("i"), array("i"))

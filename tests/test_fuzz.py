"""Fuzzing, bounded for CI: policy text, snapshot bytes, request contexts and headers.

Each test draws seeded mutations (shared with ``benchmarks/fuzz_long.py``, which
runs the same checks much longer and reports totals in ``docs/reliability.md``)
and requires that nothing crashes outside the documented error types and that no
answer breaks an invariant (see :mod:`tests.fuzzing`). The ``slow`` variants run
ten times more examples: ``python -m pytest -m slow tests/test_fuzz.py``.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzzing import (
    check_context,
    check_headers,
    check_policy,
    check_snapshot,
    mutate_policy,
    mutate_snapshot,
    random_context,
    random_headers,
    seed_policies,
    seed_snapshot,
)

_FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
_SLOW = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


def _policy_case(rng: random.Random) -> None:
    text = mutate_policy(rng.choice(seed_policies()), rng)
    assert check_policy(text) is None, text


def _snapshot_case(rng: random.Random) -> None:
    data = mutate_snapshot(seed_snapshot(), rng)
    assert check_snapshot(data, probes=50, seed=rng.randrange(1 << 30)) is None


def _context_case(rng: random.Random) -> None:
    spec = random_context(rng)
    assert check_context(spec) is None, spec


def _headers_case(rng: random.Random) -> None:
    peer, headers, config = random_headers(rng)
    assert check_headers(peer, headers, config) is None, (peer, headers, config)


@_FAST
@given(st.randoms(use_true_random=False))
def test_fuzz_policy_text(rng: random.Random) -> None:
    """Mutated policies give a policy or a PolicyError; valid ones compile and decide."""
    _policy_case(rng)


@_FAST
@given(st.randoms(use_true_random=False))
def test_fuzz_snapshot_bytes(rng: random.Random) -> None:
    """Mutated, re-summed snapshots are refused or answer like a plain bisect."""
    _snapshot_case(rng)


@_FAST
@given(st.randoms(use_true_random=False))
def test_fuzz_request_contexts(rng: random.Random) -> None:
    """Hostile contexts raise ContextError when built, or decide with a finite audit line."""
    _context_case(rng)


@_FAST
@given(st.randoms(use_true_random=False))
def test_fuzz_forwarding_headers(rng: random.Random) -> None:
    """Any headers resolve without raising, and only trusted peers are believed."""
    _headers_case(rng)


@pytest.mark.slow
@_SLOW
@given(st.randoms(use_true_random=False))
def test_fuzz_everything_longer(rng: random.Random) -> None:
    """All four domains, ten times more examples (run with ``-m slow``)."""
    for case in (_policy_case, _snapshot_case, _context_case, _headers_case):
        case(rng)

"""Seeded account-history traffic, shared by the memory-budget tests and benchmark."""

from __future__ import annotations

import random
from collections.abc import Iterator

from geofence.signals.history import Observation


def history_traffic(subjects: int, per_subject: int, seed: int = 7) -> Iterator[Observation]:
    """Observations of many subjects from scattered addresses, in time order.

    Each subject in turn makes ``per_subject`` requests, one second apart, from
    seeded public-looking addresses, so its history fills up.
    """
    rnd = random.Random(seed)
    at = 1.75e9
    for i in range(subjects):
        for j in range(per_subject):
            at += 1.0
            yield Observation(
                subject=f"user-{i:08d}",
                at=at,
                address=f"198.51.{rnd.randrange(256)}.{rnd.randrange(256)}",
                country="US",
                latitude=40.0 + j * 0.01,
                longitude=-70.0,
            )

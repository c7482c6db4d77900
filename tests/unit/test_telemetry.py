"""Histograms: the batch form of observe counts exactly as observe does."""

from __future__ import annotations

import pytest

from router.telemetry import LATENCY_BUCKETS_S, Histogram


@pytest.mark.parametrize("skewed", [False, True])
def test_observe_ages_matches_observe_per_value(skewed: bool) -> None:
    now_ms = 1_700_000_100_000
    times = [now_ms - d for d in (0, 3, 40, 999, 1_000, 2_500, 61_000, 10**7)]
    if skewed:  # a time in the future counts as age 0
        times.append(now_ms + 5)
    one, many = Histogram(LATENCY_BUCKETS_S), Histogram(LATENCY_BUCKETS_S)
    for t in times:
        one.observe(max(0.0, (now_ms - t) / 1000))
    many.observe_ages(times, now_ms)
    assert many.counts == one.counts and many.count == one.count == len(times)
    assert abs(many.total - one.total) < 1e-9

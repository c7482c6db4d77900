from __future__ import annotations

import pytest

from router.stages.dedupe import Dedupe


def test_duplicate_within_window_is_seen() -> None:
    dedupe = Dedupe(window_s=60, max_entries=100)
    assert dedupe.seen("a", 0.0) is False
    assert dedupe.seen("a", 30.0) is True
    assert dedupe.seen("a", 59.9) is True
    assert dedupe.seen("b", 59.9) is False


def test_window_is_anchored_to_the_first_sighting() -> None:
    dedupe = Dedupe(window_s=60, max_entries=100)
    dedupe.seen("a", 0.0)
    assert dedupe.seen("a", 50.0) is True  # does not extend the window
    assert dedupe.seen("a", 60.0) is False  # expired: passes and is recorded afresh
    assert dedupe.seen("a", 100.0) is True
    assert dedupe.seen("a", 120.0) is False


def test_expired_entries_are_released() -> None:
    dedupe = Dedupe(window_s=10, max_entries=1000)
    for i in range(100):
        dedupe.seen(f"id{i}", float(i))
    assert len(dedupe) <= 12  # ids live from window_s to window_s + an eighth of it
    assert dedupe.seen("id99", 100.0) is True
    assert dedupe.seen("id50", 100.0) is False


def test_memory_is_bounded_and_evicts_the_oldest() -> None:
    dedupe = Dedupe(window_s=3600, max_entries=3)
    for name in ("a", "b", "c", "d"):
        assert dedupe.seen(name, 1.0) is False
    assert len(dedupe) == 3
    assert dedupe.seen("a", 2.0) is False  # evicted: its duplicate passes (documented)
    assert dedupe.seen("d", 2.0) is True
    assert dedupe.seen("c", 2.0) is True
    assert len(dedupe) == 3


def test_many_ids_stay_fast_and_bounded() -> None:
    dedupe = Dedupe(window_s=1e9, max_entries=1000)
    for i in range(50_000):
        dedupe.seen(str(i), float(i))
    assert 1000 - 1000 // 8 <= len(dedupe) <= 1000  # the oldest eighth goes at once
    assert dedupe.seen("49999", 50_000.0) is True
    assert dedupe.seen("0", 50_000.0) is False


@pytest.mark.parametrize(("window_s", "max_entries"), [(0, 10), (10, 0), (-1, 10)])
def test_rejects_nonsense_settings(window_s: float, max_entries: int) -> None:
    with pytest.raises(ValueError):
        Dedupe(window_s, max_entries)


def test_an_expired_id_in_a_kept_generation_passes_and_is_recorded_afresh() -> None:
    dedupe = Dedupe(window_s=80, max_entries=100)
    dedupe.seen("a", 0.0)
    for t in range(1, 80, 5):  # keeps generations young enough to be kept
        dedupe.seen(f"x{t}", float(t))
    assert dedupe.seen("a", 80.0) is False and len(dedupe) == 17
    assert dedupe.seen("a", 150.0) is True

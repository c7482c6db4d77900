from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert dedupe.seen("a", 59.9) is True
    assert dedupe.seen("a", 67.5) is False  # past the window and its eighth: recorded afresh
    assert dedupe.seen("a", 120.0) is True
    assert dedupe.seen("a", 135.0) is False


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
    for t in range(1, 90, 5):  # new ids all along: several generations are kept
        dedupe.seen(f"x{t}", float(t))
    assert dedupe.seen("a", 90.0) is False
    assert dedupe.seen("a", 160.0) is True


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.floats(0, 30)), max_size=200), st.booleans())
def test_an_id_is_remembered_for_the_window_and_at_most_an_eighth_longer(
        calls: list[tuple[int, float]], crowded: bool) -> None:
    """Against an exact model of first sightings: a repeat within ``window_s`` is always
    dropped, one past ``window_s`` and an eighth always passes (and counts afresh).
    Crowded: every id falls in one line of the table, so most overflow it, and freed
    slots (and, over hundreds of generations, their tags) are used again."""
    window = 80.0
    dedupe = Dedupe(window_s=window, max_entries=10_000)
    if crowded:
        dedupe._lines = 1
    first: dict[int, float] = {}
    now = 0.0
    for name, step in calls:
        now += step
        age = now - first[name] if name in first else None
        got = dedupe.seen(f"id{name}", now)
        if age is not None and age < window:
            assert got is True, (name, age)
        if age is None or age >= window * 9 / 8:
            assert got is False, (name, age)
        if not got:
            first[name] = now


def test_a_full_line_loses_no_id_and_its_slots_are_freed_with_their_generation() -> None:
    dedupe = Dedupe(window_s=80, max_entries=1_000)
    dedupe._lines = 1  # 8 slots for every id: the rest overflow
    for i in range(20):
        assert dedupe.seen(f"a{i}", 0.0) is False
    assert len(dedupe._overflow) == 12
    assert all(dedupe.seen(f"a{i}", 50.0) for i in range(20))
    for i in range(20):  # a later generation, while the first is held: all overflow
        assert dedupe.seen(f"b{i}", 50.0) is False
    assert (len(dedupe), len(dedupe._overflow)) == (40, 32)
    # the first generation goes once the second opened a window ago: its 8 slots and
    # 12 overflowed ids are freed, and "c" takes a slot
    assert dedupe.seen("c", 130.0) is False
    assert (len(dedupe), len(dedupe._overflow)) == (21, 20)
    assert all(not dedupe.seen(f"a{i}", 131.0) for i in range(20))  # recorded afresh
    assert all(dedupe.seen(f"a{i}", 132.0) for i in range(20))
    assert all(dedupe.seen(f"b{i}", 132.0) for i in range(5))  # b: within its window
    assert (len(dedupe), len(dedupe._overflow)) == (41, 33)  # a: 7 slots, 13 overflow
    assert dedupe.seen("d", 141.0) is False  # b's generation is past window + an eighth
    assert (len(dedupe), len(dedupe._overflow)) == (22, 14)  # the line is full: "d" too


def test_a_match_across_two_keys_is_not_a_key() -> None:
    dedupe = Dedupe(window_s=80, max_entries=100)
    keys, tags = dedupe._keys, dedupe._tags
    keys[0:16] = bytes(range(1, 17))  # two keys in use, in the first line
    tags[0] = tags[1] = 1
    straddling = bytes(range(5, 13))
    assert dedupe._held(straddling, 0, keys.find(straddling, 0, 64)) is False
    assert dedupe._held(bytes(range(9, 17)), 0, 8) is True
    tags[1] = 0  # a freed slot keeps its key's bytes
    assert dedupe._held(bytes(range(9, 17)), 0, 8) is False

from __future__ import annotations

from router.offsets import Envelope, Tracker


def envelopes(tracker: Tracker, tp: str, first: int, count: int, owed: int = 1
              ) -> list[Envelope]:
    chunk = tracker.add(tp, first, first + count - 1, count)
    out = []
    for offset in range(first, first + count):
        env = Envelope(b"", "t", 0, offset, 0, None, chunk, tracker)
        env.pending = owed
        out.append(env)
    return out


def test_commit_waits_for_the_oldest_unsettled_chunk() -> None:
    tracker = Tracker()
    a = envelopes(tracker, "p0", 0, 3)
    b = envelopes(tracker, "p0", 3, 2)
    for env in b:
        env.settle()
    assert tracker.committable() == {}  # chunk a still owes deliveries
    a[0].settle()
    a[1].settle()
    assert tracker.committable() == {}
    a[2].settle()
    assert tracker.committable() == {"p0": 5}
    assert tracker.committable() == {}  # nothing new
    assert tracker.drained()


def test_an_event_owed_to_several_destinations_settles_after_the_last() -> None:
    tracker = Tracker()
    (env,) = envelopes(tracker, "p0", 10, 1, owed=3)
    env.settle()
    env.settle()
    assert tracker.in_flight == 1 and tracker.committable() == {}
    env.settle()
    assert tracker.in_flight == 0 and tracker.committable() == {"p0": 11}


def test_partitions_are_independent_and_forgotten_on_revoke() -> None:
    tracker = Tracker()
    p0 = envelopes(tracker, "p0", 0, 2)
    p1 = envelopes(tracker, "p1", 100, 2)
    for env in p1:
        env.settle()
    assert tracker.committable() == {"p1": 102}
    tracker.forget(["p0"])
    for env in p0:
        env.settle()  # settles after revoke: counted, never committed here
    assert tracker.committable() == {} and tracker.in_flight == 0

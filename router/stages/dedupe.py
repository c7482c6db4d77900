"""Drop repeats of a ``messageId`` seen within a time window (Segment: about 24 hours).

Memory is bounded: past ``max_entries`` the oldest ids are evicted, so a duplicate of an
evicted id passes (at-least-once still holds; destinations with an idempotency key absorb
it). Each id keeps the time it was *first* seen; a repeat does not extend its window.

``now`` is any clock in seconds that does not go backwards (``time.monotonic()``, or the
Kafka append time). Ids are kept in generations: plain dicts of ``hash(id) -> first
seen``, a new one opened every eighth of the window or of ``max_entries``. A generation
is dropped whole once even its newest id has expired, or when the total is over
``max_entries`` (the oldest eighth goes at once). So every call is O(1), nothing is
scanned, and an entry costs about 75 bytes: the 64-bit ``hash()`` of the id (a
36-character UUID string would be 85 bytes more) and a plain dict slot (an
``OrderedDict``'s links would be ~70 more). Two ids colliding among a million has a
chance of about 1 in 3·10^7; the cost would be one wrongly dropped event.
"""

from __future__ import annotations

from collections import deque


class Dedupe:
    GENERATIONS = 8

    def __init__(self, window_s: float, max_entries: int) -> None:
        if window_s <= 0 or max_entries <= 0:
            raise ValueError("dedupe needs a positive window_s and max_entries")
        self.window_s = window_s
        self.max_entries = max_entries
        self._slice_s = window_s / self.GENERATIONS
        self._slice_entries = max(1, max_entries // self.GENERATIONS)
        self._generations: deque[tuple[float, dict[int, float]]] = deque()  # (opened, ids)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def seen(self, message_id: str, now: float) -> bool:
        """True if ``message_id`` was seen less than ``window_s`` ago; else record it."""
        key = hash(message_id)
        generations = self._generations
        for _, entries in reversed(generations):
            first = entries.get(key)
            if first is not None:
                if now - first < self.window_s:
                    return True
                del entries[key]  # expired: recorded afresh below
                self._count -= 1
                break
        if (not generations or now - generations[-1][0] >= self._slice_s
                or len(generations[-1][1]) >= self._slice_entries):
            generations.append((now, {}))
        generations[-1][1][key] = now
        self._count += 1
        # The oldest generation's ids were all first seen by the time the next one opened.
        while len(generations) > 1 and (self._count > self.max_entries
                                        or now - generations[1][0] >= self.window_s):
            self._count -= len(generations.popleft()[1])
        return False

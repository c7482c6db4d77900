"""Drop repeats of a ``messageId`` seen within a time window (Segment: about 24 hours).

Memory is bounded: past ``max_entries`` the oldest ids are evicted, so a duplicate of an
evicted id passes (at-least-once still holds; destinations with an idempotency key absorb
it). A repeat does not extend an id's window.

``now`` is any clock in seconds that does not go backwards (``time.monotonic()``, or the
Kafka append time). Ids are kept in generations: plain sets of ``hash(id)``, a new one
opened every eighth of the window or of ``max_entries``. A generation is dropped whole
once the next one opened ``window_s`` ago, or it opened an eighth more ago (then every id
in it was first seen longer ago than the window), or when the total is over
``max_entries`` (the oldest eighth goes at once). So an id is remembered for at least
``window_s`` and at most an eighth longer, every call is O(1) and nothing is scanned.
An entry costs about 69 bytes (measured over 500k ids): the 64-bit ``hash()`` of the id
(a 36-character UUID string would be 85 bytes more) and a set slot; a dict of per-id
first-seen times cost 101. Two ids colliding among a million has a
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
        self._horizon_s = window_s + self._slice_s
        self._slice_entries = max(1, max_entries // self.GENERATIONS)
        self._generations: deque[tuple[float, set[int]]] = deque()  # (opened, ids)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def seen(self, message_id: str, now: float) -> bool:
        """True if ``message_id`` was first seen less than ``window_s`` ago (or up to an
        eighth of it more); else record it as seen ``now``."""
        key = hash(message_id)
        generations = self._generations
        # Expire first, so that an id older than the window plus an eighth never counts.
        # A generation's ids were first seen before the next one opened, and within an
        # eighth of the window after it opened itself.
        while generations and (now - generations[0][0] >= self._horizon_s or (
                len(generations) > 1 and now - generations[1][0] >= self.window_s)):
            self._count -= len(generations.popleft()[1])
        for _, ids in reversed(generations):
            if key in ids:
                return True
        if (not generations or now - generations[-1][0] >= self._slice_s
                or len(generations[-1][1]) >= self._slice_entries):
            generations.append((now, set()))
        generations[-1][1].add(key)
        self._count += 1
        while self._count > self.max_entries and len(generations) > 1:
            self._count -= len(generations.popleft()[1])
        return False

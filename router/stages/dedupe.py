"""Drop repeats of a ``messageId`` seen within a time window (Segment: about 24 hours).

Memory is bounded: past ``max_entries`` the oldest ids are evicted, so a duplicate of an
evicted id passes (at-least-once still holds; destinations with an idempotency key absorb
it). Each id keeps the time it was *first* seen; a repeat does not extend its window.

``now`` is any clock in seconds that does not go backwards (``time.monotonic()``, or the
Kafka append time): ids expire in insertion order from the front, so each ``seen`` call is
O(1) amortised. An ``OrderedDict`` is used rather than a plain dict because repeatedly
deleting a plain dict's first key is not O(1) (deleted slots are scanned on every
``next(iter(d))`` until the next resize).

Keys are the 64-bit ``hash()`` of the id, not the id itself: about 60 bytes less per
entry (a 36-character UUID string is 85 bytes, an int 32). Two ids colliding among a
million has a chance of about 1 in 3·10^7; the cost would be one wrongly dropped event.
"""

from __future__ import annotations

from collections import OrderedDict


class Dedupe:
    def __init__(self, window_s: float, max_entries: int) -> None:
        if window_s <= 0 or max_entries <= 0:
            raise ValueError("dedupe needs a positive window_s and max_entries")
        self.window_s = window_s
        self.max_entries = max_entries
        self._first_seen: OrderedDict[int, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._first_seen)

    def seen(self, message_id: str, now: float) -> bool:
        """True if ``message_id`` was seen less than ``window_s`` ago; else record it."""
        entries = self._first_seen
        key = hash(message_id)
        first = entries.get(key)
        if first is not None and now - first < self.window_s:
            return True
        if first is not None:
            del entries[key]  # expired: record afresh at the end
        entries[key] = now
        self._expire(now)
        return False

    def _expire(self, now: float) -> None:
        entries = self._first_seen
        horizon = now - self.window_s
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
        while entries:
            oldest = next(iter(entries))
            if entries[oldest] > horizon:
                break
            del entries[oldest]

"""Drop repeats of a ``messageId`` seen within a time window (Segment: about 24 hours).

Memory is bounded: past ``max_entries`` the oldest ids are evicted, so a duplicate of an
evicted id passes (at-least-once still holds; destinations with an idempotency key absorb
it). A repeat does not extend an id's window.

``now`` is any clock in seconds that does not go backwards (``time.monotonic()``, or the
Kafka append time). Ids are kept in generations, a new one opened every eighth of the
window or of ``max_entries``. A generation is dropped whole once the next one opened
``window_s`` ago, or it opened an eighth more ago (then every id in it was first seen
longer ago than the window), or when the total is over ``max_entries`` (the oldest eighth
goes at once). So an id is remembered for at least ``window_s`` and at most an eighth
longer, every call is O(1) and nothing is scanned per call.

Storage: an id is its 64-bit ``hash()``, kept in a fixed hash table in anonymous ``mmap``
memory (pages are only taken as ids arrive), sized for twice ``max_entries``. A bucket is
a 64-byte line (one CPU cache line) of 8 keys; their 8 generation tags (0: free) are 8
bytes of a second map. A lookup is one C-speed ``find`` of the key's bytes within its
line and an insert one ``find`` of a free tag; dropping a generation frees its slots with
one ``translate`` of the tags (~3 ms at a million ``max_entries``). About 19 bytes per id
at ``max_entries`` (a set of Python ints cost ~69), and ~0.5 µs more per call. A key whose
line is full (at half load, about 0.5% of them) is kept in a dict with its generation,
so no id is ever forgotten early. Two ids colliding among a million has a chance of
about 1 in 3·10^7; the cost would be one wrongly dropped event.
"""

from __future__ import annotations

import mmap
from collections import deque

SLOTS = 8  # keys per bucket
LINE = SLOTS * 8  # a bucket's bytes of keys
UNSIGNED = (1 << 64) - 1
FREE = b"\0"
TAGS = 255  # generation tags 1..255; 0 marks a free slot


class Generation:
    __slots__ = ("ids", "opened", "tag")

    def __init__(self, opened: float, tag: int) -> None:
        self.opened = opened
        self.tag = tag
        self.ids = 0  # its keys, in the table or overflowed


CLOSED = Generation(-float("inf"), 0)  # no generation open: the next id opens one


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
        self._lines = -(-2 * max_entries // SLOTS)
        self._keys = mmap.mmap(-1, self._lines * LINE)
        self._tags = mmap.mmap(-1, self._lines * SLOTS)  # a slot's generation; 0: free
        self._overflow: dict[int, int] = {}  # key -> tag, for keys whose line was full
        self._generations: deque[Generation] = deque()
        self._newest = CLOSED
        self._expires_at = float("inf")  # when the oldest generation is due to go
        self._next_tag = 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def seen(self, message_id: str, now: float) -> bool:
        """True if ``message_id`` was first seen less than ``window_s`` ago (or up to an
        eighth of it more); else record it as seen ``now``."""
        while now >= self._expires_at:  # drops the oldest, and computes the next due time
            self._drop_oldest()
        key = hash(message_id) & UNSIGNED
        packed = key.to_bytes(8, "little")
        bucket = key % self._lines
        line = bucket * LINE
        at = self._keys.find(packed, line, line + LINE)
        if at >= 0 and self._held(packed, line, at):
            return True
        if self._overflow and key in self._overflow:
            return True
        newest = self._newest
        if newest.ids >= self._slice_entries or now - newest.opened >= self._slice_s:
            newest = self._open(now)
        newest.ids += 1
        slot = self._tags.find(FREE, bucket * SLOTS, bucket * SLOTS + SLOTS)
        if slot >= 0:
            self._keys[slot * 8:slot * 8 + 8] = packed
            self._tags[slot] = newest.tag
        else:
            self._overflow[key] = newest.tag
        self._count += 1
        while self._count > self.max_entries and len(self._generations) > 1:
            self._drop_oldest()
        return False

    def _held(self, packed: bytes, line: int, at: int) -> bool:
        """Whether a match of the key's bytes at ``at`` (or later in the line) is a slot
        in use: a freed slot keeps its old key, and a match could straddle two keys."""
        while at >= 0:
            if not at & 7 and self._tags[at >> 3]:
                return True
            at = self._keys.find(packed, at + 1, line + LINE)
        return False

    def _due(self) -> None:
        """When the oldest generation goes: once the next one opened ``window_s`` ago, or it
        opened itself an eighth more ago (a generation's ids were first seen before the
        next one opened, and within an eighth of the window after it opened itself)."""
        generations = self._generations
        if not generations:
            self._expires_at = float("inf")
            return
        due = generations[0].opened + self._horizon_s
        if len(generations) > 1:
            due = min(due, generations[1].opened + self.window_s)
        self._expires_at = due

    def _open(self, now: float) -> Generation:
        while len(self._generations) >= TAGS:  # only with a max_entries of thousands of
            self._drop_oldest()                # slices' worth: never reuse a live tag
        self._newest = Generation(now, self._next_tag)
        self._generations.append(self._newest)
        self._next_tag = self._next_tag % TAGS + 1
        self._due()
        return self._newest

    def _drop_oldest(self) -> None:
        oldest = self._generations.popleft()
        if oldest is self._newest:
            self._newest = CLOSED
        self._count -= oldest.ids
        if self._overflow:
            self._overflow = {k: t for k, t in self._overflow.items() if t != oldest.tag}
        clear = bytearray(range(256))
        clear[oldest.tag] = 0
        self._tags[:] = self._tags[:].translate(clear)
        self._due()

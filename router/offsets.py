"""Which offsets are safe to commit: a per-partition settled watermark.

Records arrive from ``getmany`` in offset order, a chunk per partition per fetch. Each
record becomes an ``Envelope`` whose ``pending`` counts the deliveries it still owes (one
per destination it was routed to, or one for the dead-letter topic). When that reaches
zero the record is settled and its chunk's ``pending`` drops by one. A partition may
commit the end of its longest prefix of fully settled chunks.

Every operation is O(1) amortised: a settle is three integer updates; each chunk is
appended once and popped once. Commits land on chunk boundaries, so a crash re-delivers
at most the unsettled chunks (at-least-once).
"""

from __future__ import annotations

from collections import deque
from typing import Any


class Chunk:
    __slots__ = ("end", "pending")

    def __init__(self, end: int, pending: int) -> None:
        self.end = end  # last offset in the chunk + 1: what a commit stores
        self.pending = pending  # records not yet settled


class Envelope:
    """One consumed record travelling through the router."""

    __slots__ = ("append_ms", "attempts", "chunk", "first_failure_at", "key",
                 "offset", "origin", "partition", "pending", "raw", "topic", "tracker")

    def __init__(self, raw: bytes, topic: str, partition: int, offset: int, append_ms: int,
                 key: bytes | None, chunk: Chunk, tracker: Tracker) -> None:
        self.raw = raw
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.append_ms = append_ms
        self.key = key
        self.chunk = chunk
        self.tracker = tracker
        self.pending = 0
        self.attempts = 0  # delivery attempts so far (retry-topic records carry theirs)
        self.first_failure_at = 0.0
        self.origin: list[tuple[str, bytes]] | None = None  # first source, for re-driven records

    def settle(self) -> None:
        """One owed delivery is settled (delivered, filtered, parked or dead-lettered)."""
        self.pending -= 1
        if self.pending == 0:
            self.chunk.pending -= 1
            self.tracker.in_flight -= 1


class Partition:
    __slots__ = ("chunks", "committed")

    def __init__(self) -> None:
        self.chunks: deque[Chunk] = deque()
        self.committed = -1  # last offset handed to commit(), -1 = none

    def watermark(self) -> int | None:
        """The offset to commit now, or None when nothing new has settled."""
        chunks = self.chunks
        end = None
        while chunks and chunks[0].pending <= 0:
            end = chunks.popleft().end
        if end is None or end <= self.committed:
            return None
        return end


class Tracker:
    """Settled-offset watermarks for every assigned partition, and the in-flight count."""

    def __init__(self) -> None:
        self.partitions: dict[Any, Partition] = {}
        self.in_flight = 0

    def add(self, tp: Any, first: int, last: int, count: int) -> Chunk:
        partition = self.partitions.get(tp)
        if partition is None:
            partition = self.partitions[tp] = Partition()
        chunk = Chunk(last + 1, count)
        partition.chunks.append(chunk)
        self.in_flight += count
        return chunk

    def committable(self, tps: Any = None) -> dict[Any, int]:
        """Offsets that may be committed now (and are recorded as committed)."""
        out: dict[Any, int] = {}
        for tp in self.partitions if tps is None else tps:
            partition = self.partitions.get(tp)
            if partition is None:
                continue
            mark = partition.watermark()
            if mark is not None:
                partition.committed = mark
                out[tp] = mark
        return out

    def forget(self, tps: Any) -> None:
        """Partitions revoked: their in-flight records finish but no longer commit here."""
        for tp in tps:
            self.partitions.pop(tp, None)

    def drained(self) -> bool:
        return self.in_flight <= 0

"""Per-user ordering (``ordering: per_user``), RudderStack's barrier in small.

A user always maps to the same lane and a lane sends one batch at a time, so one user's
events leave in Kafka order. When one of them has to be parked, the ones behind it must
not overtake it:

- ``held``: users with fresh events parked and not yet finally settled. A fresh event of
  a held user is parked straight behind them (same key → same retry partition, in order).
- ``reparked``: when a re-driven event fails again it goes to the *tail* of the retry
  topic; the same user's records that were behind it in the retry topic (lower offsets
  than the new copy) are re-parked too, so they stay behind it.

Both are checked when a batch is about to be sent, not when it was buffered, because a
batch queued in a lane may have been overtaken by a failure in the batch before it.
State is per process: after a restart, parked events and fresh ones may interleave.
"""

from __future__ import annotations

from typing import Any

from router.offsets import Envelope

Item = tuple[Envelope, dict[str, Any]]


def user_of(event: dict[str, Any]) -> str:
    return str(event.get("userId") or event.get("anonymousId") or "")


class UserOrder:
    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.reparked: dict[tuple[str, int], int] = {}  # (user, retry partition) -> offset

    def split(self, batch: list[Item]) -> tuple[list[Item], list[Item]]:
        """(must wait behind a parked event, may be sent now)."""
        if not self.held and not self.reparked:
            return [], batch
        wait: list[Item] = []
        send: list[Item] = []
        for item in batch:
            env, event = item
            user = user_of(event)
            if env.origin is None:
                (wait if user in self.held else send).append(item)
                continue
            mark = self.reparked.get((user, env.partition))
            if mark is not None and env.offset < mark:
                wait.append(item)
                continue
            if mark is not None:
                del self.reparked[(user, env.partition)]  # the failed copy's turn again
            send.append(item)
        return wait, send

    def parked(self, items: list[Item], offsets: list[int], failed: bool) -> None:
        """``failed``: these were attempted and failed (not merely moved behind one)."""
        for (env, event), offset in zip(items, offsets, strict=True):
            user = user_of(event)
            if env.origin is None:
                self.held[user] = self.held.get(user, 0) + 1
            elif failed and offset >= 0:
                # the first failed copy is the barrier: older records move behind it
                self.reparked.setdefault((user, env.partition), offset)

    def settled(self, items: list[Item]) -> None:
        """Re-driven events that reached their final fate release their user."""
        if not self.held:
            return
        for env, event in items:
            if env.origin is not None:
                user = user_of(event)
                left = self.held.get(user, 0) - 1
                if left <= 0:
                    self.held.pop(user, None)
                else:
                    self.held[user] = left

"""One destination's delivery: batcher → sender → (inline retry | park | dead letter).

    submit(env, event) ─► lane buffer ──(max_events | max_bytes | max_wait_ms)──► batch
    batch ─► [circuit open or paused? park all] ─► sender.send() ─► per-event outcome
        Delivered → settle      Rejected → dead letter      Retry → backoff, again
        still failing after inline_retries (or a long Retry-After) → park in retry topic
        older than max_retry_age_s → dead letter

Spilling: a destination that holds ``spill_at`` events in flight (half the router's
``max_in_flight_events``, set when there are other destinations) which would take more
than ``delivery.spill_after_s`` to deliver at its measured speed (events per second of
a batch's send, times its send slots) is far slower than the
others: soon it would hold the router's whole in-flight budget, and backpressure would
pace every destination to its speed. Its new batches are parked in its retry topic
instead (due at once; the retry driver re-drives them once its backlog is down). Merely
the slowest of similar destinations, catching up a backlog, does not spill: its backlog
clears in well under a second. A *stalled* destination spills too: holding ``spill_at``
while a send has been running for more than ``delivery.stall_s`` and 3x its usual send
time (a warehouse checkpointing for two seconds, a vendor that stopped answering). Its
measured speed is from before the stall, so the backlog rule alone would let it take the
whole budget and pause every destination until the stall ends; and since the budget may
fill before the stall is seen (then nothing new is flushed), the batches already waiting
for a send slot are parked as well once it is (and so is a batch the sender queued
itself: ``withdraw()``, see router/delivery/offload.py). With ``ordering: per_user`` a spilled
batch still waits its lane's turn, so that it parks behind the batch before it (which may
yet fail and park); a per-user destination's waiting batches are never turned away, so a
stall of one still holds the budget until it ends.

Raw events: a sender that ``takes_raw`` (it can send a record's own bytes as the event's
JSON) is given ``(env, None)`` by the pipeline for an event that is exactly ``env.raw``
(``raw_only``; not with per-user ordering, which needs the event for its user). The
decoded dict is then not kept while the batch waits, which for a slow destination (a
warehouse loading 5,000 events a batch) is most of the router's in-flight memory.

Prepared events: a sender that ``prepares`` (an HTTP connector with ``prepare``) has
each event turned into its vendor JSON as the pipeline routes it (``Worker.prepare``),
and the batch holds those bytes (or the reason the event cannot be sent); it is sent by
``send_prepared``. As with raw events, the decoded dict is then freed at once (not with
per-user ordering).

Lanes: with ``ordering: none`` there is one buffer and up to ``concurrency`` batches in
flight. With ``ordering: per_user`` a user always maps to the same lane, a lane sends one
batch at a time, and a user whose event was parked is *held*: their later events are
parked behind it (same key, same retry partition) until the retry driver delivers them.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from typing import Any

from router.config import DestinationBase
from router.delivery.circuit import Circuit
from router.delivery.gate import Gate, Withdrawn
from router.delivery.ordering import UserOrder, user_of
from router.delivery.outbox import Outbox
from router.delivery.outcome import DELIVERED, Delivered, Rejected, Retry
from router.delivery.ratelimit import RateLimiter
from router.offsets import Envelope
from router.telemetry import DestinationStats, logger

log = logger("router.delivery")
# the event: a dict; None when it is exactly env.raw (raw_only); bytes (its vendor JSON)
# or str (why it cannot be sent) when the worker prepares
Item = tuple[Envelope, dict[str, Any] | bytes | str | None]
PARK_NOW_S = 30.0  # a server asking for a longer pause than this: park instead of waiting
STALL_FACTOR = 3.0  # a send this many times its usual duration (and over stall_s) is a stall
STALL_RECHECK_S = 0.1  # while stalled: how often waiting batches are turned away
WARN_EVERY_S = 30.0  # a failing destination's warning, at most this often per kind


class Lane:
    __slots__ = ("buffer", "bytes", "gate", "timer")

    def __init__(self, gate: Gate) -> None:
        self.buffer: list[Item] = []
        self.bytes = 0
        self.timer: asyncio.TimerHandle | None = None
        self.gate = gate


class Worker:
    def __init__(self, cfg: DestinationBase, sender: Any, outbox: Outbox,
                 stats: DestinationStats) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.sender = sender
        self.outbox = outbox
        self.stats = stats
        d = cfg.delivery
        self.per_user = d.ordering == "per_user"
        # a sender that loads one batch at a time says so: more batches would only queue
        # inside it, where a stall could not turn them away (and speed would be overrated)
        self.slots = min(d.concurrency, getattr(sender, "max_concurrency", None) or 256)
        lanes = self.slots if self.per_user else 1
        shared = Gate(self.slots)
        self.lanes = [Lane(Gate(1) if self.per_user else shared)
                      for _ in range(lanes)]
        self.max_events, self.max_bytes = cfg.max_events, cfg.max_bytes
        self.max_wait_s = cfg.max_wait_ms / 1000
        self.circuit = Circuit(d.circuit_failures, d.circuit_open_s, stats, cfg.name)
        self.limiter = RateLimiter(cfg.rate_limit_per_s)
        self.limit_batches = not hasattr(sender, "limiter")  # HTTP senders limit per request
        if not self.limit_batches:
            sender.limiter = self.limiter
        self.order = UserOrder() if self.per_user else None
        self.raw_only = getattr(sender, "takes_raw", False) and not self.per_user
        # the sender's prepare (event -> its vendor JSON), applied as events are routed
        self.prepare = (sender.prepare if getattr(sender, "prepares", False)
                        and not self.per_user else None)
        self.spill_at: int | None = None  # see the module doc; None: never spill
        self.spilling = False
        self.speed: float | None = None  # events/s it can take: batch size / send time
        self.send_s = 0.0  # a send's usual duration (moving average)
        # a sender that works one batch at a time and queues the next (DuckDB's child):
        # a queued send starts when the one ahead of it ends, not when it was handed over
        self.serial = getattr(sender, "serial", False)
        self.last_done = 0.0  # when the last send ended (monotonic)
        self.sending: list[float] = []  # start times (monotonic) of the sends in progress
        self.stall_timer: asyncio.TimerHandle | None = None  # the next _check_stall
        self.paused = False
        self.tasks: set[asyncio.Task[None]] = set()
        # failures not yet in a warning, per kind: [events, the last reason, last warned]
        self.failures: dict[str, list[Any]] = {}

    # -- intake (hot path) ------------------------------------------------------------
    def submit(self, env: Envelope, event: dict[str, Any] | None) -> None:
        """One routed event (a dict, or None for exactly ``env.raw`` when ``raw_only``,
        which a preparing worker never is)."""
        self._buffer(env, event if self.prepare is None else self.prepare(event))

    def _buffer(self, env: Envelope, event: Any) -> None:
        lanes = self.lanes
        if len(lanes) == 1:
            lane = lanes[0]
        else:  # per user: never raw_only, so the event is at hand
            lane = lanes[zlib.crc32(user_of(event).encode()) % len(lanes)]  # type: ignore[arg-type]
        lane.buffer.append((env, event))
        lane.bytes += len(env.raw)
        self.stats.in_flight += 1
        if len(lane.buffer) >= self.max_events or lane.bytes >= self.max_bytes:
            self._flush(lane)
        elif lane.timer is None:
            lane.timer = asyncio.get_running_loop().call_later(self.max_wait_s, self._flush, lane)

    def submit_many(self, items: list[Item]) -> None:
        """``submit`` for a fetch's worth of events, a buffer's room at a time; the
        pipeline has already applied ``prepare`` where there is one."""
        if len(self.lanes) > 1:  # per user: never prepared
            for env, event in items:
                self._buffer(env, event)
            return
        lane = self.lanes[0]
        self.stats.in_flight += len(items)
        start, total = 0, len(items)
        while start < total:
            chunk = items[start:start + max(1, self.max_events - len(lane.buffer))]
            start += len(chunk)
            lane.buffer += chunk
            lane.bytes += sum([len(env.raw) for env, _ in chunk])
            if len(lane.buffer) >= self.max_events or lane.bytes >= self.max_bytes:
                self._flush(lane)
        if lane.buffer and lane.timer is None:
            lane.timer = asyncio.get_running_loop().call_later(self.max_wait_s, self._flush, lane)

    def _flush(self, lane: Lane) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        if lane.buffer:
            batch, lane.buffer, lane.bytes = lane.buffer, [], 0
            self._spawn(self._send(lane, batch, spill=self._over_backlog(len(batch))))

    def _over_backlog(self, size: int) -> bool:
        """Whether a new batch of ``size`` should spill (logged when that changes)."""
        if self.spill_at is None:
            return False
        ahead = self.stats.in_flight - size  # events already queued or sending
        stalled = self.stalled()
        spill = ahead >= self.spill_at and (stalled or (
            self.speed is not None and ahead > self.speed * self.cfg.delivery.spill_after_s))
        if spill or not stalled:  # below its share while stalled: not caught up yet
            self._set_spilling(spill, stalled, ahead)
        return spill

    def _set_spilling(self, spill: bool, stalled: bool, in_flight: int) -> None:
        if spill == self.spilling:
            return
        self.spilling = spill
        if spill:
            log.warning("Destination stalled: batches are parked in its retry topic."
                        if stalled else "Destination slower than the stream: new batches "
                        "are parked in its retry topic.", destination=self.name,
                        in_flight=in_flight, sending_for_s=round(self.stalled_s(), 1))
        else:
            log.info("Destination caught up: batches are sent again.",
                     destination=self.name, in_flight=in_flight)

    def stall_after_s(self) -> float:
        return max(self.cfg.delivery.stall_s, STALL_FACTOR * self.send_s)

    def stalled(self) -> bool:
        return self.stalled_s() > self.stall_after_s()

    def _arm_stall_check(self) -> None:
        """One timer per worker, due when the oldest send in progress would be a stall."""
        if self.stall_timer is None and self.sending and self.spill_at is not None:
            due = self._oldest() + self.stall_after_s() - time.monotonic()
            self.stall_timer = asyncio.get_running_loop().call_later(
                max(0.0, due) + 0.01, self._check_stall)

    def _check_stall(self) -> None:
        """While the oldest send is stalled and the destination holds its share of the
        budget, park the batches waiting for a slot (or queued in the sender) rather than
        hold them."""
        self.stall_timer = None
        if not self.stalled():
            self._arm_stall_check()  # that send finished: watch the next oldest
            return
        if self.spill_at is not None and self.stats.in_flight >= self.spill_at:
            self._set_spilling(True, True, self.stats.in_flight)
            for lane in self.lanes:
                lane.gate.turn_away()
            withdraw = getattr(self.sender, "withdraw", None)  # its own queued batches
            if withdraw is not None:
                withdraw()
        self.stall_timer = asyncio.get_running_loop().call_later(STALL_RECHECK_S,
                                                                 self._check_stall)

    def stalled_s(self) -> float:
        """How long the oldest send in progress has been running (0 if none)."""
        return time.monotonic() - self._oldest() if self.sending else 0.0

    def _oldest(self) -> float:
        """When the oldest send in progress started (for a serial sender: not before the
        send ahead of it ended)."""
        oldest = min(self.sending)
        return max(oldest, self.last_done) if self.serial else oldest

    def backlogged(self) -> bool:
        """Well above the spill mark: re-driving now would only spill again."""
        return self.spill_at is not None and self.stats.in_flight >= self.spill_at // 2

    def flush_all(self) -> None:
        for lane in self.lanes:
            self._flush(lane)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- sending ----------------------------------------------------------------------
    async def _send(self, lane: Lane, batch: list[Item],
                    spill: bool = False) -> None:
        try:
            if spill and self.order is None:  # straight away: a send slot may be far off
                await self._spill(batch)
                return
            # per user: in lane order, behind the batch before it (never turned away)
            if not await lane.gate.acquire():  # turned away: the destination stalled
                await self._spill(batch)
                return
            try:
                await self._deliver(batch, spill)
            finally:
                lane.gate.release()
        except Exception:  # a bug here must not lose events: park them
            log.exception("Delivery crashed; parking the batch.", destination=self.name)
            await self._park(batch, "internal error")
        finally:
            self.stats.in_flight -= len(batch)

    async def _deliver(self, batch: list[Item],
                       spill: bool = False) -> None:
        if self.order is not None:
            wait, batch = self.order.split(batch)
            if wait:
                await self._park(wait, "behind an earlier parked event of the same user",
                                 moved=True)
            if not batch:
                return
        if spill:
            await self._spill(batch)
            return
        if self.paused:
            # due at once: the retry driver holds a paused destination's parked events,
            # so a resume re-drives them straight away rather than after a park delay
            await self._park(batch, "destination paused by an operator", after_s=0.0)
            return
        if not self.circuit.allow():
            await self._park(batch, "circuit open")
            return
        stats = self.stats
        attempt = 0
        first_failed = 0.0  # when this batch first failed here (0: not yet)
        pending = batch
        while pending:
            stats.batch_size.observe(len(pending))
            started = time.monotonic()
            if self.limit_batches:
                await self.limiter.acquire()
            sent = time.monotonic()
            self.sending.append(sent)
            if self.order is None:
                self._arm_stall_check()
            try:
                if self.prepare is not None:
                    outcomes = await self.sender.send_prepared([p for _, p in pending])
                elif self.raw_only:  # an event that is still the record's bytes goes as is
                    outcomes = await self.sender.send(
                        [event for _, event in pending],
                        [env.raw if event is None else None for env, event in pending])
                else:
                    outcomes = await self.sender.send([event for _, event in pending])
            except Withdrawn:  # the destination stalled with this batch queued in it
                await self._spill(pending)
                return
            finally:
                self.sending.remove(sent)
            done = time.monotonic()
            if self.serial:  # one at a time: it began when the send ahead of it ended
                started = sent = max(sent, self.last_done)
                self.last_done = done
            speed = len(pending) * (1 if self.serial else self.slots) / max(
                1e-3, done - started)  # rate limits and vendor latency included
            self.speed = speed if self.speed is None else 0.8 * self.speed + 0.2 * speed
            self.send_s = 0.8 * self.send_s + 0.2 * (done - sent) if self.send_s else done - sent
            retry: list[Item] = []
            rejected: list[tuple[Envelope, str]] = []
            delivered = 0
            after_s: float | None = None
            reason = ""
            now_ms = time.time() * 1000
            e2e = stats.end_to_end
            if outcomes.count(DELIVERED) == len(outcomes):  # the common case, kept tight
                e2e.observe_ages([env.append_ms for env, _ in pending], now_ms)
                for env, _ in pending:
                    env.settle()
                stats.delivered += len(pending)
                if self.order is not None:
                    self.order.settled(pending)
                self.circuit.record(ok=True)
                return
            for item, outcome in zip(pending, outcomes, strict=True):
                if type(outcome) is Delivered:
                    delivered += 1
                    e2e.observe(max(0.0, (now_ms - item[0].append_ms) / 1000))
                    item[0].settle()
                elif isinstance(outcome, Rejected):
                    rejected.append((item[0], outcome.reason))
                else:
                    assert isinstance(outcome, Retry)
                    retry.append(item)
                    reason = outcome.reason
                    if outcome.after_s is not None:
                        after_s = max(after_s or 0.0, outcome.after_s)
            stats.delivered += delivered
            if self.order is not None:
                self.order.settled([item for item, outcome in zip(pending, outcomes, strict=True)
                                    if type(outcome) is not Retry])
            first_failed = first_failed or now_ms / 1000
            if rejected:
                # this attempt and the inline ones before it
                self._stamp([env for env, _ in rejected], attempt + 1, first_failed)
                await self.outbox.dead_letter(rejected, self.name)
                stats.rejected += len(rejected)
                stats.dead_lettered += len(rejected)
                self._warn("refused by the destination: dead-lettered", len(rejected),
                           rejected[-1][1])
            self.circuit.record(ok=not retry or delivered > 0)
            if not retry:
                return
            self._warn("failed: retried or parked", len(retry), reason)
            attempt += 1
            delay = after_s if after_s is not None else self.backoff(attempt)
            if (attempt > self.cfg.delivery.inline_retries or delay > PARK_NOW_S
                    or not self.circuit.allow()):
                await self._park(retry, reason, attempts=attempt, after_s=after_s,
                                 failed_at=first_failed)
                return
            redriven = [item for item in retry if item[0].origin is not None]
            if redriven:  # already had their inline budget: straight back to the retry topic
                await self._park(redriven, reason, attempts=attempt, after_s=after_s,
                                 failed_at=first_failed)
                retry = [item for item in retry if item[0].origin is None]
                if not retry:
                    return
            stats.retried += len(retry)
            await asyncio.sleep(delay)
            pending = retry

    def _warn(self, what: str, events: int, reason: str) -> None:
        """Log that events failed here, at most every WARN_EVERY_S per kind of failure,
        with how many failed since the last such line and the latest reason (metrics
        count every one; the log says that something is wrong, and why)."""
        entry = self.failures.setdefault(what, [0, "", -WARN_EVERY_S])
        entry[0] += events
        entry[1] = reason
        now = time.monotonic()
        if now - entry[2] >= WARN_EVERY_S:
            log.warning(f"Delivery {what}.", destination=self.name, events=entry[0],
                        reason=reason[:300])
            entry[0], entry[2] = 0, now

    async def _spill(self, batch: list[Item]) -> None:
        await self._park(batch, "backlog: the destination is slower than the stream",
                         after_s=0.0)
        self.stats.spilled += len(batch)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt))."""
        d = self.cfg.delivery
        return random.uniform(0, min(d.backoff_max_s, d.backoff_base_s * 2 ** (attempt - 1)))

    def park_delay(self, attempts: int) -> float:
        """Equal jitter over park_backoff_s doubling per re-park (attempts past the inline
        budget), capped at backoff_max_s."""
        d = self.cfg.delivery
        parks = max(0, attempts - d.inline_retries - 1)
        delay = min(d.backoff_max_s, d.park_backoff_s * 2 ** min(parks, 30))
        return delay / 2 + random.uniform(0, delay / 2)

    # -- parking ----------------------------------------------------------------------
    @staticmethod
    def _stamp(envs: list[Envelope], attempts: int, failed_at: float) -> None:
        """Set the history the outbox writes in the headers: ``attempts`` made here now,
        on top of those the record came with, and when delivery first failed.

        A fresh record's envelope is shared by every destination it was routed to, so
        what another destination wrote there is not this one's history: it is replaced,
        not added to. Call right before the outbox call, which reads it before its first
        await. A re-driven record's envelope is this destination's own."""
        for env in envs:
            if env.origin is None:
                env.attempts, env.first_failure_at = attempts, failed_at
            else:
                env.attempts += attempts
                env.first_failure_at = env.first_failure_at or failed_at

    async def _park(self, items: list[Item], error: str,
                    attempts: int = 0, after_s: float | None = None,
                    moved: bool = False, failed_at: float = 0.0) -> None:
        """``failed_at``: when these first failed at this destination (default: now)."""
        now = time.time()
        failed_at = failed_at or now
        d = self.cfg.delivery
        expired: list[tuple[Envelope, str]] = []
        parked: list[Item] = []
        for env, event in items:
            if env.origin is None:  # see _stamp
                tries, first = attempts, failed_at
            else:
                tries, first = env.attempts + attempts, env.first_failure_at or failed_at
            if now - first >= d.max_retry_age_s:
                expired.append((env, f"gave up after {tries} attempts over "
                                     f"{now - first:.0f} s: {error}"))
                if self.order is not None:
                    self.order.settled([(env, event)])
                continue
            parked.append((env, event))
        if expired:
            self._stamp([env for env, _ in expired], attempts, failed_at)
            await self.outbox.dead_letter(expired, self.name)
            self.stats.dead_lettered += len(expired)
            self._warn("given up after max_retry_age_s: dead-lettered", len(expired), error)
        if parked:
            envs = [env for env, _ in parked]
            self._stamp(envs, attempts, failed_at)
            wait = after_s if after_s is not None else self.park_delay(envs[0].attempts)
            offsets = await self.outbox.park(envs, self.name, error, now + wait)
            kept = [(item, offset) for item, offset in zip(parked, offsets, strict=True)
                    if offset >= 0]  # -1: too large for the retry topic, dead-lettered
            self.stats.parked += len(kept)
            self.stats.dead_lettered += len(parked) - len(kept)
            if self.order is not None:
                if len(kept) < len(parked):  # reached its final fate: holds no user
                    self.order.settled([item for item, offset in
                                        zip(parked, offsets, strict=True) if offset < 0])
                self.order.parked([item for item, _ in kept], [o for _, o in kept],
                                  failed=not moved)

    async def drain(self, timeout_s: float) -> bool:
        """Flush every buffer and wait for in-flight batches; True if all finished."""
        self.flush_all()
        deadline = time.monotonic() + timeout_s
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self.tasks), timeout=deadline - time.monotonic())
        return not self.tasks

"""The per-record hot path: decode → global stages → each destination's route → worker.

``Pipeline.intake(tp, records)`` takes one partition's records from one fetch. It does
no I/O and creates no task per event: each destination gets the fetch's routed events
in one ``submit_many``; workers buffer, and only a full or timed-out buffer spawns a
send. Invalid input and tracking-plan blocks go to the dead-letter
topic in one write per fetch.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from router.config import Config, DestinationBase
from router.delivery.outbox import Outbox
from router.delivery.worker import Item, Worker
from router.events import Invalid, complete, parse
from router.offsets import Envelope, Tracker
from router.stages.dedupe import Dedupe
from router.stages.route import compile_route
from router.stages.suppression import Suppression
from router.stages.tracking_plan import Blocked, TrackingPlan
from router.telemetry import DestinationStats, Stats, logger

log = logger("router.pipeline")


@dataclass
class Destination:
    cfg: DestinationBase
    route: Any  # event -> event | reason
    worker: Worker
    stats: DestinationStats


def build_route(cfg: DestinationBase) -> Any:
    return compile_route(name=cfg.name, display_name=cfg.connector.display_name,
                         other_names=cfg.connector.other_names,
                         warehouse=cfg.connector.warehouse,
                         consent_categories=list(cfg.consent_categories), where=cfg.where,
                         transforms=list(cfg.transforms))


class Pipeline:
    def __init__(self, config: Config, destinations: list[Destination], outbox: Outbox,
                 stats: Stats, tracker: Tracker) -> None:
        self.config = config
        self.destinations = destinations
        for dest in destinations:  # a destination can only stall others if there are some
            dest.worker.spill_at = (config.kafka.max_in_flight_events // 2
                                    if len(destinations) > 1 else None)
        self.outbox = outbox
        self.stats = stats
        self.tracker = tracker
        self.max_event_bytes = config.kafka.max_event_bytes
        p = config.pipeline
        self.dedupe = Dedupe(p.dedupe.window_s, p.dedupe.max_entries) if p.dedupe else None
        self.suppression = Suppression(p.suppressed_users) if p.suppressed_users else None
        plan = p.tracking_plan
        self.plan = (TrackingPlan.from_file(plan.path, plan.unplanned, plan.violations)
                     if plan else None)
        self.background: set[asyncio.Task[None]] = set()
        # Highest offset fetched per partition by this process. A record at or below it
        # is our own re-delivery (a partition revoked and assigned back, eagerly), not an
        # upstream duplicate: it must not be deduped, or its offset could be committed
        # while the first copy is still in flight.
        self.fetched: dict[Any, int] = {}
        self.crashes: set[type[BaseException]] = set()  # kinds of internal error logged

    def intake(self, tp: Any, records: list[Any]) -> None:
        if not records:
            return
        tracker = self.tracker
        chunk = tracker.add(tp, records[0].offset, records[-1].offset, len(records))
        refetched_upto = self.fetched.get(tp, -1)
        self.fetched[tp] = max(refetched_upto, records[-1].offset)
        stats = self.stats
        stats.received += len(records)
        topic, partition = tp.topic, tp.partition
        max_bytes = self.max_event_bytes
        dedupe, suppression, plan = self.dedupe, self.suppression, self.plan
        destinations = self.destinations
        routes = [dest.route for dest in destinations]
        filtered = [dest.stats.filtered for dest in destinations]
        raw_only = [getattr(dest.worker, "raw_only", False) for dest in destinations]
        prepares = [getattr(dest.worker, "prepare", None) for dest in destinations]
        batches: list[list[Item]] = [[] for _ in destinations]
        targets = range(len(destinations))
        now = time.time()
        dead: list[tuple[Envelope, str]] = []
        for record in records:
            env = Envelope(record.value, topic, partition, record.offset, record.timestamp,
                           record.key, chunk, tracker)
            owed = 0  # deliveries handed over so far (routing may fail midway)
            try:
                event = parse(record.value, max_bytes)
                if type(event) is Invalid:
                    stats.invalid[event.reason] += 1
                    env.pending = 1
                    dead.append((env, f"{event.reason}: {event.detail}"))
                    continue
                assert isinstance(event, dict)
                # exact: the record's bytes are this event, so raw-taking senders are given
                # None and send env.raw (the dict is then not kept while they batch)
                exact = not complete(event, record.value, record.timestamp)
                if not exact and event["messageId"].startswith("derived-"):
                    stats.derived_message_ids += 1
                if suppression is not None and suppression.suppressed(event):
                    self._drop(env, "suppressed")
                    continue
                if (dedupe is not None and record.offset > refetched_upto
                        and dedupe.seen(event["messageId"], now)):
                    self._drop(env, "duplicate")
                    continue
                if plan is not None:
                    checked = plan.check(event)
                    if isinstance(checked, Blocked):
                        self._count_drop("tracking_plan")
                        env.pending = 1
                        dead.append((env, f"tracking_plan: {checked.reason}"))
                        continue
                    exact = exact and checked is event
                    event = checked
                for i in targets:  # each destination's batch is handed over per fetch
                    routed = routes[i](event)
                    if type(routed) is str:
                        filtered[i][routed] += 1
                    else:
                        prepare = prepares[i]
                        batches[i].append((env, prepare(routed) if prepare is not None else
                                           None if exact and routed is event and raw_only[i]
                                           else routed))
                        owed += 1
                if owed:
                    env.pending = owed
                else:
                    self._settle_now(env)
            except Exception as exc:  # a bug must not stop the partition (and crash-loop
                # the router on this record at every start): it is dead-lettered instead
                self._poisoned(env, owed, exc, dead)
        for dest, batch in zip(destinations, batches, strict=True):
            if batch:
                dest.stats.routed += len(batch)
                dest.worker.submit_many(batch)
        if dead:
            self._spawn(self.outbox.dead_letter(dead))

    def _poisoned(self, env: Envelope, owed: int, exc: Exception,
                  dead: list[tuple[Envelope, str]]) -> None:
        """A record the engine failed on: dead-lettered (``internal_error``) besides the
        deliveries it was already handed to, logged once per kind of error."""
        self.stats.invalid["internal_error"] += 1
        env.pending = owed + 1
        dead.append((env, f"internal_error: {exc!r}"))
        if type(exc) not in self.crashes:
            self.crashes.add(type(exc))
            log.exception("An event made the router fail; it is dead-lettered "
                          "(internal_error). Please report this.", offset=env.offset,
                          partition=env.partition)

    def _drop(self, env: Envelope, reason: str) -> None:
        self._count_drop(reason)
        self._settle_now(env)

    def _count_drop(self, reason: str) -> None:
        """A global stage's drop counts globally and as filtered at every destination,
        so each destination's numbers add up to what was received."""
        self.stats.dropped[reason] += 1
        for dest in self.destinations:
            dest.stats.filtered[reason] += 1

    @staticmethod
    def _settle_now(env: Envelope) -> None:
        env.pending = 1
        env.settle()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

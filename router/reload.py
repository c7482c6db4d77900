"""Hot reload: swap to a new, already validated config without losing an event.

- unchanged destinations keep running untouched;
- new destinations start (sender, worker, retry driver);
- removed destinations stop receiving new events, then drain: buffers flush, in-flight
  batches finish (or park), their retry driver commits and stops, the sender closes;
- changed destinations are a removal plus an addition: the new one takes new events at
  once while the old one drains (so with ``ordering: per_user`` a user's events may
  interleave across the swap); the new retry driver starts once the old one has committed
  and stopped, so parked events are re-driven by one of them, never both at once;
- global stages (dedupe state is kept when its settings are unchanged, suppression,
  tracking plan) are rebuilt; ``kafka`` and ``server`` changes need a restart and are
  reported, not applied.
"""

from __future__ import annotations

import asyncio
from typing import Any

from router.config import Config
from router.pipeline import Pipeline
from router.telemetry import logger

log = logger("router.reload")


async def apply(router: Any, new: Config) -> tuple[bool, str]:
    old: Config = router.config
    notes = []
    if new.kafka != old.kafka or new.server != old.server:
        notes.append("kafka/server changes need a restart and were not applied")
        new = new.model_copy(update={"kafka": old.kafka, "server": old.server})
    old_by_name = {d.name: d for d in old.destinations if d.enabled}
    new_by_name = {d.name: d for d in new.destinations if d.enabled}
    going = [n for n, d in old_by_name.items() if new_by_name.get(n) != d]
    coming = [n for n, d in new_by_name.items() if old_by_name.get(n) != d]
    from router.app import register_secrets
    register_secrets(new)
    await router._ensure_topics(new, coming)
    # a changed destination's old and new retry drivers share a name, a task key and a
    # consumer group: take the old ones out before the new ones are made
    retiring = {name: (router.destinations.pop(name), router.retry_sources.pop(name),
                       router.tasks.pop(f"retry:{name}", None))
                for name in going if name in router.destinations}
    for name in coming:
        await router._add_destination(new_by_name[name])
    pipeline = Pipeline(new, [router.destinations[d.name] for d in new.destinations
                              if d.enabled], router.outbox, router.stats, router.tracker)
    previous = router.pipeline
    if previous is not None:
        if new.pipeline.dedupe == old.pipeline.dedupe:
            pipeline.dedupe = previous.dedupe
        # what this process already fetched: a re-fetch of it is our own re-delivery,
        # never a duplicate to drop (see Pipeline.fetched)
        pipeline.fetched = previous.fetched
        pipeline.background = previous.background  # dead-letter writes still running
    router.pipeline = pipeline
    router.source.handler = lambda _c, tp, records: pipeline.intake(tp, records)
    router.config = new
    for name, (dest, source, task) in retiring.items():
        if task is not None:
            task.cancel()
        await source.drain_and_stop(10.0, [dest.worker])
        if not await dest.worker.drain(new.kafka.drain_grace_s):
            log.warning("A removed destination did not drain in time; its unsettled "
                        "events will be re-delivered after the next restart.", destination=name)
        await dest.worker.sender.close()
        if name not in new_by_name:
            router.stats.destinations.pop(name, None)
    # only now the new retry drivers join their groups: the old driver of a changed
    # destination has committed and left, so the two never re-drive the same records
    for name in coming:
        source = router.retry_sources[name]
        await source.start()
        router.tasks[f"retry:{name}"] = asyncio.get_running_loop().create_task(source.run())
    message = (f"reloaded: {len(coming)} started, {len(going)} stopped"
               + (f"; {'; '.join(notes)}" if notes else ""))
    log.info("Config reloaded.", started=coming, stopped=going, notes=notes)
    return True, message

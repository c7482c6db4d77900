"""Lifespan: build everything from config, run, drain on SIGTERM, reload on SIGHUP.

    Router.run()
      ├─ input Source   (topics → Pipeline.intake → Workers)
      ├─ retry Sources  (one per destination: <prefix>.<name> → RetryDriver → Worker)
      ├─ housekeeping   (suppression reload, lag, retry backlog, loop heartbeat)
      └─ HTTP server    (/metrics /healthz /readyz /api /ui)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr

from router import config as config_mod
from router import redact, topics
from router.config import Config, ConfigError, DestinationBase
from router.delivery.http import HttpSender
from router.delivery.outbox import Outbox, outbox_producer
from router.delivery.retry import RetryDriver
from router.delivery.worker import Worker
from router.offsets import Tracker
from router.pipeline import Destination, Pipeline, build_route
from router.source import Source
from router.telemetry import Stats, logger

log = logger("router.app")


def kafka_options(config: Config) -> dict[str, Any]:
    k = config.kafka
    options: dict[str, Any] = {"bootstrap_servers": k.bootstrap_servers,
                               "client_id": k.client_id, "security_protocol": k.security_protocol}
    if k.sasl_mechanism:
        options["sasl_mechanism"] = k.sasl_mechanism
        options["sasl_plain_username"] = k.sasl_plain_username
        if k.sasl_plain_password:
            options["sasl_plain_password"] = k.sasl_plain_password.get_secret_value()
    if k.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context
        options["ssl_context"] = create_ssl_context(
            cafile=k.ssl_cafile, certfile=k.ssl_certfile, keyfile=k.ssl_keyfile)
    return options


def register_secrets(value: Any) -> None:
    """Teach the redactor every SecretStr in the config tree."""
    if isinstance(value, SecretStr):
        redact.register(value.get_secret_value())
    elif hasattr(value, "__pydantic_fields__"):
        for name in type(value).model_fields:
            register_secrets(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            register_secrets(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and isinstance(key, str) and redact.names_credential(key):
                redact.register(item)  # e.g. a webhook's {"X-Api-Key": "..."} header
            else:
                register_secrets(item)


class Router:
    def __init__(self, config: Config, config_path: str | Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        register_secrets(config)
        self.stats = Stats()
        self.tracker = Tracker()
        self.stats.in_flight = lambda: self.tracker.in_flight
        self.destinations: dict[str, Destination] = {}
        self.retry_sources: dict[str, Source] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.started = False
        self.reloading = asyncio.Lock()  # SIGHUP and the API: one reload at a time
        self.stopping = asyncio.Event()
        self.last_tick = time.monotonic()
        self.producer: AIOKafkaProducer | None = None
        self.source: Source | None = None
        self.pipeline: Pipeline | None = None
        self.outbox: Outbox | None = None
        self.record_limits: dict[str, int] = {}  # its own topics: max.message.bytes
        self.server: Any = None

    # -- building ---------------------------------------------------------------------
    async def start(self) -> None:
        """Build everything and join the group. The operator's server comes up first, so
        that while Kafka is awaited ``/healthz`` answers and ``/readyz`` says not ready;
        if ``stop()`` comes meanwhile, it returns with ``started`` still False."""
        cfg = self.config
        if cfg.server.listen and self.server is None:
            from router.server import start_server
            self.server = await start_server(self, cfg.server.listen)
        if "housekeeping" not in self.tasks:  # ticks for /healthz through a long group join
            self.tasks["housekeeping"] = asyncio.get_running_loop().create_task(
                self._housekeeping())
        if not await self._reach_kafka():
            return
        self.producer = outbox_producer(kafka_options(cfg), cfg.kafka.max_event_bytes)
        await self.producer.start()
        self.outbox = Outbox(self.producer, cfg.kafka.dead_letter_topic,
                             cfg.kafka.retry_topic_prefix, self.stats, self.record_limits)
        for dest_cfg in cfg.destinations:
            if dest_cfg.enabled:
                await self._add_destination(dest_cfg)
        self.pipeline = Pipeline(cfg, list(self.destinations.values()), self.outbox,
                                 self.stats, self.tracker)
        k = cfg.kafka
        consumer = AIOKafkaConsumer(**kafka_options(cfg), group_id=k.group_id,
                                    enable_auto_commit=False,
                                    auto_offset_reset=k.auto_offset_reset,
                                    max_partition_fetch_bytes=max(1_048_576, k.max_event_bytes))
        pipeline = self.pipeline
        self.source = Source(consumer, list(k.topics),
                             lambda _c, tp, records: pipeline.intake(tp, records),
                             self.tracker, max_in_flight=k.max_in_flight_events,
                             commit_interval_ms=k.commit_interval_ms,
                             max_records=k.fetch_max_records, on_commit=self._on_commit,
                             on_revoke=self._on_revoke)
        await self.source.start()
        for retry_source in self.retry_sources.values():
            await retry_source.start()
        # Events are acyclic dicts freed by reference counting; with thousands in flight
        # the default cyclic-GC thresholds rescan them constantly. Freeze what start-up
        # built and collect rarely (docs/performance.md).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        self.started = True
        log.info("Router started.", destinations=sorted(self.destinations),
                 topics=list(k.topics), group_id=k.group_id)

    async def _reach_kafka(self) -> bool:
        """Wait until a broker answers (and create the missing topics), retrying every
        1 s doubling to 30 s with one log line each time: Kafka starting after the router
        (a compose file, a broker restart) is not a crash. False if ``stop()`` came
        first."""
        cfg = self.config
        delay = 1.0
        while not self.stopping.is_set():
            try:
                # its admin client is the first contact
                await self._ensure_topics(cfg, [d.name for d in cfg.destinations
                                                if d.enabled])
                return True
            except KafkaConnectionError as exc:
                log.warning("Kafka is not reachable yet; retrying.",
                            bootstrap_servers=cfg.kafka.bootstrap_servers,
                            error=str(exc), retry_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, 30.0)
        return False

    async def _ensure_topics(self, cfg: Config, destinations: list[str]) -> None:
        """Create the missing topics (``kafka.create_topics``) and learn the record size
        limits of the router's own, which the outbox keeps its writes within."""
        k = cfg.kafka
        own = [k.dead_letter_topic, *(f"{k.retry_topic_prefix}.{d}" for d in destinations)]
        if k.create_topics:
            limits = await topics.ensure(kafka_options(cfg), [*k.topics, *own],
                                         k.created_topic_partitions,
                                         k.created_topic_replication, sources=list(k.topics),
                                         min_record_bytes=k.max_event_bytes,
                                         keep=k.dead_letter_topic)
        else:
            limits = await topics.record_limits(kafka_options(cfg), own)
        self.record_limits.update({t: n for t, n in limits.items() if t in own})

    async def _add_destination(self, cfg: DestinationBase) -> Destination:
        assert self.outbox is not None
        connector = cfg.connector
        stats = self.stats.destination(cfg.name)
        stats.paused = 0
        if connector.sender is not None:
            sender = connector.sender(cfg.settings)  # type: ignore[attr-defined]
            if hasattr(sender, "on_load"):  # a warehouse loader: how it loaded each batch

                def on_load(how: str) -> None:
                    stats.loads[how] += 1

                sender.on_load = on_load
        else:
            sender = HttpSender(connector, cfg.settings,  # type: ignore[attr-defined]
                                concurrency=cfg.delivery.concurrency,
                                timeout_s=cfg.delivery.timeout_s, max_bytes=cfg.max_bytes)

            def on_response(status: int, seconds: float) -> None:
                stats.requests[status] += 1
                stats.request_latency.observe(seconds)

            sender.on_response = on_response
        await sender.start()
        worker = Worker(cfg, sender, self.outbox, stats)
        dest = Destination(cfg, build_route(cfg), worker, stats)
        self.destinations[cfg.name] = dest
        k = self.config.kafka
        tracker = Tracker()
        driver = RetryDriver(dest, tracker, stats, k.max_event_bytes)
        consumer = AIOKafkaConsumer(**kafka_options(self.config),
                                    group_id=f"{k.group_id}.retry.{cfg.name}",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        self.retry_sources[cfg.name] = Source(
            consumer, [self.outbox.retry_topic(cfg.name)], driver.intake, tracker,
            max_in_flight=max(1000, cfg.max_events * 2), commit_interval_ms=k.commit_interval_ms,
            max_records=min(1000, cfg.max_events), name=f"retry:{cfg.name}")
        return dest

    def _on_revoke(self, tps: Any) -> None:
        for tp in tps:
            self.stats.committed.pop((tp.topic, tp.partition), None)
            self.stats.lag.pop((tp.topic, tp.partition), None)

    def _on_commit(self, offsets: dict[Any, int]) -> None:
        for tp, offset in offsets.items():
            self.stats.committed[(tp.topic, tp.partition)] = offset

    # -- running ----------------------------------------------------------------------
    async def run(self, install_signals: bool = True) -> None:
        """Run until stop() (or SIGTERM/SIGINT); SIGHUP reloads the config."""
        loop = asyncio.get_running_loop()
        if install_signals:  # first: a SIGTERM while Kafka is awaited stops cleanly too
            loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
            loop.add_signal_handler(signal.SIGINT, self.stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        if not self.started:
            try:
                await self.start()
            finally:
                if not self.started:  # stopped (or failed) before it ran: close what it opened
                    await self.shutdown()
            if not self.started:
                return
        assert self.source is not None
        self.tasks["input"] = loop.create_task(self.source.run())
        for name, retry_source in self.retry_sources.items():
            self.tasks[f"retry:{name}"] = loop.create_task(retry_source.run())
        if "housekeeping" not in self.tasks:
            self.tasks["housekeeping"] = loop.create_task(self._housekeeping())
        stop = loop.create_task(self.stopping.wait())
        try:
            while not self.stopping.is_set():
                done, _ = await asyncio.wait({stop, *self.tasks.values()},
                                             return_when=asyncio.FIRST_COMPLETED)
                for name, task in list(self.tasks.items()):
                    if task in done and not task.cancelled() and task.exception():
                        log.error("A router task crashed; stopping.", task=name,
                                  error=repr(task.exception()))
                        self.stopping.set()
        finally:
            stop.cancel()
            await self.shutdown()

    def _reload_soon(self) -> None:
        if not self.started:
            log.warning("Reload ignored: the router has not started yet.")
            return
        task = asyncio.get_running_loop().create_task(self.reload())
        self.tasks[f"reload:{id(task)}"] = task
        task.add_done_callback(lambda t: self.tasks.pop(f"reload:{id(t)}", None))

    async def _housekeeping(self) -> None:
        while True:
            self.last_tick = time.monotonic()
            pipeline, source = self.pipeline, self.source
            if pipeline is not None and pipeline.suppression is not None:
                pipeline.suppression.reload_if_changed()
            if source is not None:
                self.stats.lag = source.lag()
            for name, retry_source in self.retry_sources.items():
                self.stats.destination(name).retry_backlog = sum(retry_source.lag().values())
            await asyncio.sleep(0.5)

    def stop(self) -> None:
        self.stopping.set()

    async def shutdown(self) -> None:
        """Stop fetching, drain in-flight work within the grace period, commit, close."""
        grace = self.config.kafka.drain_grace_s
        log.info("Stopping: draining in-flight events.", grace_s=grace,
                 in_flight=self.tracker.in_flight)
        workers = [d.worker for d in self.destinations.values()]
        for name in [n for n in self.tasks if n != "housekeeping"]:
            self.tasks[name].cancel()
        if self.source is not None:
            await self.source.drain_and_stop(grace, workers)
        for retry_source in self.retry_sources.values():
            await retry_source.drain_and_stop(min(grace, 5.0), workers)
        for dest in self.destinations.values():
            await dest.worker.drain(1.0)
        if self.pipeline is not None:
            await asyncio.gather(*self.pipeline.background, return_exceptions=True)
        if "housekeeping" in self.tasks:
            self.tasks.pop("housekeeping").cancel()
        if self.producer is not None:
            await self.producer.stop()
        for dest in self.destinations.values():
            await dest.worker.sender.close()
        if self.server is not None:
            await self.server.cleanup()
        gc.unfreeze()
        log.info("Router stopped.", unsettled=self.tracker.in_flight)

    # -- operating --------------------------------------------------------------------
    async def reload(self) -> tuple[bool, str]:
        """Re-read the config; swap destinations without losing events. An invalid
        config is refused and the running one kept."""
        if self.config_path is None:
            return False, "the router was not started from a config file"
        if not self.started:
            return False, "the router has not started yet (it is waiting for Kafka)"
        try:
            new = config_mod.load(self.config_path)
        except ConfigError as exc:
            log.error("Reload refused: the new config is invalid; keeping the running one.",
                      problems=exc.problems)
            return False, str(exc)
        from router.reload import apply
        async with self.reloading:
            try:
                return await apply(self, new)
            except Exception as exc:  # e.g. Kafka refused to create a new retry topic
                log.exception("Reload failed; restart the router to apply the config.")
                return False, f"reload failed: {exc!r}"

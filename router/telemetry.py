"""Logs and metrics: one vocabulary (docs/metrics.md).

The hot path increments plain Python integers (``Stats``); Prometheus reads them at
scrape time through a custom collector, so counting costs nothing like a labelled
``Counter.inc()`` per event. Histograms are small bucket arrays observed per batch.
"""

from __future__ import annotations

import bisect
import logging
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from router.logs import configure_stdlib
from router.redact import redact

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)


def configure_logging(level: str = "info", stream: Any = None) -> None:
    """JSON lines on stderr: the router's own (structlog) and the standard library's
    (libraries, the warehouse loaders: ``router.logs``) alike."""
    configure_stdlib(level, stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
            _redacted,  # the rendered line: secrets out of messages and tracebacks too
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def _redacted(_logger: Any, _method: str, line: str) -> str:
    return redact(line)


def logger(name: str) -> Any:
    return structlog.get_logger(name)


class Histogram:
    __slots__ = ("bounds", "bounds_ms", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.bounds_ms = tuple(bound * 1000 for bound in bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += n
        self.total += value * n
        self.count += n

    def observe_ages(self, times_ms: list[int], now_ms: float) -> None:
        """``observe`` the age in seconds, at ``now_ms``, of each epoch-ms time."""
        if not times_ms:
            return
        counts, find = self.counts, bisect.bisect_left
        bounds_ms = self.bounds_ms
        if max(times_ms) <= now_ms:  # no clock skew: no clamping, all of it in C
            # sorted, a bucket's count is the difference of two bisections (age <= bound
            # is then >= now - bound), not one bisection per event
            times, n, below = sorted(times_ms), len(times_ms), 0
            for i, bound in enumerate(bounds_ms):
                within = n - find(times, now_ms - bound)
                counts[i] += within - below
                below = within
            counts[-1] += n - below
            self.total += (now_ms * n - sum(times_ms)) / 1000
        else:
            for then in times_ms:
                age = max(0.0, now_ms - then)
                counts[find(bounds_ms, age)] += 1
                self.total += age / 1000
        self.count += len(times_ms)

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (for the live page)."""
        if not self.count:
            return None
        rank, seen = q * self.count, 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return self.bounds[i] if i < len(self.bounds) else float("inf")
        return float("inf")

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, c in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += c
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class DestinationStats:
    """Counters for one destination; the worker and the stages bump the fields."""

    def __init__(self) -> None:
        self.routed = 0
        self.delivered = 0
        self.rejected = 0
        self.retried = 0
        self.parked = 0
        self.spilled = 0  # parked because the destination fell behind the stream
        self.dead_lettered = 0
        self.filtered: defaultdict[str, int] = defaultdict(int)
        self.requests: defaultdict[int, int] = defaultdict(int)  # by HTTP status (0 = error)
        self.loads: defaultdict[str, int] = defaultdict(int)  # warehouse batches, by how
        self.in_flight = 0
        self.circuit = 0  # 0 closed, 1 half-open, 2 open
        self.paused = 0
        self.retry_backlog = 0
        self.request_latency = Histogram(LATENCY_BUCKETS_S)
        self.end_to_end = Histogram(LATENCY_BUCKETS_S)
        self.batch_size = Histogram(BATCH_BUCKETS)


class Stats:
    def __init__(self) -> None:
        self.received = 0
        self.invalid: defaultdict[str, int] = defaultdict(int)
        self.dropped: defaultdict[str, int] = defaultdict(int)  # global stages
        self.derived_message_ids = 0
        self.dead_lettered = 0
        self.in_flight: Callable[[], int] = lambda: 0
        self.lag: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.destinations: dict[str, DestinationStats] = {}

    def destination(self, name: str) -> DestinationStats:
        stats = self.destinations.get(name)
        if stats is None:
            stats = self.destinations[name] = DestinationStats()
        return stats


def _counter(name: str, doc: str, labels: list[str], rows: Any) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in rows:
        family.add_metric(list(label_values), value)
    return family


def _gauge(name: str, doc: str, labels: list[str], rows: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in rows:
        family.add_metric(list(label_values), value)
    return family


class StatsCollector(Collector):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        s = self.stats
        d = s.destinations
        yield _counter("router_received_events", "Events consumed from Kafka.", [],
                       [((), s.received)])
        yield _counter("router_invalid_events", "Events that failed decoding, by reason.",
                       ["reason"], [((r,), v) for r, v in s.invalid.items()])
        yield _counter("router_dropped_events", "Events dropped by a global stage.",
                       ["reason"], [((r,), v) for r, v in s.dropped.items()])
        yield _counter("router_dead_letter_writes", "Records written to the dead-letter "
                       "topic (invalid input, tracking-plan blocks and every destination).",
                       [], [((), s.dead_lettered)])
        yield _counter("router_derived_message_ids", "Events that arrived without messageId.",
                       [], [((), s.derived_message_ids)])
        yield _gauge("router_in_flight_events", "Consumed events not yet settled.", [],
                     [((), s.in_flight())])
        yield _gauge("router_consumer_lag", "Records behind the partition's end.",
                     ["topic", "partition"],
                     [((t, str(p)), v) for (t, p), v in s.lag.items()])
        yield _gauge("router_committed_offset", "Last committed offset.",
                     ["topic", "partition"],
                     [((t, str(p)), v) for (t, p), v in s.committed.items()])
        for field, doc in (("routed", "Events that passed the destination's rules."),
                           ("delivered", "Events the destination accepted."),
                           ("rejected", "Events the destination refused (dead-lettered)."),
                           ("retried", "Delivery attempts retried."),
                           ("parked", "Events parked in the destination's retry topic."),
                           ("spilled", "Events parked because the destination fell behind "
                            "the stream or stalled (counted in parked too)."),
                           ("dead_lettered", "Events dead-lettered for the destination.")):
            yield _counter(f"router_{field}_events", doc, ["destination"],
                           [((n,), getattr(x, field)) for n, x in d.items()])
        yield _counter("router_filtered_events", "Events not sent to a destination, by reason.",
                       ["destination", "reason"],
                       [((n, r), v) for n, x in d.items() for r, v in x.filtered.items()])
        yield _counter("router_requests", "Requests to a destination, by HTTP status "
                       "(0 = connection error or timeout).", ["destination", "status"],
                       [((n, str(c)), v) for n, x in d.items() for c, v in x.requests.items()])
        yield _counter("router_warehouse_batches", "Warehouse batches loaded, by how "
                       "(sql: rows built by the database; rows: row by row).",
                       ["destination", "load"],
                       [((n, h), v) for n, x in d.items() for h, v in x.loads.items()])
        yield _gauge("router_destination_in_flight", "Events queued or sending.",
                     ["destination"], [((n,), x.in_flight) for n, x in d.items()])
        yield _gauge("router_circuit_state", "0 closed, 1 half-open, 2 open.",
                     ["destination"], [((n,), x.circuit) for n, x in d.items()])
        yield _gauge("router_destination_paused", "1 when paused by an operator.",
                     ["destination"], [((n,), x.paused) for n, x in d.items()])
        yield _gauge("router_retry_backlog", "Records waiting in the retry topic.",
                     ["destination"], [((n,), x.retry_backlog) for n, x in d.items()])
        for field, name, doc in (
                ("request_latency", "router_request_seconds", "Request latency."),
                ("end_to_end", "router_end_to_end_seconds",
                 "Kafka append time to delivered."),
                ("batch_size", "router_batch_events", "Events per batch sent.")):
            family = HistogramMetricFamily(name, doc, labels=["destination"])
            for n, x in d.items():
                h: Histogram = getattr(x, field)
                family.add_metric([n], h.buckets(), h.total)
            yield family

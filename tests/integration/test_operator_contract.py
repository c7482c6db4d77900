"""What an operator sees, checked black-box against docs/metrics.md and
docs/operations.md: a real router process (``event-router run``) on the session's Kafka,
three webhook destinations (one rejects some events, one filters, one is down for a
while), then /metrics, /api/*, the health endpoints, the admin API and the log lines.

The checks are the documents' promises: every listed metric with its type and labels,
the counts adding up per destination, lag per partition, the histogram buckets, the
JSON fields of the API, the auth answers, and no secret anywhere.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from router.demo import generate
from router.telemetry import BATCH_BUCKETS, LATENCY_BUCKETS_S
from tests.fakes.webhook import WebhookSink
from tests.integration.harness import (
    committed,
    config_dict,
    end_offsets,
    eventually,
    produce,
    read_all,
    running,
    spawn,
    webhook,
    write_config,
)

pytestmark = pytest.mark.kafka

TOKEN = "adm-contract-TOKEN-77"
HOOK_SECRET = "whsec-contract-SECRET-88"
HEADER_TOKEN = "hdr-contract-TOKEN-99"

# docs/metrics.md, as an operator reads it: name (as scraped) -> (type, labels)
DOCUMENTED: dict[str, tuple[str, set[str]]] = {
    "router_received_events": ("counter", set()),
    "router_dead_letter_writes": ("counter", set()),
    "router_invalid_events": ("counter", {"reason"}),
    "router_dropped_events": ("counter", {"reason"}),
    "router_derived_message_ids": ("counter", set()),
    "router_in_flight_events": ("gauge", set()),
    "router_consumer_lag": ("gauge", {"topic", "partition"}),
    "router_committed_offset": ("gauge", {"topic", "partition"}),
    "router_routed_events": ("counter", {"destination"}),
    "router_delivered_events": ("counter", {"destination"}),
    "router_filtered_events": ("counter", {"destination", "reason"}),
    "router_rejected_events": ("counter", {"destination"}),
    "router_dead_lettered_events": ("counter", {"destination"}),
    "router_retried_events": ("counter", {"destination"}),
    "router_parked_events": ("counter", {"destination"}),
    "router_spilled_events": ("counter", {"destination"}),
    "router_requests": ("counter", {"destination", "status"}),
    "router_warehouse_batches": ("counter", {"destination", "load"}),
    "router_destination_in_flight": ("gauge", {"destination"}),
    "router_circuit_state": ("gauge", {"destination"}),
    "router_destination_paused": ("gauge", {"destination"}),
    "router_retry_backlog": ("gauge", {"destination"}),
    "router_request_seconds": ("histogram", {"destination"}),
    "router_end_to_end_seconds": ("histogram", {"destination"}),
    "router_batch_events": ("histogram", {"destination"}),
}
COUNTERS = ("routed", "delivered", "rejected", "dead_lettered", "retried", "parked", "spilled")

Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def call(method: str, url: str, auth: str | None = None,
               body: bytes | None = None) -> tuple[int, Any, str]:
    """(status, parsed JSON or text, raw text) of one request."""
    headers = {"Authorization": auth} if auth is not None else {}
    async with aiohttp.ClientSession() as http, http.request(
            method, url, headers=headers, data=body) as resp:
        text = await resp.text()
        parsed = orjson.loads(text) if resp.content_type == "application/json" else text
        return resp.status, parsed, text


def scrape(text: str) -> tuple[dict[str, Any], Scrape]:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    return families, samples


def value(samples: Scrape, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Scrape, name: str, **labels: str) -> float:
    """Sum of a metric's series that carry ``labels`` (whatever their other labels)."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= set(lbls))


async def test_what_an_operator_sees(kafka_bootstrap: str, make_topic: Any, tmp_path: Path,
                                     free_port: int) -> None:
    topic = await make_topic(partitions=2)
    events = list(generate(200, seed=77))
    tracks = [e for e in events if e["type"] == "track"]
    # consent is checked before the `where` filter (docs/routing.md)
    refused = [e for e in events
               if not e["context"]["consent"]["categoryPreferences"].get("Analytics")]
    consented = [e for e in tracks if e not in refused]
    assert 0 < len(consented) < len(tracks)  # both filter reasons are exercised
    rejected = {e["messageId"] for e in events[:5]}
    duplicates = events[10:13]  # the same messageIds again: dropped by dedupe
    invalid = [b"not json", b'{"type": "track", "event": "E"}']  # no userId/anonymousId
    base = f"http://127.0.0.1:{free_port}"

    every, some, flaky = WebhookSink(secret=HOOK_SECRET), WebhookSink(), WebhookSink()
    every.reject_ids = rejected
    async with every, some, flaky:
        cfg = config_dict(kafka_bootstrap, topic, [
            {**webhook("every", f"{every.url}/events"),
             "settings": {"url": f"{every.url}/events", "secret": HOOK_SECRET,
                          "headers": {"X-Api-Key": HEADER_TOKEN}}},
            webhook("some", f"{some.url}/events", where='type = "track"',
                    consent_categories=["Analytics"], delivery={"park_backoff_s": 1}),
            webhook("flaky", f"{flaky.url}/events",
                    delivery={"inline_retries": 1, "backoff_base_s": 0.05,
                              "park_backoff_s": 0.3, "circuit_open_s": 0.5})])
        cfg["server"] = {"listen": f"127.0.0.1:{free_port}", "admin_token": TOKEN}
        path = write_config(tmp_path / "router.yaml", cfg)
        log = tmp_path / "router.log"
        proc = spawn(path, log)
        outputs: list[str] = []
        try:
            await eventually(lambda: _answers(f"{base}/readyz", 200), 30)
            status, body, _ = await call("GET", f"{base}/healthz")
            assert (status, body) == (200, {"ok": True})
            assert (await call("GET", f"{base}/readyz"))[:2] == (200, {"ready": True})

            flaky.down_until = asyncio.get_running_loop().time() + 1.5  # 503s, then fine
            await produce(kafka_bootstrap, topic, [*events, *invalid])
            await produce(kafka_bootstrap, topic, duplicates)

            async def settled() -> bool:
                _, stats, _ = await call("GET", f"{base}/api/stats")
                rows = {d["name"]: d for d in stats["destinations"]}
                return (stats["received"] == len(events) + len(invalid) + len(duplicates)
                        and stats["in_flight"] == 0
                        and rows["flaky"]["delivered"] == len(events)
                        and all(r["retry_backlog"] == 0 for r in rows.values()))

            await eventually(settled, 40, 0.25)
            await asyncio.sleep(0.6)  # one more housekeeping round for the lag gauges

            # -- /metrics: valid text format, every documented family, right type/labels
            status, text, _ = await call("GET", f"{base}/metrics")
            assert status == 200
            outputs.append(text)
            families, m = scrape(text)
            for name, (kind, labels) in DOCUMENTED.items():
                assert name in families, f"{name} is documented but not on /metrics"
                family = families[name]
                assert family.type == kind, (name, family.type)
                exposed = f"{name}_total" if kind == "counter" else name
                assert f"# HELP {exposed} " in text and f"# TYPE {exposed} {kind}\n" in text
                for sample in family.samples:
                    extra = {"le"} if sample.name.endswith("_bucket") else set()
                    assert set(sample.labels) == labels | extra, (sample.name, sample.labels)
            undocumented = {n for n in families if n.startswith("router_")} - set(DOCUMENTED)
            assert not undocumented, f"on /metrics but not in docs/metrics.md: {undocumented}"

            # -- the counts add up (docs/metrics.md, "Per destination" and "Notes")
            received = value(m, "router_received_events_total")
            invalid_n = total(m, "router_invalid_events_total")
            assert received == len(events) + len(invalid) + len(duplicates)
            assert invalid_n == len(invalid)
            assert value(m, "router_invalid_events_total", reason="invalid_json") == 1
            assert value(m, "router_invalid_events_total", reason="missing_identity") == 1
            assert value(m, "router_dropped_events_total", reason="duplicate") == len(duplicates)
            for name in ("every", "some", "flaky"):
                routed = value(m, "router_routed_events_total", destination=name)
                filtered = total(m, "router_filtered_events_total", destination=name)
                assert value(m, "router_filtered_events_total", destination=name,
                             reason="duplicate") == len(duplicates)  # global, at every one
                # each consumed record: invalid, or routed to / filtered at this one
                assert received == invalid_n + routed + filtered, name
                # settled and nothing waiting in a retry topic: each routed event was
                # delivered or dead-lettered, however often it was parked on the way
                delivered = value(m, "router_delivered_events_total", destination=name)
                dead = value(m, "router_dead_lettered_events_total", destination=name)
                assert routed == delivered + dead, name
                assert value(m, "router_rejected_events_total", destination=name) <= dead
                assert value(m, "router_destination_in_flight", destination=name) == 0
                assert value(m, "router_circuit_state", destination=name) == 0
                assert value(m, "router_destination_paused", destination=name) == 0
                # one request latency per request, one end-to-end latency per delivery
                requests = total(m, "router_requests_total", destination=name)
                assert value(m, "router_request_seconds_count", destination=name) == requests
                assert value(m, "router_end_to_end_seconds_count",
                             destination=name) == delivered
                _histogram_is_sane(m, "router_request_seconds", name, LATENCY_BUCKETS_S)
                _histogram_is_sane(m, "router_end_to_end_seconds", name, LATENCY_BUCKETS_S)
                _histogram_is_sane(m, "router_batch_events", name, BATCH_BUCKETS)
            assert value(m, "router_routed_events_total", destination="every") == len(events)
            assert value(m, "router_delivered_events_total", destination="every") == \
                len(events) - len(rejected)
            assert value(m, "router_rejected_events_total", destination="every") == \
                len(rejected)
            assert value(m, "router_batch_events_sum", destination="every") == len(events)
            assert value(m, "router_delivered_events_total", destination="some") == \
                len(consented)
            assert value(m, "router_filtered_events_total", destination="some",
                         reason="consent") == len(refused)
            assert value(m, "router_filtered_events_total", destination="some",
                         reason="filter") == len(events) - len(refused) - len(consented)
            assert value(m, "router_requests_total", destination="flaky", status="503") > 0
            assert value(m, "router_retried_events_total", destination="flaky") > 0
            assert value(m, "router_parked_events_total", destination="flaky") > 0
            assert value(m, "router_dead_lettered_events_total", destination="flaky") == 0
            assert value(m, "router_dead_letter_writes_total") == len(invalid) + len(rejected)
            assert value(m, "router_in_flight_events") == 0

            # -- consumer lag and commits: one series per input partition
            ends = await end_offsets(kafka_bootstrap, topic)
            for partition, end in ends.items():
                series = dict(topic=topic, partition=str(partition))
                assert ("router_consumer_lag", tuple(sorted(series.items()))) in m
                assert value(m, "router_consumer_lag", **series) == 0
                await eventually(lambda s=series, e=end: _committed(base, s, e), 10)

            # -- /api/stats and /api/destinations: the documented fields, the same numbers
            status, stats, raw = await call("GET", f"{base}/api/stats")
            outputs.append(raw)
            assert {"time", "state", "kafka", "received", "invalid", "in_flight", "lag",
                    "destinations"} <= set(stats)
            assert stats["state"] == "running" and stats["kafka"] == kafka_bootstrap
            assert (stats["received"], stats["invalid"], stats["lag"]) == (received, 2, 0)
            status, listing, raw = await call("GET", f"{base}/api/destinations")
            outputs.append(raw)
            assert set(listing["lag"]) == {f"{topic}:{p}" for p in ends}
            assert listing["in_flight"] == 0
            rows = {d["name"]: d for d in listing["destinations"]}
            for row in stats["destinations"]:
                name = row["name"]
                assert {*COUNTERS[1:], "filtered", "filtered_total", "p50_s", "p99_s",
                        "circuit", "paused", "retry_backlog"} <= set(row), name
                assert {"name", "type", "paused", "circuit", *COUNTERS[1:], "spilling",
                        "filtered", "in_flight", "loads", "retry_backlog"} <= set(rows[name])
                assert set(rows[name]) | {"filtered_total", "p50_s", "p99_s"} == set(row)
                assert rows[name]["type"] == "webhook" and rows[name]["circuit"] == "closed"
                for field in COUNTERS[1:]:
                    assert row[field] == value(m, f"router_{field}_events_total",
                                               destination=name), (name, field)
                assert row["filtered_total"] == sum(row["filtered"].values())
                assert row["p50_s"] in LATENCY_BUCKETS_S and row["p99_s"] in LATENCY_BUCKETS_S
                assert row["p50_s"] <= row["p99_s"]

            # -- the admin API's answers (docs/operations.md, "Admin API")
            pause = f"{base}/api/destinations/some/pause"
            for auth in (None, f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer "):
                status, body, _ = await call("POST", pause, auth)
                assert (status, body) == (401, {"error": "unauthorized"}), auth
            for url in (f"{base}/api/reload", f"{base}/api/replay",
                        f"{base}/api/destinations/nope/resume"):
                assert (await call("POST", url))[0] == 401, url  # auth before anything else
            status, body, _ = await call("POST", f"{base}/api/destinations/nope/pause",
                                         f"Bearer {TOKEN}")
            assert (status, body) == (404, {"error": "no such destination"})
            status, body, _ = await call("POST", f"{base}/api/replay", f"Bearer {TOKEN}",
                                         b"{not json")
            assert status == 400 and body["error"]
            status, body, _ = await call("POST", f"{base}/api/replay", f"Bearer {TOKEN}",
                                         b'{"destination": "nope"}')
            assert (status, body) == (404, {"error": "no destination named 'nope'"})
            status, body, _ = await call("POST", f"{base}/api/reload", f"Bearer {TOKEN}")
            assert status == 200 and body["ok"] is True and body["message"], body
            path.write_text(path.read_text() + "bogus: 1\n")
            status, body, raw = await call("POST", f"{base}/api/reload", f"Bearer {TOKEN}")
            outputs.append(raw)
            assert status == 400 and body["ok"] is False and "bogus" in body["message"]
            write_config(path, cfg)

            # -- pause and resume: parked while paused, delivered after; the gauge follows
            status, body, _ = await call("POST", pause, f"Bearer {TOKEN}")
            assert status == 200 and body["paused"] is True
            assert set(body) == set(rows["some"])  # "answers its description"
            assert (await call("POST", pause, f"Bearer {TOKEN}"))[1]["paused"] is True
            # a reload that leaves the destination unchanged keeps it paused
            assert (await call("POST", f"{base}/api/reload", f"Bearer {TOKEN}"))[0] == 200
            listing = (await call("GET", f"{base}/api/destinations"))[1]
            assert {d["name"]: d["paused"] for d in listing["destinations"]}["some"] is True
            _, m = scrape((await call("GET", f"{base}/metrics"))[1])
            assert value(m, "router_destination_paused", destination="some") == 1
            parked_before = value(m, "router_parked_events_total", destination="some")
            more = [{**e, "messageId": f"more-{i}", "type": "track", "event": "More",
                     "context": {"consent": {"categoryPreferences": {"Analytics": True}}}}
                    for i, e in enumerate(tracks[:10])]
            got = len(some.received)
            await produce(kafka_bootstrap, topic, more)
            await eventually(lambda: _metric(base, "router_parked_events_total",
                                             parked_before + len(more), destination="some"),
                             20)
            assert len(some.received) == got  # parked, not sent
            # due while still paused, they wait in the retry topic: not sent, not re-parked
            await asyncio.sleep(1.5)
            assert await _metric(base, "router_parked_events_total", parked_before + len(more),
                                 exact=True, destination="some")
            assert len(some.received) == got
            # the auth scheme is case-insensitive (RFC 9110, section 11.1)
            status, body, _ = await call("POST", f"{base}/api/destinations/some/resume",
                                         f"bearer {TOKEN}")
            assert status == 200 and body["paused"] is False
            await some.wait_for(lambda: {e["messageId"] for e in more} <= set(some.ids), 20)

            # -- a graceful stop: not ready from its first moment, still alive
            some.answering.clear()  # hold one request open so the drain takes a while
            await produce(kafka_bootstrap, topic, [{**more[0], "messageId": "last-1"}])
            await eventually(lambda: some.concurrent > 0, 10)
            proc.send_signal(signal.SIGTERM)
            await eventually(lambda: _answers(f"{base}/readyz", 503), 10)
            assert (await call("GET", f"{base}/readyz"))[1] == {"ready": False}
            assert (await call("GET", f"{base}/healthz"))[0] == 200
            assert (await call("GET", f"{base}/api/stats"))[1]["state"] == "stopping"
            some.answering.set()
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 30)
        dead = await read_all(kafka_bootstrap, f"{topic}.dlq")

    assert len(dead) == len(invalid) + len(rejected)

    # -- logs: one JSON object per line with event, level and a UTC timestamp
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    records = [orjson.loads(line) for line in lines]
    for record in records:
        assert {"event", "level", "timestamp"} <= set(record), record
        assert record["timestamp"].endswith("Z"), record
    said = [r["event"] for r in records]
    assert "Router started." in said and "Router stopped." in said
    assert any(r["event"] == "Stopping: draining in-flight events." and "in_flight" in r
               for r in records)

    # -- no secret in any answer or log line
    outputs.append(log.read_text())
    everything = "\n".join(outputs)
    for secret in (TOKEN, HOOK_SECRET, HEADER_TOKEN):
        assert secret not in everything


async def test_consumer_lag_and_in_flight_while_a_destination_holds(
        kafka_bootstrap: str, make_topic: Any, free_port: int) -> None:
    """Lag counts from the fetch position, so it is non-zero while the consumer is held
    back (here by backpressure) and at most the group's lag; /metrics, /api/stats and
    /api/destinations agree on it."""
    topic = await make_topic(partitions=2)
    base = f"http://127.0.0.1:{free_port}"
    sink = WebhookSink()
    async with sink:
        sink.answering.clear()  # every request is held: nothing settles
        cfg = config_dict(kafka_bootstrap, topic, [webhook("hook", f"{sink.url}/events")],
                          max_in_flight_events=20, fetch_max_records=10)
        cfg["server"] = {"listen": f"127.0.0.1:{free_port}"}
        async with running(cfg) as router:
            await eventually(lambda: router.source is not None
                             and router.source.assigned.is_set(), 20)
            await produce(kafka_bootstrap, topic, list(generate(200, seed=78)))

            async def held_back() -> bool:
                _, m = scrape((await call("GET", f"{base}/metrics"))[1])
                return (total(m, "router_consumer_lag") > 0
                        and value(m, "router_in_flight_events") >= 20)

            await eventually(held_back, 20)
            _, m = scrape((await call("GET", f"{base}/metrics"))[1])
            _, stats, _ = await call("GET", f"{base}/api/stats")
            _, listing, _ = await call("GET", f"{base}/api/destinations")
            lag = {int(dict(lbls)["partition"]): v for (n, lbls), v in m.items()
                   if n == "router_consumer_lag"}
            assert set(lag) == {0, 1}
            assert stats["lag"] == sum(lag.values())
            assert listing["lag"] == {f"{topic}:{p}": v for p, v in lag.items()}
            assert stats["in_flight"] == value(m, "router_in_flight_events")
            assert value(m, "router_destination_in_flight", destination="hook") > 0
            ends = await end_offsets(kafka_bootstrap, topic)
            done = await committed(kafka_bootstrap, cfg["kafka"]["group_id"], topic)
            for p, v in lag.items():  # smaller than the group lag by the events in flight
                assert 0 <= v <= ends[p] - (done[p] or 0)
            sink.answering.set()
            await sink.wait_for(lambda: len(set(sink.ids)) == 200, 30)
            await eventually(lambda: _metric(base, "router_consumer_lag", 0, exact=True,
                                             topic=topic, partition="0"), 10)

            # end-to-end latency counts from the record's timestamp: records created ten
            # minutes ago land beyond the top bucket (+Inf), and a p99 there is null
            old = list(generate(5, seed=79))
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                ago = int(time.time() * 1000) - 600_000
                for e in old:
                    await producer.send_and_wait(topic, orjson.dumps(e), timestamp_ms=ago)
            finally:
                await producer.stop()
            await sink.wait_for(lambda: len(set(sink.ids)) == 205, 20)
            await eventually(lambda: _metric(base, "router_delivered_events_total", 205,
                                             destination="hook"), 10)
            _, m = scrape((await call("GET", f"{base}/metrics"))[1])
            e2e = "router_end_to_end_seconds"
            buckets = {float(dict(lbls)["le"]): v for (n, lbls), v in m.items()
                       if n == f"{e2e}_bucket"}
            assert buckets[math.inf] - buckets[300.0] == len(old)
            assert value(m, f"{e2e}_sum", destination="hook") >= 600 * len(old)
            row = (await call("GET", f"{base}/api/stats"))[1]["destinations"][0]
            assert row["p99_s"] is None and row["p50_s"] in LATENCY_BUCKETS_S


def _histogram_is_sane(m: Scrape, name: str, destination: str,
                       bounds: tuple[float, ...]) -> None:
    """Exactly the documented buckets, cumulative, the +Inf one equal to _count."""
    buckets = sorted((float(dict(lbls)["le"]), v) for (n, lbls), v in m.items()
                     if n == f"{name}_bucket" and dict(lbls)["destination"] == destination)
    assert [b for b, _ in buckets] == [*map(float, bounds), math.inf], (name, buckets)
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), (name, destination, counts)
    assert counts[-1] == value(m, f"{name}_count", destination=destination)
    assert value(m, f"{name}_sum", destination=destination) >= 0


async def _answers(url: str, status: int) -> bool:
    try:
        return (await call("GET", url))[0] == status
    except aiohttp.ClientError:
        return False


async def _metric(base: str, name: str, want: float, exact: bool = False,
                  **labels: str) -> bool:
    _, m = scrape((await call("GET", f"{base}/metrics"))[1])
    got = value(m, name, **labels)
    return got == want if exact else got >= want


async def _committed(base: str, series: dict[str, str], end: int) -> bool:
    _, m = scrape((await call("GET", f"{base}/metrics"))[1])
    return value(m, "router_committed_offset", **series) == end

"""Four analytics destinations at once, through the real router and the session's Kafka:
Amplitude, Mixpanel, GA4 and PostHog (their contract fakes) receive one mixed stream in
their native formats; idempotency keys are stable per messageId; partial errors reject
exactly the named events (dead-lettered with reasons); the standard metrics add up."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from destinations import mixpanel, posthog
from router.events import iso
from tests.fakes.amplitude import AmplitudeFake
from tests.fakes.ga4 import GA4Fake
from tests.fakes.mixpanel import MixpanelFake
from tests.fakes.posthog import PostHogFake
from tests.integration.harness import (
    config_dict,
    eventually,
    headers,
    metrics,
    produce,
    read_all,
    running,
)

pytestmark = pytest.mark.kafka
FAST = {"backoff_base_s": 0.05, "park_backoff_s": 1, "inline_retries": 3}
BATCH = {"max_wait_ms": 100}
SILENCED_DEVICE = "dev-silenced-01"


def stream(run: str) -> list[dict[str, Any]]:
    """A mixed stream dated just now (GA4 drops events over 72 h old). Events 8-9 come
    from a device Amplitude silences; events 10-11 are dated 2 h ahead, which Mixpanel's
    /import refuses per event ("more than one hour in the future")."""
    now = datetime.now(UTC)

    def event(i: int, kind: str, user: str | None, anon: str, **fields: Any) -> dict[str, Any]:
        ahead = fields.pop("ahead_s", 0)
        out: dict[str, Any] = {
            "type": kind, "messageId": fields.pop("messageId", f"{run}-{i:02d}"),
            "anonymousId": anon, "timestamp": iso(now - timedelta(seconds=60 - i) +
                                                  timedelta(seconds=ahead)),
            "context": {"ip": "198.51.100.7", "locale": "en-GB",
                        "library": {"name": "analytics.js", "version": "5.2.0"},
                        "page": {"url": "https://shop.example.com/cart", "path": "/cart",
                                 "title": "Cart", "referrer": "https://www.example.org/"},
                        **fields.pop("context", {})},
            **fields}
        if user:
            out["userId"] = user
        return out

    products = [{"product_id": "sku-1", "name": "Mug", "price": 12.5, "quantity": 2},
                {"product_id": "sku-2", "name": "Teapot", "price": 30.0, "quantity": 1}]
    silenced = {"device": {"id": SILENCED_DEVICE, "type": "ios"}}
    return [
        event(0, "identify", "user-ana01", "anon-ana01",
              traits={"email": "ana@example.com", "firstName": "Ana", "plan": "pro"}),
        event(1, "track", "user-ana01", "anon-ana01", event="Product Viewed",
              properties={"product_id": "sku-1", "name": "Mug", "price": 12.5,
                          "currency": "EUR"}),
        event(2, "page", "user-ana01", "anon-ana01", name="Cart", category="Shop",
              properties={"url": "https://shop.example.com/cart", "title": "Cart"}),
        event(3, "track", "user-ana01", "anon-ana01", event="Order Completed",
              properties={"order_id": "ord-1", "total": 55.0, "revenue": 50.0,
                          "currency": "EUR", "tax": 5.0, "products": products}),
        event(4, "track", None, "anon-bo001", event="Button Clicked",
              properties={"label": "Sign up", "position": 3}),
        event(5, "page", None, "anon-bo001"),
        event(6, "identify", "user-cat01", "anon-cat01",
              traits={"email": "cat@example.com", "plan": "free"}),
        event(7, "track", "user-cat01", "anon-cat01", event="Video Played",
              messageId=f"video_played_{run}",  # not a Mixpanel insert id: uuid5 of it
              properties={"video_id": "v-1", "position_s": 12}),
        event(8, "track", "user-sil01", "anon-sil01", event="Button Clicked",
              context=silenced, properties={"label": "Buy"}),
        event(9, "page", "user-sil01", "anon-sil01", context=silenced, name="Home"),
        event(10, "track", "user-fut01", "anon-fut01", event="Signed Up", ahead_s=7200,
              properties={"method": "email"}),
        event(11, "track", "user-fut01", "anon-fut01", event="Product Added", ahead_s=7200,
              properties={"product_id": "sku-2", "name": "Teapot", "price": 30.0}),
    ]


def ms(event: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(event["timestamp"]).timestamp() * 1000)


def destinations(amp: AmplitudeFake, mix: MixpanelFake, ga: GA4Fake, ph: PostHogFake
                 ) -> list[dict[str, Any]]:
    common = {"batch": BATCH, "delivery": FAST}
    return [
        {"name": "amplitude", "type": "amplitude", **common,
         "settings": {"api_key": amp.api_key, "endpoint": amp.endpoint}},
        {"name": "mixpanel", "type": "mixpanel", **common,
         "settings": {"api_host": mix.url, "service_account_username": mix.username,
                      "service_account_secret": mix.secret, "project_id": mix.project_id,
                      "project_token": mix.token}},
        {"name": "ga4", "type": "ga4", **common,
         "settings": {"measurement_id": ga.measurement_id, "api_secret": ga.api_secret,
                      "endpoint": f"{ga.url}/mp/collect"}},
        {"name": "posthog", "type": "posthog", **common,
         "settings": {"api_key": ph.api_key, "host": ph.url}},
    ]


def by_destination(records: list[Any]) -> dict[str, list[tuple[str, str]]]:
    """Dead letters per destination: (messageId of the original event, reason)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for record in records:
        h = headers(record)
        out.setdefault(h.get("destination", ""), []).append(
            (orjson.loads(record.value)["messageId"], h["reason"]))
    return out


EXPECTED = {  # destination -> (delivered, rejected) per pass of the stream
    "amplitude": (10, 2), "mixpanel": (10, 2), "ga4": (10, 2), "posthog": (12, 0)}


async def test_four_analytics_destinations_native_formats_ids_partials_and_metrics(
        kafka_bootstrap: str, make_topic: Any) -> None:
    topic = await make_topic()
    run = uuid.uuid4().hex[:8]
    events = stream(run)
    ids = [e["messageId"] for e in events]
    async with AmplitudeFake() as amp, MixpanelFake() as mix, GA4Fake() as ga, \
            PostHogFake() as ph:
        amp.silence(SILENCED_DEVICE)
        cfg = config_dict(kafka_bootstrap, topic, destinations(amp, mix, ga, ph))
        cfg["pipeline"] = {"dedupe": None}  # the second pass re-sends the same messageIds
        async with running(cfg) as router:
            stats = router.stats.destinations

            def settled(passes: int) -> bool:
                return all((stats[n].delivered, stats[n].rejected) ==
                           (d * passes, r * passes) for n, (d, r) in EXPECTED.items())

            await produce(kafka_bootstrap, topic, events)
            await eventually(lambda: settled(1), 20)

            async def dead_lettered() -> bool:  # counted before the write is acked
                return len(await read_all(kafka_bootstrap, f"{topic}.dlq")) >= 6

            await eventually(dead_lettered, 10)
            dead = by_destination(await read_all(kafka_bootstrap, f"{topic}.dlq"))
            first = metrics(router)
            await produce(kafka_bootstrap, topic, events)  # the same events again
            await eventually(lambda: settled(2), 20)
            assert all(stats[n].parked == 0 for n in EXPECTED)

    # -- partial errors: exactly the named events were dead-lettered, with reasons ----
    assert sorted(dead) == ["amplitude", "ga4", "mixpanel"]
    assert sorted(m for m, _ in dead["amplitude"]) == ids[8:10]
    assert all("silenced" in r for _, r in dead["amplitude"])
    assert sorted(m for m, _ in dead["mixpanel"]) == ids[10:12]
    assert all("properties.time" in r and "future" in r for _, r in dead["mixpanel"])
    assert sorted(m for m, _ in dead["ga4"]) == sorted([ids[0], ids[6]])
    assert all("GA4 has no identify call" in r for _, r in dead["ga4"])

    # -- Amplitude: HTTP V2 events; the silenced device's events never ingested -------
    amp_events = {e["insert_id"]: e for e in amp.received}
    assert sorted(amp_events) == sorted(ids[:8] + ids[10:])
    order = amp_events[ids[3]]
    assert (order["event_type"], order["user_id"], order["device_id"]) == (
        "Order Completed", "user-ana01", "anon-ana01")
    assert order["time"] == ms(events[3]) and order["revenue"] == 50.0
    assert order["revenueType"] == "Purchase" and len(order["event_properties"]["products"]) == 2
    assert amp_events[ids[0]]["event_type"] == "$identify"
    assert amp_events[ids[0]]["user_properties"] == {"$set": events[0]["traits"]}
    assert amp_events[ids[2]]["event_type"] == "Viewed Shop Cart Page"
    assert amp_events[ids[5]]["event_type"] == "Loaded a Page"
    assert "user_id" not in amp_events[ids[4]] and amp_events[ids[4]]["device_id"] == "anon-bo001"
    assert all(e.get("device_id") != SILENCED_DEVICE for e in amp.received)

    # -- Mixpanel: /import events (gzip, service account) and Engage $set profiles ----
    imported = {e["properties"]["$insert_id"]: e for e in mix.received}
    expected_insert_ids = {mixpanel.insert_id(m) for m in ids[1:6] + ids[7:10]}
    assert set(imported) == expected_insert_ids
    assert mixpanel.insert_id(ids[7]) != ids[7]  # the underscore id became a uuid5
    props = imported[ids[3]]["properties"]
    assert imported[ids[3]]["event"] == "Order Completed"
    assert (props["distinct_id"], props["time"], props["ip"]) == (
        "user-ana01", ms(events[3]), "198.51.100.7")
    assert imported[ids[2]]["event"] == "Viewed Cart"
    assert imported[ids[4]]["properties"]["distinct_id"] == "anon-bo001"
    assert set(mix.encodings) == {"gzip"}
    profiles = {p["$distinct_id"]: p for p in mix.profiles}
    assert sorted(profiles) == ["user-ana01", "user-cat01"]
    assert profiles["user-ana01"]["$set"] == {"$email": "ana@example.com",
                                              "$first_name": "Ana", "plan": "pro"}
    assert profiles["user-ana01"]["$token"] == mix.token

    # -- GA4: Measurement Protocol events; nothing the real server would drop ---------
    assert ga.invalid == []
    names = Counter(e["name"] for e in ga.received)
    assert names == Counter({"view_item": 2, "page_view": 6, "purchase": 2,
                             "button_clicked": 4, "video_played": 2, "sign_up": 2,
                             "add_to_cart": 2})
    purchase = next(e for e in ga.received if e["name"] == "purchase")
    assert (purchase["client_id"], purchase["user_id"]) == ("anon-ana01", "user-ana01")
    assert abs(purchase["timestamp_micros"] - ms(events[3]) * 1000) < 1000
    p = purchase["params"]
    assert (p["transaction_id"], p["value"], p["currency"], p["tax"]) == ("ord-1", 55.0,
                                                                         "EUR", 5.0)
    assert [i["item_id"] for i in p["items"]] == ["sku-1", "sku-2"]
    view = next(e for e in ga.received if e["name"] == "view_item")
    assert view["params"]["items"] == [{"item_id": "sku-1", "item_name": "Mug", "price": 12.5}]
    assert next(e for e in ga.received if e["name"] == "sign_up")["params"]["method"] == "email"

    # -- PostHog: capture batch; identify merges the anonymous id ---------------------
    assert ph.invalid == []
    captured = {e["uuid"]: e for e in ph.received}
    assert set(captured) == {str(uuid.uuid5(posthog.NAMESPACE, m)) for m in ids}
    identify = captured[str(uuid.uuid5(posthog.NAMESPACE, ids[0]))]
    assert identify["event"] == "$identify" and identify["distinct_id"] == "user-ana01"
    assert identify["properties"]["$set"] == events[0]["traits"]
    assert identify["properties"]["$anon_distinct_id"] == "anon-ana01"
    pageview = captured[str(uuid.uuid5(posthog.NAMESPACE, ids[2]))]
    assert pageview["event"] == "$pageview"
    assert pageview["properties"]["$current_url"] == "https://shop.example.com/cart"
    assert captured[str(uuid.uuid5(posthog.NAMESPACE, ids[4]))]["distinct_id"] == "anon-bo001"

    # -- idempotency keys are stable: the second pass carried the very same ids ------
    for key, received in (("insert_id", amp.received),
                          ("uuid", ph.received)):
        counts = Counter(e[key] for e in received)
        assert set(counts.values()) == {2}, f"{key} not sent exactly twice: {counts}"
    mix_counts = Counter(e["properties"]["$insert_id"] for e in mix.received)
    assert set(mix_counts.values()) == {2}
    for key, received in (("insert_id", amp.received), ("uuid", ph.received)):
        copies: dict[str, list[Any]] = {}
        for e in received:
            copies.setdefault(e[key], []).append(e)
        assert all(a == b for a, b in copies.values()), f"a re-sent {key} event changed"

    # -- the standard metrics, as scraped after the first pass -------------------------
    for name, (delivered, rejected) in EXPECTED.items():
        label = (("destination", name),)
        assert first[("router_delivered_events_total", label)] == delivered
        assert first[("router_rejected_events_total", label)] == rejected
        assert first[("router_dead_lettered_events_total", label)] == rejected
        assert first[("router_end_to_end_seconds_count", label)] == delivered
        assert first[("router_request_seconds_count", label)] >= 1
        assert first[("router_batch_events_count", label)] >= 1
    status = {(dict(lbl)["destination"], dict(lbl)["status"]): v
              for (n, lbl), v in first.items() if n == "router_requests_total"}
    assert status[("amplitude", "400")] >= 1 and status[("amplitude", "200")] >= 1
    assert status[("mixpanel", "400")] >= 1  # the /import partial
    assert status[("ga4", "204")] >= 1 and ("ga4", "400") not in status
    assert first[("router_retried_events_total", (("destination", "amplitude"),))] >= 1
    assert first[("router_retried_events_total", (("destination", "mixpanel"),))] == 0
    assert first[("router_received_events_total", ())] == len(events)

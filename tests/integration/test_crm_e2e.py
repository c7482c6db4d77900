"""Three CRMs at once, through the real router and the session's Kafka: HubSpot, Braze and
Salesforce (their contract fakes). Identify and track calls become the right CRM calls
keyed by the right identity; events without the identifier a CRM needs are dead-lettered
with a reason and counted; a per-record error rejects only its record; 429s carrying the
vendor's rate-limit headers are waited out and delivered; Salesforce's transient record
errors and expired sessions are retried."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.fakes.braze import BrazeFake
from tests.fakes.hubspot import CONTACT_PROPERTIES, HubSpotFake
from tests.fakes.salesforce import SalesforceFake
from tests.integration.harness import (
    config_dict,
    eventually,
    headers,
    produce,
    read_all,
    running,
)

pytestmark = pytest.mark.kafka
FAST = {"backoff_base_s": 0.05, "park_backoff_s": 1, "inline_retries": 4}
BATCH = {"max_wait_ms": 100}
EVENTS = {"Order Completed": "pe123_order_completed", "Demo Requested": "pe123_demo_requested"}
CONTACTS = "/crm/v3/objects/contacts/batch/upsert"


def fakes() -> tuple[HubSpotFake, BrazeFake, SalesforceFake]:
    hubspot = HubSpotFake(token="pat-test", events=set(EVENTS.values()),
                          contact_properties=CONTACT_PROPERTIES | {"segment_user_id"})
    return hubspot, BrazeFake(api_key="braze-key"), SalesforceFake("cid", "csecret")


def destinations(hub: HubSpotFake, braze: BrazeFake, sf: SalesforceFake
                 ) -> list[dict[str, Any]]:
    common = {"batch": BATCH, "delivery": FAST}
    return [
        {"name": "hubspot", "type": "hubspot", **common,
         "settings": {"access_token": hub.token, "base_url": hub.url,
                      # `plan_tier` does not exist in the portal: HubSpot refuses that input
                      "property_map": {"firstName": "firstname", "lastName": "lastname",
                                       "company": "company", "plan": "plan_tier"},
                      "user_id_property": "segment_user_id", "event_map": EVENTS}},
        {"name": "braze", "type": "braze", **common,  # no alias_label: userId required
         "settings": {"api_key": braze.api_key, "rest_endpoint": braze.url}},
        {"name": "salesforce", "type": "salesforce", **common,
         "settings": {"instance_url": sf.url, "client_id": sf.client_id,
                      "client_secret": sf.client_secret, "sobject": "Lead",
                      "track_object": "Task",
                      "track_field_map": {"event": "Subject",
                                          "properties.order_id": "Description"},
                      "track_values": {"Status": "Completed"},
                      "track_relationship": "Who"}},
    ]


class Factory:
    def __init__(self, run: str) -> None:
        self.run, self.n, self.now = run, 0, datetime.now(UTC)

    def __call__(self, kind: str, user: str | None, **fields: Any) -> dict[str, Any]:
        self.n += 1
        anon = f"anon-{user or 'x'}-{self.n}"
        event = {"type": kind, "messageId": f"{self.run}-{self.n:02d}", "anonymousId": anon,
                 "timestamp": (self.now - timedelta(seconds=60 - self.n)).isoformat(
                     timespec="milliseconds").replace("+00:00", "Z"), **fields}
        if user:
            event["userId"] = user
        return event


def person(email: str | None, first: str, last: str | None = None,
           company: str | None = None, **more: Any) -> dict[str, Any]:
    traits = {"email": email, "firstName": first, "lastName": last, "company": company, **more}
    return {k: v for k, v in traits.items() if v is not None}


def order(email: str | None, order_id: str, currency: str = "EUR") -> dict[str, Any]:
    out: dict[str, Any] = {
        "event": "Order Completed",
        "properties": {"order_id": order_id, "total": 42.5, "currency": currency,
                       "products": [{"product_id": "sku-1", "name": "Mug", "price": 21.25,
                                     "quantity": 2}]}}
    if email:
        out["context"] = {"traits": {"email": email}}
    return out


def dead_letters(records: list[Any]) -> dict[str, dict[str, str]]:
    """destination -> {messageId: reason}."""
    out: dict[str, dict[str, str]] = {}
    for record in records:
        h = headers(record)
        out.setdefault(h["destination"], {})[orjson.loads(record.value)["messageId"]] = h[
            "reason"]
    return out


async def test_identities_missing_identifiers_and_per_record_errors(
        kafka_bootstrap: str, make_topic: Any) -> None:
    topic = await make_topic()
    event = Factory(uuid.uuid4().hex[:8])
    events = [
        event("identify", "user-ada01",  # 0: a complete person
              traits=person("Ada@Example.com", "Ada", "Lovelace", "Engines Ltd")),
        event("identify", "user-bob01",  # 1: no email (HubSpot needs one)
              traits=person(None, "Bob", "Builder", "Bob Co")),
        event("identify", None,  # 2: anonymous (Braze and Salesforce need a userId)
              traits=person("anon@example.com", "Anon")),
        event("identify", "user-cy001",  # 3: a trait mapped to a property HubSpot lacks
              traits=person("cy@example.com", "Cy", "Young", "Cy Inc", plan="pro")),
        event("identify", "user-dee01",  # 4: a new Lead without LastName and Company
              traits=person("dee@example.com", "Dee")),
        event("identify", "user-eve01",
              traits=person("eve@example.com", "Eve", "Online", "Eve Ltd")),
        event("track", "user-ada01", **order("ada@example.com", "o-1")),  # 6
        event("track", "user-bob01", **order(None, "o-2")),  # 7: no email for HubSpot
        event("track", "user-eve01", **order("eve@example.com", "o-3", "euro")),  # 8: Braze
        event("track", "user-ada01", event="Demo Requested",  # 9
              context={"traits": {"email": "ada@example.com"}}, properties={"seats": 5}),
    ]
    ids = [e["messageId"] for e in events]
    hub, braze, sf = fakes()
    async with hub, braze, sf:
        cfg = config_dict(kafka_bootstrap, topic, destinations(hub, braze, sf))
        async with running(cfg) as router:
            await produce(kafka_bootstrap, topic, events)
            stats = router.stats.destinations
            expected = {"hubspot": (7, 3), "braze": (8, 2), "salesforce": (8, 2)}
            await eventually(lambda: all((stats[n].delivered, stats[n].rejected) == counts
                                         for n, counts in expected.items()), 25)

            async def all_dead_lettered() -> bool:
                return len(await read_all(kafka_bootstrap, f"{topic}.dlq")) >= 7

            await eventually(all_dead_lettered, 10)
            assert all(stats[n].parked == 0 for n in expected)
        dead = dead_letters(await read_all(kafka_bootstrap, f"{topic}.dlq"))

    # -- rejected with their reasons, and only those -----------------------------------
    assert sorted(dead["hubspot"]) == sorted([ids[1], ids[3], ids[7]])
    assert "identify without an email" in dead["hubspot"][ids[1]]
    assert "PROPERTY_DOESNT_EXIST" in dead["hubspot"][ids[3]]  # HubSpot's 207, per input
    assert "track without an email" in dead["hubspot"][ids[7]]
    assert sorted(dead["braze"]) == sorted([ids[2], ids[8]])
    assert "no userId" in dead["braze"][ids[2]]
    assert "currency" in dead["braze"][ids[8]].lower()  # Braze's per-object error
    assert sorted(dead["salesforce"]) == sorted([ids[2], ids[4]])
    assert "identify without a userId" in dead["salesforce"][ids[2]]
    assert "REQUIRED_FIELD_MISSING" in dead["salesforce"][ids[4]]  # per record

    # -- HubSpot: contacts keyed by (lower-cased) email, events by email ---------------
    contacts = hub.store["contacts"]
    assert sorted(contacts) == ["ada@example.com", "anon@example.com", "dee@example.com",
                                "eve@example.com"]
    assert contacts["ada@example.com"] == {"firstname": "Ada", "lastname": "Lovelace",
                                           "company": "Engines Ltd",
                                           "segment_user_id": "user-ada01"}
    assert "segment_user_id" not in contacts["anon@example.com"]  # never the anonymousId
    occurrences = {i[1]["uuid"]: i[1] for i in hub.received if i[0] == "event"}
    assert set(occurrences) == {str(uuid.uuid5(uuid.NAMESPACE_URL, m))
                                for m in (ids[6], ids[8], ids[9])}
    ada_order = occurrences[str(uuid.uuid5(uuid.NAMESPACE_URL, ids[6]))]
    assert (ada_order["eventName"], ada_order["email"], ada_order["occurredAt"]) == (
        "pe123_order_completed", "ada@example.com", events[6]["timestamp"])
    assert ada_order["properties"] == {"order_id": "o-1", "total": "42.5", "currency": "EUR"}

    # -- Braze: everything keyed by external_id = userId; purchases per product -------
    assert braze.ignored == []
    assert all("user_alias" not in item for _, item in braze.received)
    attributes = {i["external_id"]: i for a, i in braze.received if a == "attributes"}
    assert sorted(attributes) == ["user-ada01", "user-bob01", "user-cy001", "user-dee01",
                                  "user-eve01"]
    assert attributes["user-ada01"] == {
        "external_id": "user-ada01", "company": "Engines Ltd", "first_name": "Ada",
        "last_name": "Lovelace", "email": "Ada@Example.com"}
    purchases = [i for a, i in braze.received if a == "purchases"]
    assert sorted(p["external_id"] for p in purchases) == ["user-ada01", "user-bob01"]
    ada_purchase = next(p for p in purchases if p["external_id"] == "user-ada01")
    assert (ada_purchase["product_id"], ada_purchase["currency"], ada_purchase["price"],
            ada_purchase["quantity"], ada_purchase["time"]) == (
        "sku-1", "EUR", 21.25, 2, events[6]["timestamp"])
    assert ada_purchase["properties"]["order_id"] == "o-1"
    custom = [i for a, i in braze.received if a == "events"]
    assert [(e["external_id"], e["name"]) for e in custom] == [("user-ada01", "Demo Requested")]

    # -- Salesforce: Leads upserted by External_Id__c = userId; Tasks linked by it ----
    leads = sf.records["Lead"]
    assert sorted(leads) == ["user-ada01", "user-bob01", "user-cy001", "user-eve01"]
    assert leads["user-ada01"] == {"External_Id__c": "user-ada01", "Email": "Ada@Example.com",
                                   "FirstName": "Ada", "LastName": "Lovelace",
                                   "Company": "Engines Ltd"}
    tasks = list(sf.records["Task"].values())
    assert Counter(t["Subject"] for t in tasks) == {"Order Completed": 3, "Demo Requested": 1}
    assert all(t["Who"]["External_Id__c"] in leads and t["Status"] == "Completed"
               for t in tasks)
    assert {t["Description"] for t in tasks if "Description" in t} == {"o-1", "o-2", "o-3"}


def timeline(fake: Any) -> list[tuple[str, int, float]]:
    """(path, status, wall-clock time) of every answer the fake gives."""
    answers: list[tuple[str, int, float]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        answers.append((request.path, response.status, time.time()))

    fake.app.on_response_prepare.append(record)
    return answers


async def test_rate_limits_transient_errors_and_expired_sessions_are_retried(
        kafka_bootstrap: str, make_topic: Any) -> None:
    topic = await make_topic()
    event = Factory(uuid.uuid4().hex[:8])
    hub, braze, sf = fakes()
    hub_log, braze_log, sf_log = timeline(hub), timeline(braze), timeline(sf)

    def pair(user: str, email: str) -> list[dict[str, Any]]:
        return [event("identify", user, traits=person(email, "Fay", "Wray", "Fay Co")),
                event("track", user, event="Demo Requested",
                      context={"traits": {"email": email}}, properties={"seats": 2})]

    async with hub, braze, sf:
        hub.fail_next(429, {"status": "error", "message": "You have reached your secondly "
                            "limit.", "errorType": "RATE_LIMIT", "policyName": "SECONDLY",
                            "correlationId": "7a9f3c1e-0000-0000-0000-000000000000"},
                      {"X-HubSpot-RateLimit-Interval-Milliseconds": "1000",
                       "X-HubSpot-RateLimit-Max": "100", "X-HubSpot-RateLimit-Remaining": "0",
                       "X-HubSpot-RateLimit-Secondly": "10",
                       "X-HubSpot-RateLimit-Secondly-Remaining": "0"}, path=CONTACTS)
        reset = int(time.time()) + 3  # epoch seconds when Braze's window reopens
        braze.fail_next(429, {"message": "Rate limit exceeded"},
                        {"X-RateLimit-Limit": "250000", "X-RateLimit-Remaining": "0",
                         "X-RateLimit-Reset": str(reset)})
        sf.record_errors["user-fay01"] = "UNABLE_TO_LOCK_ROW"
        cfg = config_dict(kafka_bootstrap, topic, destinations(hub, braze, sf))
        async with running(cfg) as router:
            stats = router.stats.destinations
            await produce(kafka_bootstrap, topic, pair("user-fay01", "fay@example.com"))
            await eventually(lambda: all(stats[n].delivered == 2
                                         for n in ("hubspot", "braze", "salesforce")), 25)
            sf.expire_tokens()  # the next data call is refused: new token, same request
            await produce(kafka_bootstrap, topic, pair("user-gus01", "gus@example.com"))
            await eventually(lambda: all(stats[n].delivered == 4
                                         for n in ("hubspot", "braze", "salesforce")), 25)
            for name in ("hubspot", "braze", "salesforce"):
                assert stats[name].rejected == stats[name].parked == 0, name
                assert stats[name].retried >= 1, name
            assert stats["hubspot"].requests[429] == stats["braze"].requests[429] == 1
            expired = stats["salesforce"].requests[401]  # one per request in flight
            assert expired >= 1

    # the 429s were waited out as the headers said: HubSpot's 1 s interval, Braze's reset
    hub_429 = next(t for _, s, t in hub_log if s == 429)
    hub_next = next(t for p, s, t in hub_log if p == CONTACTS and s < 300 and t > hub_429)
    assert hub_next - hub_429 >= 0.95, f"HubSpot retried {hub_next - hub_429:.2f} s after 429"
    braze_429 = next(t for _, s, t in braze_log if s == 429)
    braze_next = next(t for _, s, t in braze_log if s < 300 and t > braze_429)
    assert braze_next >= reset - 0.05, f"Braze retried {reset - braze_next:.2f} s early"
    assert sorted(hub.store["contacts"]) == ["fay@example.com", "gus@example.com"]
    assert sorted(i["external_id"] for k, i in braze.received if k == "attributes") == [
        "user-fay01", "user-gus01"]
    assert sorted(sf.records["Lead"]) == ["user-fay01", "user-gus01"]
    assert len(sf.records["Task"]) == 2
    assert 2 <= sf.token_requests <= 1 + expired  # a new token after the session expired
    for path, status, at in sf_log:  # each refused call was re-sent, and answered
        if status == 401:
            assert any(p == path and s == 200 and t > at for p, s, t in sf_log)

"""Google Analytics 4 app data streams (Firebase) over the Measurement Protocol: settings,
identity (``app_instance_id``), screen calls, and delivery against the contract fake, which
refuses what GA4 documents as invalid for app streams (it answers 204 and records the
payload in ``.invalid``)."""

from __future__ import annotations

import copy
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import pytest
import yaml
from pydantic import ValidationError

from destinations.ga4 import CONNECTOR, Settings, encode
from router.config import load
from router.configfile import ConfigError
from router.delivery.outcome import Delivered, Rejected
from router.events import iso
from tests.destinations.harness import send_once
from tests.destinations.samples import FULL
from tests.fakes.ga4 import GA4Fake

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC)
APP_ID = "1:1234567890:android:321abc456def7890"
IID = "0123456789abcdef0123456789abcdef"  # an app instance id: 32 hexadecimal digits


def app_settings(**overrides: Any) -> Settings:
    return Settings(firebase_app_id=APP_ID, api_secret="test-secret", **overrides)


def on_device(event: dict[str, Any], iid: Any = IID) -> dict[str, Any]:
    """The event as the mobile app sends it: its app instance id in the integrations object."""
    return {**event, "integrations": {"Google Analytics 4": {"app_instance_id": iid}}}


def track(name: str, iid: Any = IID, **extra: Any) -> dict[str, Any]:
    return on_device({"type": "track", "event": name, "anonymousId": "anon-1",
                      "userId": "user-1", "messageId": f"m-{name}",
                      "timestamp": iso(NOW - timedelta(minutes=5)), **extra}, iid)


def screen(name: str | None = "Home", **extra: Any) -> dict[str, Any]:
    event = {"type": "screen", "anonymousId": "anon-1", "messageId": "m-screen",
             "timestamp": iso(NOW - timedelta(minutes=5)), **extra}
    return on_device(event | ({"name": name} if name is not None else {}))


def bodies(events: list[dict[str, Any]], s: Settings | None = None
           ) -> tuple[list[dict[str, Any]], dict[int, str], list[list[int]]]:
    encoded = encode(events, s or app_settings())
    return ([orjson.loads(r.body) for r in encoded.requests], encoded.rejected,
            [r.events for r in encoded.requests])


# --- settings ---------------------------------------------------------------------------

@pytest.mark.parametrize("ids", [{}, {"measurement_id": "G-TEST12345", "firebase_app_id": APP_ID},
                                 {"measurement_id": "", "firebase_app_id": ""}])
def test_exactly_one_stream_id_is_required(ids: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match=r"exactly one of measurement_id .* or "
                                              r"firebase_app_id"):
        Settings(api_secret="s", **ids)
    assert Settings(api_secret="s", measurement_id="G-1").firebase_app_id is None
    assert Settings(api_secret="s", firebase_app_id=APP_ID).measurement_id is None


def test_a_config_with_both_stream_ids_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"destinations": [{
        "name": "ga4", "type": "ga4",
        "settings": {"measurement_id": "G-1", "firebase_app_id": APP_ID, "api_secret": "s"}}]}))
    with pytest.raises(ConfigError) as error:
        load(path, env={})
    (problem,) = error.value.problems
    assert "destinations[0].settings" in problem
    assert "set exactly one of measurement_id (a web data stream) or firebase_app_id" in problem


# --- encode: the request ----------------------------------------------------------------

def test_url_names_the_app_stream_and_the_body_the_app_instance() -> None:
    request = encode([track("Song Played")], app_settings()).requests[0]
    url = urlsplit(request.url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://www.google-analytics.com/mp/collect"
    assert parse_qs(url.query) == {"firebase_app_id": [APP_ID], "api_secret": ["test-secret"]}
    assert f"firebase_app_id={APP_ID}&" in url.query  # as the Firebase console shows it
    body = orjson.loads(request.body)
    assert body["app_instance_id"] == IID and body["user_id"] == "user-1"
    assert "client_id" not in body
    assert body["events"][0]["name"] == "song_played"


def test_requests_are_grouped_per_app_instance() -> None:
    other = "F" * 32  # the iOS SDK gives upper-case hex
    events = [track("A"), track("B", iid=other), track("C")]
    payloads, rejected, positions = bodies(events)
    assert rejected == {}
    assert positions == [[0, 2], [1]]
    assert [p["app_instance_id"] for p in payloads] == [IID, other]


@pytest.mark.parametrize(("iid", "reason"), [
    (None, "no app_instance_id at integrations.Google Analytics 4.app_instance_id"),
    ("", "no app_instance_id at"),
    ("0123456789abcdef0123456789abcde", "not 32 hexadecimal digits"),     # 31 digits
    ("0123456789abcdef0123456789abcdef0", "not 32 hexadecimal digits"),   # 33 digits
    ("9E0760E46FEB482484D37DD092E0C8F3}", "not 32 hexadecimal digits"),   # a stray brace
    ("01234567-89ab-cdef-0123-456789abcdef", "not 32 hexadecimal digits"),  # a UUID
    ("g123456789abcdef0123456789abcdef", "not 32 hexadecimal digits"),
])
def test_an_event_without_a_usable_app_instance_id_is_rejected(iid: Any, reason: str) -> None:
    payloads, rejected, _ = bodies([track("A", iid=iid), track("B")])
    assert reason in rejected[0]
    assert [p["app_instance_id"] for p in payloads] == [IID]  # the other event still goes


def test_app_instance_id_paths_are_configurable_and_client_id_paths_unused() -> None:
    s = app_settings(app_instance_id_paths=["context.device.firebaseAppInstanceId"],
                     client_id_paths=["userId"])
    event = track("A", context={"device": {"firebaseAppInstanceId": IID}})
    del event["integrations"]
    payloads, rejected, _ = bodies([event], s)
    assert rejected == {}
    assert payloads[0]["app_instance_id"] == IID and "client_id" not in payloads[0]


# --- encode: mapping ----------------------------------------------------------------------

def test_screen_becomes_screen_view_with_screen_name() -> None:
    events = [screen("Home", properties={"Feed Type": "private", "name": "Home"}),
              screen(None, properties={"name": "Settings"}), screen(None)]
    payloads, rejected, _ = bodies(events)
    assert rejected == {}
    first, second, third = payloads[0]["events"]
    assert first["name"] == "screen_view"
    assert first["params"] == {"screen_name": "Home", "Feed_Type": "private",
                               "engagement_time_msec": 1}
    assert second["params"] == {"screen_name": "Settings", "engagement_time_msec": 1}
    assert third == {"name": "screen_view", "params": {"engagement_time_msec": 1},
                     "timestamp_micros": third["timestamp_micros"]}


def test_a_web_stream_still_rejects_screens() -> None:
    s = Settings(measurement_id="G-TEST12345", api_secret="test-secret")
    rejected = encode([screen("Home")], s).rejected
    assert rejected == {0: "GA4 has no screen call"}


def test_identify_and_ecommerce_on_an_app_stream() -> None:
    events = [on_device(copy.deepcopy(e)) | {"timestamp": iso(NOW)} for e in FULL]
    payloads, rejected, positions = bodies(events, app_settings(identify_event="identify"))
    assert rejected == {}
    assert all(p["app_instance_id"] == IID and "client_id" not in p for p in payloads)
    names = {e["name"] for p in payloads for e in p["events"]}
    assert names == {"purchase", "video_played", "identify", "page_view", "join_group"}
    identify = payloads[next(i for i, ps in enumerate(positions) if 2 in ps)]
    assert identify["user_properties"]["plan"] == {"value": "pro"}


# --- against the contract fake ----------------------------------------------------------

@pytest.fixture
async def fake() -> Any:
    async with GA4Fake(firebase_app_id=APP_ID) as server:
        yield server


async def test_end_to_end_app_stream(fake: GA4Fake) -> None:
    events = [screen("Home"), track("Order Completed", properties={
                  "order_id": "o1", "total": 5, "products": [{"product_id": "p1"}]}),
              track("No Device", iid=None), track("Bad Device", iid="x" * 32),
              track("Other Device", iid="A" * 32)]
    s = app_settings(endpoint=f"{fake.url}/mp/collect")
    outcomes = await send_once(CONNECTOR, s, events)
    assert fake.invalid == []
    assert [type(o) for o in outcomes] == [Delivered, Delivered, Rejected, Rejected, Delivered]
    assert sorted((r["name"], r["app_instance_id"]) for r in fake.received) == [
        ("other_device", "A" * 32), ("purchase", IID), ("screen_view", IID)]
    assert all("client_id" not in r for r in fake.received)
    assert len(fake.requests) == 3  # one per app instance and user: the screen has no userId


async def test_the_fake_refuses_what_ga4_documents_as_invalid_for_app_streams(
        fake: GA4Fake) -> None:
    collect, debug = f"{fake.url}/mp/collect", f"{fake.url}/debug/mp/collect"
    keys = f"firebase_app_id={APP_ID}&api_secret=test-secret"
    event = {"name": "ok", "params": {}}
    cases = [
        (f"{collect}?{keys}", {"app_instance_id": IID, "events": [event]}),  # valid
        (f"{collect}?{keys}", {"client_id": "c", "events": [event]}),        # a web body
        (f"{collect}?{keys}", {"app_instance_id": IID[:-1], "events": [event]}),
        (f"{collect}?firebase_app_id=1:9:ios:ff&api_secret=test-secret",
         {"app_instance_id": IID, "events": [event]}),                      # wrong app
        (f"{collect}?firebase_app_id={APP_ID}&api_secret=nope",
         {"app_instance_id": IID, "events": [event]}),                      # wrong secret
    ]
    async with aiohttp.ClientSession() as session:
        for url, body in cases:
            async with session.post(url, data=orjson.dumps(body)) as resp:
                assert (resp.status, await resp.read()) == (204, b"")
        # the validation server checks neither firebase_app_id nor api_secret, only the body
        async with session.post(f"{debug}?firebase_app_id=anything&api_secret=nope",
                                data=orjson.dumps({"app_instance_id": "short",
                                                   "events": [event]})) as resp:
            messages = (await resp.json())["validationMessages"]
    assert [r["app_instance_id"] for r in fake.received] == [IID]
    paths = [[m["fieldPath"] for m in found] for _, found in fake.invalid]
    assert paths == [["app_instance_id"], ["app_instance_id"], ["firebase_app_id"],
                     ["api_secret"]]
    assert fake.invalid[0][1][0]["validationCode"] == "VALUE_REQUIRED"
    assert [(m["fieldPath"], m["validationCode"]) for m in messages] == [
        ("app_instance_id", "VALUE_INVALID")]
    assert "32 digit hexadecimal" in messages[0]["description"]


async def test_the_fake_catches_an_app_payload_that_skipped_encode(fake: GA4Fake) -> None:
    request = encode([track("A")], app_settings(endpoint=f"{fake.url}/mp/collect")).requests[0]
    body = orjson.loads(request.body)
    body["app_instance_id"] = "01234567-89ab-cdef-0123-456789abcdef"
    async with aiohttp.ClientSession() as session, session.post(
            request.url, data=orjson.dumps(body)) as resp:
        assert resp.status == 204
    assert fake.received == []
    assert fake.invalid[0][1][0]["fieldPath"] == "app_instance_id"


# --- the CLI and the example config -----------------------------------------------------

def test_dry_run_shows_the_native_app_stream_request(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump({"destinations": [{
        "name": "ga4-app", "type": "ga4",
        "settings": {"firebase_app_id": APP_ID, "api_secret": "app-secret"}}]}))
    events = tmp_path / "events.ndjson"
    events.write_bytes(orjson.dumps(screen("Home", userId="user-1")) + b"\n"
                       + orjson.dumps(track("Played", iid="nope")) + b"\n")
    run = subprocess.run([sys.executable, "-m", "router.cli", "dry-run", "-c", str(config),
                          str(events)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    shown, bad = orjson.loads(run.stdout)
    (request,) = shown["destinations"]["ga4-app"]["requests"]
    assert request["url"] == ("https://www.google-analytics.com/mp/collect?firebase_app_id="
                              f"{APP_ID}&api_secret=***")
    assert request["body"]["app_instance_id"] == IID
    assert request["body"]["user_id"] == "user-1"
    assert request["body"]["events"][0]["name"] == "screen_view"
    assert request["body"]["events"][0]["params"]["screen_name"] == "Home"
    assert bad["destinations"]["ga4-app"]["decision"] == "rejected"
    assert "not 32 hexadecimal digits" in bad["destinations"]["ga4-app"]["reason"]
    assert "app-secret" not in run.stdout


def test_the_example_config_has_a_valid_app_stream() -> None:
    config = load(ROOT / "config/examples/ga4.yaml", env={})
    app = next(d for d in config.destinations if d.name == "ga4-app")  # type: ignore[attr-defined]
    assert app.settings.firebase_app_id and app.settings.measurement_id is None
    payloads, rejected, _ = bodies([screen("Home")], app.settings)
    assert rejected == {} and payloads[0]["app_instance_id"] == IID

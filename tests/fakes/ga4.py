"""A Google Analytics 4 Measurement Protocol fake.

Documented facts it enforces (developers.google.com/analytics/devguides/collection/protocol/
ga4: "sending-events", "reference", "validating-events", "user-properties"):

- ``POST /mp/collect`` answers **204 with no body whatever the payload** ("The Measurement
  Protocol always returns a 2xx status code if the HTTP request was received"); a payload
  the real server would drop is stored in ``.invalid`` (with the validation messages) and
  never in ``.received`` — tests assert ``.invalid`` stays empty;
- ``POST /debug/mp/collect`` is the validation server: 200 with
  ``{"validationMessages": [{"fieldPath", "description", "validationCode"}]}`` and it does not
  check ``api_secret`` or ``firebase_app_id`` (as documented);
- the fake property has a web stream and an app (Firebase) stream, sharing one API secret: a
  request is for the app stream when it carries the ``firebase_app_id`` query parameter,
  else for the web stream; its stream id (``measurement_id`` or ``firebase_app_id``) and
  ``api_secret`` must match the stream's;
- the body is JSON, under 130 kB; a web stream's ``client_id`` is a non-empty string; an app
  stream's ``app_instance_id`` is a 32-digit hexadecimal number (the validation server's
  rule); ``user_id`` a string of at most 256 characters;
- ``events``: 1 to 25; each ``name`` ≤ 40 chars, starts with a letter, letters/digits/``_``
  only, not a reserved name or prefix; ``params`` ≤ 25, names by the same rules (not
  ``firebase_conversion``, no ``_``/``firebase_``/``ga_``/``google_``/``gtag.`` prefix),
  values text/number (no booleans, objects or lists except ``items``), ≤ 100 characters
  (``page_location`` 1000, ``page_title`` 300, ``page_referrer`` 420); ``items`` are objects
  with ``item_id`` or ``item_name``, values ≤ 100 characters;
- ``user_properties``: ≤ 25, names ≤ 24 chars and not reserved, ``{"value": …}`` with text
  ≤ 36 characters;
- ``consent`` keys ``ad_user_data`` / ``ad_personalization`` with GRANTED or DENIED;
- ``timestamp_micros`` (request and event) integers no more than 72 h in the past.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import FakeServer

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_EVENTS = {
    "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "ad_reward",
    "adunit_exposure", "app_background", "app_clear_data", "app_exception", "app_install",
    "app_remove", "app_store_refund", "app_update", "app_upgrade", "dynamic_link_app_open",
    "dynamic_link_app_update", "dynamic_link_first_open", "error", "firebase_campaign",
    "first_open", "first_visit", "in_app_purchase", "notification_dismiss",
    "notification_foreground", "notification_open", "notification_receive", "os_update",
    "session_start", "session_start_with_rollout", "user_engagement"}
RESERVED_USER_PROPERTIES = {"first_open_time", "first_visit_time", "last_deep_link_referrer",
                            "user_id", "first_open_after_install"}
LONG_VALUES = {"page_location": 1000, "page_title": 300, "page_referrer": 420}
MAX_AGE_US = 72 * 3600 * 1_000_000
APP_INSTANCE_ID = re.compile(r"[0-9A-Fa-f]{32}")
Bad = Callable[..., None]  # bad(field_path, description, validation_code)


class GA4Fake(FakeServer):
    def __init__(self, measurement_id: str = "G-TEST12345", api_secret: str = "test-secret",
                 firebase_app_id: str = "1:1234567890:android:321abc456def7890") -> None:
        self.measurement_id = measurement_id
        self.firebase_app_id = firebase_app_id
        self.api_secret = api_secret
        self.invalid: list[tuple[Any, list[dict[str, str]]]] = []  # (payload, messages)
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/mp/collect", self.collect)
        app.router.add_post("/debug/mp/collect", self.debug)

    async def collect(self, request: web.Request) -> web.StreamResponse:
        payload, messages = await self._validate(request, check_keys=True)
        if messages:
            self.invalid.append((payload, messages))
            self.changed.set()
        else:
            head = {k: v for k, v in payload.items() if k not in ("events", "timestamp_micros")}
            self.accept([{**head, **event} for event in payload["events"]])
        return web.Response(status=204)

    async def debug(self, request: web.Request) -> web.StreamResponse:
        _, messages = await self._validate(request, check_keys=False)
        return web.json_response({"validationMessages": messages})

    async def _validate(self, request: web.Request, check_keys: bool
                        ) -> tuple[Any, list[dict[str, str]]]:
        messages: list[dict[str, str]] = []

        def bad(path: str, description: str, code: str = "VALUE_INVALID") -> None:
            messages.append({"fieldPath": path, "description": description,
                             "validationCode": code})

        app = "firebase_app_id" in request.query  # which of the property's streams
        if check_keys:
            stream = (("firebase_app_id", self.firebase_app_id) if app
                      else ("measurement_id", self.measurement_id))
            for key, expected in (stream, ("api_secret", self.api_secret)):
                if request.query.get(key) != expected:
                    bad(key, f"query parameter {key} is missing or wrong", "VALUE_REQUIRED")
        raw = await request.read()
        if len(raw) >= 130_000:
            bad("", f"post body is {len(raw)} bytes; it must be smaller than 130kB",
                "VALUE_OUT_OF_BOUNDS")
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            bad("", "the body is not JSON")
            return raw, messages
        if not isinstance(payload, dict):
            bad("", "the body is not a JSON object")
            return payload, messages
        self._check_body(payload, bad, app)
        return payload, messages

    def _check_body(self, payload: dict[str, Any], bad: Bad, app: bool) -> None:
        now_us = time.time() * 1_000_000
        if app:
            instance = payload.get("app_instance_id")
            if instance is None:
                bad("app_instance_id", "app_instance_id is required for app streams",
                    "VALUE_REQUIRED")
            elif not isinstance(instance, str) or not APP_INSTANCE_ID.fullmatch(instance):
                bad("app_instance_id", "app_instance_id is expected to be a 32 digit "
                    f"hexadecimal number but was {instance!r}")
        else:
            client_id = payload.get("client_id")
            if not isinstance(client_id, str) or not client_id:
                bad("client_id", "client_id is required for web streams", "VALUE_REQUIRED")
        user_id = payload.get("user_id")
        if user_id is not None and (not isinstance(user_id, str) or len(user_id) > 256):
            bad("user_id", "user_id must be a string of at most 256 characters")
        self._check_time(payload, "timestamp_micros", now_us, bad)
        events = payload.get("events")
        if not isinstance(events, list) or not events:
            bad("events", "events must be a non-empty array", "VALUE_REQUIRED")
            events = []
        if len(events) > 25:
            bad("events", f"{len(events)} events; at most 25", "EXCEEDED_MAX_ENTITIES")
        for i, event in enumerate(events):
            if not isinstance(event, dict):
                bad(f"events[{i}]", "an event must be an object")
                continue
            name = event.get("name")
            self._check_name(f"events[{i}].name", name, 40, RESERVED_EVENTS, bad)
            self._check_time(event, "timestamp_micros", now_us, bad, f"events[{i}].")
            params = event.get("params", {})
            if not isinstance(params, dict):
                bad(f"events[{i}].params", "params must be an object")
                continue
            if len(params) > 25:
                bad(f"events[{i}].params", "at most 25 params", "EXCEEDED_MAX_ENTITIES")
            for key, value in params.items():
                path = f"events[{i}].params.{key}"
                self._check_name(path, key, 40, {"firebase_conversion"}, bad)
                if key == "items":
                    self._check_items(path, value, bad)
                else:
                    self._check_value(path, value, LONG_VALUES.get(key, 100), bad)
        user_properties = payload.get("user_properties", {})
        if not isinstance(user_properties, dict) or len(user_properties) > 25:
            bad("user_properties", "at most 25 user properties", "EXCEEDED_MAX_ENTITIES")
            user_properties = {}
        for key, entry in user_properties.items():
            path = f"user_properties.{key}"
            self._check_name(path, key, 24, RESERVED_USER_PROPERTIES, bad, PREFIXES[:4])
            if not isinstance(entry, dict) or "value" not in entry:
                bad(path, 'a user property is {"value": …}', "VALUE_REQUIRED")
            else:
                self._check_value(path, entry["value"], 36, bad)
        consent = payload.get("consent", {})
        if not isinstance(consent, dict) or any(
                k not in ("ad_user_data", "ad_personalization") or v not in ("GRANTED", "DENIED")
                for k, v in consent.items()):
            bad("consent", "consent keys are ad_user_data / ad_personalization: GRANTED|DENIED")

    @staticmethod
    def _check_name(path: str, name: Any, max_chars: int, reserved: set[str], bad: Bad,
                    prefixes: tuple[str, ...] = PREFIXES) -> None:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            bad(path, f"{name!r} must start with a letter and use letters, digits, _",
                "NAME_INVALID")
        elif len(name) > max_chars:
            bad(path, f"{name!r} is over {max_chars} characters", "VALUE_OUT_OF_BOUNDS")
        elif name in reserved or name.startswith(prefixes):
            bad(path, f"{name!r} is reserved", "NAME_RESERVED")

    @staticmethod
    def _check_value(path: str, value: Any, max_chars: int, bad: Bad) -> None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            bad(path, f"value {value!r} must be a string or a number")
        elif isinstance(value, str) and len(value) > max_chars:
            bad(path, f"value is {len(value)} characters; at most {max_chars}",
                "VALUE_OUT_OF_BOUNDS")

    def _check_items(self, path: str, items: Any, bad: Bad) -> None:
        if not isinstance(items, list):
            bad(path, "items must be an array")
            return
        for j, item in enumerate(items):
            if not isinstance(item, dict) or not (item.get("item_id") or item.get("item_name")):
                bad(f"{path}[{j}]", "an item needs item_id or item_name", "VALUE_REQUIRED")
                continue
            for key, value in item.items():
                self._check_value(f"{path}[{j}].{key}", value, 100, bad)

    @staticmethod
    def _check_time(obj: dict[str, Any], key: str, now_us: float, bad: Bad,
                    prefix: str = "") -> None:
        value = obj.get(key)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            bad(prefix + key, f"{key} must be an integer (microseconds)")
        elif now_us - value > MAX_AGE_US:
            bad(prefix + key, f"{key} is more than 72 hours in the past", "VALUE_OUT_OF_BOUNDS")

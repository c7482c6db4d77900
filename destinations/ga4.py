"""Google Analytics 4 via the Measurement Protocol; every limit is checked here (see docs)."""

from __future__ import annotations

import re
import time
from functools import reduce
from typing import Any
from urllib.parse import urlencode

import orjson
from pydantic import Field, SecretStr, model_validator

from destinations import ga4_app
from destinations.base import Connector, ConnectorSettings, Encoded, Event, Limits, Request
from router.events import parse_time

MAX_EVENTS, MAX_BODY_BYTES, MAX_PARAMS, MAX_USER_ID_CHARS = 25, 130_000, 25, 256
NAME, INVALID_CHARS = re.compile(r"[A-Za-z][A-Za-z0-9_]*"), re.compile(r"[^A-Za-z0-9_]+")
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_EVENTS = frozenset((  # the Measurement Protocol reference's reserved event names
    "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "ad_reward",
    "adunit_exposure", "app_background", "app_clear_data", "app_exception", "app_install",
    "app_remove", "app_store_refund", "app_update", "app_upgrade", "dynamic_link_app_open",
    "dynamic_link_app_update", "dynamic_link_first_open", "error", "firebase_campaign",
    "first_open", "first_visit", "in_app_purchase", "notification_dismiss", "os_update",
    "notification_foreground", "notification_open", "notification_receive", "session_start",
    "session_start_with_rollout", "user_engagement"))
RESERVED_PARAMS = frozenset(("firebase_conversion",))
RESERVED_USER_PROPERTIES = frozenset(("first_open_time", "first_visit_time", "user_id",
                                      "last_deep_link_referrer", "first_open_after_install"))
VALUE_CHARS = {"": 100, "page_location": 1000, "page_title": 300, "page_referrer": 420}
RECOMMENDED = {"Products Searched": "search", "Product Viewed": "view_item",
               "Product Added": "add_to_cart", "Product Removed": "remove_from_cart",
               "Checkout Started": "begin_checkout", "Order Completed": "purchase",
               "Signed Up": "sign_up", "Logged In": "login"}
ITEM_FIELDS = {"item_id": ("product_id", "sku"), "item_name": ("name",), "price": ("price",),
               "quantity": ("quantity",), "item_category": ("category",),
               "item_brand": ("brand",), "item_variant": ("variant",), "coupon": ("coupon",)}
PRODUCT_KEYS = (*(k for keys in ITEM_FIELDS.values() for k in keys), "currency", "value")
ORDER_KEYS = ("order_id", "total", "revenue", "value", "currency", "tax", "shipping", "coupon",
              "products")
PII_TRAITS = ["email", "phone", "firstName", "lastName", "name", "username", "address"]


class Settings(ConnectorSettings):
    measurement_id: str | None = Field(None, description="A web data stream's Measurement ID "
                                       "(`G-…`); set it or `firebase_app_id`.")
    firebase_app_id: str | None = Field(None, description="An app data stream's Firebase App "
                                        "ID (`1:…:android:…`); set it or `measurement_id`.")
    api_secret: SecretStr = Field(description="The stream's Measurement Protocol API secret.")
    endpoint: str = Field("https://www.google-analytics.com/mp/collect", description="Collection"
                          " URL; EU: `https://region1.google-analytics.com/mp/collect`.")
    client_id_paths: list[str] = Field(default_factory=lambda: ["anonymousId"], description=
                                       "Web streams: event paths tried in order for `client_id`.")
    app_instance_id_paths: list[str] = Field(
        default_factory=lambda: list(ga4_app.DEFAULT_INSTANCE_ID_PATHS), description="App "
        "streams: event paths tried in order for `app_instance_id` (32 hex digits).")
    engagement_time_msec: int = Field(1, ge=0, description="Sent with each event (0 = not).")
    identify_event: str | None = Field(None, description="Event that carries identify traits "
                                       "as `user_properties`; unset = identifies are rejected.")
    excluded_traits: list[str] = Field(default_factory=lambda: list(PII_TRAITS), description=
                                       "Traits never sent as user properties (no PII in GA4).")
    ad_user_data_category: str | None = Field(None, description="Consent category → ad_user_data.")
    ad_personalization_category: str | None = Field(None, description="Consent category → "
                                                    "`ad_personalization` (GRANTED/DENIED).")
    max_event_age_h: float = Field(72, gt=0, le=72, description="Older events are rejected.")

    @model_validator(mode="after")
    def _one_stream(self) -> Settings:
        if bool(self.measurement_id) == bool(self.firebase_app_id):
            raise ValueError("set exactly one of measurement_id (a web data stream) or "
                             "firebase_app_id (an app data stream)")
        return self


class _Refused(ValueError):
    """Raised inside encode for an event GA4 would drop; its message is the reason."""


def encode(events: list[Event], settings: Settings) -> Encoded:
    out = Encoded()
    groups: dict[bytes, tuple[dict[str, Any], list[tuple[int, dict[str, Any]]]]] = {}
    now_us = int(time.time() * 1_000_000)
    for position, event in enumerate(events):
        try:
            head, ga_event = _convert(event, settings, now_us)
        except _Refused as exc:
            out.rejected[position] = str(exc)
            continue
        key = orjson.dumps(head, option=orjson.OPT_SORT_KEYS)  # one request = one client
        groups.setdefault(key, (head, []))[1].append((position, ga_event))
    stream = ({"firebase_app_id": settings.firebase_app_id} if settings.firebase_app_id
              else {"measurement_id": settings.measurement_id})
    query = urlencode({**stream, "api_secret": settings.api_secret.get_secret_value()},
                      safe=":")  # a Firebase App ID as the docs write it: 1:…:android:…
    for head, members in groups.values():
        for start in range(0, len(members), MAX_EVENTS):
            _add(f"{settings.endpoint}?{query}", head, members[start:start + MAX_EVENTS], out)
    return out


def _add(url: str, head: dict[str, Any], members: list[tuple[int, dict[str, Any]]],
         out: Encoded) -> None:
    body = orjson.dumps({**head, "timestamp_micros": members[0][1]["timestamp_micros"],
                         "events": [e for _, e in members]})
    if len(body) < MAX_BODY_BYTES:  # "smaller than 130kB": 130,000 bytes is already too big
        out.requests.append(Request(url, body, [p for p, _ in members],
                                    {"Content-Type": "application/json"}))
    elif len(members) == 1:
        out.rejected[members[0][0]] = (f"{len(body)}-byte request; GA4 drops bodies of "
                                       "130 kB or more")
    else:
        for part in (members[:len(members) // 2], members[len(members) // 2:]):
            _add(url, head, part, out)


def _convert(event: Event, settings: Settings, now_us: int
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    app = bool(settings.firebase_app_id)  # an app stream names the device app_instance_id
    key, paths = (("app_instance_id", settings.app_instance_id_paths) if app
                  else ("client_id", settings.client_id_paths))
    device_id = next((str(v) for path in paths if (v := reduce(
        lambda d, k: d.get(k) if isinstance(d, dict) else None, path.split("."), event))
        not in (None, "")), None)
    if device_id is None:
        raise _Refused(f"no {key} at {' / '.join(paths)}; GA4 needs one")
    if app and (problem := ga4_app.instance_id_problem(device_id)):
        raise _Refused(problem)
    stamp = parse_time(event.get("timestamp"))
    ts_us = int(stamp.timestamp() * 1_000_000) if stamp else now_us
    if now_us - ts_us > settings.max_event_age_h * 3_600_000_000:
        raise _Refused(f"timestamp {event['timestamp']} is over {settings.max_event_age_h:g} h "
                       "old; GA4 drops events backdated more than 72 h")
    name, params, user_properties = _map(event, settings)
    _check({name: 0}, "event name", 40, VALUE_CHARS, RESERVED_EVENTS)  # the name rules
    # Our own addition must not cost the event its place: an event with GA4's 25 params
    # goes without it rather than being refused for a 26th.
    if settings.engagement_time_msec and len(params) < MAX_PARAMS:
        params.setdefault("engagement_time_msec", settings.engagement_time_msec)
    _check(params, "param", 40, VALUE_CHARS, RESERVED_PARAMS)
    if len(user_id := str(event.get("userId") or "")) > MAX_USER_ID_CHARS:
        raise _Refused(f"userId is over {MAX_USER_ID_CHARS} characters")
    head: dict[str, Any] = {key: device_id, **({"user_id": user_id} if user_id else {})}
    if user_properties:
        _check(user_properties, "user property", 24, {"": 36}, RESERVED_USER_PROPERTIES,
               RESERVED_PREFIXES[:4])
        head["user_properties"] = {k: {"value": v} for k, v in user_properties.items()}
    if consent := _consent(event, settings):
        head["consent"] = consent
    return head, {"name": name, "params": params, "timestamp_micros": ts_us}


def _map(event: Event, settings: Settings) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(GA4 event name, params, user properties) for one Segment event."""
    kind, props = event["type"], event.get("properties") or {}
    if kind == "track" and event["event"] not in RECOMMENDED:
        return INVALID_CHARS.sub("_", event["event"]).strip("_").lower(), _flatten(props), {}
    if kind == "track":
        params, used = _recommended(name := RECOMMENDED[event["event"]], props)
    elif kind == "page":
        page = {**((event.get("context") or {}).get("page") or {}), **props}
        name, used = "page_view", ("url", "referrer", "title")
        params = {"page_location": page.get("url"), "page_referrer": page.get("referrer"),
                  "page_title": page.get("title") or event.get("name")}
    elif kind == "screen" and settings.firebase_app_id:  # screens exist in app streams only
        name, params, used = ga4_app.screen_view(event, props)
    elif kind == "group":  # decode guarantees its groupId
        return "join_group", {"group_id": str(event["groupId"])}, {}
    elif kind == "identify" and settings.identify_event:
        traits = {k: v for k, v in (event.get("traits") or {}).items()
                  if k not in settings.excluded_traits}
        if not traits:
            raise _Refused("the identify has no traits to send as GA4 user_properties")
        return settings.identify_event, {}, _flatten(traits)
    else:
        raise _Refused(f"GA4 has no {kind} call" + " (see identify_event)" * (kind == "identify"))
    rest = _flatten({k: v for k, v in props.items() if k not in used})
    return name, {**rest, **{k: v for k, v in params.items() if v is not None}}, {}


def _recommended(name: str, p: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    if name == "search":
        return {"search_term": p.get("query")}, ("query",)
    if name in ("sign_up", "login"):
        return {"method": p.get("method")}, ("method",)
    single = name in ("view_item", "add_to_cart", "remove_from_cart")  # the product is `p`
    value = next((p[k] for k in ("total", "revenue", "value") if p.get(k) is not None), None)
    if single and value is None and isinstance(p.get("price"), int | float):
        value = p["price"] * (p.get("quantity") or 1)
    params = {"currency": p.get("currency") or ("USD" if value is not None else None),
              "value": value, "coupon": None if single else p.get("coupon"),
              "items": [_item(p)] if single else [_item(x) for x in p.get("products") or []]}
    if name == "purchase":
        params.update(transaction_id=p.get("order_id"), tax=p.get("tax"),
                      shipping=p.get("shipping"))
    return params, PRODUCT_KEYS if single else ORDER_KEYS


def _item(product: Any) -> dict[str, Any]:
    fields = ITEM_FIELDS.items() if isinstance(product, dict) else ()
    item = {k: v for k, keys in fields
            if (v := next((product[s] for s in keys if product.get(s) is not None), None))
            is not None}
    if "item_id" not in item and "item_name" not in item:
        raise _Refused("a product without product_id, sku or name; GA4 items need one")
    if any(isinstance(v, str) and len(v) > 100 for v in item.values()):
        raise _Refused("an item value is over 100 characters")
    return item


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Objects → `parent_child` params, scalar lists → "a,b", `products` → GA4 `items`."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = prefix + INVALID_CHARS.sub("_", str(key)).strip("_")
        if value is None:
            continue
        if name in ("products", "items") and isinstance(value, list):
            out["items"] = [_item(x) for x in value]
        elif isinstance(value, dict):
            out.update(_flatten(value, name + "_"))
        elif isinstance(value, list):
            if any(isinstance(x, dict | list) for x in value):
                raise _Refused(f"property {name!r} is a list of objects; GA4 params are flat")
            out[name] = ",".join(str(x).lower() if isinstance(x, bool) else str(x) for x in value)
        else:
            out[name] = str(value).lower() if isinstance(value, bool) else value
    return out


def _check(values: dict[str, Any], what: str, name_chars: int, value_chars: dict[str, int],
           reserved: frozenset[str], prefixes: tuple[str, ...] = RESERVED_PREFIXES) -> None:
    if len(values) > MAX_PARAMS:
        raise _Refused(f"{len(values)} {what}s; GA4 keeps at most {MAX_PARAMS}")
    for name, value in values.items():
        if not NAME.fullmatch(name) or len(name) > name_chars:
            raise _Refused(f"{what} {name!r} breaks GA4's rules (a letter first; letters, "
                           f"digits and _ only; at most {name_chars} characters)")
        if name in reserved or name.startswith(prefixes):
            raise _Refused(f"{what} {name!r} is reserved by GA4")
        limit = value_chars.get(name, value_chars[""])
        if name != "items" and not isinstance(value, str | int | float):
            raise _Refused(f"{what} {name!r} is a {type(value).__name__}, not text or a number")
        if isinstance(value, str) and len(value) > limit:
            raise _Refused(f"{what} {name!r} is {len(value)} characters; GA4's limit is {limit}")


def _consent(event: Event, settings: Settings) -> dict[str, str] | None:
    """GRANTED/DENIED from `context.consent.categoryPreferences`; none without consent info."""
    consent = (event.get("context") or {}).get("consent")
    prefs = consent.get("categoryPreferences") if isinstance(consent, dict) else None
    pairs = (("ad_user_data", settings.ad_user_data_category),
             ("ad_personalization", settings.ad_personalization_category))
    out = {key: "GRANTED" if prefs.get(cat) is True else "DENIED" for key, cat in pairs
           if cat and isinstance(prefs, dict)}
    return out or None


CONNECTOR = Connector(
    name="ga4",
    display_name="Google Analytics 4",
    settings=Settings,
    limits=Limits(max_events=MAX_EVENTS, max_bytes=MAX_BODY_BYTES),
    encode=encode,
    docs="""
**Identity.** Web stream (`measurement_id`): `client_id` = first non-empty path of
`client_id_paths` (default `anonymousId`; `context.traits.ga_client_id` first joins gtag.js
sessions, `userId` last is a fallback). App stream (`firebase_app_id`): `app_instance_id` =
first non-empty path of `app_instance_id_paths`, the Firebase SDK's `getAppInstanceId()`
(32 hex digits; Segment maps no default, so the app sets it per event, by default as the
integrations option `{"Google Analytics 4": {"app_instance_id": …}}`). Missing or malformed
ids are rejected; `userId` → `user_id`. One request per device/user/consent (≤ 25 events,
≤ 130 kB). **Mapping.** Segment e-commerce → GA4 recommended events; page → `page_view`;
screen → `screen_view` with `screen_name` (app streams; rejected on web streams); group →
`join_group`; identify → `identify_event` with traits as `user_properties` (PII excluded), or
rejected if unset; alias rejected. **Consent**: the `*_category` settings turn
`categoryPreferences` into GA4 `consent` (GRANTED/DENIED). Every limit is checked locally:
GA4 answers 2xx even to what it drops.
""",
)

"""Braze: identify -> user attributes, track -> custom events, purchase events -> one
purchase per product, all through ``POST /users/track`` (≤ 75 objects per request).

Braze reports per-object errors as ``{"input_array": "events", "index": 3}``. Each event
becomes objects of ONE array, in event order, so an index maps back to its event: one
object per attribute/event, and a purchase group shares identity, time and order_id (two
adjacent orders that would share them go to separate requests).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import Field, SecretStr

from destinations import base, braze_map
from destinations.base import (
    Connector,
    ConnectorSettings,
    Encoded,
    Event,
    Limits,
    Request,
    json_object,
)
from router.delivery.outcome import DELIVERED, Outcome, Partial, Rejected, Retry, Split
from router.events import iso, parse_time

MAX_OBJECTS = 75  # attributes + events + purchases per request (documented)
ARRAYS = ("attributes", "events", "purchases")
STANDARD = {"firstName": "first_name", "lastName": "last_name", "email": "email",
            "phone": "phone", "address.city": "home_city", "address.country": "country",
            "avatar": "image_url"}
# Keys that name the user or steer /users/track: a trait must never set them, or an identify
# could update another user (a trait "external_id") or carry two identifiers.
IDENTITY_KEYS = frozenset(("external_id", "user_alias", "braze_id", "_update_existing_only",
                           "push_token_import"))
# Braze's `gender` takes only M, F, O, N or P; the common spellings of a Segment trait.
GENDERS = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F",
           "w": "F", "o": "O", "other": "O", "n": "N", "not applicable": "N",
           "p": "P", "prefer not to say": "P"}


class Settings(ConnectorSettings):
    api_key: SecretStr = Field(description="REST API key with `users.track` permission.")
    rest_endpoint: str = Field("https://rest.iad-01.braze.com",
                               description="Your instance's REST endpoint.")
    alias_label: str | None = Field(
        None, description="Send users without a userId as `user_alias` {alias_name: "
        "anonymousId, alias_label: this}; unset = such events are rejected.")
    attribute_map: dict[str, str] = Field(
        default_factory=lambda: dict(STANDARD),
        description="Identify trait path (dotted) -> Braze standard attribute.")
    custom_attributes: bool = Field(
        True, description="Send traits not in `attribute_map` as custom attributes.")
    purchase_events: list[str] = Field(
        default_factory=lambda: ["Order Completed"],
        description="Track events logged as purchases, one per `properties.products` item.")
    default_currency: str = Field("USD", description="Currency when the event has none.")


def _get(obj: Any, path: str) -> Any:
    for key in path.split("."):
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _identity(event: Event, settings: Settings) -> dict[str, Any] | str:
    if event.get("userId"):
        return {"external_id": str(event["userId"])}
    if settings.alias_label and event.get("anonymousId"):
        alias = {"alias_name": str(event["anonymousId"]), "alias_label": settings.alias_label}
        return {"user_alias": alias, "_update_existing_only": False}  # create alias users
    return ("no userId: Braze identifies users by external_id; set settings.alias_label to "
            "send anonymous users as user aliases")


def _attributes(event: Event, settings: Settings) -> dict[str, Any]:
    traits = event.get("traits") or {}
    found: dict[str, Any] = {}
    if settings.custom_attributes:
        mapped = {path.split(".")[0] for path in settings.attribute_map}
        found.update((k, v) for k, v in traits.items() if k not in mapped)
    for path, name in settings.attribute_map.items():
        if (value := _get(traits, path)) is not None:
            found[name] = value
    if (day := braze_map.dob(traits.get("birthday"))) is not None:
        found["dob"] = day  # Braze wants YYYY-MM-DD
        found.pop("birthday", None)
    if isinstance(gender := found.get("gender"), str):
        found["gender"] = GENDERS.get(gender.strip().lower(), gender)
    return {k: v for k, v in found.items() if k not in IDENTITY_KEYS}


def _objects(event: Event, settings: Settings) -> tuple[str, list[dict[str, Any]]] | str:
    """The array this event goes to and its objects, or the reason Braze would refuse it."""
    identity = _identity(event, settings)
    if isinstance(identity, str):
        return identity
    parsed = parse_time(event.get("timestamp"))
    when = iso(parsed) if parsed else ""
    kind = event.get("type")
    if kind == "identify":
        return "attributes", [{**identity, **_attributes(event, settings)}]
    if kind != "track":
        return f"Braze takes identify and track calls, not {kind}: filter with `where`"
    if event["event"] in settings.purchase_events and (event.get("properties") or {}).get(
            "products"):
        purchases = braze_map.purchases(event, settings.default_currency, when)
        if isinstance(purchases, str):
            return purchases
        return "purchases", [{**identity, **p} for p in purchases]
    return "events", [{**identity, "name": event["event"], "time": when,
                       "properties": braze_map.properties(event.get("properties") or {})}]


def _group_key(purchase: dict[str, Any]) -> bytes:
    """Purchases of one event share identity, time and order_id."""
    return orjson.dumps([purchase.get("external_id"), purchase.get("user_alias"),
                         purchase["time"], purchase["properties"].get("order_id")])


def encode(events: list[Event], settings: Settings) -> Encoded:
    out = Encoded()
    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}",
               "Content-Type": "application/json"}
    url = settings.rest_endpoint.rstrip("/") + "/users/track"
    arrays: dict[str, list[Any]] = {name: [] for name in ARRAYS}
    held: dict[str, list[int]] = {name: [] for name in ARRAYS}

    def flush() -> None:
        if any(held.values()):
            body = orjson.dumps({k: v for k, v in arrays.items() if v})
            out.requests.append(Request(url, body, [p for k in ARRAYS for p in held[k]],
                                        headers))
        for name in ARRAYS:
            arrays[name], held[name] = [], []

    for position, event in enumerate(events):
        found = _objects(event, settings)
        if isinstance(found, str):
            out.rejected[position] = found
            continue
        array, objects = found
        if len(objects) > MAX_OBJECTS:
            out.rejected[position] = f"{len(objects)} purchases: over Braze's {MAX_OBJECTS}"
            continue
        ambiguous = (array == "purchases" and arrays["purchases"]
                     and _group_key(arrays["purchases"][-1]) == _group_key(objects[0]))
        if ambiguous or sum(map(len, arrays.values())) + len(objects) > MAX_OBJECTS:
            flush()
        arrays[array] += objects
        held[array].append(position)
    flush()
    return out


def _position(body: dict[str, Any], array: str, index: int) -> int | None:
    """Map Braze's (input_array, index) back to an index into ``request.events``."""
    if array not in ARRAYS or not 0 <= index < len(body.get(array) or []):
        return None
    offset = sum(len(body.get(name) or []) for name in ARRAYS[:ARRAYS.index(array)])
    if array != "purchases":
        return offset + index
    purchases = body["purchases"]
    groups = sum(_group_key(purchases[i]) != _group_key(purchases[i - 1])
                 for i in range(1, index + 1))
    return offset + groups


def classify(response: base.Response, request: Request) -> Outcome:
    status, headers = response.status, response.headers
    data = json_object(response.body)
    errors = [e for e in data.get("errors") or [] if isinstance(e, dict)]
    if 200 <= status < 300 and not errors:
        return DELIVERED
    rejected: dict[int, str] = {}
    if errors and (200 <= status < 300 or status == 400):
        sent = orjson.loads(request.body)
        for error in errors:
            index = error.get("index")
            position = _position(sent, str(error.get("input_array")),
                                 index if isinstance(index, int) else -1)
            if position is not None:
                rejected[position] = f"Braze: {error.get('type', 'invalid object')}"
    if errors and 200 <= status < 300:
        return Partial(rejected=rejected)
    if status == 400 and rejected:  # nothing was processed: resend what Braze did not name
        retry = {i: "resent without the invalid objects" for i in range(len(request.events))
                 if i not in rejected}
        return Partial(rejected=rejected, retry=retry)
    # a 400 whose errors name no object of ours would come back the same if resent whole:
    # it is split (or rejected) below like any other 400
    reason = f"Braze HTTP {status}: {str(data.get('message', ''))[:300]}"
    if status == 401:
        return Rejected("Braze rejected the API key (401): check settings.api_key")
    if status == 429:
        reset = headers.get("X-RateLimit-Reset", "")
        after = max(0.0, float(reset) - time.time()) if reset.isdigit() else None
        return Retry("Braze rate limit (429)", after or base.retry_after_s(headers))
    if status in (400, 413) and len(request.events) > 1:
        return Split(reason)
    if status in (400, 403, 404):
        return Rejected(reason)
    return base.classify_http(response, request)


CONNECTOR = Connector(
    name="braze",
    display_name="Braze",
    settings=Settings,
    limits=Limits(max_events=MAX_OBJECTS, max_bytes=4_000_000),
    encode=encode,
    classify=classify,
    rate_limit_per_s=900.0,  # /users/track: 3,000 requests per 3 s per workspace
    docs="""
**Identity.** A Braze user is keyed by `external_id` = the Segment **userId**. An event
with no userId is sent as a **user alias** (`user_alias: {alias_name: anonymousId,
alias_label: settings.alias_label}`, with `_update_existing_only: false` so Braze creates
the alias-only user) when `alias_label` is set; otherwise it is rejected in encode ("no
userId: Braze identifies users by external_id …"). When both ids are present only the
external_id is sent (aliases are not merged into the identified user). Email is an
attribute (`traits.email` → `email`), never the identity.

**Mapping.** identify → one attributes object: `attribute_map` (defaults firstName →
first_name, lastName → last_name, email, phone, address.city → home_city,
address.country → country, avatar → image_url), `birthday` → `dob` (the YYYY-MM-DD of an
ISO-8601 date as written; another value is left out), `gender` as Braze's code (male →
M, female → F, other → O, …), other traits as custom attributes
unless `custom_attributes: false`; a trait never sets `external_id`, `user_alias` or
`braze_id`. track → one event object (`name`, `time` ISO-8601 from the event timestamp,
`properties` without the keys Braze refuses: reserved `time` and `event_name`, a leading
`$`, over 255 characters). Events listed in `purchase_events` (default Order Completed)
with `properties.products` → one purchase per product (`product_id` or `sku`, `price`,
`quantity` 1 to 100, `currency` from the product, the event or `default_currency`; as
properties the product's other fields and the order's properties but `products`, as in
Segment's Braze destination); a product without product_id or numeric price rejects the
event. page, screen, group and alias calls are
rejected (filter them with `where`).

**Errors.** ≤ 75 objects per request. A 201 with `errors` rejects only the named objects'
events; a 400 with `errors` rejects those and resends the rest. 401 → rejected ("check
settings.api_key"); 429 → retried at `X-RateLimit-Reset` (epoch seconds).
""",
)

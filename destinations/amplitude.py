"""Amplitude HTTP V2 API (``POST /2/httpapi``): one Amplitude event per Segment event.
Per Amplitude's docs (http-v2, http-api-batching-retries): ≤ 2,000 events and < 1 MB per
request (else 413); a 400 names bad events by index and ingests nothing; 429 = throttled.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr

from destinations.base import (
    Connector,
    ConnectorSettings,
    Encoded,
    Event,
    Limits,
    Request,
    Response,
    array_body,
    array_head,
    classify_http,
    encode_in_parts,
    json_object,
    prepared,
    retry_after_s,
    split_prepared,
)
from router.delivery.outcome import DELIVERED, Outcome, Partial, Retry, Split
from router.events import time_ms

ENDPOINTS = {"standard": "https://api2.amplitude.com/2/httpapi",
             "eu": "https://api.eu.amplitude.com/2/httpapi"}
DEFAULT_MIN_ID_LENGTH = 5
NUMBERS = (int, float)  # exactly: a bool is not a number here
THROTTLE_PAUSE_S = 30.0  # Amplitude: stop sending for a throttled user/device for 30 s
PLATFORMS = {"ios": "iOS", "android": "Android"}
INDEXED_400_FIELDS = ("events_with_invalid_fields", "events_with_missing_fields",
                      "events_with_invalid_id_lengths")


class Settings(ConnectorSettings):
    api_key: SecretStr = Field(description="Amplitude project API key (sent in the body).")
    region: Literal["standard", "eu"] = Field(
        "standard", description="Data residency: `standard` (api2.amplitude.com) or `eu`.")
    endpoint: str | None = Field(None, description="Full HTTP V2 URL; overrides `region`.")
    min_id_length: int | None = Field(None, ge=1, description="Sent as `options.min_id_length`:"
                                      " the shortest user_id/device_id accepted (default 5).")
    prefer_anonymous_id_for_device_id: bool = Field(
        False, description="Use anonymousId as device_id even when context.device.id is set.")
    track_named_pages: bool = Field(
        True, description="Named page/screen calls become `Viewed <category> <name> Page`; "
        "when false (or unnamed) `Loaded a Page` / `Loaded a Screen`.")
    group_type: str = Field(
        "[Segment] Group", description="Amplitude group type that group calls set to groupId.")


def event_type(event: Event, settings: Settings) -> str:
    kind = event["type"]
    if kind == "track":
        return str(event["event"])
    if kind in ("identify", "group"):
        return "$identify"
    noun = "Page" if kind == "page" else "Screen"
    words = [str(w) for w in (event.get("category"), event.get("name")) if w]
    if settings.track_named_pages and words:
        return f"Viewed {' '.join(words)} {noun}"
    return f"Loaded a {noun}"


def revenue_fields(event: Event, props: dict[str, Any]) -> dict[str, Any]:
    """Amplitude's revenue keys from Segment e-commerce properties (Segment's mapping)."""
    get = props.get
    order = event.get("event") == "Order Completed"
    revenue = get("revenue")
    if order and type(revenue) not in NUMBERS:
        revenue = get("total")
    out: dict[str, Any] = {}
    if type(revenue) in NUMBERS:
        out["revenue"] = revenue
        if order:
            out["revenueType"] = "Purchase"
    for key in ("price", "quantity"):
        if type(value := get(key)) in NUMBERS:
            out[key] = value
    product_id = get("product_id") or get("productId")
    if product_id is not None:
        out["productId"] = str(product_id)
    if kind := get("revenueType") or get("revenue_type"):
        out["revenueType"] = str(kind)
    return out


def convert(event: Event, settings: Settings) -> dict[str, Any] | str:
    """One Segment event -> one Amplitude event, or the reason it cannot be sent."""
    kind = event["type"]
    if kind == "alias":
        return "alias is not part of the Amplitude HTTP V2 API (it needs the usermap API)"
    get = event.get
    ctx: dict[str, Any] = get("context") or {}
    device: dict[str, Any] = ctx.get("device") or {}
    anonymous_id, context_id = _device_id(get("anonymousId")), _device_id(device.get("id"))
    device_id = (anonymous_id or context_id if settings.prefer_anonymous_id_for_device_id
                 else context_id or anonymous_id)
    out: dict[str, Any] = {"event_type": event_type(event, settings)}
    min_length = settings.min_id_length or DEFAULT_MIN_ID_LENGTH
    for name, value in (("user_id", get("userId")), ("device_id", device_id)):
        if value is None or value == "":
            continue
        if type(value) is not str:
            value = str(value)
        if len(value) < min_length:
            return (f"{name} {value!r} is shorter than {min_length} characters; Amplitude "
                    "rejects it (raise or lower `min_id_length` to allow it)")
        out[name] = value
    if "user_id" not in out and "device_id" not in out:
        return "Amplitude needs a user_id or a device_id (userId, context.device.id, anonymousId)"
    out["time"] = time_ms(event)
    out["insert_id"] = event["messageId"]
    props: dict[str, Any] = get("properties") or {}  # shared, never changed
    if kind == "track":
        out["event_properties"] = props
        if props:
            out.update(revenue_fields(event, props))
    elif kind == "identify":
        out["user_properties"] = {"$set": get("traits") or {}}
    elif kind == "group":
        out["groups"] = {settings.group_type: str(get("groupId"))}
        out["user_properties"] = {"$set": out["groups"]}
    else:  # page, screen
        props = {**{k: event[k] for k in ("name", "category") if get(k)}, **props}
        out["event_properties"] = props
    _context_fields(ctx, device, out)
    return out


def _device_id(value: Any) -> Any:
    """None for an all-zero id (an iOS IDFA under Limit Ad Tracking): Amplitude drops such
    a device_id and fails the request, so another id (or none) is used instead."""
    if not value or (type(value) is str and value[0] != "0"):  # most ids, at once
        return value
    return None if not str(value).replace("-", "").strip("0") else value


def _context_fields(ctx: dict[str, Any], device: dict[str, Any], out: dict[str, Any]) -> None:
    library: dict[str, Any] = ctx.get("library") or {}
    library_name = library.get("name")
    app = ctx.get("app") or {}
    fields = [("ip", ctx.get("ip")), ("language", ctx.get("locale")),
              ("platform", "Web" if library_name == "analytics.js" else _platform(device)),
              ("device_model", device.get("model")), ("app_version", app.get("version")),
              ("device_manufacturer", device.get("manufacturer"))]
    if os_ := ctx.get("os"):
        fields += (("os_name", os_.get("name")), ("os_version", os_.get("version")))
    if location := ctx.get("location"):
        fields += (("country", location.get("country")), ("city", location.get("city")))
    for key, value in fields:
        if value is not None and value != "":
            out[key] = value if type(value) is str else str(value)
    if library_name:
        out["library"] = f"{library_name}/{library.get('version', '')}".rstrip("/")


def _platform(device: dict[str, Any]) -> Any:
    """context.device.type, with Segment's spelling of Amplitude's platforms (ios → iOS)."""
    kind = device.get("type")
    return PLATFORMS.get(kind.lower(), kind) if type(kind) is str else kind


def prepare(event: Event, settings: Settings) -> bytes | str:
    """One event's Amplitude JSON (as it goes in the request's `events`), or why not."""
    return prepared(convert(event, settings))


def encode_prepared(items: list[bytes | str], settings: Settings) -> Encoded:
    jsons, positions, encoded = split_prepared(items)
    if jsons:
        fields: dict[str, Any] = {"api_key": settings.api_key.get_secret_value()}
        if settings.min_id_length is not None:
            fields["options"] = {"min_id_length": settings.min_id_length}
        body = array_body(array_head(fields, "events"), jsons)
        headers = {"Content-Type": "application/json"}
        url = settings.endpoint or ENDPOINTS[settings.region]
        encoded.requests.append(Request(url, body, positions, headers))
    return encoded


encode = encode_in_parts(prepare, encode_prepared)


def classify(response: Response, request: Request) -> Outcome:
    status = response.status
    if 200 <= status < 300:
        return DELIVERED
    if status == 413:
        return Split("HTTP 413: payload too large for Amplitude")
    body = json_object(response.body)
    if status == 400:
        return _classify_400(body, len(request.events)) or classify_http(response, request)
    if status == 429:
        return _classify_429(body, request, response)
    return classify_http(response, request)


def _classify_400(body: dict[str, Any], count: int) -> Outcome | None:
    """Amplitude ingests nothing on 400: the named events are rejected, the rest re-sent."""
    rejected: dict[int, str] = {}
    for key in INDEXED_400_FIELDS:
        for field, indices in (body.get(key) or {}).items():
            for i in indices if isinstance(indices, list) else ():
                if isinstance(i, int) and 0 <= i < count:
                    what = key.removeprefix("events_with_").replace("_", " ").removesuffix("s")
                    rejected.setdefault(i, f"Amplitude 400: {what} `{field}`")
    for i in body.get("silenced_events") or ():
        if isinstance(i, int) and 0 <= i < count:
            rejected.setdefault(i, "Amplitude 400: the event's device is silenced")
    if not rejected:
        return None
    error = str(body.get("error") or "invalid events")
    retry = {i: f"not ingested: Amplitude refused the request ({error}) for other events"
             for i in range(count) if i not in rejected}
    return Partial(rejected=rejected, retry=retry)


def _classify_429(body: dict[str, Any], request: Request, response: Response) -> Outcome:
    after_s = retry_after_s(response.headers) or THROTTLE_PAUSE_S
    users = body.get("exceeded_daily_quota_users") or {}
    devices = body.get("exceeded_daily_quota_devices") or {}
    if not users and not devices:
        return Retry("HTTP 429: Amplitude throttled a user or device", after_s)
    native = json_object(request.body).get("events") or []
    rejected = {i: "Amplitude 429: the user or device exceeded its daily event quota"
                for i, e in enumerate(native)
                if e.get("user_id") in users or e.get("device_id") in devices}
    retry = {i: "HTTP 429: Amplitude throttled this request"
             for i in range(len(request.events)) if i not in rejected}
    return Partial(rejected=rejected, retry=retry, after_s=after_s)


CONNECTOR = Connector(
    name="amplitude",
    display_name="Amplitude",
    settings=Settings,
    limits=Limits(max_events=2000, max_bytes=1_000_000),
    encode=encode,
    prepare=prepare,
    encode_prepared=encode_prepared,
    classify=classify,
    docs="""\
**Identity.** `user_id` = `userId`; `device_id` = `context.device.id`, else `anonymousId`
(Segment's server-side rule; an all-zero id, which Amplitude refuses, is skipped). Ids
shorter than 5 characters (or `min_id_length`) are rejected locally, as Amplitude would.
`insert_id` = `messageId` (Amplitude dedupes 7 days).

**Mapping.** track → its event name; identify → `$identify` with `user_properties: {"$set":
traits}`; group → `$identify` with `groups: {group_type: groupId}`; page/screen → `Viewed
<category> <name> Page|Screen` (Segment's "Track Named Pages"), else `Loaded a Page|Screen`;
alias → rejected (needs the usermap API). `time` in ms; context → `ip`, `platform` (`Web`
for analytics.js, else device type, `ios`/`android` spelt `iOS`/`Android`), `os_*`,
`device_*`, `app_version`, `library`, `language`, `country`, `city`. Revenue: `revenue`
(Order Completed: else `total`, type `Purchase`), `price`, `quantity`, `productId`,
`revenueType`; products stay in properties.

**Errors.** A 400 naming events rejects those, re-sends the rest; naming none, rejects all.
413 splits. 429 retries after 30 s; users/devices over their daily quota are rejected.""",
)

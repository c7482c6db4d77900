"""PostHog: the capture batch endpoint, ``POST {host}/batch/``.

PostHog answers 200 even to events it then drops (no name, no or empty ``distinct_id``),
so those are rejected here. Each event's ``uuid`` is derived from its ``messageId`` with
uuid5 over a fixed namespace, so a retried event keeps its uuid and deduplicates.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

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
    prepared,
    split_prepared,
)
from router.delivery.outcome import Outcome, Split

MAX_BYTES = 20_000_000  # "the entire request body must be less than 20MB"
MAX_EVENT_BYTES = 1_000_000  # PostHog discards (after its 200) events over 1 MB
NAMESPACE = uuid.UUID("8f4cc4e5-3b47-4f6e-9d61-6a1c1d0b7e55")  # never change: breaks dedupe
CONTEXT = {  # PostHog property <- Segment context path
    "$ip": ("ip",), "$raw_user_agent": ("userAgent",), "$locale": ("locale",),
    "$timezone": ("timezone",), "$lib": ("library", "name"), "$lib_version": ("library", "version"),
    "$app_name": ("app", "name"), "$app_version": ("app", "version"),
    "$app_build": ("app", "build"), "$device_id": ("device", "id"),
    "$device_manufacturer": ("device", "manufacturer"), "$device_model": ("device", "model"),
    "$os": ("os", "name"), "$os_version": ("os", "version"),
    "$current_url": ("page", "url"), "$pathname": ("page", "path"),
    "$referrer": ("page", "referrer"), "utm_source": ("campaign", "source"),
    "utm_medium": ("campaign", "medium"), "utm_campaign": ("campaign", "name"),
    "utm_term": ("campaign", "term"), "utm_content": ("campaign", "content"),
}


class Settings(ConnectorSettings):
    api_key: SecretStr = Field(description="The project API key (`phc_…`), sent in the body.")
    host: str = Field("https://us.i.posthog.com", description="Ingestion host: US cloud; "
                      "`https://eu.i.posthog.com` for EU cloud; or a self-hosted URL.")
    historical_migration: bool = Field(False, description="Flag batches as a historical "
                                       "migration (backfills; skips spike detection).")
    group_type: str = Field("company", description="Group type a Segment group call sets.")


def prepare(event: Event, settings: Settings) -> bytes | str:
    """One event's PostHog JSON (an item of the request's `batch`), or why not."""
    item = prepared(_item(event, settings))
    if type(item) is bytes and len(item) > MAX_EVENT_BYTES:
        return (f"event is {len(item)} bytes as JSON: PostHog discards events over 1 MB "
                "(while answering 200)")
    return item


def encode_prepared(items: list[bytes | str], settings: Settings) -> Encoded:
    batch, positions, encoded = split_prepared(items)
    if batch:
        head = array_head({"api_key": settings.api_key.get_secret_value(),
                           "historical_migration": settings.historical_migration}, "batch")
        url = settings.host.rstrip("/") + "/batch/"
        encoded.requests.append(Request(url, array_body(head, batch), positions,
                                        {"Content-Type": "application/json"}))
    return encoded


encode = encode_in_parts(prepare, encode_prepared)


def _item(event: Event, settings: Settings) -> dict[str, Any] | str:
    """The PostHog event for one Segment event, or why PostHog would drop it."""
    kind = event["type"]
    distinct_id = str(event.get("userId") or event.get("anonymousId") or "")
    if not distinct_id:
        return "no userId or anonymousId: PostHog drops events without a distinct_id"
    context = event.get("context") or {}
    props: dict[str, Any] = {k: v for k, path in CONTEXT.items()
                             if (v := _get(context, path)) is not None}
    props.update(event.get("properties") or {})
    if kind == "track":
        name = event.get("event")
        if not isinstance(name, str) or not name:
            return "no event name: PostHog drops events without one"
    elif kind == "identify":
        # without a userId there is nobody to identify: `$identify` would mark the
        # anonymous person identified (PostHog then refuses to merge it at login), so its
        # traits go as a `$set`, as PostHog's own Segment destination sends them
        name = "$identify" if event.get("userId") not in (None, "") else "$set"
        props["$set"] = event.get("traits") or {}
        anonymous_id = event.get("anonymousId")
        if anonymous_id and event.get("userId") and str(anonymous_id) != distinct_id:
            props["$anon_distinct_id"] = str(anonymous_id)
    elif kind == "page":
        name = "$pageview"
        page = {**(context.get("page") or {}), **(event.get("properties") or {})}
        page.setdefault("title", event.get("name"))
        for key, source in (("$current_url", "url"), ("$pathname", "path"),
                            ("$referrer", "referrer"), ("title", "title")):
            if page.get(source) is not None:
                props[key] = page[source]
        if isinstance(props.get("$current_url"), str):
            props["$host"] = urlsplit(props["$current_url"]).netloc
    elif kind == "screen":
        name = "$screen"
        props["$screen_name"] = event.get("name") or props.get("name")
    elif kind == "group":  # decode guarantees its groupId
        name = "$groupidentify"
        props.update({"$group_type": settings.group_type, "$group_key": str(event["groupId"]),
                      "$group_set": event.get("traits") or {}})
    else:  # alias: PostHog merges the `alias` id into `distinct_id`, the person it keeps
        # (and refuses if the alias's person is already identified), so the old id,
        # previousId, is the alias and the new one, userId, the distinct_id.
        name = "$create_alias"
        props["alias"] = str(event["previousId"])
    group_id = context.get("groupId")  # Segment's spec: the account a call belongs to
    if group_id not in (None, "") and kind != "group":  # counted for it in group analytics
        props.setdefault("$groups", {settings.group_type: str(group_id)})
    if not props.get("$ip"):
        # without `$ip` PostHog locates the event at the sender's address (this router's
        # data centre) and sets that on the person; PostHog's server SDKs send this flag
        props.setdefault("$geoip_disable", True)
    return {"event": name, "distinct_id": distinct_id, "properties": props,
            "timestamp": event["timestamp"],
            "uuid": str(uuid.uuid5(NAMESPACE, str(event["messageId"])))}


def _get(context: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = context
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def classify(response: Response, request: Request) -> Outcome:
    """PostHog's documented rules are the default ones, plus 413 (the body is over the
    20 MB limit): split the batch."""
    if response.status == 413:
        return Split(f"HTTP 413: the batch is over PostHog's {MAX_BYTES}-byte request limit")
    return classify_http(response, request)


CONNECTOR = Connector(
    name="posthog",
    display_name="PostHog",
    settings=Settings,
    limits=Limits(max_events=1000, max_bytes=MAX_BYTES),
    encode=encode,
    prepare=prepare,
    encode_prepared=encode_prepared,
    classify=classify,
    docs="""
**Identity.** `distinct_id` is `userId`, else `anonymousId`. `uuid` is uuid5 of `messageId`
over a fixed namespace, so a retried event keeps its uuid and PostHog deduplicates it.
**Mapping.** track → the event name; identify → `$identify` with `$set` = traits and
`$anon_distinct_id` = anonymousId (when both ids are set), or without a userId a `$set`
event (an anonymous person is not marked identified); page → `$pageview` (`$current_url`,
`$pathname`, `$referrer`, `$host`, `title`); screen → `$screen` (`$screen_name`); group →
`$groupidentify` (`$group_type` from `group_type`, `$group_key`, `$group_set`), and any
other call with `context.groupId` carries `$groups` = {`group_type`: groupId}; alias →
`$create_alias` (`distinct_id` = userId, `alias` = previousId, merged into it). Context
becomes `$ip`, `$raw_user_agent`, `$lib`, `$lib_version`, `$os`, `$os_version`, `$app_*`,
`$device_*`, `$locale`, `$timezone`, `$current_url`… and `utm_*`; event properties win over
context. Without an IP (`context.ip` absent or dropped) `$geoip_disable` is set, so PostHog
does not locate the user at the router's address.
**Delivery.** One request per batch (PostHog sets no count limit; bodies < 20 MB; 413 →
split). 400 and 401 (invalid project API key) are rejected; 429 and 5xx retried. PostHog
answers 200 to events it drops, so a missing name or `distinct_id`, or an event over 1 MB
as JSON, is rejected locally.
""",
)

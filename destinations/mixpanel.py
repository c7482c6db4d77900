"""Mixpanel: events via the Import API (``POST /import?strict=1``), profiles via Engage
(``POST /engage``, ``$set``); one batch may become both requests. Per Mixpanel's docs:
≤ 2,000 events and ≤ 10 MB uncompressed per import; a 400 lists ``failed_records`` by index
and the other events WERE imported.
"""

from __future__ import annotations

import base64
import gzip
import re
import uuid
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, model_validator

from destinations.base import (
    Connector,
    ConnectorSettings,
    Encoded,
    Event,
    Limits,
    Request,
    Response,
    classify_http,
    encode_in_parts,
    json_body,
    prepared,
    split_prepared,
)
from router.delivery.outcome import DELIVERED, Outcome, Partial, Rejected, Split
from router.events import array_of, time_ms

HOSTS = {"us": "https://api.mixpanel.com", "eu": "https://api-eu.mixpanel.com",
         "in": "https://api-in.mixpanel.com"}
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
# Mixpanel refuses these as distinct_id and $insert_id ("implementation mistakes").
INVALID_IDS = frozenset(("00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil",
                         "none", "null", "n/a", "na", "undefined", "unknown", "<nil>", "0",
                         "-1", "true", "false", "[]", "{}"))
INSERT_ID_NAMESPACE = uuid.UUID("8f7c3c1e-2b7a-5a4e-9f0d-6d2b1e4c9a10")
MIN_TIME_MS = 31_536_000_000  # 1971-01-01: Mixpanel rejects anything earlier
MAX_PROPERTIES = 254  # "fewer than 255 properties"
PROFILE_TRAITS = {"email": "$email", "name": "$name", "firstName": "$first_name",
                  "lastName": "$last_name", "phone": "$phone", "avatar": "$avatar",
                  "createdAt": "$created"}


class Settings(ConnectorSettings):
    region: Literal["us", "eu", "in"] = Field(
        "us", description="Data residency: `us` (api.mixpanel.com), `eu` or `in`.")
    api_host: str | None = Field(None, description="Base URL overriding `region`, no path.")
    service_account_username: str | None = Field(
        None, description="Service account username (recommended import auth).")
    service_account_secret: SecretStr | None = Field(None, description="Service account secret.")
    project_id: str | None = Field(None, description="Project id; required with a service account.")
    api_secret: SecretStr | None = Field(
        None, description="Legacy project secret, used for import when no service account is set.")
    project_token: SecretStr | None = Field(
        None, description="Project token: needed for identify/group (Engage API); also import "
        "auth when neither a service account nor a secret is set.")
    group_key: str | None = Field(
        None, description="Group analytics key (e.g. `company_id`) that group calls $set to "
        "groupId on the user profile; without it group calls are rejected.")
    gzip: bool = Field(True, description="Send import bodies with `Content-Encoding: gzip`.")

    @model_validator(mode="after")
    def _auth(self) -> Settings:
        account = (self.service_account_username, self.service_account_secret, self.project_id)
        if any(account) and not all(account):
            raise ValueError("a service account needs service_account_username, "
                             "service_account_secret and project_id")
        if not (all(account) or self.api_secret or self.project_token):
            raise ValueError("set a service account, api_secret or project_token")
        return self


def insert_id(message_id: str) -> str:
    """messageId when Mixpanel accepts it, else a UUID5 of it (deterministic, 36 chars)."""
    if INSERT_ID.fullmatch(message_id) and message_id.lower() not in INVALID_IDS:
        return message_id
    return str(uuid.uuid5(INSERT_ID_NAMESPACE, message_id))


def _identity(event: Event, kind: str) -> str | None:
    value = event.get("previousId" if kind == "alias" else "userId") or event.get("anonymousId")
    return None if value is None else str(value)


def _context(ctx: dict[str, Any]) -> dict[str, Any]:
    os_, app, page = ctx.get("os") or {}, ctx.get("app") or {}, ctx.get("page") or {}
    device, campaign = ctx.get("device") or {}, ctx.get("campaign") or {}
    pairs = (("$os", os_.get("name")), ("$os_version", os_.get("version")),
             ("$manufacturer", device.get("manufacturer")), ("$model", device.get("model")),
             ("$app_version_string", app.get("version")), ("$app_build_number", app.get("build")),
             ("$current_url", page.get("url")), ("$referrer", page.get("referrer")),
             ("utm_source", campaign.get("source")), ("utm_medium", campaign.get("medium")),
             ("utm_campaign", campaign.get("name")), ("utm_term", campaign.get("term")),
             ("utm_content", campaign.get("content")))
    return {k: v for k, v in pairs if v is not None and v != ""}


def convert(event: Event, kind: str) -> dict[str, Any] | str:
    """A track/page/screen/alias call -> one import event, or the reason it cannot be."""
    distinct_id = _identity(event, kind)
    if distinct_id is None or distinct_id.lower() in INVALID_IDS:
        return f"distinct_id {distinct_id!r} is one Mixpanel refuses"
    ms = time_ms(event)
    if ms < MIN_TIME_MS:
        return f"time {event.get('timestamp')!r} is before 1971-01-01, which Mixpanel refuses"
    ctx: dict[str, Any] = event.get("context") or {}
    props = _context(ctx)
    props.update(event.get("properties") or {})
    if kind == "track":
        name = str(event["event"])
    elif kind == "alias":
        name, props["alias"] = "$create_alias", str(event.get("userId"))
    else:
        name = "Loaded a Page" if kind == "page" else "Loaded a Screen"
        props.update({k: event[k] for k in ("name", "category") if event.get(k)})
    for key, value in (("$user_id", event.get("userId")), ("$device_id", event.get("anonymousId"))):
        if value and kind != "alias":
            props[key] = str(value)
    props.update(time=ms, distinct_id=distinct_id, ip=ctx.get("ip") or "0")
    props["$insert_id"] = insert_id(event["messageId"])
    if len(props) > MAX_PROPERTIES:
        return f"{len(props)} properties; Mixpanel accepts fewer than 255"
    return {"event": name, "properties": props}


def profile(event: Event, kind: str, settings: Settings) -> dict[str, Any] | str:
    """An identify/group call -> one Engage ``$set`` update, or the reason it cannot be."""
    if settings.project_token is None:
        return f"{kind} needs `project_token`: Mixpanel's Engage API authenticates with it"
    distinct_id = _identity(event, kind)
    if not distinct_id or distinct_id.lower() in INVALID_IDS:
        return f"distinct_id {distinct_id!r} is one Mixpanel refuses"
    if kind == "group":
        if not settings.group_key:
            return "group calls need `group_key` (Mixpanel group analytics) to be mapped"
        values = {settings.group_key: str(event.get("groupId"))}
    else:
        values = {PROFILE_TRAITS.get(k, k): v for k, v in (event.get("traits") or {}).items()}
    ip = (event.get("context") or {}).get("ip") or "0"
    return {"$token": settings.project_token.get_secret_value(), "$distinct_id": distinct_id,
            "$ip": ip, "$set": values}


def import_auth(settings: Settings) -> tuple[str, str]:
    """(Authorization header, query suffix) for /import: service account, else secret: ."""
    query, secret = "", settings.api_secret or settings.project_token
    user = f"{secret.get_secret_value() if secret else ''}:"
    if settings.service_account_username and settings.service_account_secret:
        user = f"{settings.service_account_username}:"
        user += settings.service_account_secret.get_secret_value()
        query = f"&project_id={settings.project_id}"
    return "Basic " + base64.b64encode(user.encode()).decode(), query


class EngageUpdate(bytes):
    """A prepared identify/group call: an Engage update (every other prepared event is
    an import event's JSON)."""

    __slots__ = ()


def prepare(event: Event, settings: Settings) -> bytes | str:
    """One event's import event or Engage update JSON, or why it cannot be sent."""
    kind = event["type"]
    if kind in ("identify", "group"):
        update = profile(event, kind, settings)
        return update if type(update) is str else EngageUpdate(orjson.dumps(update))
    return prepared(convert(event, kind))


def encode_prepared(items: list[bytes | str], settings: Settings) -> Encoded:
    jsons, positions, encoded = split_prepared(items)
    host = (settings.api_host or HOSTS[settings.region]).rstrip("/")
    pairs = list(zip(positions, jsons, strict=True))
    imports = [(p, j) for p, j in pairs if type(j) is not EngageUpdate]
    updates = [(p, j) for p, j in pairs if type(j) is EngageUpdate]
    if imports:
        authorization, query = import_auth(settings)
        headers = {"Content-Type": "application/json", "Authorization": authorization}
        body = array_of(j for _, j in imports)
        if settings.gzip:
            body = gzip.compress(body, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        encoded.requests.append(Request(f"{host}/import?strict=1{query}", body,
                                        [p for p, _ in imports], headers))
    if updates:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        encoded.requests.append(Request(f"{host}/engage?verbose=1", array_of(
            j for _, j in updates), [p for p, _ in updates], headers))
    return encoded


encode = encode_in_parts(prepare, encode_prepared)


def classify(response: Response, request: Request) -> Outcome:
    status = response.status
    engage = "/engage" in request.url
    if 200 <= status < 300:
        if engage and not _engage_ok(response.body):
            return Rejected(f"Mixpanel engage refused the updates: {response.body[:200]!r}")
        return DELIVERED
    if status == 413:
        return Split("HTTP 413: payload too large for Mixpanel")
    body = json_body(response.body)
    if status == 400 and not engage and isinstance(body, dict):
        count = len(request.events)
        rejected = {r["index"]: f"Mixpanel: {r.get('field', '')}: {r.get('message', '')}"
                    for r in body.get("failed_records") or () if isinstance(r, dict)
                    and isinstance(r.get("index"), int) and 0 <= r["index"] < count}
        if rejected:  # the events not named were imported
            return Partial(rejected=rejected)
    return classify_http(response, request)


def _engage_ok(raw: bytes) -> bool:
    """``verbose=1`` answers ``{"status": 1, "error": null}``; plain mode ``1`` or ``0``."""
    body = json_body(raw)
    return (body.get("status") if isinstance(body, dict) else body) == 1


CONNECTOR = Connector(
    name="mixpanel",
    display_name="Mixpanel",
    settings=Settings,
    limits=Limits(max_events=2000, max_bytes=10_000_000),
    encode=encode,
    prepare=prepare,
    encode_prepared=encode_prepared,
    classify=classify,
    docs="""\
**Identity.** `distinct_id` = `userId`, else `anonymousId`; events also carry `$user_id`
and `$device_id` (anonymousId) for Mixpanel's simplified ID merge. Ids Mixpanel refuses
(`null`, `anonymous`, `0`, …) are rejected locally. `$insert_id` = `messageId` when it is
≤ 36 chars of `[A-Za-z0-9-]`, else `uuid5(8f7c3c1e-2b7a-5a4e-9f0d-6d2b1e4c9a10,
messageId)` — deterministic, so a re-sent event is deduplicated.

**Mapping.** track → its event name; page → `Loaded a Page`, screen → `Loaded a Screen`
(Segment's generic names; `name`/`category` become properties); alias → `$create_alias`;
identify → Engage `$set` of traits (email/name/firstName/lastName/phone/avatar/createdAt
→ `$email`, `$name`, …) with `project_token`; group → Engage `$set {group_key: groupId}`.
`time` in ms; `ip` = `context.ip`, else `0` (so Mixpanel does not geolocate our server);
context → `$os`, `$os_version`, `$manufacturer`, `$model`, `$app_version_string`,
`$current_url`, `$referrer`, `utm_*`.

**Errors.** Import 400 rejects exactly the `failed_records` (the rest were imported);
413 splits; 429/5xx retry. Engage answers 200 with `status: 0` on bad updates: rejected.""",
)

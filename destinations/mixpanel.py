"""Mixpanel: events via the Import API (``POST /import?strict=1``), user profiles via
Engage (``POST /engage``, ``$set``), group profiles via ``POST /groups``; one batch may
become all three requests. Per Mixpanel's docs: ≤ 2,000 events and ≤ 10 MB uncompressed
per import; a 400 lists ``failed_records`` by index and the other events WERE imported.
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
from destinations.mixpanel_map import GROUP_TRAITS, PROFILE_TRAITS, context_properties
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
MAX_UPDATE_BYTES = 1_000_000  # Engage and Groups: "each individual update ... 1 MB"


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
        None, description="Project token: needed for identify/group (Engage, Groups); also import "
        "auth when neither a service account nor a secret is set.")
    group_key: str = Field("$group_id", min_length=1, description="Group key (Mixpanel "
                           "project settings) of the group profiles group calls update.")
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


def convert(event: Event, kind: str, settings: Settings) -> dict[str, Any] | str:
    """A track/page/screen/alias call -> one import event, or the reason it cannot be."""
    distinct_id = _identity(event, kind)
    if distinct_id is None or distinct_id.lower() in INVALID_IDS:
        return f"distinct_id {distinct_id!r} is one Mixpanel refuses"
    ms = time_ms(event)
    if ms < MIN_TIME_MS:
        return f"time {event.get('timestamp')!r} is before 1971-01-01, which Mixpanel refuses"
    ctx: dict[str, Any] = event.get("context") or {}
    props = context_properties(ctx)
    props.update(event.get("properties") or {})
    if kind == "track":
        name = str(event["event"])
    elif kind == "alias":  # Segment: alias = userId (else anonymousId), the new id
        name, props["alias"] = "$create_alias", _identity(event, "identify")
        if settings.project_token:  # Mixpanel lists `token` among $create_alias's fields
            props["token"] = settings.project_token.get_secret_value()
    else:  # Segment's presets: "Viewed {name}"; unnamed, its classic "Loaded a Page"
        name = f"Viewed {event['name']}" if event.get("name") else (
            "Loaded a Page" if kind == "page" else "Loaded a Screen")
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
    """An identify call -> one Engage ``$set`` update; a group call -> one Groups ``$set``
    update (as Segment's Identify User / Group Identify User); or why it cannot be."""
    if settings.project_token is None:
        return f"{kind} needs `project_token`: Mixpanel's profile APIs authenticate with it"
    token = settings.project_token.get_secret_value()
    traits: dict[str, Any] = event.get("traits") or {}
    if kind == "group":
        key = settings.group_key
        # Segment: a trait named like the group key overrides groupId (classic behaviour)
        return {"$token": token, "$group_key": key,
                "$group_id": str(traits.get(key) or event.get("groupId")),
                "$set": {GROUP_TRAITS.get(k, k): v for k, v in traits.items()}}
    distinct_id = _identity(event, kind)
    if not distinct_id or distinct_id.lower() in INVALID_IDS:
        return f"distinct_id {distinct_id!r} is one Mixpanel refuses"
    ip = (event.get("context") or {}).get("ip") or "0"
    return {"$token": token, "$distinct_id": distinct_id, "$ip": ip,
            "$set": {PROFILE_TRAITS.get(k, k): v for k, v in traits.items()}}


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
    """A prepared identify call: an Engage update (a prepared import event is plain bytes)."""
    __slots__ = ()


class GroupUpdate(bytes):
    """A prepared group call: a Groups API update."""
    __slots__ = ()


def prepare(event: Event, settings: Settings) -> bytes | str:
    """One event's import event, Engage or Groups update JSON, or why it cannot be sent."""
    kind = event["type"]
    if kind in ("identify", "group"):
        update = profile(event, kind, settings)
        if type(update) is str:
            return update
        raw = orjson.dumps(update)
        if len(raw) >= MAX_UPDATE_BYTES:  # Mixpanel would fail the whole request for it
            return f"a {len(raw)}-byte profile update; Mixpanel's limit is 1 MB"
        return GroupUpdate(raw) if kind == "group" else EngageUpdate(raw)
    return prepared(convert(event, kind, settings))


def encode_prepared(items: list[bytes | str], settings: Settings) -> Encoded:
    jsons, positions, encoded = split_prepared(items)
    host = (settings.api_host or HOSTS[settings.region]).rstrip("/")
    pairs = list(zip(positions, jsons, strict=True))
    imports = [(p, j) for p, j in pairs if type(j) is bytes]
    if imports:
        authorization, query = import_auth(settings)
        headers = {"Content-Type": "application/json", "Authorization": authorization}
        body = array_of(j for _, j in imports)
        if settings.gzip:
            body = gzip.compress(body, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        encoded.requests.append(Request(f"{host}/import?strict=1{query}", body,
                                        [p for p, _ in imports], headers))
    for path, kind in (("engage", EngageUpdate), ("groups", GroupUpdate)):
        updates = [(p, j) for p, j in pairs if type(j) is kind]
        if updates:  # no gzip: Engage does not take it
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            encoded.requests.append(Request(f"{host}/{path}?verbose=1", array_of(
                j for _, j in updates), [p for p, _ in updates], headers))
    return encoded


encode = encode_in_parts(prepare, encode_prepared)


def classify(response: Response, request: Request) -> Outcome:
    status = response.status
    engage = "/import" not in request.url  # /engage or /groups: a 200 says how it went
    body = json_body(response.body)  # verbose=1: {"status": 1, "error": null}; else 1 or 0
    if 200 <= status < 300:
        if engage and (body.get("status") if isinstance(body, dict) else body) != 1:
            # "one or more" updates are invalid, not which: halve until each is alone
            reason = f"Mixpanel refused the profile updates: {response.body[:200]!r}"
            return Split(reason) if len(request.events) > 1 else Rejected(reason)
        return DELIVERED
    if status == 413:
        return Split("HTTP 413: payload too large for Mixpanel")
    if status == 400 and not engage and isinstance(body, dict):
        count = len(request.events)
        rejected = {r["index"]: f"Mixpanel: {r.get('field', '')}: {r.get('message', '')}"
                    for r in body.get("failed_records") or () if isinstance(r, dict)
                    and isinstance(r.get("index"), int) and 0 <= r["index"] < count}
        if rejected:  # the events not named were imported
            return Partial(rejected=rejected)
    return classify_http(response, request)


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

**Mapping.** track → its name; page/screen → `Viewed {name}` (Segment's presets; unnamed:
`Loaded a Page`/`Loaded a Screen`); alias → `$create_alias` (`alias` = userId); identify →
Engage `$set` of traits (email, name, firstName, … → `$email`, `$name`, `$first_name`, …);
group → Groups API `$set` of traits on `$group_key` = `group_key`, `$group_id` = groupId;
both need `project_token`. `time` in ms; `ip` = `context.ip`, else `0` (so Mixpanel does
not geolocate our server); context → default properties as Segment's Mixpanel (Actions)
maps them (`$os`, `$browser`, `$app_*`, `$device_*`, `$current_url`, `mp_country_code`, …).

**Errors.** Import 400 rejects exactly the `failed_records` (the rest were imported); 413
splits; 429/5xx retry. Engage/Groups 200 `status: 0` (a bad update, unnamed): halved.""",
)

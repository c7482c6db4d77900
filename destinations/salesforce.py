"""Salesforce: identify -> Lead/Contact upsert by an external-id field, group -> Account
upsert by another, track -> insert of a configured object (e.g. Task), all through sObject
Collections, with OAuth 2.0 client-credentials tokens.

Events for one key (userId, email or groupId) in a batch merge into one record (Salesforce
refuses duplicate external ids in one request); when any record carries several events,
the request's ``X-Router-Record-Events`` header lists how many request positions each
record carries, so ``classify`` maps the per-record results back (unknown headers are
ignored by the API).
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import Field, SecretStr, field_validator

from destinations import base
from destinations.base import Connector, ConnectorSettings, Credentials, Encoded, Event, Request
from destinations.salesforce_map import ACCOUNT_FIELDS, CONTACT_FIELDS, LEAD_FIELDS
from router.delivery.outcome import DELIVERED, Outcome, Partial, Rejected, Retry, Split

MAX_RECORDS = 200  # sObject Collections limit (documented)
GROUPS = "X-Router-Record-Events"
# a locked row, or a record rolled back only because another one failed (allOrNone)
RETRYABLE = {"UNABLE_TO_LOCK_ROW", "ALL_OR_NONE_OPERATION_ROLLED_BACK"}
# (object, external id field) -> key -> (the merged record, the events it carries)
Upserts = dict[tuple[str, str], dict[str, tuple[dict[str, Any], list[int]]]]


class Settings(ConnectorSettings):
    instance_url: str = Field(description="Your My Domain URL, e.g. "
                              "`https://acme.my.salesforce.com`; data calls go here.")
    login_url: str | None = Field(
        None, description="Token endpoint host; unset = `instance_url` (the client "
        "credentials flow requires the My Domain URL).")
    client_id: str = Field(description="Connected app consumer key.")
    client_secret: SecretStr = Field(description="Connected app consumer secret.")
    api_version: str = Field("v62.0", description="REST API version, e.g. `v62.0` (`62.0` "
                             "is read as `v62.0`); at least v46.0, where upserts of sObject "
                             "Collections begin.")
    token_lifetime_s: int = Field(
        3600, description="Token lifetime when the token response has no `expires_in` "
        "(keep it below the connected app's session timeout).")
    sobject: Literal["Lead", "Contact"] = Field("Lead", description="Object identify upserts.")
    external_id_field: str = Field(
        "External_Id__c", description="External ID field identify upserts by.")
    external_id_from: Literal["userId", "email"] = Field(
        "userId", description="Which identifier fills `external_id_field`.")
    field_map: dict[str, str] | None = Field(
        None, description="Trait path (dotted) -> field; unset = the defaults for `sobject`.")
    track_object: str | None = Field(
        None, description="Object each track call inserts (e.g. `Task`); unset = track "
        "calls are rejected.")
    track_field_map: dict[str, str] = Field(
        default_factory=lambda: {"event": "Subject"},
        description="Event path (dotted, e.g. `properties.revenue`) -> track object field.")
    track_values: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Constant fields of every track record.")
    track_relationship: str | None = Field(
        None, description="Relationship field (e.g. `Who`) linking the track record to the "
        "`sobject` record by its external id.")
    account_external_id_field: str | None = Field(
        None, description="External ID field on Account (e.g. `Segment_Group_Id__c`) that "
        "group calls upsert by, filled with the groupId; unset = group calls are rejected.")
    account_field_map: dict[str, str] | None = Field(
        None, description="Event path (dotted, e.g. `traits.name`) -> Account field; unset "
        "= the defaults of Segment's Account action (name, groupId -> AccountNumber, ...).")

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        # the URL takes `vXX.X`; sObject Collections upserts exist from v46.0 on
        found = re.fullmatch(r"v?(\d+)\.(\d+)", value.strip())
        if not found or int(found[1]) < 46:
            raise ValueError(f"{value!r} is not a REST API version of v46.0 or later")
        return f"v{found[1]}.{found[2]}"


def _get(obj: Any, path: str) -> Any:
    for key in path.split("."):
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _fields(source: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    return {field: value for path, field in mapping.items()
            if isinstance(value := _get(source, path), str | int | float | bool)}


def _key(event: Event, settings: Settings) -> str | None:
    if settings.external_id_from == "userId":
        return str(event["userId"]) if event.get("userId") else None
    email = _get(event, "traits.email") or _get(event, "context.traits.email")
    return email.strip().lower() if isinstance(email, str) and email.strip() else None


def _merge(upserts: Upserts, target: tuple[str, str], key: str, fields: dict[str, Any],
           position: int) -> None:
    sobject, field = target
    record = upserts[target].setdefault(key, ({"attributes": {"type": sobject}, field: key}, []))
    record[0].update(fields)  # later traits win
    record[0][field] = key  # but never over the upsert key
    record[1].append(position)


def encode(events: list[Event], settings: Settings) -> Encoded:
    out = Encoded()
    person, account = ((settings.sobject, settings.external_id_field),
                       ("Account", settings.account_external_id_field or ""))
    upserts: Upserts = {person: {}, account: {}}  # people's requests first, then Accounts'
    inserts: list[tuple[int, dict[str, Any]]] = []
    mapping = settings.field_map or (LEAD_FIELDS if settings.sobject == "Lead"
                                     else CONTACT_FIELDS)
    what = "a userId" if settings.external_id_from == "userId" else "an email"
    for position, event in enumerate(events):
        kind, key = event.get("type"), _key(event, settings)
        if kind == "identify" and key is None:
            out.rejected[position] = (f"identify without {what}: Salesforce upserts "
                                      f"{settings.sobject} by {settings.external_id_field}")
        elif kind == "identify":
            traits = event.get("traits") or _get(event, "context.traits") or {}
            _merge(upserts, person, key, _fields(traits, mapping), position)
        elif kind == "group" and account[1]:  # decode guarantees a groupId
            _merge(upserts, account, str(event["groupId"]),
                   _fields(event, settings.account_field_map or ACCOUNT_FIELDS), position)
        elif kind == "track" and settings.track_object:
            fields = {"attributes": {"type": settings.track_object},
                      **_fields(event, settings.track_field_map), **settings.track_values}
            if settings.track_relationship and key is not None:
                fields[settings.track_relationship] = {
                    "attributes": {"type": settings.sobject}, settings.external_id_field: key}
            inserts.append((position, fields))
        else:
            out.rejected[position] = (
                f"Salesforce takes identify calls, track calls with settings.track_object "
                f"and group calls with settings.account_external_id_field, not {kind}")
    api = f"{settings.instance_url.rstrip('/')}/services/data/{settings.api_version}"
    headers = {"Content-Type": "application/json"}
    for (sobject, field), merged in upserts.items():  # the same shape for both objects
        records = list(merged.values())
        for start in range(0, len(records), MAX_RECORDS):
            chunk = records[start:start + MAX_RECORDS]
            sizes = [len(positions) for _, positions in chunk]
            out.requests.append(Request(
                f"{api}/composite/sobjects/{sobject}/{field}",
                orjson.dumps({"allOrNone": False, "records": [r for r, _ in chunk]}),
                [p for _, positions in chunk for p in positions],
                {**headers, GROUPS: ",".join(map(str, sizes))} if max(sizes) > 1 else headers,
                method="PATCH"))
    for start in range(0, len(inserts), MAX_RECORDS):
        batch = inserts[start:start + MAX_RECORDS]
        out.requests.append(Request(f"{api}/composite/sobjects", orjson.dumps(
            {"allOrNone": False, "records": [r for _, r in batch]}), [p for p, _ in batch],
            headers))
    return out


async def authenticate(session: aiohttp.ClientSession, settings: Settings) -> Credentials:
    """OAuth 2.0 client credentials: one token for the whole destination."""
    url = (settings.login_url or settings.instance_url).rstrip("/") + "/services/oauth2/token"
    form = {"grant_type": "client_credentials", "client_id": settings.client_id,
            "client_secret": settings.client_secret.get_secret_value()}
    async with session.post(url, data=form) as resp:
        data = orjson.loads(await resp.read() or b"{}")
    if resp.status != 200 or "access_token" not in data:
        raise RuntimeError(f"Salesforce token request failed ({resp.status}): "
                           f"{data.get('error')}: {data.get('error_description')}")
    if _origin(data.get("instance_url", settings.instance_url)) != _origin(
            settings.instance_url):
        raise RuntimeError(f"the token is for {data['instance_url']}, but settings."
                           f"instance_url is {settings.instance_url}: set it to that URL")
    lifetime = float(data.get("expires_in") or settings.token_lifetime_s)
    return Credentials({"Authorization": f"Bearer {data['access_token']}"},
                       time.time() + lifetime)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    """Scheme, host and port: hosts compare case-insensitively, a trailing / is no matter."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    return scheme, parts.hostname, parts.port or {"https": 443, "http": 80}.get(scheme)


def _transient(error: dict[str, Any]) -> bool:
    """A locked row, a record rolled back for another's failure, or a Task whose Lead is
    still being upserted by a concurrent request."""
    return (error.get("statusCode") in RETRYABLE
            or str(error.get("message", "")).startswith("Foreign key external ID"))


def classify(response: base.Response, request: Request) -> Outcome:
    status = response.status
    data = base.json_body(response.body)
    if status == 200 and isinstance(data, list):
        groups = request.headers.get(GROUPS)
        sizes = [int(n) for n in groups.split(",")] if groups else [1] * len(data)
        rejected: dict[int, str] = {}
        retry: dict[int, str] = {}
        index = 0
        for result, size in zip(data, sizes, strict=False):
            positions, index = range(index, index + size), index + size
            errors = result.get("errors") or [] if isinstance(result, dict) else []
            if isinstance(result, dict) and result.get("success"):
                continue
            reason = "Salesforce: " + "; ".join(
                f"{e.get('statusCode')}: {e.get('message')} {e.get('fields') or ''}".strip()
                for e in errors)
            (retry if errors and all(map(_transient, errors)) else rejected).update(
                dict.fromkeys(positions, reason))
        retry.update(dict.fromkeys(range(index, len(request.events)), "result missing"))
        return Partial(rejected=rejected, retry=retry) if rejected or retry else DELIVERED
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
    code, message = first.get("errorCode", ""), str(first.get("message", ""))[:300]
    if status == 401:  # INVALID_SESSION_ID: the engine drops the token and retries once
        return Retry(f"Salesforce session invalid ({code or 401})", reauth=True)
    if status == 403 and code == "REQUEST_LIMIT_EXCEEDED":
        # One code, two limits: too many concurrent long-running requests clears as soon
        # as some finish (retry with the usual backoff); the rolling 24-hour allocation
        # does not (wait an hour).
        if "concurrent" in message.lower():
            return Retry(f"Salesforce concurrent request limit: {message}")
        return Retry(f"Salesforce API request limit: {message}", 3600.0)
    reason = f"Salesforce HTTP {status} {code}: {message}"
    if status in (400, 413) and len(request.events) > 1:
        return Split(reason)
    if 400 <= status < 500 and status not in (408, 429):
        return Rejected(reason)
    return base.classify_http(response, request)


CONNECTOR = Connector(
    name="salesforce",
    display_name="Salesforce",
    settings=Settings,
    limits=base.Limits(max_events=MAX_RECORDS, max_bytes=5_000_000),
    encode=encode,
    classify=classify,
    authenticate=authenticate,
    docs="""
**Identity.** identify upserts a **Lead** or **Contact** (`sobject`) by the External ID
field `external_id_field` (default `External_Id__c`, which you create and mark External
ID), filled with the **userId** (or, with `external_id_from: email`, the lower-cased
`traits.email` / `context.traits.email`). Standard `Email` cannot be an upsert key. An
identify without that identifier is rejected in encode ("identify without a userId:
Salesforce upserts Lead by External_Id__c"). The anonymousId is never sent. group upserts
an **Account** by `account_external_id_field` (an External ID field you create on Account,
e.g. `Segment_Group_Id__c`) filled with the groupId; unset, group calls are rejected.
Events for one key in a batch merge into one record (later traits win).

**Required fields.** Creating a Lead needs `LastName` and `Company`, a Contact `LastName`,
an Account `Name`; updating an existing record needs none. The connector neither rejects
locally nor invents placeholders (a placeholder would overwrite real names on update):
when a new record lacks them, Salesforce refuses that record (REQUIRED_FIELD_MISSING) and
only its events are rejected, with Salesforce's message.

**Mapping.** `field_map` (default for Lead: email→Email, firstName→FirstName,
lastName→LastName, phone, title, company / company.name→Company, website, address.* →
Street/City/State/PostalCode/Country; Contact: the same without Company, address.* →
Mailing*; the snake_case names Segment's Salesforce (Actions) mappings read,
`first_name`, `last_name`, `address.postal_code`, are read too, camelCase winning). track
→ with `track_object` (e.g. Task), one inserted record from `track_field_map` (event
paths) plus `track_values`, optionally linked through `track_relationship` (e.g. `Who`)
to the sobject by external id; without it track calls are rejected. group → Account from
`account_field_map` (event paths; default, as Segment's Account action: traits.name→Name,
groupId→AccountNumber, traits.employees→NumberOfEmployees, traits.address.* →
Billing*, traits.phone, traits.description, traits.website; `address.postalCode` read
too). page, screen and alias calls are rejected.

**Auth and errors.** Client-credentials token from `{login_url or instance_url}/services/
oauth2/token`; data calls go to `instance_url`, which must equal the token's
`instance_url` (same scheme, host and port). A 401 (INVALID_SESSION_ID) refreshes the
token and retries once. Per-record errors reject only their events; UNABLE_TO_LOCK_ROW,
ALL_OR_NONE_OPERATION_ROLLED_BACK and a track record's "Foreign key external ID … not
found" (its Lead not yet upserted) are retried; 403 REQUEST_LIMIT_EXCEEDED is retried
after an hour (the concurrent-request limit, with the usual backoff); a 400 for a whole
request is split.
""",
)

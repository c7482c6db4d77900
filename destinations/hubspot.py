"""HubSpot: identify -> contacts upsert by email, track -> custom events, group -> companies.
An input's ``objectWriteTraceId`` (its request positions) opts into 207 partial errors."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from pydantic import Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError

from destinations import base
from destinations.base import Connector, ConnectorSettings, Encoded, Event, Limits, Request
from router.delivery.outcome import DELIVERED, Outcome, Partial, Rejected, Retry, Split
from router.events import iso, parse_time, utc_day

MAX_INPUTS = 100  # documented per-request limit of batch upsert
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
EVENT_PROPERTY = re.compile(r"^[a-z][a-z0-9_]{0,49}$")  # documented naming rule
ADDRESS = {"address.street": "address", "address.city": "city", "address.state": "state",
           "address.postalCode": "zip", "address.country": "country"}
CONTACT_PROPERTIES = {"firstName": "firstname", "lastName": "lastname", "phone": "phone",
                      "title": "jobtitle", "company": "company", "company.name": "company",
                      "website": "website", **ADDRESS}
COMPANY_PROPERTIES = {"name": "name", "industry": "industry", "employees": "numberofemployees",
                      "website": "website", "phone": "phone", "description": "description",
                      **ADDRESS}


class Settings(ConnectorSettings):
    access_token: SecretStr = Field(description="Private-app token (`Authorization: Bearer`).")
    base_url: str = Field("https://api.hubapi.com", description="HubSpot API base URL.")
    property_map: dict[str, str] = Field(
        default_factory=lambda: dict(CONTACT_PROPERTIES),
        description="Identify trait path (dotted) -> contact property; others are dropped.")
    date_properties: list[str] = Field(
        default_factory=list, description="Mapped contact/company properties of HubSpot type "
        "*date*: sent as the UTC day (YYYY-MM-DD) of an ISO-8601 value or epoch ms.")
    user_id_property: str | None = Field(None, description="Contact property for the userId.")
    event_map: dict[str, str] = Field(
        default_factory=dict, description="Segment track event -> HubSpot custom event "
        "fully qualified name (`pe<HubID>_<name>`); other events are rejected.")
    user_id_is_object_id: bool = Field(
        False, description="Send the userId as the event `objectId` (userIds are contact IDs).")
    companies: bool = Field(False, description="Upsert group calls as HubSpot companies.")
    company_id_property: str = Field(
        "domain", description="Unique company property used as `idProperty`; its value is "
        "the group trait of that name, else (not for `domain`) the groupId.")
    company_property_map: dict[str, str] = Field(
        default_factory=lambda: dict(COMPANY_PROPERTIES),
        description="Group trait path (dotted) -> HubSpot company property.")

    @model_validator(mode="after")
    def _dates_are_mapped(self) -> Settings:
        # a name no map fills converts nothing: most likely a typo, found only when
        # HubSpot refuses a contact's date (INVALID_DATE) in production
        mapped = {*self.property_map.values(), *self.company_property_map.values()}
        if unknown := [name for name in self.date_properties if name not in mapped]:
            message = (f"{unknown} are not properties that property_map or "
                       "company_property_map fill")
            raise PydanticCustomError(  # reported at the field (router/config_errors.py)
                "field_error", "{message}", {"field": "date_properties", "message": message})
        return self


def _get(obj: Any, path: str) -> Any:
    for key in path.split("."):
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _text(value: Any) -> str | None:  # HubSpot values are strings; objects aren't mapped
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, str | int | float) else None


def _properties(traits: dict[str, Any], mapping: dict[str, str],
                dates: list[str]) -> dict[str, str] | str:
    found: dict[str, str] = {}
    for path, name in mapping.items():
        text = _text(value := _get(traits, path))
        if text and name in dates and (text := utc_day(value)) is None:  # "" clears it: kept
            return (f"trait {path}={value!r}: HubSpot date property {name!r} takes an "
                    "ISO-8601 date/time or epoch milliseconds")
        if text is not None:
            found[name] = text
    return found


def _email(event: Event, *paths: str) -> str | None:
    for path in paths:
        if isinstance(value := _get(event, path), str) and value.strip():
            return value.strip().lower()
    return None


def _occurrence(event: Event, settings: Settings) -> dict[str, Any] | str:
    name = settings.event_map.get(event["event"])
    if name is None:
        return (f"track {event['event']!r} is not in settings.event_map: HubSpot custom "
                "events need a fully qualified name (pe<HubID>_<name>)")
    email = _email(event, "context.traits.email", "properties.email", "traits.email")
    if email is not None and not EMAIL.match(email):
        return f"invalid email {email!r}: HubSpot refuses it (INVALID_EMAIL)"
    user = str(event.get("userId") or "") if settings.user_id_is_object_id else None
    found: dict[str, Any] = {k: v for k, v in (("email", email), ("objectId", user)) if v}
    if not found:
        return ("track without an email: HubSpot associates events with contacts by email "
                "(context.traits.email or properties.email) or objectId")
    properties: dict[str, str] = {}
    for key, value in (event.get("properties") or {}).items():
        if (text := _text(value)) is not None and key != "email":
            if not EVENT_PROPERTY.match(key.lower()):
                return f"property {key!r}: HubSpot event property names are [a-z][a-z0-9_]"
            properties[key.lower()] = text
    if len(properties) > 50:
        return f"{len(properties)} properties: a HubSpot event takes at most 50"
    if (parsed := parse_time(event.get("timestamp"))) is not None:
        found["occurredAt"] = iso(parsed)
    found["uuid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, str(event.get("messageId"))))  # dedupes
    return {"eventName": name, **found, "properties": properties}


class Inputs(dict[str, tuple[dict[str, str], list[int]]]):
    """id -> (properties, positions): one input per id, as HubSpot refuses duplicates."""


def _merge(inputs: Inputs, key: str, properties: dict[str, str], position: int) -> None:
    entry = inputs.setdefault(key, ({}, []))  # one input per id; later values win
    entry[0].update(properties)
    entry[1].append(position)


def _identify(event: Event, settings: Settings) -> tuple[str, dict[str, str]] | str:
    email = _email(event, "traits.email", "context.traits.email")
    if email is None:
        return "identify without an email: HubSpot contacts are keyed by email"
    if not EMAIL.match(email):
        return f"invalid email {email!r}: HubSpot refuses it (INVALID_EMAIL)"
    props = _properties(event.get("traits") or _get(event, "context.traits") or {},
                        settings.property_map, settings.date_properties)
    if isinstance(props, str):
        return props
    if settings.user_id_property and event.get("userId"):
        props[settings.user_id_property] = str(event["userId"])
    return email, props


def _company(event: Event, settings: Settings) -> tuple[str, dict[str, str]] | str:
    traits, prop = event.get("traits") or {}, settings.company_id_property
    key = _text(traits.get(prop) or (event.get("groupId") if prop != "domain" else None))
    if not key:
        return f"group without a {prop}: HubSpot companies are upserted by it"
    props = _properties(traits, settings.company_property_map, settings.date_properties)
    return props if isinstance(props, str) else (key, props)


def encode(events: list[Event], settings: Settings) -> Encoded:
    out = Encoded()
    contacts, companies = Inputs(), Inputs()
    occurrences: list[tuple[int, dict[str, Any]]] = []
    for position, event in enumerate(events):
        kind = event.get("type")
        found: Any = (f"HubSpot takes identify, track and (with settings.companies) group "
                      f"calls, not {kind}: filter with `where`")
        if kind == "track":
            found = _occurrence(event, settings)
        elif kind == "identify":
            found = _identify(event, settings)
        elif kind == "group" and settings.companies:
            found = _company(event, settings)
        if isinstance(found, str):
            out.rejected[position] = found
        elif kind == "track":
            occurrences.append((position, found))
        else:
            _merge(contacts if kind == "identify" else companies, *found, position)
    headers = {"Authorization": f"Bearer {settings.access_token.get_secret_value()}",
               "Content-Type": "application/json"}
    api = settings.base_url.rstrip("/")
    for path, id_property, inputs in (
            ("/crm/v3/objects/contacts/batch/upsert", "email", contacts),
            ("/crm/v3/objects/companies/batch/upsert", settings.company_id_property, companies)):
        items = list(inputs.items())
        for start in range(0, len(items), MAX_INPUTS):
            body: list[dict[str, Any]] = []
            held: list[int] = []
            for key, (props, positions) in items[start:start + MAX_INPUTS]:
                trace = ",".join(str(len(held) + i) for i in range(len(positions)))
                body.append({"idProperty": id_property, "id": key, "properties": props,
                             "objectWriteTraceId": trace})
                held += positions
            out.requests.append(Request(api + path, orjson.dumps({"inputs": body}), held, headers))
    for start in range(0, len(occurrences), MAX_INPUTS):
        chunk = occurrences[start:start + MAX_INPUTS]
        out.requests.append(Request(api + "/events/v3/send/batch", orjson.dumps(
            {"inputs": [o for _, o in chunk]}), [p for p, _ in chunk], headers))
    return out


def _indices(traces: Any) -> list[int]:
    return [int(i) for t in traces or [] for i in str(t or "").split(",") if i.isdigit()]


def _multi_status(response: base.Response, request: Request) -> Outcome:
    """207: inputs in ``errors`` are rejected; unreported ones retried (upserts are idempotent)."""
    data = base.json_object(response.body)
    rejected: dict[int, str] = {}
    for error in data.get("errors") or []:
        traces = (error.get("context") or {}).get("objectWriteTraceId")
        codes = ",".join(e["code"] for e in error.get("errors") or [] if e.get("code"))
        reason = f"HubSpot: {error.get('message', 'input refused')} ({codes or 'no code'})"
        rejected.update(dict.fromkeys(_indices(traces), reason))
    done = set(_indices(r.get("objectWriteTraceId") for r in data.get("results") or []))
    retry = {i: "HubSpot did not report this input" for i in range(len(request.events))
             if i not in rejected and i not in done}
    return Partial(rejected=rejected, retry=retry)


def classify(response: base.Response, request: Request) -> Outcome:
    status, headers = response.status, response.headers
    if status == 207:
        return _multi_status(response, request)
    if 200 <= status < 300:
        return DELIVERED
    data = base.json_object(response.body)
    if status == 401:
        return Rejected("HubSpot rejected the access token (401): check settings.access_token")
    if status == 429:
        policy, after = str(data.get("policyName") or "secondly"), base.retry_after_s(headers)
        interval = headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "")
        if policy == "DAILY" or headers.get("X-HubSpot-RateLimit-Daily-Remaining") == "0":
            after = 3600.0 if after is None else after
        elif after is None and interval.isdigit():
            after = int(interval) / 1000
        return Retry(f"HubSpot rate limit (429 {policy})", after)
    if status == 423:  # documented: a lock on the records lasts 2 s; retry after that
        return Retry("HubSpot records locked (423)", max(base.retry_after_s(headers) or 0, 2.0))
    if status == 477:  # documented: account moving between data centres; Retry-After says when
        return Retry("HubSpot account migration in progress (477)", base.retry_after_s(headers))
    reason = f"HubSpot refused the request ({status}): {str(data.get('message'))[:300]}"
    if status == 400 and len(request.events) > 1:  # one bad input fails the batch: halve it
        return Split(reason)
    if status in (400, 403, 404):
        return Rejected(reason)
    return base.classify_http(response, request)


CONNECTOR = Connector(
    name="hubspot",
    display_name="HubSpot",
    settings=Settings,
    limits=Limits(max_events=MAX_INPUTS, max_bytes=1_000_000),
    encode=encode,
    classify=classify,
    rate_limit_per_s=9.0,  # Free/Starter apps: 100 requests per 10 s (Pro/Ent: 190)
    docs="""
**Identity: HubSpot contacts are keyed by email**, not by userId or anonymousId.
*identify* upserts a contact (`idProperty: "email"`) by `traits.email`, else
`context.traits.email` (lower-cased); none → rejected ("identify without an email: HubSpot
contacts are keyed by email"), malformed → rejected (INVALID_EMAIL). The userId is sent
only to `user_id_property`; the anonymousId never. *track* sends a custom event keyed by
`email` (`context.traits.email`, `properties.email`, `traits.email`) and/or `objectId`
(the userId, with `user_id_is_object_id`); neither, or an event not in `event_map`
(→ `pe<HubID>_<name>`) → rejected; `uuid` derives from the messageId. *group*
(`companies: true`) upserts a company by `company_id_property`, valued from the group trait
of that name (e.g. `traits.domain`), else the groupId; none → rejected. page, screen and
alias calls are rejected with a reason (filter them with `where`). Unmapped traits are
dropped (HubSpot refuses unknown properties). Properties listed in `date_properties`
(HubSpot type *date*, which refuses a time other than midnight UTC) get the UTC day
(`YYYY-MM-DD`) of an ISO-8601 value or epoch ms; any other value rejects the event.
*datetime* properties take ISO-8601 as sent. Event properties: scalars, names lower-cased;
a bad name or more than 50 rejects the event. Identifies for one email merge (later traits
win). 207 rejects only the inputs named; a 400 (one bad input fails a batch) is split
until the bad event is isolated. 429 waits for `Retry-After`, else the rate-limit interval;
423 (records locked) waits at least 2 s and 477 (account migration) its `Retry-After`.
""",
)

"""HubSpot contract fake: contacts/companies batch upsert and custom event occurrences.

Documented facts it enforces (developers.hubspot.com: CRM objects batch upsert, error
handling "multi-status errors", custom events send/batch, usage guidelines):
- `Authorization: Bearer <token>`; otherwise 401 with category INVALID_AUTHENTICATION;
- JSON bodies (`Content-Type: application/json`), `{"inputs": [...]}`;
- upsert: at most 100 inputs; each input has a string `id`, an `idProperty` that is a
  unique-valued property of the object (contacts: `email`), and string property values;
  duplicate ids in one batch -> 400 "Duplicate IDs found in batch input" (whole batch);
- properties must exist (PROPERTY_DOESNT_EXIST), emails must be valid (INVALID_EMAIL);
- *date* properties (properties guide: ISO 8601 or epoch ms, "midnight UTC"; timestamps FAQ:
  "If you try to set a value that is not midnight UTC, you will receive an error") take
  `YYYY-MM-DD` or a midnight-UTC value; anything else is INVALID_DATE ("<ms> is at
  <time> UTC, not midnight!", the body quoted in HubSpot/hubspot-api-php#74); *datetime*
  properties take any ISO-8601 string or epoch ms (the code for a bad one is assumed);
  an empty string clears a property and is always accepted;
- when every input has an `objectWriteTraceId`, bad inputs are reported in a 207 with
  `errors[].context.objectWriteTraceId` and the good ones are applied; otherwise one bad
  input fails the whole batch with a 400 VALIDATION_ERROR;
- events: `eventName` must be a defined event, one of `email`/`objectId`/`utk` required,
  `occurredAt` ISO-8601, at most 50 properties named `[a-z][a-z0-9_]`; batch answers 204;
  any bad occurrence fails the batch with 400 (the batch size cap of 500 is assumed).
`received` holds ("contact"|"company", id, properties) and ("event", occurrence) items.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer, respond

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
EVENT_PROPERTY = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
CONTACT_PROPERTIES = {"email", "firstname", "lastname", "phone", "jobtitle", "company",
                      "website", "address", "city", "state", "zip", "country",
                      "lifecyclestage"}
COMPANY_PROPERTIES = {"name", "domain", "industry", "numberofemployees", "website", "phone",
                      "description", "address", "city", "state", "zip", "country"}


def _error(status: int, message: str, category: str = "VALIDATION_ERROR",
           **context: list[str]) -> web.Response:
    body: dict[str, Any] = {"status": "error", "message": message,
                            "correlationId": "00000000-0000-0000-0000-000000000000",
                            "category": category}
    if context:
        body["context"] = context
    return respond(status, body)


def _invalid(name: str, code: str, message: str) -> tuple[str, str]:
    """HubSpot's property validation message: the failed checks as embedded JSON."""
    check = {"isValid": False, "message": message, "error": code, "name": name}
    return code, "Property values were not valid: " + json.dumps([check], separators=(",", ":"))


def _time_problem(value: str, date_only: bool) -> str | None:
    """Why a date/datetime property refuses ``value`` (None: accepted)."""
    if value.isdigit():
        ms = int(value)
    elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            date.fromisoformat(value)
        except ValueError:
            return f"{value} is not a valid date"
        return None
    else:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return f"{value} is not a valid date"
        ms = int(parsed.replace(tzinfo=parsed.tzinfo or UTC).timestamp() * 1000)
    if date_only and ms % 86_400_000:
        rest = ms % 86_400_000
        return (f"{ms} is at {rest // 3_600_000}:{rest // 60_000 % 60:02}:"
                f"{rest // 1000 % 60:02}.{rest % 1000:03} UTC, not midnight!")
    return None


class HubSpotFake(FakeServer):
    def __init__(self, token: str = "pat-test", *, contact_properties: set[str] | None = None,
                 events: set[str] | None = None, date_properties: Iterable[str] = (),
                 datetime_properties: Iterable[str] = ()) -> None:
        self.token = token
        typed = set(date_properties) | set(datetime_properties)  # on contacts and companies
        self.properties = {
            "contacts": (contact_properties or set(CONTACT_PROPERTIES)) | typed,
            "companies": set(COMPANY_PROPERTIES) | typed}
        self.types = {**dict.fromkeys(datetime_properties, "datetime"),
                      **dict.fromkeys(date_properties, "date")}
        self.unique = {"contacts": {"email"}, "companies": {"domain"}}
        self.events = events if events is not None else {"pe123_order_completed"}
        self.store: dict[str, dict[str, dict[str, str]]] = {"contacts": {}, "companies": {}}
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/crm/v3/objects/{object}/batch/upsert", self.upsert)
        app.router.add_post("/events/v3/send/batch", self.send_batch)
        app.router.add_post("/events/v3/send", self.send_one)

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "Authentication credentials not found.",
                          "INVALID_AUTHENTICATION")
        if request.content_type != "application/json":
            return _error(415, f"Unsupported content type {request.content_type}")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Invalid input JSON")
        if not isinstance(body, dict):
            return _error(400, "Invalid input JSON: expected an object")
        return body

    async def upsert(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        kind = request.match_info["object"]
        if kind not in self.properties:
            return _error(404, f"Unknown object type {kind}", "OBJECT_NOT_FOUND")
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            return _error(400, "inputs must be a non-empty array")
        if len(inputs) > 100:
            return _error(400, f"Batch of {len(inputs)} inputs is over the limit of 100")
        ids = [str(i.get("id", "")).lower() for i in inputs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            return _error(400, f"Duplicate IDs found in batch input: {duplicates}. IDs must be "
                          "unique", ids=duplicates)
        traced = all(isinstance(i.get("objectWriteTraceId"), str) for i in inputs)
        label = "contact" if kind == "contacts" else "company"
        results, errors, accepted = [], [], []
        for item in inputs:
            problem = self._check_input(kind, item)
            if problem is None:
                results.append(item)
                continue
            code, message = problem
            if not traced:
                return _error(400, message)
            errors.append({"status": "error", "category": "VALIDATION_ERROR",
                           "message": message,
                           "context": {"objectWriteTraceId": [item["objectWriteTraceId"]]},
                           "errors": [{"message": message, "code": code}]})
        for item in results:  # a batch is applied only once it is known to be acceptable
            stored = self.store[kind].setdefault(item["id"].lower(), {})
            stored.update(item["properties"])
            accepted.append((label, item["id"], item["properties"]))
        self.accept(accepted)
        results = [{"id": str(n), "properties": dict(self.store[kind][i["id"].lower()]),
                    "objectWriteTraceId": i.get("objectWriteTraceId")}
                   for n, i in enumerate(results, 1)]
        now = datetime.now().isoformat()
        body = {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now}
        if errors:
            body.update(numErrors=len(errors), errors=errors)
            return respond(207, body)
        return respond(200, body)

    def _check_input(self, kind: str, item: Any) -> tuple[str, str] | None:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            return "INVALID_ID", "Each input needs a string id"
        if item.get("idProperty") not in self.unique[kind]:
            return ("NON_UNIQUE_ID_PROPERTY", "Unable to perform update/upsert by non-unique "
                    f"property {item.get('idProperty')!r}")
        properties = item.get("properties")
        if not isinstance(properties, dict):
            return "INVALID_PROPERTIES", "properties must be an object"
        for name, value in properties.items():
            if name not in self.properties[kind]:
                return _invalid(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
            if not isinstance(value, str):
                return "INVALID_TYPE", f"Property {name} must be a string"
            if value and name in self.types and (problem := _time_problem(
                    value, self.types[name] == "date")) is not None:
                return _invalid(name, "INVALID_DATE", problem)
        emails = [item["id"]] if item["idProperty"] == "email" else []
        emails += [properties["email"]] if "email" in properties else []
        for email in emails:
            if not EMAIL.match(email):
                return "INVALID_EMAIL", f"Email address {email} is invalid"
        return None

    def _check_occurrence(self, item: Any) -> str | None:
        if not isinstance(item, dict) or not isinstance(item.get("eventName"), str):
            return "eventName: This property is required"
        if item["eventName"] not in self.events:
            return f"Event {item['eventName']} does not exist"
        if not any(isinstance(item.get(k), str) and item[k] for k in ("email", "objectId",
                                                                         "utk")):
            return "One of email, objectId or utk is required"
        if "email" in item and not EMAIL.match(item["email"]):
            return f"Email address {item['email']} is invalid"
        if "occurredAt" in item:
            try:
                datetime.fromisoformat(str(item["occurredAt"]).replace("Z", "+00:00"))
            except ValueError:
                return f"occurredAt {item['occurredAt']!r} is not a date-time"
        properties = item.get("properties", {})
        if not isinstance(properties, dict) or len(properties) > 50:
            return "properties: at most 50 properties per occurrence"
        for name in properties:
            if not EVENT_PROPERTY.match(name):
                return f"Property name {name!r} is invalid"
        return None

    async def send_batch(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs or len(inputs) > 500:
            return _error(400, "inputs must hold 1 to 500 occurrences")
        for item in inputs:
            if (problem := self._check_occurrence(item)) is not None:
                return _error(400, problem)
        self.accept([("event", item) for item in inputs])
        return web.Response(status=204)

    async def send_one(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if (problem := self._check_occurrence(body)) is not None:
            return _error(400, problem)
        self.accept([("event", body)])
        return web.Response(status=204)

"""Salesforce contract fake: OAuth 2.0 client-credentials token endpoint and sObject
Collections create / upsert.

Documented facts it enforces (developer.salesforce.com: "OAuth 2.0 Client Credentials
Flow", REST API "Create Records Using sObject Collections", "Upsert Records Using sObject
Collections", "Status Codes and Error Responses"):
- token: `POST /services/oauth2/token`, form-encoded `grant_type=client_credentials`,
  `client_id`, `client_secret`; answers `access_token`, `instance_url`, `token_type`,
  `issued_at` (no `expires_in`); bad credentials -> 400 `invalid_client`;
  `token_instance_url` sets the answer's `instance_url` (default: the fake's own URL);
- data calls need `Authorization: Bearer <live token>`; an unknown or expired token ->
  401 `[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]`
  (`expire_tokens()` expires every issued token);
- the URL's `vXX.X`: upsert through sObject Collections from v46.0, create from v42.0
  (404 NOT_FOUND below);
- JSON `{"allOrNone": bool, "records": [...]}` with at most 200 records, each with an
  `attributes.type` (the URL's object for upsert); unknown fields fail the request (400
  INVALID_FIELD); the upsert field must be an External ID field (404 NOT_FOUND otherwise);
- per record (200 with one result per record, in order): external id value required,
  duplicate external ids in one request refused, required fields on create
  (REQUIRED_FIELD_MISSING: Lead LastName+Company, Contact LastName, Account Name), email
  format (INVALID_EMAIL_ADDRESS), FirstName at most 40, LastName 80, Account Name 255 and
  AccountNumber 40 characters (STRING_TOO_LONG), relationship references by external id
  must exist;
  `allOrNone: true` rolls everything back when one record fails.
Account's External ID field is `Segment_Group_Id__c` (a custom field an org creates);
`external_ids[sobject]` holds the fields marked External ID, which a test may extend.
`record_errors[key] = "UNABLE_TO_LOCK_ROW"` makes the record with that external id fail
once with that code. `received` holds ("upsert"|"create", type, record) items.
"""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer, respond

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PERSON = {"Email", "FirstName", "LastName", "Phone", "Title", "External_Id__c"}
FIELDS = {
    "Lead": PERSON | {"Company", "Website", "Street", "City", "State", "PostalCode", "Country"},
    "Contact": PERSON | {"MailingStreet", "MailingCity", "MailingState", "MailingPostalCode",
                        "MailingCountry"},
    "Task": {"Subject", "Status", "Priority", "Description", "ActivityDate", "WhoId", "Who"},
    # standard Account fields (Object Reference, Account) plus the custom External ID field
    "Account": {"Name", "AccountNumber", "NumberOfEmployees", "Phone", "Description",
                "Website", "Industry", "Type", "Segment_Group_Id__c",
                *(f"{kind}{part}" for kind in ("Billing", "Shipping")
                  for part in ("Street", "City", "State", "PostalCode", "Country"))},
}
REQUIRED = {"Lead": ("LastName", "Company"), "Contact": ("LastName",), "Task": (),
            "Account": ("Name",)}
EXTERNAL_IDS = {"Lead": {"External_Id__c"}, "Contact": {"External_Id__c"}, "Task": set(),
                "Account": {"Segment_Group_Id__c"}}
ID_PREFIX = {"Lead": "00Q", "Contact": "003", "Account": "001", "Task": "00T"}  # key prefixes
MAX_LENGTH = {"FirstName": 40, "LastName": 80, "Name": 255, "AccountNumber": 40}
SINCE = {"upsert": 46, "create": 42}  # first API version of each sObject Collections call
SESSION_INVALID = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def _error(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": fields or []}


class SalesforceFake(FakeServer):
    def __init__(self, client_id: str = "cid", client_secret: str = "csecret") -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.records: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in FIELDS}
        self.record_errors: dict[str, str] = {}
        self.external_ids = {kind: set(fields) for kind, fields in EXTERNAL_IDS.items()}
        self.token_instance_url: str | None = None
        self._ids = itertools.count(1)
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/services/oauth2/token", self.token)
        app.router.add_patch("/services/data/{version}/composite/sobjects/{sobject}/{field}",
                             self.upsert)
        app.router.add_post("/services/data/{version}/composite/sobjects", self.create)

    def expire_tokens(self) -> None:
        self.tokens.clear()

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if request.content_type != "application/x-www-form-urlencoded":
            return respond(400, {"error": "invalid_request",
                                 "error_description": "must use application/x-www-form-urlencoded"})
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return respond(400, {"error": "unsupported_grant_type",
                                 "error_description": "grant type not supported"})
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id,
                                                                   self.client_secret):
            return respond(400, {"error": "invalid_client",
                                 "error_description": "invalid client credentials"})
        token = f"00Dfake!{next(self._ids)}"
        self.tokens.add(token)
        return respond(200, {"access_token": token, "signature": "sig", "scope": "api",
                             "instance_url": self.token_instance_url or self.url,
                             "id": f"{self.url}/id/00D/005",
                             "token_type": "Bearer", "issued_at": str(int(time.time() * 1000))})

    async def _records(self, request: web.Request, verb: str) -> list[Any] | web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return respond(401, SESSION_INVALID)
        version = re.fullmatch(r"v(\d+)\.\d", request.match_info["version"])
        if not version or int(version[1]) < SINCE[verb]:
            return respond(404, [{"errorCode": "NOT_FOUND",
                                  "message": "The requested resource does not exist"}])
        if request.content_type != "application/json":
            return respond(415, [{"errorCode": "UNSUPPORTED_MEDIA_TYPE",
                                  "message": "Content-Type must be application/json"}])
        try:
            body = await request.json()
        except ValueError:
            return respond(400, [{"errorCode": "JSON_PARSER_ERROR", "message": "bad JSON"}])
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not records:
            return respond(400, [{"errorCode": "INVALID_FIELD", "message": "records required"}])
        if len(records) > 200:
            return respond(400, [{"errorCode": "EXCEEDED_ID_LIMIT", "message": "record limit "
                                  "reached. cannot submit more than 200 records into this call"}])
        for record in records:
            kind = (record.get("attributes") or {}).get("type") if isinstance(record,
                                                                              dict) else None
            if kind not in FIELDS:
                return respond(400, [{"errorCode": "INVALID_TYPE",
                                      "message": f"sObject type '{kind}' is not supported"}])
            for name, value in record.items():
                if name == "attributes":
                    continue
                if name not in FIELDS[kind] | self.external_ids[kind]:
                    return respond(400, [{"errorCode": "INVALID_FIELD", "message":
                                          f"No such column '{name}' on sobject of type {kind}"}])
                if isinstance(value, list) or (isinstance(value, dict) and name != "Who"):
                    return respond(400, [{"errorCode": "JSON_PARSER_ERROR",
                                          "message": f"Cannot deserialize {name}"}])
        return [body.get("allOrNone", False), *records]

    def _check(self, kind: str, record: dict[str, Any], existing: bool) -> list[Any]:
        errors = []
        missing = [f for f in REQUIRED[kind] if not existing and not record.get(f)]
        if missing:
            errors.append(_error("REQUIRED_FIELD_MISSING",
                                 f"Required fields are missing: {missing}", missing))
        for name, limit in MAX_LENGTH.items():
            if len(str(record.get(name) or "")) > limit:
                errors.append(_error("STRING_TOO_LONG", f"{name}: data value too large "
                                     f"(max length={limit})", [name]))
        email = record.get("Email")
        if email is not None and not EMAIL.match(str(email)):
            errors.append(_error("INVALID_EMAIL_ADDRESS", f"Email: invalid email address: "
                                 f"{email}", ["Email"]))
        who = record.get("Who")
        if isinstance(who, dict):
            target = (who.get("attributes") or {}).get("type", "")
            value = who.get("External_Id__c")
            if value not in self.records.get(target, {}):
                errors.append(_error("INVALID_FIELD", f"Foreign key external ID: {value} not "
                                     f"found for field External_Id__c in entity {target}"))
        return errors

    def _answer(self, results: list[dict[str, Any]], writes: list[Any], all_or_none: bool,
                verb: str) -> web.Response:
        if all_or_none and any(not r["success"] for r in results):
            rolled = _error("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because "
                            "not all records were valid and the request was using AllOrNone")
            results = [r if not r["success"] else {"success": False, "errors": [rolled]}
                       for r in results]
            writes = []
        for kind, key, record in writes:
            self.records[kind].setdefault(key, {}).update(record)
        self.accept([(verb, kind, record) for kind, _, record in writes])
        return respond(200, results)

    async def upsert(self, request: web.Request) -> web.Response:
        parsed = await self._records(request, "upsert")
        if isinstance(parsed, web.Response):
            return parsed
        sobject, field = request.match_info["sobject"], request.match_info["field"]
        if sobject not in FIELDS or field not in self.external_ids[sobject]:
            return respond(404, [{"errorCode": "NOT_FOUND", "message": "Provided external ID "
                                  f"field does not exist or is not accessible: {field}"}])
        all_or_none, records = parsed[0], parsed[1:]
        keys = [r.get(field) for r in records]
        results, writes = [], []
        for record, key in zip(records, keys, strict=True):
            fields = {k: v for k, v in record.items() if k != "attributes"}
            errors = []
            if record["attributes"]["type"] != sobject:
                errors.append(_error("INVALID_TYPE", "records must be of the URL's type"))
            elif not key:
                errors.append(_error("MISSING_ARGUMENT", f"{field} not specified"))
            elif keys.count(key) > 1:
                errors.append(_error("DUPLICATE_EXTERNAL_ID",
                                     f"Duplicate external id specified: {key}", [field]))
            elif key in self.record_errors:
                code = self.record_errors.pop(key)
                errors.append(_error(code, f"{code} (injected)"))
            else:
                errors = self._check(sobject, fields, key in self.records[sobject])
            if errors:
                results.append({"success": False, "errors": errors})
                continue
            existing = self.records[sobject].get(key)
            results.append({"id": f"{ID_PREFIX[sobject]}{next(self._ids):012d}",
                            "success": True, "errors": [],
                            "created": existing is None})
            writes.append((sobject, key, fields))
        return self._answer(results, writes, all_or_none, "upsert")

    async def create(self, request: web.Request) -> web.Response:
        parsed = await self._records(request, "create")
        if isinstance(parsed, web.Response):
            return parsed
        all_or_none, records = parsed[0], parsed[1:]
        results, writes = [], []
        for record in records:
            kind = record["attributes"]["type"]
            fields = {k: v for k, v in record.items() if k != "attributes"}
            if errors := self._check(kind, fields, existing=False):
                results.append({"success": False, "errors": errors})
                continue
            new_id = f"{ID_PREFIX[kind]}{next(self._ids):012d}"
            results.append({"id": new_id, "success": True, "errors": []})
            writes.append((kind, new_id, fields))
        return self._answer(results, writes, all_or_none, "create")

"""Google BigQuery contract fake: the OAuth 2.0 JWT-bearer token endpoint and
``tabledata.insertAll`` (streaming inserts).

Documented facts it enforces (developers.google.com "Using OAuth 2.0 for Server to Server
Applications"; cloud.google.com BigQuery REST reference "tabledata.insertAll", "Quotas and
limits — streaming inserts", "Troubleshooting errors"):
- token: ``POST /token``, form-encoded, ``grant_type`` =
  ``urn:ietf:params:oauth:grant-type:jwt-bearer``, ``assertion`` = a JWT signed RS256
  with the service account's private key (verified here with its public key; ``kid``
  must name the key); claims ``iss`` = the service account's email, ``scope`` with a
  BigQuery scope, ``aud`` = the token URL, ``iat`` and ``exp`` at most one hour apart and
  not expired. Answers ``{"access_token", "expires_in": 3599, "token_type": "Bearer"}``,
  else 400 ``{"error": "invalid_grant", "error_description": ...}``;
- ``POST /bigquery/v2/projects/{p}/datasets/{d}/tables/{t}/insertAll`` needs
  ``Authorization: Bearer <live token>`` (401 UNAUTHENTICATED otherwise;
  ``expire_tokens()`` expires every token), ``Content-Type: application/json``, a known
  project, dataset and table (404 ``notFound`` "Not found: Table p:d.t"), at most
  10,485,760 bytes and 50,000 rows (400 ``invalid``), ``rows`` of ``{"insertId", "json"}``;
- each row's ``json`` is checked against the table's declared schema (``name``, ``type``,
  ``mode``): an unknown field is an error unless ``ignoreUnknownValues``; a value that
  does not convert to the column type, or a missing REQUIRED field, makes the row
  ``invalid`` (with ``location`` = the field). A TIMESTAMP is epoch seconds or text in
  BigQuery's canonical format (GoogleSQL data types, "Timestamp type"):
  ``YYYY-[M]M-[D]D[( |T)[H]H:[M]M:[S]S[.F]][time zone]`` with at most six decimals and a
  zone of ``Z``/``UTC`` or an offset ``+H[H][:MM]``: not ISO-8601's basic or week forms,
  ``+0000``, or nanoseconds. With ``skipInvalidRows`` the other rows
  are inserted; without it nothing is, and the valid rows are reported ``stopped``;
- 200 ``{"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": [{"index",
  "errors": [{"reason", "location", "debugInfo", "message"}]}]}`` (no ``insertErrors``
  when every row went in);
- ``insertId``: a row whose id the table has already seen is not stored again (BigQuery's
  de-duplication, best effort there, exact here).
``received`` holds ``{"table", "insertId", "json"}`` items; ``rows[table]`` the stored rows;
``assertions`` the (header, claims) of every JWT it accepted.
"""

from __future__ import annotations

import itertools
import re
import time
from datetime import datetime
from typing import Any

import jwt
from aiohttp import web

from tests.fakes.base import FakeServer, respond

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPES = {"https://www.googleapis.com/auth/bigquery",
          "https://www.googleapis.com/auth/bigquery.insertdata",
          "https://www.googleapis.com/auth/cloud-platform"}
MAX_BYTES = 10_485_760
MAX_ROWS = 50_000
INT64 = 2**63


def google_error(code: int, status: str, reason: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status,
                      "errors": [{"message": message, "domain": "global", "reason": reason}]}}


def _convert_error(value: Any, kind: str) -> str | None:
    """Why ``value`` does not convert to a BigQuery column of type ``kind``, or None."""
    kind = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "NUMERIC": "FLOAT"}.get(
        kind, kind)
    if kind == "STRING":
        ok = isinstance(value, str)
    elif kind == "INTEGER":
        ok = (type(value) is int and -INT64 <= value < INT64) or (
            isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value) is not None)
    elif kind == "FLOAT":
        ok = type(value) in (int, float) or (
            isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", value)
            is not None)
    elif kind == "BOOLEAN":
        ok = type(value) is bool or (isinstance(value, str) and value.lower() in ("true",
                                                                                 "false"))
    elif kind == "TIMESTAMP":
        ok = type(value) in (int, float) or (isinstance(value, str) and _time(value))
    else:  # JSON and the rest: anything
        ok = True
    return None if ok else f"Cannot convert value to {kind.lower()}: {value!r}"


_TIMESTAMP = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{1,2}):(\d{1,2})"
                        r"(?:\.\d{1,6})?)?(?: ?(?:Z|UTC|[+-]\d{1,2}(?::\d\d)?))?")


def _time(value: str) -> bool:
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        return False
    try:
        datetime(*(int(part or 0) for part in match.groups()))  # a real calendar time
    except ValueError:
        return False
    return True


class BigQueryFake(FakeServer):
    def __init__(self, public_key: str, client_email: str, key_id: str, project: str,
                 dataset: str, tables: dict[str, list[dict[str, str]]]) -> None:
        self.public_key, self.client_email, self.key_id = public_key, client_email, key_id
        self.project, self.dataset = project, dataset
        self.schemas = {t: {f["name"]: f for f in fields} for t, fields in tables.items()}
        self.rows: dict[str, list[dict[str, Any]]] = {t: [] for t in tables}
        self.insert_ids: dict[str, set[str]] = {t: set() for t in tables}
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        self.assertions: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (header, claims)
        self._ids = itertools.count(1)
        super().__init__()

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self.token)
        app.router.add_post("/bigquery/v2/projects/{project}/datasets/{dataset}/tables/"
                            "{table}/insertAll", self.insert_all)

    def expire_tokens(self) -> None:
        self.tokens.clear()

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if request.content_type != "application/x-www-form-urlencoded":
            return self._grant_error("invalid_request", "Invalid request content type")
        form = await request.post()
        if form.get("grant_type") != GRANT_TYPE:
            return self._grant_error("unsupported_grant_type", "Invalid grant_type")
        assertion = str(form.get("assertion") or "")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, self.public_key, algorithms=["RS256"],
                                audience=self.token_url, issuer=self.client_email,
                                options={"require": ["iss", "aud", "iat", "exp"]})
        except jwt.PyJWTError as exc:
            return self._grant_error("invalid_grant", f"Invalid JWT: {exc}")
        if header.get("kid") != self.key_id:
            return self._grant_error("invalid_grant", "Invalid JWT Signature.")
        if claims["exp"] - claims["iat"] > 3600:
            return self._grant_error("invalid_grant", "Invalid JWT: Token must be a "
                                     "short-lived token (60 minutes)")
        if not set(str(claims.get("scope", "")).split()) & SCOPES:
            return self._grant_error("invalid_scope", "Invalid OAuth scope or ID token "
                                     "audience provided.")
        self.assertions.append((header, claims))
        token = f"ya29.fake-{next(self._ids)}"
        self.tokens[token] = time.time() + 3599
        return respond(200, {"access_token": token, "expires_in": 3599,
                             "token_type": "Bearer"})

    def _grant_error(self, error: str, description: str) -> web.Response:
        return respond(400, {"error": error, "error_description": description})

    async def insert_all(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or self.tokens.get(auth[7:], 0) < time.time():
            return respond(401, google_error(
                401, "UNAUTHENTICATED", "unauthorized", "Request had invalid authentication "
                "credentials. Expected OAuth 2 access token."))
        project, dataset, table = (request.match_info[k] for k in ("project", "dataset",
                                                                   "table"))
        if (project, dataset) != (self.project, self.dataset) or table not in self.schemas:
            return respond(404, google_error(404, "NOT_FOUND", "notFound",
                                             f"Not found: Table {project}:{dataset}.{table}"))
        if request.content_type != "application/json":
            return respond(400, google_error(400, "INVALID_ARGUMENT", "invalid",
                                             "Content-Type must be application/json"))
        raw = await request.read()
        if len(raw) > MAX_BYTES:
            return respond(400, google_error(400, "INVALID_ARGUMENT", "invalid", "Request "
                                             f"payload size exceeds the limit: {MAX_BYTES} bytes."))
        try:
            body = await request.json()
        except ValueError:
            return respond(400, google_error(400, "INVALID_ARGUMENT", "parseError",
                                             "Invalid JSON payload received."))
        rows = body.get("rows") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not rows:
            return respond(400, google_error(400, "INVALID_ARGUMENT", "invalid",
                                             "No rows present in the request."))
        if len(rows) > MAX_ROWS:
            return respond(400, google_error(400, "INVALID_ARGUMENT", "invalid", "too many "
                                             f"rows present in the request, limit: {MAX_ROWS} "
                                             f"row count: {len(rows)}."))
        ignore_unknown = bool(body.get("ignoreUnknownValues"))
        errors = {i: e for i, row in enumerate(rows)
                  if (e := self._row_errors(table, row, ignore_unknown))}
        if errors and not body.get("skipInvalidRows"):
            stopped = [{"reason": "stopped", "location": "", "debugInfo": "", "message": ""}]
            errors = {i: errors.get(i, stopped) for i in range(len(rows))}
        else:
            self._store(table, [row for i, row in enumerate(rows) if i not in errors],
                        ignore_unknown)
        answer: dict[str, Any] = {"kind": "bigquery#tableDataInsertAllResponse"}
        if errors:
            answer["insertErrors"] = [{"index": i, "errors": e} for i, e in errors.items()]
        return respond(200, answer)

    def _row_errors(self, table: str, row: Any, ignore_unknown: bool) -> list[dict[str, str]]:
        def invalid(location: str, message: str) -> dict[str, str]:
            return {"reason": "invalid", "location": location, "debugInfo": "",
                    "message": message}

        data = row.get("json") if isinstance(row, dict) else None
        if not isinstance(data, dict):
            return [invalid("", "Row must have a json object.")]
        if "insertId" in row and not isinstance(row["insertId"], str):
            return [invalid("insertId", "insertId must be a string.")]
        schema = self.schemas[table]
        errors = []
        for name, value in data.items():
            field = schema.get(name)
            if field is None:
                if not ignore_unknown:
                    errors.append(invalid(name, f"no such field: {name}."))
            elif value is not None and (problem := _convert_error(value, field["type"])):
                errors.append(invalid(name, problem))
        for name, field in schema.items():
            if field.get("mode") == "REQUIRED" and data.get(name) is None:
                errors.append(invalid(name, f"Missing required field: {name}."))
        return errors

    def _store(self, table: str, rows: list[dict[str, Any]], ignore_unknown: bool) -> None:
        accepted = []
        for row in rows:
            insert_id = row.get("insertId")
            if insert_id is not None:
                if insert_id in self.insert_ids[table]:
                    continue
                self.insert_ids[table].add(insert_id)
            data = {k: v for k, v in row["json"].items() if k in self.schemas[table]}
            self.rows[table].append(data)
            accepted.append({"table": table, "insertId": insert_id, "json": data})
        self.accept(accepted)

"""Google BigQuery: Segment's warehouse schema through streaming inserts (``insertAll``).

The rows are the ones PostgreSQL gets (``router.warehouse``): ``tracks`` and a table per
track event, ``identifies``, ``users``, ``pages``, ``screens``, ``groups``, ``aliases``;
one ``insertAll`` request per table with ``insertId`` = ``messageId`` (BigQuery's
best-effort de-duplication) and ``skipInvalidRows`` so that one bad row does not stop
the others. Rows also get ``loaded_at`` (the load time; Segment's BigQuery-only column,
which its de-duplicating ``_view`` orders by) and event times as BigQuery TIMESTAMP text
(``+0000`` or nanoseconds, which BigQuery does not parse, become UTC, 6 decimals at
most). The tables must exist (no DDL); a row BigQuery refuses is rejected alone with its
reason. ``users`` rows are appended (no upsert on streaming inserts; Segment's BigQuery
users table has the same duplicates).

Auth: a service-account key signs an RS256 JWT (``iss`` = client_email, ``scope`` =
bigquery.insertdata, ``aud`` = the token URL) exchanged for an access token with the
``urn:ietf:params:oauth:grant-type:jwt-bearer`` grant.

Limits (BigQuery quotas, streaming inserts): 10 MB per HTTP request, 50,000 rows per
request, 500 rows per request recommended. Rows are serialised one by one (each once) so
that a table's rows are cut into requests of at most 10 MB exactly.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pydantic import Field, SecretStr, model_validator

from destinations.base import (
    Connector,
    ConnectorSettings,
    Credentials,
    Encoded,
    Event,
    Limits,
    Request,
    Response,
    array_body,
    array_head,
    classify_http,
    json_object,
)
from router.delivery.outcome import DELIVERED, Outcome, Partial, Rejected, Retry, Split
from router.events import parse_time
from router.warehouse import Row, batch_rows

SCOPE = "https://www.googleapis.com/auth/bigquery.insertdata"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_REQUEST_BYTES = 10_000_000  # "Maximum HTTP request size: 10 MB"
MAX_ROWS = 50_000  # "Maximum rows per request: 50,000"
# per-row reasons that are not the row's fault: "stopped" rows were refused only because
# another row was invalid; the rest are BigQuery's transient errors and quotas
RETRY_ROW_REASONS = frozenset(("stopped", "timeout", "backendError", "internalError",
                               "rateLimitExceeded", "quotaExceeded"))
RETRY_403_REASONS = frozenset(("rateLimitExceeded", "quotaExceeded"))
QUOTA_WAIT_S = 600.0  # quotaExceeded is a longer-term limit: "wait 10 minutes or longer"
TIME_COLUMNS = ("timestamp", "sent_at", "received_at", "original_timestamp")
# BigQuery's TIMESTAMP text (canonical form, at most 6 decimals, Z or +HH:MM), kept as is
CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")


class Settings(ConnectorSettings):
    project: str = Field(description="Google Cloud project id that holds the dataset.")
    dataset: str = Field(description="BigQuery dataset (Segment uses one per source); its "
                         "tables must exist with the columns you want loaded.")
    service_account_json: SecretStr | None = Field(
        None, description="The service-account key file's JSON content.")
    service_account_file: str | None = Field(
        None, description="Path to the service-account key file (instead of its content).")
    endpoint: str = Field("https://bigquery.googleapis.com/bigquery/v2",
                          description="BigQuery API base URL.")
    token_url: str = Field("https://oauth2.googleapis.com/token",
                           description="OAuth 2.0 token endpoint (also the JWT audience).")
    event_tables: bool = Field(True, description="Also insert each track into its own "
                               "per-event table (`order_completed`); those tables must exist.")
    ignore_unknown_values: bool = Field(
        True, description="Load rows whose properties have no column, without those values "
        "(BigQuery `ignoreUnknownValues`); false rejects such rows.")

    @model_validator(mode="after")
    def _one_key(self) -> Settings:
        if (self.service_account_json is None) == (self.service_account_file is None):
            raise ValueError("set one of service_account_json or service_account_file")
        if self.service_account_json is not None:
            _parse_key(self.service_account_json.get_secret_value())
        return self


def _parse_key(text: str) -> dict[str, Any]:
    try:
        key = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the service-account key is not JSON: {exc}") from None
    if not isinstance(key, dict) or not key.get("client_email") or not key.get("private_key"):
        raise ValueError("the service-account key needs client_email and private_key")
    return key


def service_account(settings: Settings) -> dict[str, Any]:
    if settings.service_account_json is not None:
        return _parse_key(settings.service_account_json.get_secret_value())
    return _parse_key(Path(settings.service_account_file or "").read_text())


def encode(events: list[Event], settings: Settings) -> Encoded:
    now = datetime.now(UTC)
    tables, rejected = batch_rows(events, now, settings.event_tables)
    head = array_head({"kind": "bigquery#tableDataInsertAllRequest", "skipInvalidRows": True,
                       "ignoreUnknownValues": settings.ignore_unknown_values}, "rows")
    base = f"{settings.endpoint.rstrip('/')}/projects/{settings.project}/datasets/" \
           f"{settings.dataset}/tables/"
    budget = MAX_REQUEST_BYTES - len(head) - 2
    encoded = Encoded(rejected=rejected)
    for table, rows in tables.items():
        items: list[bytes] = []
        positions: list[int] = []
        size = 0
        for position, row in rows:
            _for_bigquery(row, now)
            item = orjson.dumps({"insertId": events[position]["messageId"], "json": row})
            if len(item) > budget:
                encoded.rejected[position] = (f"the {table} row is {len(item)} bytes, over "
                                              "BigQuery's 10 MB request limit")
                continue
            if items and (size + len(item) + 1 > budget or len(items) == MAX_ROWS):
                encoded.requests.append(_request(base + table, head, items, positions))
                items, positions, size = [], [], 0
            items.append(item)
            positions.append(position)
            size += len(item) + 1
        if items:
            encoded.requests.append(_request(base + table, head, items, positions))
    return encoded


def _for_bigquery(row: Row, loaded_at: datetime) -> None:
    """Segment's BigQuery-only ``loaded_at`` and TIMESTAMP text BigQuery parses, in place
    (a row may be in two tables: this is idempotent)."""
    row["loaded_at"] = loaded_at
    for name in TIME_COLUMNS:
        value = row.get(name)
        if type(value) is str and not CANONICAL_TIME.fullmatch(value):
            parsed = parse_time(value)  # decode let only ISO-8601 times through
            if parsed is not None:
                row[name] = parsed.astimezone(UTC).isoformat(
                    timespec="microseconds").replace("+00:00", "Z")


def _request(url: str, head: bytes, items: list[bytes], positions: list[int]) -> Request:
    body = array_body(head, items)
    return Request(url + "/insertAll", body, positions, {"Content-Type": "application/json"})


def classify(response: Response, request: Request) -> Outcome:
    status = response.status
    if status == 200:
        errors = json_object(response.body).get("insertErrors") or []
        rejected: dict[int, str] = {}
        retry: dict[int, str] = {}
        for item in errors:
            details = item.get("errors") or [{}]
            reasons = {d.get("reason") for d in details}
            text = "; ".join(f"{d.get('reason')}: {d.get('message', '')}".strip()
                             + (f" ({d['location']})" if d.get("location") else "")
                             for d in details)
            (retry if reasons <= RETRY_ROW_REASONS else rejected)[int(item["index"])] = text
        return Partial(rejected, retry) if rejected or retry else DELIVERED
    reason, message = _google_error(response.body)
    if status == 401:
        return Retry(f"HTTP 401 {reason}: {message}", reauth=True)
    if status == 403 and reason in RETRY_403_REASONS:
        return Retry(f"HTTP 403 {reason}: {message}",
                     QUOTA_WAIT_S if reason == "quotaExceeded" else None)
    if status == 404:
        return Rejected(f"HTTP 404 {reason}: {message} (create the table first)")
    if status == 413:
        # encode keeps requests under 10 MB, and Google documents a 413 for the legacy
        # streaming API's throughput quota too: one row is retried, not dead-lettered
        if len(request.events) > 1:
            return Split(f"HTTP 413: {message}")
        return Retry(f"HTTP 413: {message}")
    return classify_http(response, request)


def _google_error(body: bytes) -> tuple[str, str]:
    """``{"error": {"code", "message", "errors": [{"reason", ...}], "status"}}``."""
    try:
        error = orjson.loads(body)["error"]
        return str((error.get("errors") or [{}])[0].get("reason", "")), str(error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, IndexError):
        return "", body[:200].decode("utf-8", "replace")


async def authenticate(session: aiohttp.ClientSession, settings: Settings) -> Credentials:
    key = service_account(settings)
    now = int(time.time())
    claims = {"iss": key["client_email"], "scope": SCOPE, "aud": settings.token_url,
              "iat": now, "exp": now + 3600}
    headers = {"kid": key["private_key_id"]} if key.get("private_key_id") else None
    import jwt  # here: its cryptography costs ~8 MB in every router that never signs

    assertion = jwt.encode(claims, key["private_key"], algorithm="RS256", headers=headers)
    async with session.post(settings.token_url,
                            data={"grant_type": GRANT_TYPE, "assertion": assertion}) as resp:
        body = await resp.read()
    try:
        token = orjson.loads(body)
    except orjson.JSONDecodeError:
        token = None
    if not isinstance(token, dict):
        token = {}
    if resp.status != 200 or "access_token" not in token:
        detail = token.get("error_description") or token.get("error") or body[:200].decode(
            "utf-8", "replace")
        raise RuntimeError(f"token endpoint answered HTTP {resp.status}: {detail}")
    return Credentials({"Authorization": f"Bearer {token['access_token']}"},
                       expires_at=time.time() + float(token.get("expires_in", 3600)))


CONNECTOR = Connector(
    name="bigquery",
    display_name="Google BigQuery",
    other_names=("BigQuery",),  # Segment's catalog name
    warehouse=True,
    settings=Settings,
    # 50,000 rows is BigQuery's per-request limit; 500 is only its recommendation, so it is
    # the default a config may raise (a batch of one table's rows fits 10 MB either way).
    limits=Limits(max_events=MAX_ROWS, max_bytes=MAX_REQUEST_BYTES, max_wait_ms=1000,
                  default_events=500),
    encode=encode,
    classify=classify,
    authenticate=authenticate,
    docs="""Streams Segment's warehouse schema into existing tables with `insertAll`: one
request per table (`tracks`, `<event>`, `identifies`, `users`, `pages`, `screens`,
`groups`, `aliases`); `insertId` = `messageId` for BigQuery's best-effort de-duplication;
`skipInvalidRows`, so a row BigQuery refuses is rejected alone with its reason (`stopped`
and transient row errors are retried). Rows also get `loaded_at` (Segment's BigQuery
column: the load time); event times are sent as BigQuery TIMESTAMP text. A missing table
rejects the rows sent to it (404); `quotaExceeded` waits 10 minutes. `users` rows are
appended, not upserted. Service account JWT auth (scope `bigquery.insertdata`).
See docs/warehouses.md.""",
)

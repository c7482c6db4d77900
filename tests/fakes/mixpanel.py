"""A contract fake of Mixpanel's ingestion API: ``POST /import``, ``/engage``, ``/groups``.

Enforces what Mixpanel documents (reference/import-events, user-profile-limits, group
profile limits, troubleshooting/errors 400 and 413):

/import
- HTTP Basic auth: a service account (``username:secret`` with ``project_id`` in the
  query), or the project secret / project token as username with an empty password;
  anything else → 401;
- ``strict=1`` (this fake refuses ``strict=0`` with 400 so a connector cannot skip
  validation); ``Content-Type: application/json``; ``Content-Encoding: gzip`` accepted;
- ≤ 10 MB uncompressed body and ≤ 2,000 events, else 413 ``{"code":413,"error":...,
  "status":"Request Entity Too Large"}``; the body must be a JSON array (else 400);
- per event (strict validation): ``event`` a non-empty string, ``properties`` an object
  with fewer than 255 keys, ``time`` a number (seconds or ms) no earlier than 1971-01-01
  and at most one hour in the future by the server's clock ("Invalid time"),
  ``distinct_id`` a string not in Mixpanel's refused list, ``$insert_id`` ≤ 36 chars of
  ``[A-Za-z0-9-]`` and not in that list, every nested object with fewer than 255 keys and
  every array with fewer than 255 elements, the event under 1 MB;
- if any event fails → 400 ``{"code":400,"error":"some data points in the request failed
  validation","failed_records":[{"index","insert_id","field","message"}],
  "num_records_imported":n,"status":"Bad Request"}`` and the valid events ARE imported;
  else 200 ``{"code":200,"num_records_imported":N,"status":"OK"}``.

/engage (batch profile updates) and /groups (batch group profile updates)
- a JSON array of ≤ 2,000 updates, each under 1 MB, with ``$token`` equal to the project
  token, a non-empty ``$distinct_id`` (/engage) or a non-empty string ``$group_key`` and a
  string ``$group_id`` (/groups), and exactly one operation (``$set`` …) whose value is an
  object; answers 200 ``{"status":1,"error":null}`` (``verbose=1``) or, on a bad update,
  200 ``{"status":0,"error":"..."}`` with nothing applied (failures come in a 200).

``received`` holds the imported events; ``profiles`` the applied Engage updates, ``groups``
the applied Groups updates.
"""

from __future__ import annotations

import base64
import gzip
import re
import time
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.base import FakeServer, respond

MAX_EVENTS = 2000
MAX_BYTES = 10 * 1024 * 1024
MAX_EVENT_BYTES = 1024 * 1024
MAX_UPDATE_BYTES = 1024 * 1024
MAX_KEYS = 254  # nested objects: "fewer than 255 keys"; arrays: fewer than 255 elements
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
REFUSED_IDS = frozenset(("00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil",
                         "none", "null", "n/a", "na", "undefined", "unknown", "<nil>", "0",
                         "-1", "true", "false", "[]", "{}"))
MIN_TIME_S = 31_536_000  # 1971-01-01
MAX_FUTURE_S = 3600  # "more than one hour in the future" is refused
PROFILE_OPERATIONS = ("$set", "$set_once", "$add", "$union", "$append", "$remove", "$unset",
                      "$delete")


class MixpanelFake(FakeServer):
    def __init__(self, *, username: str = "sa.router", secret: str = "sa-secret",
                 project_id: str = "4242", api_secret: str = "project-secret",
                 token: str = "project-token") -> None:
        self.username, self.secret, self.project_id = username, secret, project_id
        self.api_secret, self.token = api_secret, token
        self.profiles: list[dict[str, Any]] = []
        self.groups: list[dict[str, Any]] = []
        self.encodings: list[str] = []  # Content-Encoding of each /import request
        super().__init__()

    def routes(self, app: web.Application) -> None:
        # aiohttp refuses bodies over 1 MiB by itself; let the vendor's own limit decide.
        app.router.add_post("/import", self.import_events)
        app.router.add_post("/engage", self.engage)
        app.router.add_post("/groups", self.engage)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        if "project_id" in request.query:
            return (request.query["project_id"], user, password) == (
                self.project_id, self.username, self.secret)
        return password == "" and user in (self.api_secret, self.token)

    async def import_events(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return respond(401, {"code": 401, "error": "Invalid credentials",
                                 "status": "Unauthorized"})
        if request.query.get("strict") != "1":
            return _bad("this fake requires strict=1")
        if request.content_type not in ("application/json", "application/x-ndjson"):
            return _bad(f"unsupported Content-Type {request.content_type}")
        raw = await request.read()  # aiohttp's server already inflates Content-Encoding: gzip
        self.encodings.append(request.headers.get("Content-Encoding", "identity"))
        if raw[:2] == b"\x1f\x8b":  # in case a proxy passed it through still compressed
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):
                return _bad("body is not valid gzip")
        if len(raw) > MAX_BYTES:
            return _too_large(f"request exceeds max limit of {MAX_BYTES} bytes")
        try:
            events = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _bad("request body is not valid JSON")
        if not isinstance(events, list):
            return _bad("request body must be a JSON array of events")
        if len(events) > MAX_EVENTS:
            return _too_large(f"request exceeds max limit of {MAX_EVENTS} events")
        failed: list[dict[str, Any]] = []
        imported: list[dict[str, Any]] = []
        for i, event in enumerate(events):
            problem = _validate(event)
            if problem is None:
                imported.append(event)
                continue
            props = event.get("properties") if isinstance(event, dict) else None
            insert_id = props.get("$insert_id") if isinstance(props, dict) else None
            failed.append({"index": i, "insert_id": insert_id, "field": problem[0],
                           "message": problem[1]})
        if imported:
            self.accept(imported)
        if failed:
            return respond(400, {"code": 400, "error": "some data points in the request "
                                 "failed validation", "failed_records": failed,
                                 "num_records_imported": len(imported), "status": "Bad Request"})
        return respond(200, {"code": 200, "num_records_imported": len(imported), "status": "OK"})

    async def engage(self, request: web.Request) -> web.Response:
        """/engage and /groups: the same batch format, answers and limits."""
        verbose = request.query.get("verbose") == "1"
        groups = request.path == "/groups"
        try:
            updates = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _engage_result(verbose, "data, missing or empty")
        if not isinstance(updates, list) or not updates or len(updates) > MAX_EVENTS:
            return _engage_result(verbose, "expected a JSON array of 1 to 2000 updates")
        for update in updates:
            error = self._engage_problem(update, groups)
            if error:
                return _engage_result(verbose, error)
        (self.groups if groups else self.profiles).extend(updates)
        self.changed.set()
        return _engage_result(verbose, None)

    def _engage_problem(self, update: Any, groups: bool) -> str | None:
        if not isinstance(update, dict):
            return "each update must be a JSON object"
        if len(orjson.dumps(update)) > MAX_UPDATE_BYTES:
            return "an update must be at most 1 MB"
        if update.get("$token") != self.token:
            return "$token, invalid or missing"
        if groups:
            if not isinstance(update.get("$group_key"), str) or not update["$group_key"]:
                return "$group_key, missing or empty"
            if not isinstance(update.get("$group_id"), str):
                return "$group_id, missing or not a string"
        elif not isinstance(update.get("$distinct_id"), str) or not update["$distinct_id"]:
            return "$distinct_id, missing or empty"
        operations = [op for op in PROFILE_OPERATIONS if op in update]
        if len(operations) != 1:
            return "exactly one profile operation is required"
        if operations[0] != "$delete" and not isinstance(update[operations[0]], dict | list):
            return f"{operations[0]} must be an object"
        return None


def _validate(event: Any) -> tuple[str, str] | None:
    """Mixpanel's strict per-event validation: (field, message) of the first failure."""
    if not isinstance(event, dict):
        return "event", "each event must be a JSON object"
    if not isinstance(event.get("event"), str) or not event["event"]:
        return "event", "'event' must be a non-empty string"
    props = event.get("properties")
    if not isinstance(props, dict):
        return "properties", "'properties' must be an object"
    if len(props) >= 255:
        return "properties", "an event must have fewer than 255 properties"
    when = props.get("time")
    if not isinstance(when, int | float) or isinstance(when, bool):
        return "properties.time", "'properties.time' is invalid: must be a number"
    seconds = when / 1000 if when > 1e11 else when
    if seconds < MIN_TIME_S:
        return "properties.time", "'properties.time' is invalid: before 1971-01-01"
    if seconds > time.time() + MAX_FUTURE_S:
        return "properties.time", ("'properties.time' is invalid: more than 1 hour in the "
                                   "future")
    distinct_id = props.get("distinct_id")
    if not isinstance(distinct_id, str):
        return "properties.distinct_id", "'properties.distinct_id' is required"
    if distinct_id.lower() in REFUSED_IDS:
        return "properties.distinct_id", f"'properties.distinct_id' {distinct_id!r} is invalid"
    insert_id = props.get("$insert_id")
    if not isinstance(insert_id, str) or not INSERT_ID.fullmatch(insert_id) \
            or insert_id.lower() in REFUSED_IDS:
        return ("properties.$insert_id", "'properties.$insert_id' must be <= 36 bytes of "
                "alphanumerics or '-'")
    nested = _too_big(props, top=True)
    if nested:
        return nested
    if len(orjson.dumps(event)) >= MAX_EVENT_BYTES:
        return "event", "an event must be smaller than 1MB of uncompressed JSON"
    return None


def _too_big(value: Any, top: bool = False) -> tuple[str, str] | None:
    """The first nested object with 255 keys or more, or array with 255 elements or more."""
    if isinstance(value, dict | list) and len(value) > MAX_KEYS and not top:
        return "properties", "nested objects and arrays must have fewer than 255 entries"
    children = value.values() if isinstance(value, dict) else value if isinstance(
        value, list) else ()
    for child in children:
        problem = _too_big(child)
        if problem:
            return problem
    return None


def _bad(error: str) -> web.Response:
    return respond(400, {"code": 400, "error": error, "status": "Bad Request"})


def _too_large(error: str) -> web.Response:
    return respond(413, {"code": 413, "error": error, "status": "Request Entity Too Large"})


def _engage_result(verbose: bool, error: str | None) -> web.Response:
    if verbose:
        return respond(200, {"status": 0 if error else 1, "error": error})
    return respond(200, b"0" if error else b"1")

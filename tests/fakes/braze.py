"""Braze contract fake: ``POST /users/track``.

Documented facts it enforces (braze.com/docs: "Track users", "API errors and responses",
"Rate limits"):
- `Authorization: Bearer <REST API key>` (401 otherwise) and a JSON body;
- at most 75 objects combined across `attributes`, `events` and `purchases`;
- each object names its user with one of `external_id`, `user_alias` (with `alias_name`
  and `alias_label` strings) or `braze_id` (else `email` or `phone`, which are plain
  attributes when one of the first three is given);
- an alias-only user is created only when the object sets `_update_existing_only: false`;
  otherwise Braze processes the object against existing users only (the fake records it in
  `ignored`, not `received`);
- event and purchase `properties` keys are non-empty, at most 255 characters, without a
  leading `$`, and not the reserved `time` or `event_name` ("Event object");
- events need a `name` and an ISO-8601 `time`; purchases need a string `product_id`, a
  3-letter `currency`, a numeric `price`, a `time`, and `quantity` (if set) from 1 to 100;
- success is 201 `{"message": "success", "<array>_processed": n}`; invalid objects are
  reported as non-fatal `errors: [{"type", "input_array", "index"}]` while the valid ones
  are processed; when no object is valid the request fails with 400 and the same errors.
The error `type` strings and the 75-object error body are modelled, not verbatim.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer, respond

IDENTIFIERS = ("external_id", "user_alias", "braze_id", "email", "phone")
CURRENCY = re.compile(r"^[A-Z]{3}$")
RESERVED_PROPERTIES = ("time", "event_name")


def _time_ok(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


class BrazeFake(FakeServer):
    def __init__(self, api_key: str = "braze-key") -> None:
        self.api_key = api_key
        self.ignored: list[tuple[str, dict[str, Any]]] = []
        self.known_aliases: set[tuple[str, str]] = set()
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/users/track", self.track)

    def _problem(self, array: str, item: Any) -> str | None:
        if not isinstance(item, dict):
            return "Object must be a JSON object"
        ids = [k for k in IDENTIFIERS if item.get(k) not in (None, "")]
        if not ids:
            return "'external_id' or 'braze_id' or 'user_alias' is required"
        if len([k for k in ids if k in IDENTIFIERS[:3]]) > 1:  # email/phone: attributes then
            return "Only one of external_id, user_alias or braze_id may be given"
        alias = item.get("user_alias")
        if alias is not None and not (isinstance(alias, dict) and all(
                isinstance(alias.get(k), str) and alias[k] for k in ("alias_name",
                                                                      "alias_label"))):
            return "user_alias needs alias_name and alias_label"
        if array != "attributes" and not _time_ok(item.get("time")):
            return f"Invalid time {item.get('time')!r}: ISO-8601 required"
        if array == "events" and not (isinstance(item.get("name"), str) and item["name"]):
            return "Event name is required"
        properties = item.get("properties") or {}
        if array != "attributes" and not isinstance(properties, dict):
            return "properties must be an object"
        if array != "attributes" and (bad := next(
                (k for k in properties if not k or len(k) > 255 or k.startswith("$")
                 or k in RESERVED_PROPERTIES), None)) is not None:
            return f"Invalid property name {bad!r}"
        if array == "purchases":
            if not isinstance(item.get("product_id"), str) or not item["product_id"]:
                return "Purchase product_id is required"
            if not CURRENCY.match(str(item.get("currency", ""))):
                return f"Invalid currency {item.get('currency')!r}"
            price = item.get("price")
            if not isinstance(price, int | float) or isinstance(price, bool):
                return "Purchase price must be a number"
            quantity = item.get("quantity", 1)
            if not isinstance(quantity, int) or not 1 <= quantity <= 100:
                return f"Invalid quantity {quantity!r}"
        return None

    async def track(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return respond(401, {"message": "Invalid API key"})
        if request.content_type != "application/json":
            return respond(400, {"message": "Content-Type must be application/json"})
        try:
            body = await request.json()
        except ValueError:
            return respond(400, {"message": "Received unparseable response"})
        if not isinstance(body, dict):
            return respond(400, {"message": "The request body must be a JSON object"})
        arrays = {k: body.get(k) or [] for k in ("attributes", "events", "purchases")}
        if not all(isinstance(v, list) for v in arrays.values()):
            return respond(400, {"message": "attributes, events and purchases must be arrays"})
        total = sum(map(len, arrays.values()))
        if total > 75:
            return respond(400, {"message": f"{total} objects: at most 75 attributes, events "
                                 "and purchases combined per request"})
        errors, good = [], []
        for array, items in arrays.items():
            for index, item in enumerate(items):
                if (problem := self._problem(array, item)) is not None:
                    errors.append({"type": problem, "input_array": array, "index": index})
                else:
                    good.append((array, item))
        if not good:
            return respond(400, {"message": "Valid data must be provided in the 'attributes', "
                                 "'events', or 'purchases' fields.", "errors": errors})
        accepted = []
        for array, item in good:
            alias = item.get("user_alias")
            key = (alias["alias_name"], alias["alias_label"]) if alias else None
            if key and key not in self.known_aliases and item.get("_update_existing_only",
                                                                  True):
                self.ignored.append((array, item))  # no such user, and creation not asked
                continue
            if key:
                self.known_aliases.add(key)
            accepted.append((array, item))
        self.accept(accepted)
        answer: dict[str, Any] = {"message": "success"}
        answer.update({f"{array}_processed": sum(a == array for a, _ in good)
                       for array in arrays if arrays[array]})
        if errors:
            answer["errors"] = errors
        return respond(201, answer)

"""Braze's event and purchase objects from Segment events: their ``properties`` and the
purchases of an order.

Braze refuses a whole event or purchase object whose ``properties`` has a key it does not
take (braze.com/docs "Custom event properties": names are non-empty, at most 255
characters, with no leading ``$``, and not the reserved ``time`` or ``event_name``). Such
keys are dropped so that the event still arrives.
"""

from __future__ import annotations

from datetime import date
from typing import Any

RESERVED_PROPERTIES = frozenset(("time", "event_name"))
MAX_KEY = 255
# product fields that become the purchase object's own fields, not its properties (as in
# Segment's Braze "Track Purchase" action)
PURCHASE_FIELDS = ("product_id", "currency", "price", "quantity")


def properties(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the keys Braze refuses in an event's or purchase's properties."""
    return {k: v for k, v in values.items()
            if k and len(k) <= MAX_KEY and k[0] != "$" and k not in RESERVED_PROPERTIES}


def purchases(event: dict[str, Any], default_currency: str, when: str
              ) -> list[dict[str, Any]] | str:
    """One Braze purchase (without identity) per item of ``properties.products``, or why
    Braze would refuse the order."""
    event_properties = event.get("properties") or {}
    # each purchase carries the order's properties too, as Segment's Braze destination
    # sends them; a property is never null in Braze, so null values are left out
    order = {k: v for k, v in event_properties.items() if k != "products" and v is not None}
    found: list[dict[str, Any]] = []
    for n, product in enumerate(event_properties.get("products") or []):
        if not isinstance(product, dict):
            return f"product {n} is not an object: Braze purchases need product_id and price"
        product_id = product.get("product_id") or product.get("sku")
        price, quantity = product.get("price"), product.get("quantity", 1)
        if not product_id or not isinstance(price, int | float) or isinstance(price, bool):
            return (f"product {n} has no product_id or numeric price: Braze purchases need "
                    "product_id, currency and price")
        if not isinstance(quantity, int) or not 1 <= quantity <= 100:
            return f"product {n} quantity {quantity!r}: Braze takes integers from 1 to 100"
        currency = product.get("currency") or event_properties.get("currency")
        extra = {k: v for k, v in product.items()
                 if k not in PURCHASE_FIELDS and v is not None}
        found.append({"product_id": str(product_id),
                      "currency": str(currency or default_currency).upper(),
                      "price": price, "quantity": quantity, "time": when,
                      "properties": properties({**extra, **order})})
    return found


def dob(birthday: Any) -> str | None:
    """Braze's ``dob`` (YYYY-MM-DD): an ISO-8601 date or time's calendar date as written (a
    birthday is a day, not an instant: no conversion to UTC); None for anything else."""
    if not isinstance(birthday, str):
        return None
    try:
        return date.fromisoformat(birthday[:10]).isoformat()
    except ValueError:
        return None

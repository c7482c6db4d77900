"""Reference events shared by the conformance suite and per-connector tests.

`MINIMAL` holds the fewest fields the Segment spec allows per call type (after decode
filled messageId and timestamp); `FULL` holds a realistic event of each kind, with
context, consent, e-commerce properties and traits.
"""

from __future__ import annotations

from typing import Any

CONTEXT: dict[str, Any] = {
    "ip": "203.0.113.7",
    "locale": "en-GB",
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0",
    "library": {"name": "analytics.js", "version": "5.2.0"},
    "app": {"name": "Shop", "version": "3.4.1", "build": "341"},
    "device": {"id": "dev-8a6c5f", "manufacturer": "Apple", "model": "iPhone15,2",
               "type": "ios"},
    "os": {"name": "iOS", "version": "17.5"},
    "page": {"url": "https://shop.example.com/cart?x=1", "path": "/cart",
             "title": "Cart", "referrer": "https://www.example.org/"},
    "campaign": {"name": "spring", "source": "newsletter", "medium": "email"},
    "location": {"country": "United Kingdom", "city": "London"},
    "timezone": "Europe/London",
    "consent": {"categoryPreferences": {"Analytics": True, "Advertising": False}},
}

MINIMAL: list[dict[str, Any]] = [
    {"type": "track", "event": "Button Clicked", "userId": "user-00001",
     "messageId": "msg-min-track", "timestamp": "2026-11-20T10:00:00.000Z"},
    {"type": "identify", "userId": "user-00001", "messageId": "msg-min-identify",
     "timestamp": "2026-11-20T10:00:01.000Z"},
    {"type": "page", "anonymousId": "anon-0000001", "messageId": "msg-min-page",
     "timestamp": "2026-11-20T10:00:02.000Z"},
]

FULL: list[dict[str, Any]] = [
    {
        "type": "track", "event": "Order Completed", "userId": "user-00042",
        "anonymousId": "anon-4242424", "messageId": "msg-full-order",
        "timestamp": "2026-11-20T10:05:00.000Z", "sentAt": "2026-11-20T10:05:00.100Z",
        "receivedAt": "2026-11-20T10:05:00.300Z",
        "originalTimestamp": "2026-11-20T10:04:59.800Z",
        "context": CONTEXT,
        "properties": {
            "order_id": "ord-1001", "total": 63.5, "revenue": 55.0, "shipping": 5.0,
            "tax": 3.5, "currency": "EUR", "coupon": "SPRING",
            "products": [
                {"product_id": "sku-1", "sku": "SKU-1", "name": "Mug", "price": 12.5,
                 "quantity": 2, "category": "Kitchen"},
                {"product_id": "sku-2", "sku": "SKU-2", "name": "Teapot", "price": 30.0,
                 "quantity": 1, "category": "Kitchen"},
            ],
        },
    },
    {
        "type": "track", "event": "Video Played", "userId": "user-00042",
        "messageId": "msg-full-video", "timestamp": "2026-11-20T10:06:00.000Z",
        "context": CONTEXT,
        "properties": {"video_id": "v-77", "position_s": 12, "muted": False,
                       "player": {"name": "hls", "quality": "1080p"}, "tags": ["a", "b"]},
    },
    {
        "type": "identify", "userId": "user-00042", "anonymousId": "anon-4242424",
        "messageId": "msg-full-identify", "timestamp": "2026-11-20T10:07:00.000Z",
        "context": CONTEXT,
        "traits": {"email": "Ada.Lovelace@example.com", "firstName": "Ada",
                   "lastName": "Lovelace", "phone": "+44 20 7946 0000", "plan": "pro",
                   "company": {"name": "Analytical Engines", "id": "co-9"},
                   "createdAt": "2024-01-15T09:00:00Z", "logins": 17},
    },
    {
        "type": "page", "userId": "user-00042", "anonymousId": "anon-4242424",
        "name": "Cart", "category": "Shop", "messageId": "msg-full-page",
        "timestamp": "2026-11-20T10:08:00.000Z", "context": CONTEXT,
        "properties": {"url": "https://shop.example.com/cart?x=1", "path": "/cart",
                       "title": "Cart", "referrer": "https://www.example.org/"},
    },
    {
        "type": "group", "userId": "user-00042", "groupId": "co-9",
        "messageId": "msg-full-group", "timestamp": "2026-11-20T10:09:00.000Z",
        "context": CONTEXT,
        "traits": {"name": "Analytical Engines", "industry": "Computing", "employees": 12,
                   "website": "https://engines.example.com"},
    },
]

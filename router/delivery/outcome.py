"""Outcomes of a delivery attempt: a closed set of values, never exceptions.

    Outcome
     ├── Delivered                 every event in the request was accepted
     ├── Retry(after_s, reason)    nothing was accepted; try again later
     ├── Rejected(reason)          nothing was accepted; never will be (dead letter)
     ├── Split(reason)             the request was too large; halve it and resend
     └── Partial(rejected, retry)  per-event fates by position in the request;
                                   positions not named were delivered

A connector's ``classify(response, request)`` returns one of these. Warehouse senders
return one per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str
    after_s: float | None = None  # a server-given delay (Retry-After, rate-limit reset)
    reauth: bool = False  # drop cached credentials before the next attempt


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


@dataclass(frozen=True, slots=True)
class Split:
    reason: str = "payload too large"


@dataclass(frozen=True, slots=True)
class Partial:
    rejected: dict[int, str] = field(default_factory=dict)
    retry: dict[int, str] = field(default_factory=dict)
    after_s: float | None = None


Outcome = Delivered | Retry | Rejected | Split | Partial

DELIVERED = Delivered()

"""Scripted misbehaviour for a simulator: faults and canned answers, per order, by request
number, for list requests, or by a seeded share."""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Answer", "Fault", "FaultPlan"]


class Fault(StrEnum):
    """A scripted misbehaviour for one request."""

    SERVER_ERROR = "server_error"  # 500 before touching the book
    UNAVAILABLE = "unavailable"  # 503 before touching the book
    DROP = "drop"  # close the connection before touching the book
    DROP_AFTER = "drop_after"  # apply the cancel, then close the connection unanswered
    SLOW = "slow"  # apply the cancel, answer after `slow_seconds`
    JUNK = "junk"  # 200 with a body that is not JSON
    TRUNCATED = "truncated"  # 200 with half a JSON body
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After
    RATE_LIMIT_BARE = "rate_limit_bare"  # 429 without Retry-After


@dataclass(frozen=True, slots=True)
class Answer:
    """A canned answer, sent exactly as given in place of the venue's own; the book is not
    touched. Scripted like a Fault, it lets a test make a venue say anything it might."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    # The body is the whole answer, status line and headers included, written to the socket
    # as it is: an answer that is not valid HTTP.
    raw: bool = False

    @classmethod
    def json(cls, status: int, value: object) -> Answer:
        """`value` as a JSON body."""
        return cls(status, json.dumps(value).encode())

    @classmethod
    def redirect(cls, status: int, location: str) -> Answer:
        """A 3xx pointing elsewhere, as a moved host or a wrong base URL answers."""
        return cls(status, b"", {"Location": location}, "text/plain")

    @classmethod
    def malformed(cls, data: bytes) -> Answer:
        """Bytes that are not a valid HTTP answer (a bad status line, a bad header)."""
        return cls(0, data, raw=True)


@dataclass
class FaultPlan:
    """Deterministic faults or canned answers: per order (consumed one per request), by
    request number, or (faults only) by share.

    `shares` draws from a seeded generator, so a run with the same arrival order repeats.
    """

    by_order: dict[str, deque[Fault | Answer]] = field(default_factory=dict)
    by_request: dict[int, Fault | Answer] = field(default_factory=dict)  # 1-based number
    on_list: deque[Fault | Answer] = field(default_factory=deque)  # the next list requests
    shares: dict[Fault, float] = field(default_factory=dict)
    seed: int = 0
    slow_seconds: float = 2.0
    retry_after: float = 0.2
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def script(self, key: str, *faults: Fault | Answer) -> FaultPlan:
        """Give order `key` these faults or answers on its next requests, in order."""
        self.by_order.setdefault(key, deque()).extend(faults)
        return self

    def script_list(self, *faults: Fault | Answer) -> FaultPlan:
        """Give the next list requests these faults or answers, in order (then by number or
        share, as any request without an order)."""
        self.on_list.extend(faults)
        return self

    def pick_list(self, number: int) -> Fault | Answer | None:
        """The fault for list request `number` (the simulator's request number), if any."""
        if self.on_list:
            return self.on_list.popleft()
        return self.pick(None, number)

    def pick(self, key: str | None, number: int) -> Fault | Answer | None:
        """The fault for request `number` about order `key`, if any."""
        queue = self.by_order.get(key) if key is not None else None
        if queue:
            return queue.popleft()
        if number in self.by_request:
            return self.by_request[number]
        for fault, share in self.shares.items():
            if self._rng.random() < share:
                return fault
        return None

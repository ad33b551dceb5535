"""One request of a lane in a granted pacer slot: the lease check just before it leaves, the
transport, and what to record of the answer (`Heard`). Bulk, sweep and single attempts all
send through here; none of them touches the transport or the slot protocol themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from batchcancel.audit.ports import LaneStore
from batchcancel.audit.records import utcnow
from batchcancel.drain_types import MAX_BODY_BYTES, Clock, Offload, Transport, stamp
from batchcancel.errors import AuditError, TransientVenueError
from batchcancel.pacing import Slot
from batchcancel.venues.base import CancelRequest, Reply, excerpt

__all__ = ["LANE_LOST", "Exchange", "Heard"]

LANE_LOST: Final = "lost the lane lease to another worker"


@dataclass
class Heard:
    """What came back for one request: shared by the orders it carried."""

    status: int | None = None
    detail: str = ""
    answered_at: datetime = field(default_factory=utcnow)
    latency_ms: float = 0.0


class Exchange:
    """Sends a lane's requests to its venue over `transport`."""

    def __init__(
        self,
        *,
        transport: Transport,
        store: LaneStore,
        run_id: str,
        venue: str,
        base_url: str,
        timeout: float,
        lease: float,
        clock: Clock,
        offload: Offload,
        on_lost: Callable[[str], None],
    ) -> None:
        self.transport = transport
        self.store = store
        self.run_id = run_id
        self.venue = venue
        self.base_url = base_url
        self.timeout = timeout
        self.lease = lease
        self.clock = clock
        self.offload = offload
        self.on_lost = on_lost

    async def send(
        self,
        request: CancelRequest,
        slot: Slot,
        *,
        timeout: float | None = None,
        max_body: int = MAX_BODY_BYTES,
    ) -> tuple[Reply | None, Heard]:
        """Send a request in a granted slot; the reply (None when no answer came: timeout,
        dropped connection) and what to record of it. The slot's window learns the answer."""
        started = self.clock.monotonic()
        heard = Heard(answered_at=stamp(self.clock))
        if not await self._lane_is_ours():
            slot.answered()
            heard.detail = f"not sent: {LANE_LOST}"
            return None, heard
        try:
            reply: Reply | None = await self.transport.send(
                self.base_url,
                request,
                timeout=self.timeout if timeout is None else timeout,
                max_body=max_body,
            )
        except TransientVenueError as exc:
            reply = None
            heard.detail = str(exc)
        finally:
            slot.answered()
        if reply is not None:
            heard.status = reply.status
            heard.detail = excerpt(reply.body)
        heard.answered_at = stamp(self.clock)
        heard.latency_ms = (self.clock.monotonic() - started) * 1000
        return reply, heard

    async def _lane_is_ours(self) -> bool:
        """Checked just before each request leaves: the lease is fresh by this process's
        clock, or (after a stall) the database renews it at our epoch. Else the lane is lost."""
        if self.store.lease_is_fresh(self.run_id, self.venue):
            return True
        try:
            held = await self.offload(
                self.store.renew_lanes, self.run_id, [self.venue], lease=self.lease
            )
        except AuditError:
            held = set()  # cannot prove the lane is ours: send nothing
        if self.venue in held:
            return True
        self.on_lost(self.venue)
        return False

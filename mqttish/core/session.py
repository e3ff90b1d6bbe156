"""Sessions: the state of one client id that outlives its network connections.

A session owns its subscriptions, a bounded queue of deliveries not yet sent,
the QoS 1/2 deliveries in flight (by packet identifier), the packet ids of
QoS 2 messages received but not yet released, and its will. The connection
attached to it (if any) turns queued deliveries into bytes.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import TYPE_CHECKING, Protocol, cast

from mqttish.core.backpressure import Drainable
from mqttish.core.message import Message
from mqttish.protocol.packets import Will

if TYPE_CHECKING:
    from mqttish.core.connection import Connection
    from mqttish.core.shared import SharedGroup
    from mqttish.core.subscriptions import Subscription

NEVER_EXPIRES = 0xFFFFFFFF

# An idle session's queue and id set are shared empty immutables: a deque costs
# 600 bytes even when empty and a set 216, and idle sessions are the common case.
# The methods that add swap in real ones; being a tuple and a frozenset, the
# placeholders fail loudly if anything else tries to add to them.
NO_QUEUE = cast("deque[Delivery]", ())
NO_IDS = cast("set[int]", frozenset())


class DeliveryState(Enum):
    QUEUED = 0
    AWAITING_PUBACK = 1
    AWAITING_PUBREC = 2
    AWAITING_PUBCOMP = 3


class Delivery:
    """One message on its way to one session, at the QoS it was granted.

    A QoS 0 delivery never changes after it is made, so the broker may give the
    same one to every session it suits; QoS 1 and 2 deliveries carry their own
    packet id and state.
    """

    __slots__ = ("dup", "group", "message", "packet_id", "qos", "retain", "state",
                 "subscription_ids")

    def __init__(
        self,
        message: Message,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...] = (),
        group: SharedGroup | None = None,
        dup: bool = False,
    ) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.subscription_ids = subscription_ids
        self.group = group  # the shared subscription group that chose this session, if any
        self.dup = dup  # another member may have received it before (shared subscriptions)
        self.packet_id = 0
        self.state = DeliveryState.QUEUED

    def __repr__(self) -> str:
        return f"Delivery({self.message!r}, qos={self.qos}, {self.state.name}, id={self.packet_id})"


class SessionLimits(Protocol):
    """The configuration a session's queue obeys (Config provides it)."""

    @property
    def max_queued_messages(self) -> int: ...

    @property
    def max_queued_bytes(self) -> int: ...

    @property
    def queue_qos0_messages(self) -> bool: ...


class Session(Drainable):
    __slots__ = (
        "_next_packet_id", "client_id", "connection", "expires_at", "expiry_interval",
        "incoming_qos2", "inflight", "last_progress", "limits", "queue", "queued_bytes",
        "shared_groups", "stalled", "subscriptions", "username", "will", "will_at",
    )

    def __init__(self, client_id: str, limits: SessionLimits) -> None:
        super().__init__()
        self.client_id = client_id
        self.limits = limits
        self.subscriptions: dict[str, Subscription] = {}
        self.shared_groups: tuple[SharedGroup, ...] = ()  # groups it is a member of
        self.connection: Connection | None = None
        self.queue = NO_QUEUE
        self.queued_bytes = 0
        self.inflight: dict[int, Delivery] = {}
        # Ids of QoS 2 messages received and not yet released by PUBREL (exactly once).
        self.incoming_qos2 = NO_IDS
        self.expiry_interval = 0
        self.expires_at: float | None = None
        self.will: Will | None = None
        self.will_at: float | None = None
        self.username: str | None = None
        self._next_packet_id = 1
        self.last_progress = 0.0  # when its client last took or acknowledged a delivery
        self.stalled = False  # it made no progress for stall_timeout while publishers waited

    def __repr__(self) -> str:
        state = "online" if self.connection is not None else "offline"
        return f"Session({self.client_id!r}, {state}, queued={len(self.queue)})"

    @property
    def persistent(self) -> bool:
        return self.expiry_interval > 0

    def progressed(self, now: float) -> None:
        """Its client took deliveries or acknowledged one."""
        self.last_progress = now
        self.stalled = False

    def progressing(self, now: float, stall_timeout: float) -> bool:
        return (self.connection is not None and not self.stalled
                and now - self.last_progress < stall_timeout)

    def stall_deadline(self, stall_timeout: float) -> float:
        return self.last_progress + stall_timeout

    @property
    def drained(self) -> bool:
        """Down to half its bounds: publishers waiting for it may go on."""
        limits = self.limits
        return len(self.queue) <= limits.max_queued_messages // 2 and (
            not limits.max_queued_bytes or self.queued_bytes <= limits.max_queued_bytes // 2)

    def enqueue(self, delivery: Delivery) -> bool:
        """Queue a delivery; False if it is not queued: the queue is full, or the
        session is offline and does not keep QoS 0 messages."""
        connection = self.connection
        limits = self.limits
        if connection is None and delivery.qos == 0 and not limits.queue_qos0_messages:
            return False
        queue = self.queue
        if len(queue) >= limits.max_queued_messages:
            return False
        if limits.max_queued_bytes:
            size = delivery.message.size
            if self.queued_bytes + size > limits.max_queued_bytes:
                return False
            self.queued_bytes += size
        if queue is NO_QUEUE:
            queue = self.queue = deque()
        queue.append(delivery)
        if connection is not None:
            connection.notify()
        return True

    def pop_queued(self) -> Delivery:
        delivery = self.queue.popleft()
        if self.limits.max_queued_bytes:
            self.queued_bytes -= delivery.message.size
        return delivery

    def start_flight(self, delivery: Delivery) -> int:
        """Give a QoS 1/2 delivery a free packet identifier and record it as in flight."""
        inflight = self.inflight
        packet_id = self._next_packet_id
        while packet_id in inflight:
            packet_id = packet_id % 0xFFFF + 1
        self._next_packet_id = packet_id % 0xFFFF + 1
        delivery.packet_id = packet_id
        delivery.state = (
            DeliveryState.AWAITING_PUBACK if delivery.qos == 1 else DeliveryState.AWAITING_PUBREC
        )
        inflight[packet_id] = delivery
        return packet_id

    def acknowledge(self, packet_id: int, expected: DeliveryState) -> Delivery | None:
        """Complete (PUBACK, PUBCOMP) a flight in the expected state; None if there is none."""
        delivery = self.inflight.get(packet_id)
        if delivery is None or delivery.state is not expected:
            return None
        del self.inflight[packet_id]
        return delivery

    def received(self, packet_id: int) -> Delivery | None:
        """A PUBREC arrived: the QoS 2 delivery now awaits PUBCOMP."""
        delivery = self.inflight.get(packet_id)
        if delivery is None or delivery.state is not DeliveryState.AWAITING_PUBREC:
            return None
        delivery.state = DeliveryState.AWAITING_PUBCOMP
        return delivery

    def take_queued(self, group: SharedGroup) -> list[Delivery]:
        """Remove and return the deliveries `group` gave this session that wait unsent."""
        taken = [d for d in self.queue if d.group is group]
        if taken:
            self.queue = deque(d for d in self.queue if d.group is not group)
            if self.limits.max_queued_bytes:
                self.queued_bytes -= sum(d.message.size for d in taken)
        return taken

    def take_undelivered(self, group: SharedGroup) -> list[Delivery]:
        """Remove and return what `group` gave this session and the client has not got
        for sure: queued deliveries, and QoS 1/2 flights not yet acknowledged or received."""
        taken = self.take_queued(group)
        for packet_id, delivery in list(self.inflight.items()):
            if delivery.group is group and delivery.state is not DeliveryState.AWAITING_PUBCOMP:
                del self.inflight[packet_id]
                taken.append(delivery)
        return taken

    def await_release(self, packet_id: int) -> None:
        """A QoS 2 message arrived: it is not delivered again until its PUBREL."""
        if self.incoming_qos2 is NO_IDS:
            self.incoming_qos2 = set()
        self.incoming_qos2.add(packet_id)

    def release(self, packet_id: int) -> bool:
        """PUBREL arrived; False if no QoS 2 message with this id was waiting."""
        if packet_id not in self.incoming_qos2:
            return False
        self.incoming_qos2.discard(packet_id)
        return True

    def clear(self) -> None:
        """Forget all messages: the session starts over (clean start)."""
        self.queue = NO_QUEUE
        self.queued_bytes = 0
        self.inflight.clear()
        self.incoming_qos2 = NO_IDS

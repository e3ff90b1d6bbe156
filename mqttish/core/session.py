"""Sessions: the state of one client id that outlives its network connections.

A session owns its subscriptions, a bounded queue of deliveries not yet sent,
the QoS 1/2 deliveries in flight (`Outgoing`, by packet identifier), the packet
ids of QoS 2 messages received but not yet released (`IncomingQos2`), and its
will. The connection attached to it, if any, turns queued deliveries into
bytes; the session knows it only as `Attached`. A persistent session records
each durable change of its state in the broker's journal as it happens.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, cast

from mqttish.core.backpressure import Drainable
from mqttish.core.hooks import ClientInfo
from mqttish.core.journal import Journal
from mqttish.core.message import Message
from mqttish.core.shared import SharedGroup
from mqttish.core.store import (
    DeliveryDeleted,
    DeliverySaved,
    DeliveryUpdated,
    IncomingHeld,
    IncomingReleased,
)
from mqttish.protocol.flow import MAX_PACKET_ID, FlightState, IncomingQos2, Outgoing
from mqttish.protocol.packets import PubComp, PubRel, RetainHandling, Will
from mqttish.protocol.reason_codes import ReasonCode

# An idle session's queue is a shared empty immutable: a deque costs 600 bytes even
# when empty, and idle sessions are the common case. `enqueue` swaps in a real one;
# being a tuple, the placeholder fails loudly if anything else tries to add to it.
NO_QUEUE = cast("deque[Delivery]", ())


class Attached(Protocol):
    """The connection a session is attached to, as the core sees it."""

    @property
    def send_quota(self) -> int:
        """QoS 1/2 deliveries the client accepts in flight (its receive window)."""

    def notify(self) -> None:
        """The session has something new for it to send."""

    def dropped(self) -> None:
        """A delivery for its client was dropped (its listener counts it too)."""

    def close(self, now: float, reason: str, code: ReasonCode | None = None) -> None:
        """End the connection (a takeover, a stalled client disconnected)."""


class Delivery:
    """One message on its way to one session, at the QoS it was granted.

    A QoS 0 delivery never changes after it is made, so the broker may give the
    same one to every session it suits; QoS 1 and 2 deliveries carry their own
    packet id, state and, in a persistent session, journal sequence number.
    """

    __slots__ = ("dup", "durable_at", "group", "message", "packet_id", "qos", "retain",
                 "sequence", "state", "subscription_ids")

    def __init__(
        self,
        message: Message,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...] = (),
        group: SharedGroup[Subscription] | None = None,
        dup: bool = False,
    ) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.subscription_ids = subscription_ids
        self.group = group  # the shared subscription group that chose this session, if any
        self.dup = dup  # another member may have received it before (shared subscriptions)
        self.packet_id = 0
        self.state = FlightState.QUEUED
        self.sequence = 0  # its number in the journal (0: not journalled)
        self.durable_at = 0  # the journal position its record is durable at (see Journal)

    def __repr__(self) -> str:
        return f"Delivery({self.message!r}, qos={self.qos}, {self.state.name}, id={self.packet_id})"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of one session, with its options."""

    session: Session
    topic_filter: str  # as the client sent it, including any $share/<group>/ prefix
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: RetainHandling = RetainHandling.SEND_ON_SUBSCRIBE
    identifier: int | None = None

    @property
    def client_id(self) -> str:
        return self.session.client_id


class SessionLimits(Protocol):
    """The settings a session's queue obeys (BrokerSettings provides them)."""

    @property
    def max_queued_messages(self) -> int: ...

    @property
    def max_queued_bytes(self) -> int: ...

    @property
    def queue_qos0_messages(self) -> bool: ...

    @property
    def backpressure_watermark(self) -> int: ...


class Session(Drainable):
    __slots__ = (
        "_sequence", "client", "client_id", "connection", "expires_at", "expiry_interval",
        "hold_at",
        "incoming_qos2",
        "journal", "last_progress", "limits", "outgoing", "queue", "queued_bytes",
        "shared_groups", "stalled", "subscriptions", "username", "will", "will_at",
    )

    def __init__(self, client_id: str, limits: SessionLimits) -> None:
        super().__init__()
        self.client_id = client_id
        self.limits = limits
        self.subscriptions: dict[str, Subscription] = {}
        self.shared_groups: tuple[SharedGroup[Subscription], ...] = ()  # groups it is in
        self.connection: Attached | None = None
        self.queue = NO_QUEUE
        self.queued_bytes = 0
        # How many queued deliveries hold back the publishers of a client making progress
        # (its watermark, within its bound); with a byte bound, `crowded` says.
        self.hold_at = (min(limits.backpressure_watermark, limits.max_queued_messages)
                        if not limits.max_queued_bytes else 0)
        self.outgoing: Outgoing[Delivery] = Outgoing()
        self.incoming_qos2 = IncomingQos2()
        self.expiry_interval = 0
        self.expires_at: float | None = None
        self.will: Will | None = None
        self.will_at: float | None = None
        self.username: str | None = None
        self.client: ClientInfo | None = None  # as it last connected: for ACL checks
        self.last_progress = 0.0  # when its client last took or acknowledged a delivery
        self.stalled = False  # it made no progress for stall_timeout while publishers waited
        self.journal: Journal | None = None  # while persistent, with a durable store
        self._sequence = 0

    def __repr__(self) -> str:
        state = "online" if self.connection is not None else "offline"
        return f"Session({self.client_id!r}, {state}, queued={len(self.queue)})"

    @property
    def persistent(self) -> bool:
        return self.expiry_interval > 0

    # ------------------------------------------------------------------ progress

    def progressed(self, now: float) -> None:
        """Its client took deliveries or acknowledged one."""
        self.last_progress = now
        self.stalled = False

    def progressing(self, now: float, stall_timeout: float) -> bool:
        return (self.connection is not None and not self.stalled
                and now - self.last_progress < stall_timeout)

    def stall_deadline(self, stall_timeout: float) -> float:
        return self.last_progress + stall_timeout

    def crowded(self, delivery: Delivery) -> bool:
        """Would queueing `delivery` take the queue past the point where a client that
        makes progress holds its publishers back (its watermark, or its bounds)?"""
        limits = self.limits
        if len(self.queue) >= min(limits.backpressure_watermark, limits.max_queued_messages):
            return True
        return bool(limits.max_queued_bytes) and (
            self.queued_bytes + delivery.message.size > limits.max_queued_bytes)

    @property
    def drained(self) -> bool:
        """Down to half its watermark (and bytes): publishers waiting for it may go on."""
        limits = self.limits
        hold_at = min(limits.backpressure_watermark, limits.max_queued_messages)
        return len(self.queue) <= hold_at // 2 and (
            not limits.max_queued_bytes or self.queued_bytes <= limits.max_queued_bytes // 2)

    # ------------------------------------------------------------------ the queue

    def enqueue(self, delivery: Delivery, now: float) -> bool:
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
        journal = self.journal
        if journal is not None and delivery.qos:
            self._sequence += 1
            delivery.sequence = self._sequence
            journal.emit(DeliverySaved(self.client_id, self._sequence,
                                       journal.message_id(delivery.message, now), delivery.qos,
                                       delivery.retain, delivery.subscription_ids))
            delivery.durable_at = journal.position
        if connection is not None:
            connection.notify()
        return True

    def pop_queued(self) -> Delivery:
        delivery = self.queue.popleft()
        if self.limits.max_queued_bytes:
            self.queued_bytes -= delivery.message.size
        return delivery

    def discard(self, delivery: Delivery) -> None:
        """A delivery taken from the queue will not be sent (it expired)."""
        if delivery.sequence and self.journal is not None:
            self.journal.emit(DeliveryDeleted(self.client_id, delivery.sequence))

    def take_queued(self, group: SharedGroup[Subscription]) -> list[Delivery]:
        """Remove and return the deliveries `group` gave this session that wait unsent."""
        taken = [d for d in self.queue if d.group is group]
        if taken:
            self.queue = deque(d for d in self.queue if d.group is not group)
            if self.limits.max_queued_bytes:
                self.queued_bytes -= sum(d.message.size for d in taken)
            for delivery in taken:
                self.discard(delivery)
        return taken

    def take_undelivered(self, group: SharedGroup[Subscription]) -> list[Delivery]:
        """Remove and return what `group` gave this session and the client has not got
        for sure: queued deliveries, and QoS 1/2 flights not yet acknowledged or received."""
        taken = self.take_queued(group)
        unfinished = [packet_id for packet_id, delivery in self.outgoing.flights.items()
                      if delivery.group is group
                      and delivery.state is not FlightState.AWAITING_PUBCOMP]
        for delivery in self.outgoing.take(unfinished):
            self.discard(delivery)
            taken.append(delivery)
        return taken

    def restore_deliveries(self, deliveries: Iterable[tuple[int, Delivery, int, FlightState]]
                           ) -> None:
        """Put back (sequence, delivery, packet id, state) from a store, in sequence order:
        in flight if it was, queued otherwise (bounds are not applied: it was queued)."""
        queue: deque[Delivery] = deque()
        for sequence, delivery, packet_id, state in deliveries:
            delivery.sequence = sequence
            self._sequence = max(self._sequence, sequence)
            if state is FlightState.QUEUED:
                delivery.dup = True  # it may have gone out before the crash: DUP [MQTT-4.3.3]
                queue.append(delivery)
                self.queued_bytes += delivery.message.size if self.limits.max_queued_bytes else 0
            else:
                delivery.packet_id = packet_id
                delivery.state = state
                self.outgoing.put(packet_id, delivery)
        if queue:
            self.queue = queue

    def clear(self) -> None:
        """Forget all messages: the session starts over (clean start) or ends."""
        self.queue = NO_QUEUE
        self.queued_bytes = 0
        self.outgoing.clear()
        self.incoming_qos2.clear()

    # ------------------------------------------------------------------ QoS flows

    def start_flight(self, delivery: Delivery) -> int:
        """Give a QoS 1/2 delivery a free packet identifier and put it in flight.

        A journalled delivery prefers an id that follows from its sequence number:
        sent again after a crash (before its flight was committed), it has the id the
        client may still hold, so a QoS 2 message is not delivered twice."""
        sequence = delivery.sequence
        packet_id = self.outgoing.start(delivery, delivery.qos,
                                        preferred=sequence % MAX_PACKET_ID + 1 if sequence else 0)
        delivery.packet_id = packet_id
        if delivery.sequence and self.journal is not None:
            self.journal.emit(DeliveryUpdated(self.client_id, delivery.sequence, packet_id,
                                              delivery.state))
        return packet_id

    def acknowledged(self, packet_id: int) -> Delivery | None:
        """PUBACK: the delivery is over (None if no QoS 1 delivery awaited it)."""
        delivery = self.outgoing.acknowledged(packet_id)
        if delivery is not None and delivery.sequence:
            self.discard(delivery)
        return delivery

    def completed(self, packet_id: int) -> Delivery | None:
        """PUBCOMP: the delivery is over (None if no QoS 2 delivery awaited it)."""
        return self._ended(self.outgoing.completed(packet_id))

    def pubrec(self, packet_id: int, reason_code: int) -> tuple[Delivery | None, PubRel | None]:
        """PUBREC: (the delivery it refused, the PUBREL to answer with)."""
        refused, reply = self.outgoing.pubrec(packet_id, reason_code)
        if refused is not None:
            self._ended(refused)
        elif reply is not None and not reply.reason_code and self.journal is not None:
            delivery = self.outgoing.flights[packet_id]
            if delivery.sequence:
                self.journal.emit(DeliveryUpdated(self.client_id, delivery.sequence, packet_id,
                                                  FlightState.AWAITING_PUBCOMP))
        return refused, reply

    def _ended(self, delivery: Delivery | None) -> Delivery | None:
        if delivery is not None:
            self.discard(delivery)
        return delivery

    def hold_incoming(self, packet_id: int) -> bool:
        """A QoS 2 message arrived: False if its id is held already (a copy)."""
        if not self.incoming_qos2.hold(packet_id):
            return False
        if self.journal is not None:
            self.journal.emit(IncomingHeld(self.client_id, packet_id))
        return True

    def release_incoming(self, packet_id: int) -> PubComp:
        """PUBREL arrived: the PUBCOMP to answer with."""
        reply = self.incoming_qos2.release(packet_id)
        if not reply.reason_code and self.journal is not None:
            self.journal.emit(IncomingReleased(self.client_id, packet_id))
        return reply

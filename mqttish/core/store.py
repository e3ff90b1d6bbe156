"""The durable store as the core sees it: a journal of changes out, a state in at start.

Theory of operation. The broker keeps its working state in memory. Every
change that must survive a crash is emitted, as it happens, as one `Change`
record, in order: a session created or ended, a subscription added or
removed, a message stored (once, however many sessions queue it), queued for
a session, put in flight, or acknowledged, a QoS 2 id held or released, a
retained message set or cleared, a delayed will pending. Only persistent
sessions (session expiry above 0) and retained messages not under `$SYS` are
journalled.

The server collects the changes of one loop turn and hands them to
`Store.apply` in a worker thread: one transaction, a group commit.
Acknowledgements that promise durability (a PUBACK or PUBREC for a message
that a persistent session queued, or that changed a retained message) go
out only after the commit that covers them.

Times in records are durations from the moment the change was emitted
(`expires_in`, `delay`); the store turns them into absolute wall-clock times
when it commits, and back into durations when it loads, so time spent down
counts. Records are plain data: any backend can serialise them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from mqttish.protocol.flow import FlightState
from mqttish.protocol.packets import SubscriptionRequest, Will
from mqttish.protocol.properties import NO_PROPERTIES, Properties

# ------------------------------------------------------------------ changes

# Records are made per message on the hot path and never changed once made, but not
# `frozen`: a frozen dataclass's __init__ sets every field through object.__setattr__,
# four times the cost of a plain one (about 3 us per message in fan-in QoS 1 into a
# persistent session).


@dataclass(slots=True)
class SessionSaved:
    """A persistent session was created, or its expiry or will delay changed.

    `expires_in`: seconds left once its client is offline (None: never
    expires); while the client is connected, `connected` is true and the
    expiry has not started.
    """

    client_id: str
    expiry_interval: int
    connected: bool
    expires_in: float | None = None


@dataclass(slots=True)
class SessionDeleted:
    client_id: str


@dataclass(slots=True)
class SubscriptionSaved:
    client_id: str
    request: SubscriptionRequest  # topic filter and options
    identifier: int | None = None


@dataclass(slots=True)
class SubscriptionDeleted:
    client_id: str
    topic_filter: str


@dataclass(slots=True)
class MessageSaved:
    """A message some session or the retained store will need: stored once.

    A store keeps a message while a delivery or a retained topic refers to it,
    and forgets it at the end of the `apply` that leaves nothing referring to
    it; a reference to a message the store does not hold is ignored. So save a
    message in the same turn as the first reference to it (and again if it
    was forgotten); saving it twice is harmless.
    """

    message_id: int  # assigned by the core, unique for the life of the store
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = NO_PROPERTIES
    expires_in: float | None = None  # Message Expiry left, seconds


@dataclass(slots=True)
class DeliverySaved:
    """A message was queued for a session; `sequence` orders and names it."""

    client_id: str
    sequence: int  # increasing per session
    message_id: int
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...] = ()


@dataclass(slots=True)
class DeliveryUpdated:
    """A queued delivery was sent (with this packet id) or its PUBREC arrived."""

    client_id: str
    sequence: int
    packet_id: int
    state: FlightState


@dataclass(slots=True)
class DeliveryDeleted:
    """A delivery is over: acknowledged (PUBACK, PUBCOMP), expired, or taken back."""

    client_id: str
    sequence: int


@dataclass(slots=True)
class IncomingHeld:
    """A QoS 2 message with this packet id arrived: it is not delivered twice."""

    client_id: str
    packet_id: int


@dataclass(slots=True)
class IncomingReleased:
    """Its PUBREL arrived: the packet id may be used again."""

    client_id: str
    packet_id: int


@dataclass(slots=True)
class RetainedSaved:
    topic: str
    message_id: int


@dataclass(slots=True)
class RetainedDeleted:
    topic: str


@dataclass(slots=True)
class WillSaved:
    """A client went away abnormally; its will is published after `delay` seconds
    unless it comes back or its session ends first (then it is published at once)."""

    client_id: str
    will: Will
    delay: float


@dataclass(slots=True)
class WillDeleted:
    client_id: str


Change = (SessionSaved | SessionDeleted | SubscriptionSaved | SubscriptionDeleted | MessageSaved
          | DeliverySaved | DeliveryUpdated | DeliveryDeleted | IncomingHeld | IncomingReleased
          | RetainedSaved | RetainedDeleted | WillSaved | WillDeleted)


# ------------------------------------------------------------------ state at start


@dataclass(frozen=True, slots=True)
class StoredMessage:
    message_id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = NO_PROPERTIES
    expires_in: float | None = None  # seconds left now; None: no expiry


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    sequence: int
    message: StoredMessage
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...] = ()
    packet_id: int = 0  # 0 while queued
    state: FlightState = FlightState.QUEUED


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    request: SubscriptionRequest
    identifier: int | None = None


@dataclass(frozen=True, slots=True)
class StoredSession:
    client_id: str
    expiry_interval: int
    expires_in: float | None  # seconds left now (None: never); a connected session: full
    subscriptions: tuple[StoredSubscription, ...] = ()
    deliveries: tuple[StoredDelivery, ...] = ()  # in sequence order
    incoming_qos2: tuple[int, ...] = ()
    will: Will | None = None
    will_in: float | None = None  # seconds until its delayed will is due (may be <= 0)


@dataclass(frozen=True, slots=True)
class StoredState:
    retained: tuple[StoredMessage, ...] = ()
    sessions: tuple[StoredSession, ...] = ()
    next_message_id: int = 1  # the core continues numbering messages from here


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What $SYS, /metrics and the dashboard show about the store."""

    size_bytes: int = 0  # on disk (0 in memory)
    messages: int = 0
    sessions: int = 0


class StoreError(Exception):
    """The store cannot be opened or written; the message names the file and what to do."""


class Store(ABC):
    """A durable home for the journal. The server owns it; the core only emits changes.

    `apply` is called from a worker thread, never concurrently with itself or
    with `housekeeping`; `load` once, before anything else.
    """

    @abstractmethod
    def load(self) -> StoredState:
        """Everything committed so far, with durations measured from now."""

    @abstractmethod
    def apply(self, changes: Sequence[Change]) -> None:
        """Commit these changes, in order, all or nothing, before returning."""

    def housekeeping(self) -> None:  # noqa: B027 - optional for backends with nothing to do
        """Forget what has expired, and give back space that is no longer used."""

    def stats(self) -> StoreStats:
        return StoreStats()

    def close(self) -> None:  # noqa: B027 - optional for backends with nothing to release
        """Release the backend's resources; the server calls it at shutdown."""

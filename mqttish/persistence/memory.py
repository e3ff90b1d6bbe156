"""A store that keeps the journal in memory: state survives a broker restart
within one process (as in tests), not a process restart."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mqttish.core import store as journal
from mqttish.core.store import StoredSubscription
from mqttish.persistence.clock import SESSION_EXPIRY_GRACE, Clock, deadline, remaining
from mqttish.protocol.flow import FlightState
from mqttish.protocol.packets import Will


@dataclass(slots=True)
class _Delivery:
    message_id: int
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...]
    packet_id: int = 0
    state: FlightState = FlightState.QUEUED


@dataclass(slots=True)
class _Session:
    expiry_interval: int
    connected: bool
    lifetime: float | None  # while connected: seconds it lives once offline
    expires_at: float | None  # while offline: when it ends
    subscriptions: dict[str, StoredSubscription] = field(default_factory=dict)
    deliveries: dict[int, _Delivery] = field(default_factory=dict)
    incoming: set[int] = field(default_factory=set)
    will: tuple[Will, float] | None = None  # and when it is due


class MemoryStore(journal.Store):
    """The journal applied, record by record, to dictionaries.

    It follows the rules of every store (mqttish.persistence) in the most
    direct way, so the tests hold SqliteStore to it: for the same journal and
    the same clock, both load the same state. Also the store used when
    persistence is off.
    """

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._messages: dict[int, tuple[journal.MessageSaved, float | None]] = {}
        self._references: Counter[int] = Counter()
        self._released: set[int] = set()  # messages that may have lost their last reference
        self._sessions: dict[str, _Session] = {}
        self._retained: dict[str, int] = {}
        self._next_message_id = 1
        self._handlers: dict[type, Callable[[Any, float], None]] = {
            journal.SessionSaved: self._session_saved,
            journal.SessionDeleted: self._session_deleted,
            journal.SubscriptionSaved: self._subscription_saved,
            journal.SubscriptionDeleted: self._subscription_deleted,
            journal.MessageSaved: self._message_saved,
            journal.DeliverySaved: self._delivery_saved,
            journal.DeliveryUpdated: self._delivery_updated,
            journal.DeliveryDeleted: self._delivery_deleted,
            journal.IncomingHeld: self._incoming_held,
            journal.IncomingReleased: self._incoming_released,
            journal.RetainedSaved: self._retained_saved,
            journal.RetainedDeleted: self._retained_deleted,
            journal.WillSaved: self._will_saved,
            journal.WillDeleted: self._will_deleted,
        }

    def load(self) -> journal.StoredState:
        now = self._clock()
        for session in self._sessions.values():
            if session.connected:  # nobody is connected to a broker that is starting
                session.connected = False
                session.expires_at, session.lifetime = deadline(now, session.lifetime), None
        messages = {
            message_id: journal.StoredMessage(message_id, saved.topic, saved.payload, saved.qos,
                                              saved.retain, saved.properties,
                                              remaining(now, expires_at))
            for message_id, (saved, expires_at) in self._messages.items()
        }
        retained = tuple(messages[self._retained[topic]] for topic in sorted(self._retained))
        sessions = tuple(self._stored_session(client_id, now, messages)
                         for client_id in sorted(self._sessions))
        return journal.StoredState(retained, sessions,
                                   max(self._next_message_id, max(messages, default=0) + 1))

    def apply(self, changes: Sequence[journal.Change]) -> None:
        handlers = [self._handlers[type(change)] for change in changes]  # all known, or none
        now = self._clock()
        for handle, change in zip(handlers, changes, strict=True):
            handle(change, now)
        self._forget_unreferenced()

    def housekeeping(self) -> None:
        now = self._clock()
        for client_id, session in list(self._sessions.items()):
            if (not session.connected and session.expires_at is not None
                    and session.expires_at < now - SESSION_EXPIRY_GRACE):
                self._session_deleted(journal.SessionDeleted(client_id), now)
        expired = {message_id for message_id, (_, expires_at) in self._messages.items()
                   if expires_at is not None and expires_at <= now}
        for topic in [topic for topic, message_id in self._retained.items()
                      if message_id in expired]:
            self._retained_deleted(journal.RetainedDeleted(topic), now)
        for session in self._sessions.values():
            for sequence in [sequence for sequence, delivery in session.deliveries.items()
                             if delivery.message_id in expired
                             and delivery.state is FlightState.QUEUED]:
                self._release(session.deliveries.pop(sequence).message_id)
        self._forget_unreferenced()

    def stats(self) -> journal.StoreStats:
        return journal.StoreStats(0, len(self._messages), len(self._sessions))

    # ------------------------------------------------------------ records

    def _refer(self, message_id: int) -> None:
        self._references[message_id] += 1

    def _release(self, message_id: int) -> None:
        self._references[message_id] -= 1
        self._released.add(message_id)

    def _forget_unreferenced(self) -> None:
        for message_id in self._released:
            if self._references[message_id] <= 0:
                del self._references[message_id]
                self._messages.pop(message_id, None)
        self._released.clear()

    def _session_saved(self, change: journal.SessionSaved, now: float) -> None:
        lifetime, expires_at = ((change.expires_in, None) if change.connected
                                else (None, deadline(now, change.expires_in)))
        session = self._sessions.get(change.client_id)
        if session is None:
            self._sessions[change.client_id] = _Session(change.expiry_interval, change.connected,
                                                        lifetime, expires_at)
        else:  # the session's own fields; what it holds stays
            session.expiry_interval, session.connected = change.expiry_interval, change.connected
            session.lifetime, session.expires_at = lifetime, expires_at

    def _session_deleted(self, change: journal.SessionDeleted, now: float) -> None:
        session = self._sessions.pop(change.client_id, None)
        if session is not None:
            for delivery in session.deliveries.values():
                self._release(delivery.message_id)

    def _subscription_saved(self, change: journal.SubscriptionSaved, now: float) -> None:
        session = self._sessions.get(change.client_id)
        if session is not None:
            session.subscriptions[change.request.topic_filter] = StoredSubscription(
                change.request, change.identifier)

    def _subscription_deleted(self, change: journal.SubscriptionDeleted, now: float) -> None:
        session = self._sessions.get(change.client_id)
        if session is not None:
            session.subscriptions.pop(change.topic_filter, None)

    def _message_saved(self, change: journal.MessageSaved, now: float) -> None:
        if change.message_id not in self._messages:  # the first save of an id wins
            self._messages[change.message_id] = (change, deadline(now, change.expires_in))
            self._released.add(change.message_id)
        self._next_message_id = max(self._next_message_id, change.message_id + 1)

    def _delivery_saved(self, change: journal.DeliverySaved, now: float) -> None:
        session = self._sessions.get(change.client_id)
        if session is None or change.message_id not in self._messages:
            return
        previous = session.deliveries.get(change.sequence)
        session.deliveries[change.sequence] = _Delivery(change.message_id, change.qos,
                                                        change.retain, change.subscription_ids)
        self._refer(change.message_id)
        if previous is not None:
            self._release(previous.message_id)

    def _delivery_updated(self, change: journal.DeliveryUpdated, now: float) -> None:
        session = self._sessions.get(change.client_id)
        delivery = session.deliveries.get(change.sequence) if session else None
        if delivery is not None:
            delivery.packet_id, delivery.state = change.packet_id, change.state

    def _delivery_deleted(self, change: journal.DeliveryDeleted, now: float) -> None:
        session = self._sessions.get(change.client_id)
        delivery = session.deliveries.pop(change.sequence, None) if session else None
        if delivery is not None:
            self._release(delivery.message_id)

    def _incoming_held(self, change: journal.IncomingHeld, now: float) -> None:
        session = self._sessions.get(change.client_id)
        if session is not None:
            session.incoming.add(change.packet_id)

    def _incoming_released(self, change: journal.IncomingReleased, now: float) -> None:
        session = self._sessions.get(change.client_id)
        if session is not None:
            session.incoming.discard(change.packet_id)

    def _retained_saved(self, change: journal.RetainedSaved, now: float) -> None:
        if change.message_id in self._messages:
            previous = self._retained.get(change.topic)
            self._retained[change.topic] = change.message_id
            self._refer(change.message_id)
            if previous is not None:
                self._release(previous)

    def _retained_deleted(self, change: journal.RetainedDeleted, now: float) -> None:
        previous = self._retained.pop(change.topic, None)
        if previous is not None:
            self._release(previous)

    def _will_saved(self, change: journal.WillSaved, now: float) -> None:
        session = self._sessions.get(change.client_id)
        if session is not None:
            session.will = (change.will, now + change.delay)

    def _will_deleted(self, change: journal.WillDeleted, now: float) -> None:
        session = self._sessions.get(change.client_id)
        if session is not None:
            session.will = None

    def _stored_session(self, client_id: str, now: float,
                        messages: dict[int, journal.StoredMessage]) -> journal.StoredSession:
        session = self._sessions[client_id]
        deliveries = tuple(
            journal.StoredDelivery(sequence, messages[delivery.message_id], delivery.qos,
                                   delivery.retain, delivery.subscription_ids, delivery.packet_id,
                                   delivery.state)
            for sequence, delivery in sorted(session.deliveries.items())
        )
        will, will_in = (None, None) if session.will is None else (
            session.will[0], session.will[1] - now)
        return journal.StoredSession(
            client_id, session.expiry_interval, remaining(now, session.expires_at),
            tuple(session.subscriptions[topic_filter]
                  for topic_filter in sorted(session.subscriptions)),
            deliveries, tuple(sorted(session.incoming)), will, will_in)

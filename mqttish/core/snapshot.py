"""Converting broker state to and from the Store's plain records."""

from __future__ import annotations

from collections import deque

from mqttish.core.message import Message
from mqttish.core.session import Delivery, DeliveryState, Session, SessionLimits
from mqttish.core.subscriptions import Subscription
from mqttish.persistence.store import (
    StoredDelivery,
    StoredMessage,
    StoredSession,
    StoredSubscription,
)
from mqttish.protocol.packets import SubscriptionRequest


def stored_message(message: Message, now: float) -> StoredMessage:
    return StoredMessage(message.topic, message.payload, message.qos, message.retain,
                         message.properties, message.remaining_expiry(now))


def restore_message(record: StoredMessage, now: float) -> Message:
    expires_at = None if record.expiry_interval is None else now + record.expiry_interval
    return Message(record.topic, record.payload, record.qos, record.retain, record.properties,
                   expires_at)


def stored_session(session: Session, now: float, with_messages: bool) -> StoredSession:
    subscriptions = tuple(
        StoredSubscription(
            SubscriptionRequest(sub.topic_filter, sub.qos, sub.no_local,
                                sub.retain_as_published, sub.retain_handling),
            sub.identifier,
        )
        for sub in session.subscriptions.values()
    )
    deliveries: tuple[StoredDelivery, ...] = ()
    if with_messages:
        pending = [*session.inflight.values(), *session.queue]
        deliveries = tuple(
            StoredDelivery(stored_message(d.message, now), d.qos, d.retain, d.packet_id,
                           d.state.name, d.subscription_ids)
            for d in pending
            if d.group is None and not d.message.expired(now)
        )
    return StoredSession(session.client_id, session.expiry_interval, subscriptions, deliveries,
                         tuple(sorted(session.incoming_qos2)))


def restore_session(record: StoredSession, limits: SessionLimits, now: float) -> Session:
    session = Session(record.client_id, limits)
    session.expiry_interval = record.expiry_interval
    for stored in record.subscriptions:
        request = stored.request
        session.subscriptions[request.topic_filter] = Subscription(
            session, request.topic_filter, request.qos, request.no_local,
            request.retain_as_published, request.retain_handling, stored.identifier,
        )
    queued = []
    for item in record.deliveries:
        delivery = Delivery(restore_message(item.message, now), item.qos, item.retain,
                            item.subscription_ids)
        delivery.state = DeliveryState[item.state]
        if delivery.state is DeliveryState.QUEUED:
            queued.append(delivery)
        else:
            delivery.packet_id = item.packet_id
            session.inflight[item.packet_id] = delivery
    if queued:
        session.queue = deque(queued)
    if record.incoming_qos2:
        session.incoming_qos2 = set(record.incoming_qos2)
    return session

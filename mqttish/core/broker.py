"""The broker: sessions by client id, the subscription tree, retained messages.

Everything here is synchronous and takes `now` as an argument. Connections
call in (connect, publish, subscribe, disconnected); the server calls
`housekeeping(now)` about once a second to expire sessions and send delayed
wills, and `shutdown(now)` at the end.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from mqttish.config import Config
from mqttish.core.backpressure import Drainable, HeldPublish, Waiter
from mqttish.core.hooks import Access, ClientInfo, Decision, Hook, HookChain
from mqttish.core.message import Message
from mqttish.core.metrics import Metrics
from mqttish.core.retained import RetainedStore
from mqttish.core.session import NEVER_EXPIRES, Delivery, DeliveryState, Session
from mqttish.core.shared import SharedGroup, Strategy
from mqttish.core.snapshot import (
    restore_message,
    restore_session,
    stored_message,
    stored_session,
)
from mqttish.core.subscriptions import Match, Subscription, SubscriptionTree
from mqttish.errors import RemoteProtocolError, protocol_error
from mqttish.log_text import clip
from mqttish.persistence.memory import MemoryStore
from mqttish.persistence.store import Store
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Connect,
    RetainHandling,
    SubscriptionRequest,
    Will,
)
from mqttish.protocol.properties import NO_PROPERTIES, Properties
from mqttish.protocol.reason_codes import ReasonCode
from mqttish.protocol.topics import has_wildcard, parse_shared, reserved_for_broker

if TYPE_CHECKING:
    from mqttish.core.connection import Connection

log = logging.getLogger("mqttish.broker")

SYS_PREFIX = "$SYS/"
MAX_PACKET_SIZE = 268_435_460  # what the protocol itself allows: no Maximum Packet Size


def _unless(value: int, default: int) -> int | None:
    """A CONNACK property's value, or None (not sent) when it is the spec's default."""
    return None if value == default else value


class Broker:
    def __init__(
        self,
        config: Config | None = None,
        store: Store | None = None,
        hooks: Sequence[Hook] = (),
        now: float = 0.0,
    ) -> None:
        self.config = config or Config()
        self.store = store if store is not None else MemoryStore()
        self.hooks = HookChain(hooks)
        self.metrics = Metrics()
        self.sessions: dict[str, Session] = {}
        self.subscriptions = SubscriptionTree(Strategy(self.config.shared_subscription_strategy))
        self.retained = RetainedStore()
        self.topic_alias_maximum = self.config.topic_alias_maximum
        # Offline sessions with an expiry or a delayed will: what housekeeping looks at.
        self._waiting: dict[str, Session] = {}
        self.shutting_down = False
        self._restore(now)

    # ------------------------------------------------------------------ connect

    def connect(self, connection: Connection, packet: Connect, now: float) -> ConnAck:
        """Accept or refuse a CONNECT; on success the connection owns the session."""
        version = packet.protocol_level
        client_id = packet.client_id
        assigned = None
        if not client_id:
            if version == MQTT_5 or (version == MQTT_3_1_1 and packet.clean_start):
                client_id = assigned = "mqttish-" + secrets.token_hex(8)
            else:
                log.info("refused %s: empty client id without clean session", connection.peer)
                return ConnAck(False, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
        redirect = self.config.redirect
        if redirect is not None:
            log.info("redirecting %s (%s) to %s", clip(client_id), connection.peer, redirect.server)
            code = ReasonCode.SERVER_MOVED if redirect.permanent else ReasonCode.USE_ANOTHER_SERVER
            return ConnAck(False, code, Properties(server_reference=redirect.server)
                           if version == MQTT_5 else NO_PROPERTIES)
        client = ClientInfo(client_id, packet.username, connection.peer, version)
        refusal = self._refusal(client, packet, connection)
        if refusal is not None:
            log.info("refused %s (%s): %s", clip(client_id), connection.peer, refusal.name)
            return ConnAck(False, refusal)

        session = self.sessions.get(client_id)
        if session is not None and session.connection is not None:
            old = session.connection
            log.info("client %s reconnected from %s: taking over its session", clip(client_id),
                     connection.peer)
            old.close(now, "session taken over by a new connection", ReasonCode.SESSION_TAKEN_OVER)
            session = self.sessions.get(client_id)  # gone if it was a clean session
        if session is not None and packet.clean_start:
            self._end_session(session, now)
            session = None
        session_present = session is not None
        if session is None:
            session = self.sessions[client_id] = Session(client_id, self.config)
        self._waiting.pop(client_id, None)
        session.will = None  # a delayed will is cancelled by the client's return
        session.will_at = None
        session.expires_at = None
        session.expiry_interval = self.capped_expiry(
            packet.properties.session_expiry_interval or 0 if version == MQTT_5
            else 0 if packet.clean_start else NEVER_EXPIRES
        )
        session.username = packet.username
        session.connection = connection
        session.progressed(now)  # a client that just came gets stall_timeout to start taking
        connection.session = session
        connection.client = client
        connection.will = packet.will
        connection.keepalive = min(packet.keepalive, self.config.max_keepalive)
        self.metrics.client_connected()
        self.hooks.on_connect(client)
        if session.shared_groups:
            self.member_ready(session, now)
        if session.persistent:
            self.store.save_session(stored_session(session, now, with_messages=False))
        if self.config.connection_messages:
            log.info("client %s connected from %s (MQTT %s, keepalive %d, %s session)",
                     clip(client_id), connection.peer, {3: "3.1", 4: "3.1.1", 5: "5.0"}[version],
                     packet.keepalive, "resumed" if session_present else "new")
        properties = None
        if version == MQTT_5:
            properties = self._connack_properties(packet, assigned)
        return ConnAck(session_present, ReasonCode.SUCCESS,
                       properties if properties is not None else Properties())

    def _refusal(self, client: ClientInfo, packet: Connect, connection: Connection
                 ) -> ReasonCode | None:
        config = self.config
        if packet.properties.authentication_method is not None:
            return ReasonCode.BAD_AUTHENTICATION_METHOD
        if packet.keepalive > config.max_keepalive and packet.protocol_level != MQTT_5:
            # 3.1.1 has no Server Keep Alive to lower it with; Mosquitto refuses too.
            return ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
        decision = self.hooks.authenticate(client, packet)
        if decision is Decision.DENY:
            if packet.username is not None:
                return ReasonCode.BAD_USER_NAME_OR_PASSWORD
            return ReasonCode.NOT_AUTHORIZED
        if decision is Decision.DEFER and config.allow_anonymous is False:
            return ReasonCode.NOT_AUTHORIZED
        will = packet.will
        if will is not None:
            if packet.protocol_level == MQTT_5:
                if will.qos > config.max_qos:
                    return ReasonCode.QOS_NOT_SUPPORTED
                if will.retain and not config.retain_available:
                    return ReasonCode.RETAIN_NOT_SUPPORTED
            if not self.may_publish(client, will.topic):
                return ReasonCode.NOT_AUTHORIZED
        return None

    def may_publish(self, client: ClientInfo, topic: str) -> bool:
        """May this client publish to `topic`? Topics reserved for the broker ($SYS, $share)
        need an explicit grant from an ACL hook; others are allowed unless a hook denies."""
        if reserved_for_broker(topic):
            return self.hooks.granted(client, topic, Access.PUBLISH)
        return self.hooks.allowed(client, topic, Access.PUBLISH)

    def _connack_properties(self, packet: Connect, assigned: str | None) -> Properties:
        """The limits an MQTT 5 client must respect, announced in CONNACK.

        Like Mosquitto, only what differs from the spec's default is sent: an
        absent property already means 65535 in flight, QoS 2, no packet size
        limit, no topic aliases, and retain, wildcards, subscription ids and
        shared subscriptions available.
        """
        config = self.config
        requested = packet.properties.session_expiry_interval or 0
        granted = self.capped_expiry(requested)
        return Properties(
            assigned_client_identifier=assigned,
            session_expiry_interval=granted if granted != requested else None,
            receive_maximum=_unless(config.max_inflight_messages, 65535),
            maximum_qos=_unless(config.max_qos, 2),
            retain_available=_unless(int(config.retain_available), 1),
            maximum_packet_size=_unless(config.max_packet_size, MAX_PACKET_SIZE),
            topic_alias_maximum=_unless(self.topic_alias_maximum, 0),
            wildcard_subscription_available=_unless(int(config.wildcard_subscriptions), 1),
            subscription_identifier_available=_unless(int(config.subscription_identifiers), 1),
            shared_subscription_available=_unless(int(config.shared_subscriptions), 1),
            server_keep_alive=(
                config.max_keepalive if packet.keepalive > config.max_keepalive else None
            ),
        )

    def capped_expiry(self, requested: int) -> int:
        """A session expiry interval within `persistent_client_expiration`."""
        limit = self.config.persistent_client_expiration
        if limit is not None and requested > limit:
            return int(limit)
        return requested

    def disconnected(self, connection: Connection, now: float) -> None:
        """A connection ended: detach it, publish its will if it ended abnormally."""
        session = connection.session
        if session is None or session.connection is not connection:
            return  # never connected, or its session was taken over
        session.connection = None
        session.release_waiters(now)  # an offline session holds no publisher back
        self.metrics.clients_connected -= 1
        if session.shared_groups:
            self._redistribute(session, now)
        client = connection.client
        assert client is not None
        reason = connection.close_reason or "connection closed"
        if self.config.connection_messages:
            log.info("client %s disconnected: %s", clip(client.client_id), reason)
        self.hooks.on_disconnect(client, reason)
        will = connection.will
        if will is not None and not connection.graceful and not self.shutting_down:
            delay = will.properties.will_delay_interval or 0
            if delay and session.expiry_interval:
                session.will = will
                session.will_at = now + delay
            else:
                self._publish_will(client.client_id, will, now)
        if session.expiry_interval == 0:
            self._end_session(session, now)
            return
        if session.expiry_interval != NEVER_EXPIRES:
            session.expires_at = now + session.expiry_interval
        if session.expires_at is not None or session.will_at is not None:
            self._waiting[session.client_id] = session

    def _publish_will(self, client_id: str, will: Will, now: float) -> None:
        log.info("publishing will of %s to %s", clip(client_id), clip(will.topic))
        props = will.properties
        expiry = props.message_expiry_interval
        forwarded = props
        if props.will_delay_interval is not None or expiry is not None:
            forwarded = replace(props, will_delay_interval=None, message_expiry_interval=None)
        message = Message(will.topic, will.payload, will.qos, will.retain, forwarded,
                          now + expiry if expiry else None, client_id)
        self.publish(message, now, None)

    def _end_session(self, session: Session, now: float) -> None:
        """The session is over: publish a pending will, forget its subscriptions."""
        if session.will is not None:
            will, session.will = session.will, None
            self._publish_will(session.client_id, will, now)
        for topic_filter in list(session.subscriptions):
            self.subscriptions.remove(session.client_id, topic_filter)
        session.subscriptions.clear()
        session.shared_groups = ()
        session.clear()
        session.release_waiters(now)
        self._waiting.pop(session.client_id, None)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        self.store.delete_session(session.client_id)

    # ------------------------------------------------------------------ routing

    def publish(self, message: Message, now: float, client: ClientInfo | None = None,
                publisher: Waiter | None = None) -> int | HeldPublish:
        """Route a message to every matching session; return how many matched.

        With a `publisher` to hold back, a full queue whose client makes progress
        stops the fan-out: the `HeldPublish` returned finishes it later
        (`resume_publish`), once the queue has drained and released the publisher.
        Without one (wills, $SYS), a full queue drops the message, counted.
        """
        if message.retain:
            self.retained.set(message)
            if not message.topic.startswith(SYS_PREFIX):  # the broker's own state: not saved
                self.store.set_retained(message.topic,
                                        stored_message(message, now) if message.payload else None)
        if self.hooks.publish_observers:
            self.hooks.on_publish(client, message)
        return self._fan_out(message, self.subscriptions.match(message.topic), 0, now, publisher)

    def resume_publish(self, held: HeldPublish, now: float,
                       publisher: Waiter | None) -> int | HeldPublish:
        """Go on with a held fan-out where it stopped (`publisher` None: hold no more)."""
        return self._fan_out(held.message, held.match, held.next_target, now, publisher)

    def _fan_out(self, message: Message, match: Match, start: int, now: float,
                 publisher: Waiter | None) -> int | HeldPublish:
        targets = match.targets
        qos = message.qos
        retain = message.retain
        origin = message.origin
        plain = None  # one QoS 0 delivery with nothing of its own serves every session
        for index, target in enumerate(targets[start:] if start else targets, start):
            if target.no_local and target.session.client_id == origin:
                target = target.without_no_local()  # type: ignore[assignment]
                if target is None:
                    continue
            granted = target.qos if target.qos < qos else qos
            retain_flag = retain and target.retain_as_published
            if granted or retain_flag or target.subscription_ids:
                delivery = Delivery(message, granted, retain_flag, target.subscription_ids)
            elif plain is None:
                delivery = plain = Delivery(message, 0, False)
            else:
                delivery = plain
            session = target.session
            if not session.enqueue(delivery):
                if session.connection is not None and self._holds(session, publisher, granted, now):
                    return HeldPublish(message, match, index, session)
                self._dropped_for(session)
        groups = match.groups
        first_group = max(0, start - len(targets))
        for index, group in enumerate(groups[first_group:] if first_group else groups,
                                      len(targets) + first_group):
            if not self._give_to_group(group, message):
                if self._holds(group, publisher, message.qos, now):
                    return HeldPublish(message, match, index, group)
                self._group_dropped(group)
        return len(targets) + len(groups)

    def _holds(self, queue: Session | SharedGroup, publisher: Waiter | None, qos: int,
               now: float) -> bool:
        """A message does not fit in `queue`: should its publisher wait for room?"""
        if publisher is None or (qos == 0 and not self.config.qos0_backpressure):
            return False
        if queue.progressing(now, self.config.stall_timeout):
            queue.add_waiter(publisher)
            return True
        if isinstance(queue, Session):
            self._stalled(queue, now)
        return False

    def check_stall(self, queue: Drainable, now: float) -> None:
        """A publisher waited for `queue` until its stall deadline: is it stalled?"""
        if queue.progressing(now, self.config.stall_timeout):
            return
        if isinstance(queue, Session) and queue.connection is not None:
            self._stalled(queue, now)
        queue.release_waiters(now)

    def _stalled(self, session: Session, now: float) -> None:
        """An online client took nothing for stall_timeout while its queue was full."""
        if not session.stalled:
            session.stalled = True
            self.metrics.consumers_stalled += 1
            action = self.config.stall_action
            log.warning("client %r made no progress for %g s with a full queue: %s",
                        session.client_id, self.config.stall_timeout,
                        "disconnecting it" if action == "disconnect"
                        else "dropping what does not fit in its queue")
            if action == "disconnect" and session.connection is not None:
                session.connection.close(now, "stalled: no progress with a full queue",
                                         ReasonCode.QUOTA_EXCEEDED)
        session.release_waiters(now)

    def _dropped_for(self, session: Session) -> None:
        """A delivery to `session` was dropped: its queue was full."""
        if session.connection is not None:
            session.connection.dropped()  # counted for its listener too
        else:
            self.metrics.publish_dropped += 1

    # ------------------------------------------------------------------ shared subscriptions

    def _give_to_group(self, group: SharedGroup, message: Message, dup: bool = False) -> bool:
        """Hand a message to one member of a shared group, or to its backlog; False if
        the backlog is full (the caller holds the publisher or drops it)."""
        member = group.pick(message.topic)
        if member is None:
            if len(group.backlog) >= self.config.max_queued_messages:
                return False
            group.backlog.append((message, dup))
            return True
        ids = (member.identifier,) if member.identifier else ()
        delivery = Delivery(message, min(member.qos, message.qos), False, ids, group, dup)
        if member.session.enqueue(delivery):
            group.delivered += 1
        else:
            group.dropped += 1
            self._dropped_for(member.session)
        return True

    def _group_dropped(self, group: SharedGroup) -> None:
        group.dropped += 1
        self.metrics.publish_dropped += 1

    def _drain_backlog(self, group: SharedGroup, now: float) -> None:
        """Give waiting messages to members that can take them now."""
        backlog = group.backlog
        while backlog:
            message, dup = backlog[0]
            if message.expired(now):
                backlog.popleft()
                continue
            if group.pick(message.topic) is None:
                break
            backlog.popleft()
            self._give_to_group(group, message, dup)
        if group.waiters and len(backlog) <= self.config.max_queued_messages // 2:
            group.release_waiters(now)

    def member_ready(self, session: Session, now: float) -> None:
        """A member of shared groups acknowledged, connected or joined: it may take more."""
        for group in session.shared_groups:
            if group.backlog:
                self._drain_backlog(group, now)

    def _redistribute(self, session: Session, now: float) -> None:
        """A member went away: its unfinished shared messages go to the other members."""
        for group in session.shared_groups:
            taken = session.take_undelivered(group)
            for delivery in taken:
                seen = delivery.state is not DeliveryState.QUEUED or delivery.dup
                group.redelivered += 1
                if not self._give_to_group(group, delivery.message, dup=seen):
                    self._group_dropped(group)
            if taken:
                log.info("gave %d unfinished messages of %s to other members of %s",
                         len(taken), clip(session.client_id), clip(group.share_name))

    def subscribe(self, connection: Connection, session: Session, request: SubscriptionRequest,
                  identifier: int | None, now: float) -> int:
        """Add one subscription; return its SUBACK reason code."""
        client = connection.client
        assert client is not None
        topic_filter = request.topic_filter
        shared = parse_shared(topic_filter)
        config = self.config
        if shared is not None and request.no_local and connection.version == MQTT_5:
            raise protocol_error("[MQTT-3.8.3-4] No Local must not be set on a shared subscription")
        if identifier is not None and not config.subscription_identifiers:
            raise RemoteProtocolError("[MQTT-3.8.2.1.2] subscription identifiers are not supported",
                                      ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED)
        if shared is not None and not config.shared_subscriptions:
            return ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
        if not config.wildcard_subscriptions and has_wildcard(topic_filter):
            return ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
        if not self.hooks.allowed(client, topic_filter, Access.SUBSCRIBE):
            log.info("denied subscription to %s by %s", clip(topic_filter), connection.name)
            return ReasonCode.NOT_AUTHORIZED
        granted = min(request.qos, config.max_qos)
        existed = topic_filter in session.subscriptions
        subscription = Subscription(session, topic_filter, granted, request.no_local,
                                    request.retain_as_published, request.retain_handling,
                                    identifier)
        session.subscriptions[topic_filter] = subscription
        group = self.subscriptions.add(subscription)
        if group is not None and group not in session.shared_groups:
            session.shared_groups += (group,)
        self.hooks.on_subscribe(client, topic_filter, granted)
        if session.persistent:
            self.store.save_session(stored_session(session, now, with_messages=False))
        handling = request.retain_handling
        if shared is None and (
            handling is RetainHandling.SEND_ON_SUBSCRIBE
            or (handling is RetainHandling.SEND_IF_NEW_SUBSCRIPTION and not existed)
        ):
            self._send_retained(session, subscription, now)
        if group is not None and group.backlog:
            self._drain_backlog(group, now)
        return granted

    def _send_retained(self, session: Session, subscription: Subscription, now: float) -> None:
        ids = (subscription.identifier,) if subscription.identifier else ()
        expired = []
        for message in self.retained.match(subscription.topic_filter):
            if message.expired(now):
                expired.append(message.topic)
                continue
            qos = min(message.qos, subscription.qos)
            if not session.enqueue(Delivery(message, qos, True, ids)):
                self._dropped_for(session)
        for topic in expired:
            self.retained.clear(topic)
            self.store.set_retained(topic, None)

    def unsubscribe(self, session: Session, topic_filter: str, now: float) -> bool:
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        self.subscriptions.remove(session.client_id, topic_filter)
        for group in session.shared_groups:
            if group.share_name == topic_filter:
                session.shared_groups = tuple(g for g in session.shared_groups if g is not group)
                # What was sent is still delivered to it [MQTT-3.10.4-3]; the rest goes on.
                for delivery in session.take_queued(group):
                    if not self._give_to_group(group, delivery.message, delivery.dup):
                        self._group_dropped(group)
                break
        return True

    # ------------------------------------------------------------------ time

    def housekeeping(self, now: float) -> None:
        """Send delayed wills and end expired sessions."""
        for session in list(self._waiting.values()):
            if session.will_at is not None and session.will_at <= now:
                will, session.will, session.will_at = session.will, None, None
                if will is not None:
                    self._publish_will(session.client_id, will, now)
            if session.expires_at is not None and session.expires_at <= now:
                log.info("session %s expired", clip(session.client_id))
                self.metrics.clients_expired += 1
                self._end_session(session, now)
            elif session.will_at is None and session.expires_at is None:
                del self._waiting[session.client_id]

    def shutdown(self, now: float) -> None:
        """Close every connection and save every persistent session.

        Wills are not sent: the clients did not fail, the broker is going away.
        """
        self.shutting_down = True
        for session in list(self.sessions.values()):
            connection = session.connection
            if connection is not None:
                connection.close(now, "broker shutting down", ReasonCode.SERVER_SHUTTING_DOWN)
        for session in self.sessions.values():
            if session.persistent:
                self.store.save_session(stored_session(session, now, with_messages=True))
        self.store.close()

    def _restore(self, now: float) -> None:
        state = self.store.load()
        for record in state.retained:
            self.retained.set(restore_message(record, now))
        for stored in state.sessions:
            session = restore_session(stored, self.config, now)
            self.sessions[session.client_id] = session
            for subscription in session.subscriptions.values():
                group = self.subscriptions.add(subscription)
                if group is not None:
                    session.shared_groups += (group,)
            if session.expiry_interval != NEVER_EXPIRES:
                session.expires_at = now + session.expiry_interval
                self._waiting[session.client_id] = session
        if state.retained or state.sessions:
            log.info("restored %d retained messages and %d sessions",
                     len(state.retained), len(state.sessions))


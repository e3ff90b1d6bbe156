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
from mqttish.core.subscriptions import Subscription, SubscriptionTree
from mqttish.errors import RemoteProtocolError, protocol_error
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
            log.info("redirecting %r (%s) to %s", client_id, connection.peer, redirect.server)
            code = ReasonCode.SERVER_MOVED if redirect.permanent else ReasonCode.USE_ANOTHER_SERVER
            return ConnAck(False, code, Properties(server_reference=redirect.server)
                           if version == MQTT_5 else NO_PROPERTIES)
        client = ClientInfo(client_id, packet.username, connection.peer, version)
        refusal = self._refusal(client, packet, connection)
        if refusal is not None:
            log.info("refused %r (%s): %s", client_id, connection.peer, refusal.name)
            return ConnAck(False, refusal)

        session = self.sessions.get(client_id)
        if session is not None and session.connection is not None:
            old = session.connection
            log.info("client %r reconnected from %s: taking over its session", client_id,
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
        log.info("client %r connected from %s (MQTT %s, keepalive %d, %s session)",
                 client_id, connection.peer, {3: "3.1", 4: "3.1.1", 5: "5.0"}[version],
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
        """The limits an MQTT 5 client must respect, announced in CONNACK."""
        config = self.config
        requested = packet.properties.session_expiry_interval or 0
        granted = self.capped_expiry(requested)
        return Properties(
            assigned_client_identifier=assigned,
            session_expiry_interval=granted if granted != requested else None,
            receive_maximum=config.max_inflight_messages,
            maximum_qos=config.max_qos if config.max_qos < 2 else None,
            retain_available=int(config.retain_available),
            maximum_packet_size=config.max_packet_size,
            topic_alias_maximum=self.topic_alias_maximum or None,
            wildcard_subscription_available=int(config.wildcard_subscriptions),
            subscription_identifier_available=int(config.subscription_identifiers),
            shared_subscription_available=int(config.shared_subscriptions),
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
        self.metrics.clients_connected -= 1
        if session.shared_groups:
            self._redistribute(session, now)
        client = connection.client
        assert client is not None
        reason = connection.close_reason or "connection closed"
        log.info("client %r disconnected: %s", client.client_id, reason)
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
        log.info("publishing will of %r to %r", client_id, will.topic)
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
        self._waiting.pop(session.client_id, None)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        self.store.delete_session(session.client_id)

    # ------------------------------------------------------------------ routing

    def publish(self, message: Message, now: float, client: ClientInfo | None = None) -> int:
        """Route a message to every matching session; return how many matched."""
        if message.retain:
            self.retained.set(message)
            if not message.topic.startswith(SYS_PREFIX):  # the broker's own state: not saved
                self.store.set_retained(message.topic,
                                        stored_message(message, now) if message.payload else None)
        match = self.subscriptions.match(message.topic)
        qos = message.qos
        retain = message.retain
        origin = message.origin
        plain = None  # one QoS 0 delivery with nothing of its own serves every session
        for target in match.targets:
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
            if not target.session.enqueue(delivery):
                self._dropped_for(target.session)
        for group in match.groups:
            self._give_to_group(group, message)
        if self.hooks.publish_observers:
            self.hooks.on_publish(client, message)
        return len(match.targets) + len(match.groups)

    def _dropped_for(self, session: Session) -> None:
        """A delivery to `session` was dropped: its queue was full."""
        if session.connection is not None:
            session.connection.dropped()  # counted for its listener too
        else:
            self.metrics.publish_dropped += 1

    # ------------------------------------------------------------------ shared subscriptions

    def _give_to_group(self, group: SharedGroup, message: Message, dup: bool = False) -> None:
        """Hand a message to one member of a shared group, or to its backlog."""
        member = group.pick(message.topic)
        if member is None:
            if len(group.backlog) >= self.config.max_queued_messages:
                group.dropped += 1
                self.metrics.publish_dropped += 1
            else:
                group.backlog.append((message, dup))
            return
        ids = (member.identifier,) if member.identifier else ()
        delivery = Delivery(message, min(member.qos, message.qos), False, ids, group, dup)
        if member.session.enqueue(delivery):
            group.delivered += 1
        else:
            group.dropped += 1
            self._dropped_for(member.session)

    def _drain_backlog(self, group: SharedGroup, now: float) -> None:
        """Give waiting messages to members that can take them now."""
        backlog = group.backlog
        while backlog:
            message, dup = backlog[0]
            if message.expired(now):
                backlog.popleft()
                continue
            if group.pick(message.topic) is None:
                return
            backlog.popleft()
            self._give_to_group(group, message, dup)

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
                self._give_to_group(group, delivery.message, dup=seen)
            if taken:
                log.info("gave %d unfinished messages of %r to other members of %s",
                         len(taken), session.client_id, group.share_name)

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
            log.info("denied subscription to %r by %s", topic_filter, connection.name)
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
                    self._give_to_group(group, delivery.message, delivery.dup)
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
                log.info("session %r expired", session.client_id)
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


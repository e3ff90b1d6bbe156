"""The broker: sessions by client id, the subscription tree, retained messages.

Everything here is synchronous and takes `now` as an argument. Connections
call in (connect, publish, subscribe, disconnected); the server calls
`housekeeping(now)` about once a second to expire sessions and send delayed
wills, and `shutdown(now)` at the end. The broker knows a connection only as
the `Attached` of its session: `connect` returns what the connection applies
to itself. With a journal, every durable change is recorded as it happens
(core/store.py); `restore` rebuilds the state a store committed. In a
cluster, a `Remote` (core/remote.py) carries messages to subscribers on other
nodes, and sessions move between nodes (`release`, `adopt`).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mqttish.core.backlog import backlog_share_name, backlog_store_name
from mqttish.core.backpressure import Drainable, Waiter
from mqttish.core.hooks import (
    INTERNAL_LISTENER,
    Access,
    ClientInfo,
    Decision,
    Hook,
    HookChain,
)
from mqttish.core.journal import Journal
from mqttish.core.message import Message
from mqttish.core.metrics import BrokerStats, Metrics, SharedGroupStats
from mqttish.core.remote import Remote
from mqttish.core.retained import RetainedStore
from mqttish.core.session import Attached, Delivery, Session, Subscription
from mqttish.core.settings import BrokerSettings
from mqttish.core.shared import SharedGroup, Strategy
from mqttish.core.store import (
    RetainedDeleted,
    RetainedSaved,
    SessionDeleted,
    SessionSaved,
    StoredMessage,
    StoredSession,
    StoredState,
    SubscriptionDeleted,
    SubscriptionSaved,
    WillDeleted,
    WillSaved,
)
from mqttish.core.subscriptions import Match, SubscriptionTree
from mqttish.errors import RemoteProtocolError, protocol_error
from mqttish.log_text import clip
from mqttish.protocol.flow import FlightState
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Connect,
    RetainHandling,
    SubscriptionRequest,
    Will,
)
from mqttish.protocol.properties import NO_PROPERTIES, SESSION_NEVER_EXPIRES, Properties
from mqttish.protocol.reason_codes import ReasonCode
from mqttish.protocol.topics import has_wildcard, matches, parse_shared, reserved_for_broker

log = logging.getLogger("mqttish.broker")

SYS_PREFIX = "$SYS/"
# Client ids with control characters are refused, as Mosquitto refuses them (as
# malformed): they garble logs, and the store names shared backlogs with one.
_CONTROL_CHARACTERS = re.compile("[\x01-\x1f\x7f-\x9f]")
MAX_PACKET_SIZE = 268_435_460  # what the protocol itself allows: no Maximum Packet Size


def _unless(value: int, default: int) -> int | None:
    """A CONNACK property's value, or None (not sent) when it is the spec's default."""
    return None if value == default else value


class HeldPublish:
    """A PUBLISH whose fan-out stopped at a full queue, and where to resume it.

    However many queues it meets, a PUBLISH waits at most `stall_timeout` in all
    from `since`: then its fan-out goes on without waiting (full queues drop it,
    counted), so clients that take turns at being slow cannot hold it for longer.
    """

    __slots__ = ("blocker", "match", "message", "next_target", "since")

    def __init__(self, message: Message, match: Match, next_target: int,
                 blocker: Drainable, since: float) -> None:
        self.message = message
        self.match = match
        self.next_target = next_target  # index in match.targets, then in match.groups
        self.blocker = blocker
        self.since = since  # when it was first held


@dataclass(frozen=True, slots=True)
class Accepted:
    """A CONNECT the broker accepted: what the connection takes on."""

    connack: ConnAck
    session: Session
    client: ClientInfo
    keepalive: int  # the keepalive in force (at most max_keepalive)


class Broker:
    def __init__(
        self,
        config: BrokerSettings | None = None,
        hooks: Sequence[Hook] = (),
        journal: Journal | None = None,
    ) -> None:
        self.config = config or BrokerSettings()
        self.journal = journal  # None: nothing is durable (no store)
        self.hooks = HookChain(hooks)
        self.metrics = Metrics()
        self.sessions: dict[str, Session] = {}
        self.subscriptions = SubscriptionTree(Strategy(self.config.shared_subscription_strategy))
        self.retained = RetainedStore()
        self.topic_alias_maximum = self.config.topic_alias_maximum
        # Offline sessions with an expiry or a delayed will: what housekeeping looks at.
        self._waiting: dict[str, Session] = {}
        self.shutting_down = False
        # The other nodes of a cluster (None: a broker of its own). With one, a CONNECT
        # waits for the transport to claim its client id cluster-wide first.
        self.remote: Remote | None = None

    # ------------------------------------------------------------------ connect

    def connect(self, packet: Connect, peer: str, now: float, connection: Attached, *,
                listener: int = 0, verdict: Decision = Decision.DEFER) -> Accepted | ConnAck:
        """Accept a CONNECT (attaching `connection` to its session), or refuse it.

        `listener` is the index of the listener it came in on; `verdict` what
        `Hook.authenticate_blocking` answered, if the transport asked."""
        version = packet.protocol_level
        client_id = packet.client_id
        assigned = None
        if not client_id:
            if not self.config.allow_zero_length_clientid:
                log.info("refused %s: empty client id (allow_zero_length_clientid is off)", peer)
                return ConnAck(False, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
            if version == MQTT_5 or (version == MQTT_3_1_1 and packet.clean_start):
                client_id = assigned = "mqttish-" + secrets.token_hex(8)
            else:
                log.info("refused %s: empty client id without clean session", peer)
                return ConnAck(False, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
        redirect = self.config.redirect
        if redirect is not None:
            log.info("redirecting %s (%s) to %s", clip(client_id), peer, redirect.server)
            code = ReasonCode.SERVER_MOVED if redirect.permanent else ReasonCode.USE_ANOTHER_SERVER
            return ConnAck(False, code, Properties(server_reference=redirect.server)
                           if version == MQTT_5 else NO_PROPERTIES)
        client = ClientInfo(client_id, packet.username, peer, version, listener, packet.bridge)
        refusal = self._refusal(client, packet, verdict)
        if refusal is not None:
            log.info("refused %s (%s): %s", clip(client_id), peer, refusal.name)
            return ConnAck(False, refusal)

        session = self.sessions.get(client_id)
        if session is not None and session.connection is not None:
            log.info("client %s reconnected from %s: taking over its session", clip(client_id),
                     peer)
            session.connection.close(now, "session taken over by a new connection",
                                     ReasonCode.SESSION_TAKEN_OVER)
            session = self.sessions.get(client_id)  # gone if it was a clean session
        if session is not None and packet.clean_start:
            self._end_session(session, now)
            session = None
        session_present = session is not None
        if session is None:
            session = self.sessions[client_id] = Session(client_id, self.config)
        self._waiting.pop(client_id, None)
        if session.will is not None:  # a delayed will is cancelled by the client's return
            self._forget_will(session)
        session.expires_at = None
        expiry = (packet.properties.session_expiry_interval or 0 if version == MQTT_5
                  else 0 if packet.clean_start else SESSION_NEVER_EXPIRES)
        # A bridge's session (in-process) holds what it must still forward: it is not cut
        # short by persistent_client_expiration while the remote broker is away.
        session.expiry_interval = expiry if listener == INTERNAL_LISTENER \
            else self.capped_expiry(expiry)
        session.username = packet.username
        session.client = client
        self.hooks.generation += 1  # ACL answers cached for its old identity are stale
        session.connection = connection
        if not session.stalled:
            # A client that comes gets stall_timeout to start taking its messages; one
            # found stalled does not, until it really takes some: reconnecting is no
            # progress, or a client that kept coming back could hold publishers for ever.
            session.last_progress = now
        self._journal_session(session, now)
        self.metrics.client_connected()
        self.hooks.on_connect(client)
        if self.remote is not None:
            self.remote.session_started(client_id, packet.will)
        if session.shared_groups:
            self.member_ready(session, now)
        if self.config.connection_messages:
            log.info("client %s connected from %s (MQTT %s, keepalive %d, %s session)",
                     clip(client_id), peer, {3: "3.1", 4: "3.1.1", 5: "5.0"}[version],
                     packet.keepalive, "resumed" if session_present else "new")
        properties = Properties()
        if version == MQTT_5:
            properties = self._connack_properties(packet, assigned, session.expiry_interval)
        return Accepted(ConnAck(session_present, ReasonCode.SUCCESS, properties), session, client,
                        min(packet.keepalive, self.config.max_keepalive))

    def _refusal(self, client: ClientInfo, packet: Connect, verdict: Decision
                 ) -> ReasonCode | None:
        config = self.config
        if packet.properties.authentication_method is not None:
            return ReasonCode.BAD_AUTHENTICATION_METHOD
        if len(client.client_id) > config.max_client_id_length or \
                _CONTROL_CHARACTERS.search(client.client_id):
            return ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
        if packet.keepalive > config.max_keepalive and packet.protocol_level != MQTT_5:
            # 3.1.1 has no Server Keep Alive to lower it with; Mosquitto refuses too.
            return ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
        decision = verdict
        if decision is Decision.DEFER:
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

    def _connack_properties(self, packet: Connect, assigned: str | None, granted: int
                            ) -> Properties:
        """The limits an MQTT 5 client must respect, announced in CONNACK.

        Like Mosquitto, only what differs from the spec's default is sent: an
        absent property already means 65535 in flight, QoS 2, no packet size
        limit, no topic aliases, and retain, wildcards, subscription ids and
        shared subscriptions available.
        """
        config = self.config
        requested = packet.properties.session_expiry_interval or 0
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

    def disconnected(self, connection: Attached, session: Session, client: ClientInfo,
                     will: Will | None, reason: str, now: float) -> None:
        """A connection ended: detach it, publish its will (None: it ended gracefully)."""
        if session.connection is not connection:
            return  # its session was taken over
        session.connection = None
        session.release_waiters(now)  # an offline session holds no publisher back
        self.metrics.clients_connected -= 1
        if session.shared_groups:
            self.redistribute(session, now)
        if self.config.connection_messages:
            log.info("client %s disconnected: %s", clip(client.client_id), reason)
        self.hooks.on_disconnect(client, reason)
        if self.remote is not None:
            self.remote.session_detached(client.client_id)
        if will is not None and not self.shutting_down:
            delay = will.properties.will_delay_interval or 0
            if delay and session.expiry_interval:
                session.will = will
                session.will_at = now + delay
                if session.journal is not None:
                    session.journal.emit(WillSaved(session.client_id, will, delay))
            else:
                self.publish_will(client.client_id, will, now)
        if session.expiry_interval == 0:
            self._end_session(session, now)
            return
        if session.expiry_interval != SESSION_NEVER_EXPIRES:
            session.expires_at = now + session.expiry_interval
        self._journal_session(session, now)
        if session.expires_at is not None or session.will_at is not None:
            self._waiting[session.client_id] = session

    def _journal_session(self, session: Session, now: float) -> None:
        """Record a session's existence and expiry, if it is persistent; a session that
        stopped being persistent leaves the store (it ends at its next disconnect)."""
        journal = self.journal
        if journal is None:
            return
        if not session.persistent:
            if session.journal is not None:
                session.journal = None
                journal.emit(SessionDeleted(session.client_id))
            return
        if session.journal is None:
            session.journal = journal
            for subscription in session.subscriptions.values():  # kept from before
                journal.emit(_subscription_saved(subscription))
        expires_in = None if session.expires_at is None else session.expires_at - now
        journal.emit(SessionSaved(session.client_id, session.expiry_interval,
                                  session.connection is not None, expires_in))

    def _forget_will(self, session: Session) -> None:
        session.will = None
        session.will_at = None
        if session.journal is not None:
            session.journal.emit(WillDeleted(session.client_id))

    def publish_will(self, client_id: str, will: Will, now: float) -> None:
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
            will = session.will
            self._forget_will(session)
            self.publish_will(session.client_id, will, now)
        for topic_filter in list(session.subscriptions):
            self._remove_subscription(session.client_id, topic_filter, now)
        session.subscriptions.clear()
        session.shared_groups = ()
        session.clear()
        session.release_waiters(now)
        self._waiting.pop(session.client_id, None)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            if self.remote is not None:
                self.remote.session_ended(session.client_id)
        if session.journal is not None:
            session.journal.emit(SessionDeleted(session.client_id))
            session.journal = None

    # ------------------------------------------------------------------ routing

    def publish(self, message: Message, now: float, client: ClientInfo | None = None,
                publisher: Waiter | None = None, since: float | None = None
                ) -> int | HeldPublish:
        """Route a message to every matching session; return how many matched.

        With a `publisher` to hold back, a full queue whose client makes progress
        stops the fan-out: the `HeldPublish` returned finishes it later
        (`resume_publish`), once the queue has drained and released the publisher.
        Without one (wills, $SYS), a full queue drops the message, counted.
        `since`: when the publisher started waiting, if this message was read while
        it waited (it has been waiting since then too).
        """
        if message.retain:
            self.retained.set(message)
            journal = self.journal
            if journal is not None and not message.topic.startswith(SYS_PREFIX):
                if message.payload:  # (the broker's own $SYS state is not stored)
                    journal.emit(RetainedSaved(message.topic, journal.message_id(message, now)))
                else:
                    journal.emit(RetainedDeleted(message.topic))
        if self.hooks.publish_observers:
            self.hooks.on_publish(client, message)
        elsewhere = 0 if self.remote is None else self.remote.forward(message, now)
        routed = self._fan_out(message, self.subscriptions.match(message.topic), 0, now,
                               publisher, now if since is None else since)
        return routed + elsewhere if elsewhere and type(routed) is int else routed

    def publish_forwarded(self, message: Message, now: float, publisher: Waiter | None = None,
                          only: frozenset[str] | None = None) -> int | HeldPublish:
        """Deliver a message another node forwarded to the sessions here that want it: not
        to shared groups (another node chose a group's member for it: `give_forwarded`),
        and never on to other nodes. `only`: these client ids alone (the sessions a
        dead node left here, for the messages that were on their way to it)."""
        match = self.subscriptions.match(message.topic)
        if match.groups or only is not None:
            targets = match.targets if only is None else [
                target for target in match.targets if target.session.client_id in only]
            match = Match(targets, [])
        return self._fan_out(message, match, 0, now, publisher, now)

    def give_forwarded(self, share_name: str, message: Message, now: float, dup: bool,
                       here: bool = True) -> bool:
        """Another node chose this node's members of a shared group for `message` (`here`;
        False: the node it chose died, so any member may have it); False if the group has
        no member here any more, or its backlog is full (dropped)."""
        group = self.subscriptions.group(share_name)
        if group is None or not self._give_to_group(group, message, now, dup, here=here):
            if group is not None:
                self._group_dropped(group)
            else:
                self.metrics.publish_dropped += 1
            return False
        return True

    def resume_publish(self, held: HeldPublish, now: float,
                       publisher: Waiter | None) -> int | HeldPublish:
        """Go on with a held fan-out where it stopped (`publisher` None: hold no more)."""
        return self._fan_out(held.message, held.match, held.next_target, now, publisher,
                             held.since)

    def _fan_out(self, message: Message, match: Match, start: int, now: float,
                 publisher: Waiter | None, since: float) -> int | HeldPublish:
        targets = match.targets
        qos = message.qos
        retain = message.retain
        origin = message.origin
        plain = None  # one QoS 0 delivery with nothing of its own serves every session
        # Security: with an ACL, the sessions that may read the topic (cached per match).
        readers = self._readers(match, message.topic) if self.hooks.acl_hooks else None
        for index, target in enumerate(targets[start:] if start else targets, start):
            if readers is not None and target.session.client_id not in readers:
                continue
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
            if (publisher is not None and len(session.queue) >= session.hold_at
                    and not session.stalled  # (it holds nobody: dropped, counted, at once)
                    and session.connection is not None and session.crowded(delivery)
                    and self._holds(session, publisher, granted, now, since)):
                return HeldPublish(message, match, index, session, since)
            if not session.enqueue(delivery, now):
                self._dropped_for(session)
        groups = match.groups
        if not groups:
            return len(targets)
        first_group = max(0, start - len(targets))
        for index, group in enumerate(groups[first_group:] if first_group else groups,
                                      len(targets) + first_group):
            if not self._give_to_group(group, message, now):
                if self._holds(group, publisher, message.qos, now, since):
                    return HeldPublish(message, match, index, group, since)
                self._group_dropped(group)
        return len(targets) + len(groups)

    def _holds(self, queue: Session | SharedGroup[Subscription], publisher: Waiter | None,
               qos: int, now: float, since: float) -> bool:
        """A message (first held at `since`, or `now`) does not fit in `queue`: should its
        publisher wait for room?"""
        config = self.config
        if publisher is None or (qos == 0 and not config.qos0_backpressure):
            return False
        if now - since >= config.stall_timeout:
            return False  # it has waited long enough, whoever it waited for
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
            log.warning("client %s made no progress for %g s with a full queue: %s",
                        clip(session.client_id), self.config.stall_timeout,
                        "disconnecting it" if action == "disconnect"
                        else "dropping what does not fit in its queue")
            if action == "disconnect" and session.connection is not None:
                session.connection.close(now, "stalled: no progress with a full queue",
                                         ReasonCode.QUOTA_EXCEEDED)
        session.release_waiters(now)

    def _readers(self, match: Match, topic: str) -> frozenset[str]:
        """The client ids among `match`'s targets that the ACL lets read `topic`: worked
        out once per match (one per topic, until the subscriptions change) and
        `hooks.generation` (bumped when a client connects or the rules are reloaded)."""
        cached = match.readers
        generation = self.hooks.generation
        if cached is not None and cached[0] == generation:
            return cached[1]
        readers = frozenset(target.session.client_id for target in match.targets
                            if self.may_read(target.session, topic))
        match.readers = (generation, readers)
        return readers

    def may_read(self, session: Session, topic: str) -> bool:
        """Whether the ACL lets this session receive a message on `topic`."""
        client = session.client
        if client is None:  # restored from the store: its user is all we know
            client = session.client = ClientInfo(session.client_id, session.username, "", 0)
        return self.hooks.allowed(client, topic, Access.READ)

    def _dropped_for(self, session: Session) -> None:
        """A delivery to `session` was dropped: its queue was full."""
        if session.connection is not None:
            session.connection.dropped()  # counted for its listener too
        else:
            self.metrics.publish_dropped += 1

    # ------------------------------------------------------------------ shared subscriptions

    def _give_to_group(self, group: SharedGroup[Subscription], message: Message, now: float,
                       dup: bool = False, here: bool = False) -> bool:
        """Hand a message to one member of a shared group, or to its backlog; False if
        the backlog is full (the caller holds the publisher or drops it). In a cluster,
        the remote may give it to members on another node instead (`here`: only if no
        member here can take it)."""
        member = group.pick(message.topic)
        if self.remote is not None and (not here or member is None) and \
                self.remote.share_elsewhere(group.share_name, message, dup, member is not None,
                                            now):
            return True
        if member is not None and self.hooks.acl_hooks and not self.may_read(
                member.session, message.topic):
            return True  # security: this member may not read it; nothing to hold for
        if member is None:
            if len(group.backlog) >= self.config.max_queued_messages:
                return False
            group.backlog.append(message, dup, now, self._backlog_journal(group))
            return True
        ids = (member.identifier,) if member.identifier else ()
        qos = min(member.qos, message.qos)
        # DUP means "maybe sent before" only at QoS 1 and 2 [MQTT-3.3.1-2].
        delivery = Delivery(message, qos, False, ids, group, dup and qos > 0)
        if member.session.enqueue(delivery, now):
            group.delivered += 1
        else:
            group.dropped += 1
            self._dropped_for(member.session)
        return True

    def _backlog_journal(self, group: SharedGroup[Subscription]) -> Journal | None:
        """Where the group's backlog is journalled: in the store, once the group has a
        persistent member (it outlives a restart then); in a cluster, always, under this
        node's name (a node that dies leaves it to the one that adopts it)."""
        journal = group.backlog.journal
        if journal is not None or self.journal is None:
            return journal
        if self.remote is not None:
            group.backlog.store_name = backlog_store_name(group.share_name, self.remote.member)
            return self.journal
        if any(m.session.journal is not None for m in group.members.values()):
            return self.journal
        return None

    def _remove_subscription(self, client_id: str, topic_filter: str, now: float) -> None:
        """Take a subscription out of the tree; a shared group left with no member ends,
        and the messages of its backlog with it (nobody subscribes to them any more). In
        a cluster they go to the group's members on other nodes, if there are any."""
        group = self.subscriptions.group(topic_filter) if topic_filter.startswith(
            "$share/") else None
        self.subscriptions.remove(client_id, topic_filter)
        if group is None or group.members:
            return
        backlog = group.backlog
        remote = self.remote
        while remote is not None and backlog:
            message, dup = backlog.first()
            if not remote.share_elsewhere(group.share_name, message, dup, False, now):
                self._group_dropped(group)
            backlog.popleft()
        backlog.discard()

    def _group_dropped(self, group: SharedGroup[Subscription]) -> None:
        group.dropped += 1
        self.metrics.publish_dropped += 1

    def _drain_backlog(self, group: SharedGroup[Subscription], now: float) -> None:
        """Give waiting messages to members that can take them now."""
        backlog = group.backlog
        while backlog:
            message, dup = backlog.first()
            if message.expired(now):
                backlog.popleft()
                continue
            if group.pick(message.topic) is None:
                break
            backlog.popleft()
            self._give_to_group(group, message, now, dup)
        if group.waiters and len(backlog) <= self.config.max_queued_messages // 2:
            group.release_waiters(now)

    def member_ready(self, session: Session, now: float) -> None:
        """A member of shared groups acknowledged, connected or joined: it may take more."""
        for group in session.shared_groups:
            if group.backlog:
                self._drain_backlog(group, now)

    def redistribute(self, session: Session, now: float) -> None:
        """A member went away: its unfinished shared messages go to the other members."""
        for group in session.shared_groups:
            taken = session.take_undelivered(group)
            for delivery in taken:
                seen = delivery.state is not FlightState.QUEUED or delivery.dup
                group.redelivered += 1
                if not self._give_to_group(group, delivery.message, now, dup=seen):
                    self._group_dropped(group)
            if taken:
                log.info("gave %d unfinished messages of %s to other members of %s",
                         len(taken), clip(session.client_id), clip(group.share_name))

    def subscribe(self, client: ClientInfo, session: Session, request: SubscriptionRequest,
                  identifier: int | None, now: float) -> ReasonCode:
        """Add one subscription; return its SUBACK reason code (GRANTED_QOS_n on success)."""
        topic_filter = request.topic_filter
        shared = parse_shared(topic_filter)
        config = self.config
        if shared is not None and request.no_local and client.protocol_level == MQTT_5:
            raise protocol_error("[MQTT-3.8.3-4] No Local must not be set on a shared subscription")
        if identifier is not None and not config.subscription_identifiers:
            raise RemoteProtocolError("[MQTT-3.8.2.1.2] subscription identifiers are not supported",
                                      ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED)
        if shared is not None and not config.shared_subscriptions:
            return ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
        if not config.wildcard_subscriptions and has_wildcard(topic_filter):
            return ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
        who = f"{clip(client.client_id)} ({client.peer})"
        if len(topic_filter) > config.max_topic_length or \
                topic_filter.count("/") >= config.max_topic_levels:
            log.info("refused subscription by %s: filter longer or deeper than the limits", who)
            return ReasonCode.TOPIC_FILTER_INVALID
        limit = config.max_subscriptions_per_client
        if limit and len(session.subscriptions) >= limit and \
                topic_filter not in session.subscriptions:
            log.info("refused subscription by %s: max_subscriptions_per_client (%d) reached",
                     who, limit)
            return ReasonCode.QUOTA_EXCEEDED
        if not self.hooks.allowed(client, topic_filter, Access.SUBSCRIBE):
            log.info("denied subscription to %s by %s", clip(topic_filter), who)
            return ReasonCode.NOT_AUTHORIZED
        granted = min(request.qos, config.max_qos)
        existed = topic_filter in session.subscriptions
        # A bridge (try_private) gets neither its own messages back nor retain flags
        # cleared, as from Mosquitto: brokers sharing topics both ways do not loop.
        bridged = client.bridge and shared is None
        subscription = Subscription(session, topic_filter, granted, request.no_local or bridged,
                                    request.retain_as_published or bridged,
                                    request.retain_handling, identifier)
        session.subscriptions[topic_filter] = subscription
        group = self.subscriptions.add(subscription)
        if group is not None and group not in session.shared_groups:
            session.shared_groups += (group,)
        self.hooks.on_subscribe(client, topic_filter, granted)
        if session.journal is not None:
            session.journal.emit(_subscription_saved(subscription))
        handling = request.retain_handling
        if shared is None and (
            handling is RetainHandling.SEND_ON_SUBSCRIBE
            or (handling is RetainHandling.SEND_IF_NEW_SUBSCRIPTION and not existed)
        ):
            self._send_retained(session, subscription, now)
        if group is not None and group.backlog:
            self._drain_backlog(group, now)
        return ReasonCode(granted)

    def _send_retained(self, session: Session, subscription: Subscription, now: float) -> None:
        ids = (subscription.identifier,) if subscription.identifier else ()
        expired = []
        acl = self.hooks.acl_hooks
        for message in self.retained.match(subscription.topic_filter):
            if message.expired(now):
                expired.append(message.topic)
                continue
            if acl and not self.may_read(session, message.topic):
                continue
            qos = min(message.qos, subscription.qos)
            if not session.enqueue(Delivery(message, qos, True, ids), now):
                self._dropped_for(session)
        for topic in expired:
            self.retained.clear(topic)
            if self.journal is not None:
                self.journal.emit(RetainedDeleted(topic))

    def unsubscribe(self, session: Session, topic_filter: str, now: float) -> bool:
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        self._remove_subscription(session.client_id, topic_filter, now)
        if session.journal is not None:
            session.journal.emit(SubscriptionDeleted(session.client_id, topic_filter))
        for group in session.shared_groups:
            if group.share_name == topic_filter:
                session.shared_groups = tuple(g for g in session.shared_groups if g is not group)
                # What was sent is still delivered to it [MQTT-3.10.4-3]; the rest goes on.
                for delivery in session.take_queued(group):
                    if not self._give_to_group(group, delivery.message, now, delivery.dup):
                        self._group_dropped(group)
                break
        return True

    # ------------------------------------------------------------------ time

    def housekeeping(self, now: float) -> None:
        """Send delayed wills and end expired sessions."""
        for session in list(self._waiting.values()):
            if session.will_at is not None and session.will_at <= now:
                will = session.will
                self._forget_will(session)
                if will is not None:
                    self.publish_will(session.client_id, will, now)
            if session.expires_at is not None and session.expires_at <= now:
                log.info("session %s expired", clip(session.client_id))
                self.metrics.clients_expired += 1
                self._end_session(session, now)
            elif session.will_at is None and session.expires_at is None:
                del self._waiting[session.client_id]

    def shutdown(self, now: float) -> None:
        """Close every connection. Persistent sessions are already in the journal.

        Wills are not sent: the clients did not fail, the broker is going away.
        """
        self.shutting_down = True
        for session in list(self.sessions.values()):
            connection = session.connection
            if connection is not None:
                connection.close(now, "broker shutting down", ReasonCode.SERVER_SHUTTING_DOWN)

    # ------------------------------------------------------------------ cluster

    def release(self, client_id: str, now: float) -> None:
        """Another node takes this client's session over: close its connection here (as a
        takeover does) and forget the session, which stays in the store for that node."""
        session = self.sessions.get(client_id)
        if session is None:
            return
        if session.connection is not None:
            session.connection.close(now, "session taken over on another node",
                                     ReasonCode.SESSION_TAKEN_OVER)
        if self.sessions.get(client_id) is not session:
            return  # it ended with its connection (not persistent)
        del self.sessions[client_id]
        self._waiting.pop(client_id, None)
        for topic_filter in session.subscriptions:
            self._remove_subscription(client_id, topic_filter, now)
        session.shared_groups = ()
        session.journal = None  # its records are the other node's now
        session.release_waiters(now)

    def adopt(self, stored: StoredSession, will: Will | None, now: float) -> Session:
        """Take over a session from the store, offline: one moved here from another node
        (`will` None), or one a dead node left, whose client was connected there when it
        died: `will` is then that client's will, published (or delayed) as if it had
        just lost its connection here."""
        self._restore_session(stored, now, {})
        session = self.sessions[stored.client_id]
        if will is not None:
            delay = will.properties.will_delay_interval or 0
            if delay and session.expiry_interval:
                session.will = will
                session.will_at = now + delay
                self._waiting[session.client_id] = session
                if session.journal is not None:
                    session.journal.emit(WillSaved(session.client_id, will, delay))
            else:
                self.publish_will(session.client_id, will, now)
        return session

    # ------------------------------------------------------------------ restore

    def restore(self, state: StoredState, now: float) -> None:
        """Rebuild what a store committed: retained messages, and sessions (offline) with
        their subscriptions, queued and in-flight deliveries, QoS 2 ids and wills."""
        messages: dict[int, Message] = {}  # a message stored once is shared again
        for record in state.retained:
            self.retained.set(_restored_message(record, now, messages))
        backlogs = []
        for stored in state.sessions:
            if backlog_share_name(stored.client_id) is None:
                self._restore_session(stored, now, messages)
            else:
                backlogs.append(stored)
        for stored in backlogs:  # once every member's subscriptions are back
            self._restore_backlog(stored, now, messages)
        if self.journal is not None:
            self.journal.next_message_id = max(self.journal.next_message_id,
                                               state.next_message_id)
        if state.retained or state.sessions:
            log.info("restored %d retained messages, %d sessions and %d shared backlogs",
                     len(state.retained), len(state.sessions) - len(backlogs), len(backlogs))

    def take_backlog(self, stored: StoredSession, now: float) -> tuple[str, list[Message]]:
        """The share name and the messages of a backlog another node stored and left (a
        cluster node adopting a dead one, which gives them to the group's members); the
        stored backlog ends."""
        if self.journal is not None:
            self.journal.emit(SessionDeleted(stored.client_id))
        messages: dict[int, Message] = {}
        return (backlog_share_name(stored.client_id) or "",
                [_restored_message(record.message, now, messages)
                 for record in stored.deliveries])

    def _restore_backlog(self, stored: StoredSession, now: float,
                         messages: dict[int, Message]) -> None:
        """Give a shared group back the messages that waited for a member."""
        share_name = backlog_share_name(stored.client_id) or ""
        group = self.subscriptions.group(share_name)
        if group is None:  # no persistent member came back: nobody subscribes to them
            if self.journal is not None:
                self.journal.emit(SessionDeleted(stored.client_id))
            return
        group.backlog.restore(
            ((record.sequence, _restored_message(record.message, now, messages))
             for record in stored.deliveries), self.journal)

    def _restore_session(self, stored: StoredSession, now: float,
                         messages: dict[int, Message]) -> None:
        session = self.sessions[stored.client_id] = Session(stored.client_id, self.config)
        session.expiry_interval = stored.expiry_interval
        session.journal = self.journal
        for item in stored.subscriptions:
            request = item.request
            subscription = session.subscriptions[request.topic_filter] = Subscription(
                session, request.topic_filter, request.qos, request.no_local,
                request.retain_as_published, request.retain_handling, item.identifier)
            group = self.subscriptions.add(subscription)
            if group is not None:
                session.shared_groups += (group,)
        session.restore_deliveries(
            (record.sequence, Delivery(_restored_message(record.message, now, messages),
                                       record.qos, record.retain, record.subscription_ids,
                                       _group_of(session, record.message.topic)),
             record.packet_id, record.state)
            for record in stored.deliveries)
        for packet_id in stored.incoming_qos2:
            session.incoming_qos2.hold(packet_id)
        if stored.expires_in is not None:
            session.expires_at = now + stored.expires_in
        if stored.will is not None and stored.will_in is not None:
            session.will = stored.will
            session.will_at = now + stored.will_in
        if session.expires_at is not None or session.will_at is not None:
            self._waiting[session.client_id] = session

    # ------------------------------------------------------------------ figures

    def stats(self, now: float, started_at: float) -> BrokerStats:
        """Read the counters and count what the broker holds ($SYS and /metrics)."""
        metrics = self.metrics
        retained = self.retained
        disconnected = held = held_bytes = 0
        for session in self.sessions.values():
            if session.connection is None:
                disconnected += 1
            queue = session.queue
            flights = session.outgoing.flights
            if queue or flights:
                held += len(queue) + len(flights)
                held_bytes += sum(len(d.message.payload) for d in queue)
                held_bytes += sum(len(d.message.payload) for d in flights.values())
        groups = tuple(
            SharedGroupStats(
                group.name, group.topic_filter,
                sum(1 for member in group.members.values()
                    if member.session.connection is not None),
                len(group.members), group.delivered, group.redelivered, group.dropped,
                len(group.backlog))
            for group in self.subscriptions.groups()
        )
        return BrokerStats(
            uptime=max(0.0, now - started_at),
            clients_connected=metrics.clients_connected,
            clients_disconnected=disconnected,
            clients_maximum=metrics.clients_maximum,
            clients_total=len(self.sessions),
            clients_expired=metrics.clients_expired,
            connections_total=metrics.clients_total_connections,
            sockets_total=metrics.sockets_opened,
            connection_errors=metrics.connection_errors,
            consumers_stalled=metrics.consumers_stalled,
            messages_received=metrics.messages_received,
            messages_sent=metrics.messages_sent,
            publish_received=metrics.publish_received,
            publish_sent=metrics.publish_sent,
            publish_dropped=metrics.publish_dropped,
            publish_bytes_received=metrics.publish_bytes_received,
            publish_bytes_sent=metrics.publish_bytes_sent,
            bytes_received=metrics.bytes_received,
            bytes_sent=metrics.bytes_sent,
            logins_failed=metrics.logins_failed,
            logins_delayed=metrics.logins_delayed,
            retained_count=retained.count,
            retained_bytes=retained.bytes,
            subscriptions=self.subscriptions.count,
            store_messages=retained.count + held,
            store_bytes=retained.bytes + held_bytes,
            shared_groups=groups,
        )


def _subscription_saved(subscription: Subscription) -> SubscriptionSaved:
    return SubscriptionSaved(
        subscription.client_id,
        SubscriptionRequest(subscription.topic_filter, subscription.qos, subscription.no_local,
                            subscription.retain_as_published, subscription.retain_handling),
        subscription.identifier)


def _group_of(session: Session, topic: str) -> SharedGroup[Subscription] | None:
    """The shared group a restored delivery on `topic` came from, as far as the session's
    subscriptions tell (the store does not say): one of its groups whose filter matches,
    unless one of its own subscriptions matches too."""
    if not session.shared_groups:
        return None
    for topic_filter in session.subscriptions:
        if not topic_filter.startswith("$share/") and matches(topic_filter, topic):
            return None
    for group in session.shared_groups:
        if matches(group.topic_filter, topic):
            return group
    return None


def _restored_message(record: StoredMessage, now: float, messages: dict[int, Message]
                      ) -> Message:
    message = messages.get(record.message_id)
    if message is None:
        expires_at = None if record.expires_in is None else now + record.expires_in
        message = messages[record.message_id] = Message(
            record.topic, record.payload, record.qos, record.retain, record.properties,
            expires_at)
        message.store_id = record.message_id
    return message

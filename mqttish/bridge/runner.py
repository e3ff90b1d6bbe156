"""A running bridge: two clients, one to the remote broker and one to this one.

Theory of operation. `Bridge.run` keeps two of our trio clients
(mqttish.client) for as long as the broker runs:

- the remote client connects to the remote broker (failover between its
  addresses, TLS, reconnect with backoff), subscribes to the `in` topics
  there, and announces itself as a bridge (try_private with MQTT 3.1.1; No
  Local with MQTT 5) so that what it publishes is not sent back to it;
- the local client connects to this broker in-process (link.py), only while
  the remote one is connected, with a persistent session subscribed to the
  `out` topics (No Local, so what the bridge brings in does not go back out).

A forwarder per direction takes each message from one client and publishes
it through the other, topic remapped, and acknowledges it to its source only
when the destination has acknowledged it: a QoS 1/2 message this broker
acknowledged to its publisher stays in the bridge's session (queued, or in
flight to the bridge) until the remote broker has it. While the remote is
away the local link is down, so the broker queues for the bridge's session
(bounded by max_queued_messages, journalled when persistence is on); when it
comes back, the broker sends the queue, and what was in flight is sent again.

The bridge's state is the retained `$SYS/broker/connection/<name>/state`
here (1 up, 0 down) and, with notifications, Mosquitto's notification topic
on the remote broker (its will says 0). Its figures go to /metrics and $SYS.
A failure of the bridge is logged and the bridge starts again; it never
reaches the server's nursery.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import trio

from mqttish.auth.gate import LoginGate
from mqttish.bridge.config import NEVER, BridgeConfig, BridgeTopic
from mqttish.bridge.link import LocalLink
from mqttish.bridge.remote import RemoteAddresses
from mqttish.client import (
    MQTT_3_1_1,
    MQTT_5,
    Backoff,
    Client,
    ClientOptions,
    ConnectionLostError,
    LocalProtocolError,
    Message,
    Messages,
    PublishError,
    Publishing,
    SubscriptionRequest,
    Will,
)
from mqttish.core.broker import Broker
from mqttish.core.hooks import INTERNAL_LISTENER, ClientInfo
from mqttish.core.message import Message as BrokerMessage
from mqttish.log_text import clip
from mqttish.protocol.properties import NO_PROPERTIES, Properties

log = logging.getLogger("mqttish.bridge")

UP, DOWN = b"1", b"0"


@dataclass(frozen=True, slots=True)
class BridgeFigures:
    """One bridge's figures at one moment, for /metrics, $SYS and the dashboard."""

    name: str
    connected: bool
    address: str  # host:port connected to ('-' when down)
    connects: int  # connections made to the remote broker since start
    sent: int  # messages forwarded to the remote broker (and acknowledged, at QoS 1/2)
    received: int  # messages brought in from the remote broker
    dropped: int  # messages not forwarded: refused or too large for the other side
    queued: int  # messages waiting here for the remote broker (queued and in flight)


class Bridge:
    def __init__(self, config: BridgeConfig, connect_timeout: float = 10.0) -> None:
        self.config = config
        self.remote = RemoteAddresses(config, connect_timeout)  # checks the TLS files now
        self.connected = False
        self.connects = self.sent = self.received = self.dropped = 0
        self._broker: Broker | None = None
        self._published: dict[str, bytes] = {}  # its $SYS figures, as last published
        base, cap = config.restart_timeout[0], config.restart_timeout[-1]
        self._backoff = Backoff(base, cap, jitter=0.5 if cap > base else 0.0)
        self._outgoing = [topic for topic in config.topics if topic.outgoing]
        self._incoming = [topic for topic in config.topics if topic.incoming]

    # ------------------------------------------------------------------ figures

    def figures(self) -> BridgeFigures:
        queued = 0
        broker = self._broker
        session = broker.sessions.get(self.config.local_client_id) if broker else None
        if session is not None:
            queued = len(session.queue) + len(session.outgoing.flights)
        return BridgeFigures(self.config.name, self.connected, self.remote.current_name
                             if self.connected else "-", self.connects, self.sent,
                             self.received, self.dropped, queued)

    def sys_topics(self) -> list[tuple[str, bytes]]:
        """Its figures under $SYS/broker/connection/<name>/ that changed since the last
        call, as the $SYS tree publishes them (the state is published as it changes)."""
        figures = self.figures()
        prefix = f"$SYS/broker/connection/{self.config.name}/"
        changed = []
        for name, value in (
                ("messages/sent", figures.sent), ("messages/received", figures.received),
                ("messages/dropped", figures.dropped), ("messages/queued", figures.queued),
                ("connects", figures.connects), ("address", figures.address)):
            payload = str(value).encode()
            if self._published.get(name) != payload:
                self._published[name] = payload
                changed.append((prefix + name, payload))
        return changed

    # ------------------------------------------------------------------ running

    async def run(self, broker: Broker, logins: LoginGate) -> None:
        """Run until cancelled. Failures are logged and the bridge starts again after the
        restart delay; a `start_type: once` bridge ends when its connection does."""
        self._broker = broker
        self._claim_session(broker)
        attempt = 0
        while True:
            self._set_state(False)
            try:
                await self._run(broker, logins)
            except Exception as exc:  # a fault domain: the bridge's, never the server's
                if self.config.start_type == "once":
                    log.warning("bridge %s stopped (start_type once): %s", self.config.name,
                                _first_cause(exc))
                    return
                log.exception("bridge %s failed; starting it again", self.config.name)
            finally:
                self._set_state(False)
            await trio.sleep(self._backoff.delay(attempt))
            attempt += 1

    async def _run(self, broker: Broker, logins: LoginGate) -> None:
        config = self.config
        async with trio.open_nursery() as nursery:
            link = LocalLink(config.name, broker, logins, nursery)
            local = self._local_client(link)
            subscribed = trio.Event()
            async with self._remote_client() as remote:
                nursery.start_soon(self._follow, remote, local, link, subscribed, nursery)
                if len(self.remote.addresses) > 1 and not config.round_robin:
                    nursery.start_soon(self._back_to_main, remote)
                async with local:
                    await self._subscribe(local, remote, broker)
                    subscribed.set()
                    nursery.start_soon(self._forward, local.messages(), remote, True)
                    nursery.start_soon(self._forward, remote.messages(), local, False)
                    await trio.sleep_forever()

    def _remote_client(self) -> Client:
        config = self.config
        version = MQTT_5 if config.protocol_version == "mqttv50" else MQTT_3_1_1
        properties = NO_PROPERTIES
        if version == MQTT_5:
            expiry = config.session_expiry
            if expiry is None:
                expiry = 0 if config.clean_session else NEVER
            properties = Properties(session_expiry_interval=expiry)
        will = None
        if config.notifications:
            will = Will(config.remote_state_topic, DOWN, 1, True)
        host, port = self.remote.addresses[0]
        options = ClientOptions(
            connector=self.remote.open, manual_ack=True, retry_refusals=True,
            backoff=self._backoff, receive_maximum=self._window(),
            max_inflight=self._window())
        return Client(host, port, client_id=config.remote_client_id, version=version,
                      clean_start=config.clean_session, keepalive=config.keepalive, will=will,
                      username=config.remote_username, password=config.remote_password,
                      properties=properties, reconnect=config.start_type == "automatic",
                      options=options, bridge=config.try_private and version == MQTT_3_1_1)

    def _local_client(self, link: LocalLink) -> Client:
        config = self.config
        options = ClientOptions(connector=link.connect, manual_ack=True,
                                backoff=Backoff(0.0, 0.0, jitter=0.0),
                                receive_maximum=self._window(), max_inflight=self._window())
        return Client(link.peer, 0, client_id=config.local_client_id, version=MQTT_5,
                      clean_start=config.local_clean, keepalive=0,
                      properties=Properties(session_expiry_interval=NEVER), reconnect=True,
                      options=options)

    def _window(self) -> int:
        """Messages in flight each way: this broker's max_inflight_messages."""
        return self._broker.config.max_inflight_messages if self._broker else 20

    def _claim_session(self, broker: Broker) -> None:
        """A session restored from the store is known only by its client id until its
        client connects: mark the bridge's as trusted, so that the ACL lets the broker
        queue for it while the remote is away."""
        client_id = self.config.local_client_id
        session = broker.sessions.get(client_id)
        if session is not None and session.client is None:
            session.client = ClientInfo(client_id, None, f"bridge:{self.config.name}", MQTT_5,
                                        INTERNAL_LISTENER)
            broker.hooks.rules_changed()

    async def _follow(self, remote: Client, local: Client, link: LocalLink,
                      subscribed: trio.Event, nursery: trio.Nursery) -> None:
        """Keep the state, the notification and the local link in step with the remote.
        The state says 1 once both sides are connected and subscribed: the bridge works."""
        config = self.config
        while True:
            await remote.wait_connected()
            self.connects += 1
            link.allow()
            await subscribed.wait()
            await local.wait_connected()
            self._set_state(True)
            log.info("bridge %s: connected to %s as %s", config.name, self.remote.current_name,
                     clip(config.remote_client_id))
            if config.notifications:
                nursery.start_soon(self._notify, remote)
            await remote.wait_disconnected()
            link.cut()
            self._set_state(False)
            log.warning("bridge %s: disconnected from %s; this broker queues for it meanwhile",
                        config.name, self.remote.current_name)

    async def _notify(self, remote: Client) -> None:
        """Tell the remote broker we are up (our will there says we are down)."""
        try:
            await remote.publish(self.config.remote_state_topic, UP, 1, True)
        except (PublishError, ConnectionLostError) as exc:
            log.info("bridge %s: no notification on the remote broker: %s", self.config.name,
                     exc)

    async def _back_to_main(self, remote: Client) -> None:
        """Connected to another address than the main one: go back once it answers."""
        while True:
            await remote.wait_connected()
            while remote.is_connected and self.remote.current not in (None, 0):
                await trio.sleep(self.config.restart_timeout[-1])
                if remote.is_connected and await self.remote.main_is_back():
                    log.info("bridge %s: the main address is back; reconnecting to it",
                             self.config.name)
                    await self.remote.drop_connection()
                    break
            await remote.wait_disconnected()

    async def _subscribe(self, local: Client, remote: Client, broker: Broker) -> None:
        """The out topics here, the in topics there; subscriptions of the bridge's session
        that the configuration no longer has are removed."""
        wanted: dict[str, SubscriptionRequest] = {}
        for topic in self._outgoing:
            request = SubscriptionRequest(topic.local_filter, topic.qos, no_local=True,
                                          retain_as_published=True)
            known = wanted.get(topic.local_filter)
            if known is None or known.qos < topic.qos:
                wanted[topic.local_filter] = request
        session = broker.sessions.get(self.config.local_client_id)
        stale = sorted(set(session.subscriptions) - set(wanted)) if session else []
        if stale:
            await local.unsubscribe(stale)
        if wanted:
            self._check(await local.subscribe(list(wanted.values())), "here")
        v5 = self.config.protocol_version == "mqttv50"
        incoming = {topic.remote_filter: SubscriptionRequest(
            topic.remote_filter, topic.qos, no_local=v5, retain_as_published=v5)
            for topic in self._incoming}
        if self.config.attempt_unsubscribe:
            out_only = sorted({topic.remote_filter for topic in self._outgoing} - set(incoming))
            if out_only:
                await remote.unsubscribe(out_only)
        if incoming:
            self._check(await remote.subscribe(list(incoming.values())), "on the remote broker")

    def _check(self, codes: tuple[int, ...], where: str) -> None:
        if any(code >= 0x80 for code in codes):
            log.error("bridge %s: subscriptions refused %s (SUBACK %s)", self.config.name,
                      where, list(codes))

    async def _forward(self, messages: Messages, target: Client, outgoing: bool) -> None:
        """Publish each message through `target`; acknowledge it once `target`'s broker has."""
        async with trio.open_nursery() as waiting:
            async for message in messages:
                topic = self._remap(message.topic, outgoing)
                if topic is None:  # left over from topics no longer configured
                    message.ack()
                    continue
                publishing = await self._publish(target, topic, message, outgoing)
                if publishing is None:
                    message.ack()
                elif message.qos:
                    waiting.start_soon(self._acknowledge, publishing, message, outgoing)
                else:
                    self._count(outgoing)

    async def _publish(self, target: Client, topic: str, message: Message,
                       outgoing: bool) -> Publishing | None:
        config = self.config
        retain = message.retain and (config.outgoing_retain or not outgoing)
        limit = config.max_packet_size if outgoing else 0
        if limit and len(message.payload) + len(topic) + 7 > limit:
            self._drop(topic, "larger than max_packet_size")
            return None
        try:
            return await target.start_publish(topic, message.payload, message.qos, retain,
                                              self._properties(message, target))
        except LocalProtocolError as exc:  # too large for the server, retain not available
            self._drop(topic, str(exc))
            return None

    def _properties(self, message: Message, target: Client) -> Properties:
        """MQTT 5 properties travel on, but for subscription identifiers (ours)."""
        if not message.properties or target.version != MQTT_5:
            return NO_PROPERTIES
        return replace(message.properties, subscription_identifiers=())

    async def _acknowledge(self, publishing: Publishing, message: Message,
                           outgoing: bool) -> None:
        try:
            await publishing.done()
        except PublishError as exc:
            self._drop(publishing.topic, str(exc))
        except ConnectionLostError:
            return  # the bridge is stopping: the source sends it again next time
        else:
            self._count(outgoing)
        message.ack()

    def _count(self, outgoing: bool) -> None:
        if outgoing:
            self.sent += 1
        else:
            self.received += 1

    def _drop(self, topic: str, why: str) -> None:
        self.dropped += 1
        log.warning("bridge %s: not forwarding %s: %s", self.config.name, clip(topic), why)

    def _remap(self, topic: str, outgoing: bool) -> str | None:
        lines: list[BridgeTopic] = self._outgoing if outgoing else self._incoming
        for line in lines:
            mapped = line.to_remote(topic) if outgoing else line.to_local(topic)
            if mapped is not None:
                return mapped
        return None

    def _set_state(self, up: bool) -> None:
        """The retained state topic here: 1 while connected, 0 otherwise."""
        self.connected = up
        broker = self._broker
        if broker is None:
            return
        now = trio.current_time()
        payload = UP if up else DOWN
        broker.publish(BrokerMessage(self.config.state_topic, payload, 1, True), now)
        topic = self.config.notification_topic
        if topic is not None and topic != self.config.state_topic:
            broker.publish(BrokerMessage(topic, payload, 1, True), now)


def _first_cause(exc: BaseException) -> BaseException:
    """The error inside nurseries' exception groups, for a one-line log."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc

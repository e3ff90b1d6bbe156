"""A trio MQTT client on mqttish's own codec, for tests, simulators and `mqttish pub/sub`.

Theory of operation: the protocol lives in the sans-IO `ClientProtocol`; this
module moves bytes and wakes the tasks that wait. `async with Client(...)`
opens one nursery whose `_run` task connects and then serves each connection
with three tasks: the reader (decodes, hands messages to consumers, completes
requests), the writer (sends whatever the protocol has queued with one
`send_all`) and the keepalive (PINGREQ after `keepalive` seconds without
sending; no PINGRESP in time means the connection is dead). When a connection
ends, `_run` reconnects with backoff or raises, which ends the `async with`.

Application tasks never touch the socket, so cancelling one can never cut a
packet in half: `publish()` queues bytes with the protocol and waits for the
writer (QoS 0) or for the acknowledgement (QoS 1/2), which may come on a later
connection.

The reader never waits for the application: control packets (acknowledgements
of our requests, PINGRESP, DISCONNECT) are always handled at once, so a task
can publish from inside its message loop. Incoming messages go to the queue of
every consumer (`subscription()` block) they match, or to the inbox
(`messages()`). Flow control comes from the server's window instead of from
TCP: a QoS 1/2 message is acknowledged only when every consumer it went to has
taken it (or, with `manual_ack`, called `message.ack()`), and the server sends
no more than its window of unacknowledged messages, so those queues are
bounded without a limit of their own. QoS 0 has no window: a consumer's queue
holds at most `message_buffer` of them and drops (and counts) the rest while it
is behind, which is what at most once allows.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from types import TracebackType
from typing import Any

import trio

from mqttish.client.errors import (
    ConnectError,
    ConnectionLostError,
    PublishError,
    SubscribeError,
    reason_name,
)
from mqttish.client.protocol import (
    ClientProtocol,
    Completed,
    Connected,
    Event,
    Incoming,
    Message,
    MessageReceived,
    PingResponse,
    ServerDisconnected,
    matching_filter,
)
from mqttish.errors import RemoteProtocolError
from mqttish.log_text import SENTENCE_LIMIT, clip
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Connect,
    PubAck,
    PubComp,
    PubRec,
    RetainHandling,
    SubAck,
    SubscriptionRequest,
    UnsubAck,
    Will,
)
from mqttish.protocol.properties import NO_PROPERTIES, Properties
from mqttish.protocol.reason_codes import ReasonCode
from mqttish.protocol.topics import matches

log = logging.getLogger("mqttish.client")

RECEIVE_SIZE = 65536
GOODBYE_TIMEOUT = 2.0  # seconds to get DISCONNECT (or a protocol error's reason) out


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnect attempts: exponential, capped, with jitter.

    The jitter takes up to `jitter` (a fraction) off each delay at random, so a
    fleet of clients that lost the same broker does not come back in lockstep.
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return base * (1 - self.jitter * random.random())


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Tuning beyond what CONNECT says; one instance can serve a whole fleet of clients."""

    connect_timeout: float = 10.0  # TCP connect plus CONNACK
    ping_timeout: float | None = None  # seconds to wait for PINGRESP; None: the keepalive
    max_inflight: int = 20  # QoS 1/2 publishes in flight; less if the server's window is smaller
    receive_maximum: int | None = None  # MQTT 5: our window for QoS 1/2 messages (65535)
    topic_alias_maximum: int = 0  # MQTT 5: topic aliases the server may use towards us
    message_buffer: int = 64  # QoS 0 messages a consumer may fall behind before drops
    backoff: Backoff = Backoff()
    tls: ssl.SSLContext | None = None  # connect over TLS, verified by this context
    # Opens the byte stream instead of TCP (and TLS) to host:port: for failover between
    # addresses, or an in-process link. It bounds its own time (connect_timeout then
    # covers CONNECT and CONNACK) and raises OSError when it cannot connect.
    connector: Callable[[], Awaitable[trio.abc.Stream]] | None = None
    manual_ack: bool = False  # messages from messages() are acknowledged by message.ack()
    retry_refusals: bool = False  # reconnecting: retry refusals that are not transient too

    def __post_init__(self) -> None:
        if not 0 < self.max_inflight <= 0xFFFF:
            raise ValueError("max_inflight must be between 1 and 65535")
        if self.message_buffer < 1:
            raise ValueError("message_buffer must be at least 1")


DEFAULT_OPTIONS = ClientOptions()


class ClientState(Enum):
    CONNECTING = 1  # the first connection is not up yet
    CONNECTED = 2
    RECONNECTING = 3  # a connection was lost; `reconnect=True` brings it back
    CLOSED = 4


class _Waiter:
    """A task waiting for the acknowledgement of one packet id."""

    __slots__ = ("ack", "done")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ack: PubAck | PubRec | PubComp | SubAck | UnsubAck | None = None


class _Delivery:
    """An incoming QoS 1/2 message and how many consumers still hold it."""

    __slots__ = ("client", "holders", "incoming")

    def __init__(self, client: Client, incoming: Incoming, holders: int) -> None:
        self.client = client
        self.incoming = incoming
        self.holders = holders

    def release(self) -> None:
        """One consumer is done with it; the last one acknowledges it to the server."""
        self.holders -= 1
        if not self.holders:
            self.client._acknowledge(self.incoming)


class _Claim:
    """A manual-ack consumer's hold on a message: `ack()` releases it once."""

    __slots__ = ("delivery",)

    def __init__(self, delivery: _Delivery) -> None:
        self.delivery: _Delivery | None = delivery

    def ack(self) -> None:
        delivery, self.delivery = self.delivery, None
        if delivery is not None:
            delivery.release()


class _Queue:
    """The messages waiting for one consumer: a `subscription()` block, or the inbox.

    QoS 1/2 messages are not limited here: the server's window limits them.
    At most `limit` QoS 0 messages wait; more are dropped until the consumer
    has caught up (emptied its queue), with one warning for the whole burst.
    """

    __slots__ = ("behind", "client", "closed", "dropped", "entries", "limit", "manual_ack",
                 "name", "qos0", "readers")

    def __init__(self, client: Client, name: str, limit: int, manual_ack: bool = False) -> None:
        self.client = client
        self.name = name
        self.limit = limit
        self.manual_ack = manual_ack
        self.entries: deque[tuple[Message, _Delivery | None]] = deque()
        self.qos0 = 0  # QoS 0 messages in `entries`
        self.dropped = 0  # QoS 0 messages dropped, in all
        self.behind = 0  # ...in the current burst
        self.closed = False
        self.readers = trio.lowlevel.ParkingLot()

    def put(self, message: Message, delivery: _Delivery | None) -> None:
        if delivery is None:
            if self.qos0 >= self.limit:
                self._drop()
                return
            self.qos0 += 1
        self.entries.append((message, delivery))
        self.readers.unpark_all()

    def _drop(self) -> None:
        if not self.behind:
            log.warning("client %s: %s is %d QoS 0 messages behind; dropping new ones until it "
                        "catches up", clip(self.client.client_id), self.name, self.limit)
        self.behind += 1
        self.dropped += 1
        self.client.dropped += 1

    def take(self) -> Message:
        """The next message, with its part of the acknowledgement done (or left to `ack()`)."""
        message, delivery = self.entries.popleft()
        if delivery is None:
            self.qos0 -= 1
        elif self.manual_ack:
            message = replace(message, _ack=_Claim(delivery).ack)
        else:
            delivery.release()
        if self.behind and not self.entries:
            log.info("client %s: %s caught up after %d QoS 0 messages were dropped",
                     clip(self.client.client_id), self.name, self.behind)
            self.behind = 0
        return message

    def move_to(self, other: _Queue, topic_filter: str) -> None:
        """Hand the messages that match `topic_filter` to another consumer, in order."""
        kept: deque[tuple[Message, _Delivery | None]] = deque()
        for message, delivery in self.entries:
            if matches(topic_filter, message.topic):
                if delivery is None:
                    self.qos0 -= 1
                    other.qos0 += 1
                other.entries.append((message, delivery))
            else:
                kept.append((message, delivery))
        self.entries = kept
        other.readers.unpark_all()

    def close(self) -> list[_Delivery]:
        """No more messages; return the deliveries of those the consumer never took."""
        self.closed = True
        self.readers.unpark_all()
        left = [delivery for _, delivery in self.entries if delivery is not None]
        self.entries.clear()
        self.qos0 = 0
        return left


class Messages(trio.abc.ReceiveChannel[Message]):
    """A consumer's messages: `async for message in messages`, or `await messages.receive()`.

    Returned by `Client.messages()` (the inbox) and `Client.subscription()`.
    `dropped` counts the QoS 0 messages dropped because this consumer was behind.
    """

    __slots__ = ("_closed", "_queue")

    def __init__(self, queue: _Queue) -> None:
        self._queue = queue
        self._closed = False

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def receive_nowait(self) -> Message:
        """The next message if one is waiting, else raise WouldBlock (or EndOfChannel)."""
        if self._closed:
            raise trio.ClosedResourceError("this handle on the messages is closed")
        queue = self._queue
        if queue.entries:
            return queue.take()
        if queue.closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> Message:
        """The next message; raises EndOfChannel once the block or the client has ended."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                message = self.receive_nowait()
            except trio.WouldBlock:
                await self._queue.readers.park()
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return message

    async def aclose(self) -> None:
        """Close this handle (harmless: the messages stay for other handles)."""
        self._closed = True
        self._queue.readers.unpark_all()
        await trio.lowlevel.checkpoint()


class Publishing:
    """A publish on its way (`Client.start_publish`): `await done()` for its end."""

    __slots__ = ("_client", "_ticket", "_waiter", "topic")

    def __init__(self, client: Client, topic: str, ticket: int, waiter: _Waiter | None) -> None:
        self._client = client
        self.topic = topic
        self._ticket = ticket  # QoS 0: the output ticket; QoS 1/2: the packet id
        self._waiter = waiter

    async def done(self) -> None:
        """Return once sent (QoS 0) or acknowledged (QoS 1 and 2). Raises PublishError
        if an MQTT 5 server refused it, ConnectionLostError if the client closed first."""
        client = self._client
        waiter = self._waiter
        if waiter is None:
            await client._flushed(self._ticket)
            return
        try:
            await waiter.done.wait()
        finally:
            if client._pending.get(self._ticket) is waiter:
                del client._pending[self._ticket]
        ack = waiter.ack
        if ack is None:
            raise client._closed_error()
        if isinstance(ack, PubAck | PubRec) and ack.reason_code >= 0x80:
            raise PublishError(self.topic, ack.reason_code, ack.properties.reason_string)


class _Consumer:
    """A `subscription()` block: messages matching its filter go to its queue."""

    __slots__ = ("match_filter", "queue", "topic_filter")

    def __init__(self, topic_filter: str, queue: _Queue) -> None:
        self.topic_filter = topic_filter
        self.match_filter = matching_filter(topic_filter)
        self.queue = queue


class Client:
    """An MQTT 3.1.1 / 5.0 client; use as `async with Client(host, port, ...) as client:`.

    Entering connects (raising ConnectError if refused, OSError if unreachable
    while `reconnect` is off); leaving normally sends DISCONNECT. Leaving with
    an exception closes the connection without DISCONNECT, so the broker
    publishes the will: the program did not end the way it meant to.
    """

    __slots__ = (
        "_closing", "_connections", "_consumers", "_failure", "_inbox", "_keepalive",
        "_last_sent", "_nursery", "_options", "_pending", "_pong", "_protocol", "_queued",
        "_reconnect", "_stack", "_state", "_state_changed", "_window", "_writer", "_written",
        "_written_lot", "dropped", "host", "port",
    )

    def __init__(
        self,
        host: str = "localhost",
        port: int = 1883,
        *,
        client_id: str = "",
        version: int = MQTT_3_1_1,
        clean_start: bool = True,
        keepalive: int = 60,
        will: Will | None = None,
        username: str | None = None,
        password: str | bytes | None = None,
        properties: Properties = NO_PROPERTIES,
        reconnect: bool = False,
        options: ClientOptions = DEFAULT_OPTIONS,
        bridge: bool = False,
    ) -> None:
        if version not in (MQTT_3_1_1, MQTT_5):
            raise ValueError(f"unsupported MQTT version {version}: use MQTT_3_1_1 or MQTT_5")
        if version == MQTT_5:
            if options.receive_maximum is not None:
                properties = replace(properties, receive_maximum=options.receive_maximum)
            if options.topic_alias_maximum:
                properties = replace(properties, topic_alias_maximum=options.topic_alias_maximum)
        elif properties or (will is not None and will.properties):
            raise ValueError("properties need MQTT 5 (version=MQTT_5)")
        if isinstance(password, str):
            password = password.encode()
        # `bridge`: we are a broker's bridge (Mosquitto's try_private): the server should
        # not send our own messages back, and keep retain flags (dropped if it refuses it).
        connect = Connect(client_id, version, clean_start, keepalive, will, username, password,
                          properties, bridge=bridge)
        self.host = host
        self.port = port
        self._options = options
        self._reconnect = reconnect
        self._protocol = ClientProtocol(connect, options.max_inflight)
        self._state = ClientState.CONNECTING
        self._closing = False  # set on leaving the `async with`: no reconnecting any more
        # Why a client without `reconnect` closed: every task that was waiting raises this
        # same error, so the `async with` reports it once, not in an ExceptionGroup.
        self._failure: ConnectionLostError | None = None
        self._state_changed = trio.lowlevel.ParkingLot()
        self._connections = 0
        self._keepalive = keepalive
        self._pending: dict[int, _Waiter] = {}
        self._window = trio.lowlevel.ParkingLot()  # publishers waiting for a free slot
        self._writer = trio.lowlevel.ParkingLot()  # the writer, waiting for output
        self._queued = 0  # tickets handed out for output...
        self._written = 0  # ...and the last one the writer has sent
        self._written_lot = trio.lowlevel.ParkingLot()
        self._last_sent = 0.0
        self._pong = trio.Event()
        self._consumers: list[_Consumer] = []
        self._inbox = _Queue(self, "the inbox", options.message_buffer, options.manual_ack)
        self.dropped = 0  # QoS 0 messages dropped because a consumer was behind
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"Client({self.client_id!r} to {self.host}:{self.port}, {self._state.name})"

    # ------------------------------------------------------------------ state

    @property
    def client_id(self) -> str:
        """Our client id: the one the server assigned, if we sent none."""
        return self._protocol.connect.client_id

    @property
    def version(self) -> int:
        """The MQTT version spoken: MQTT_3_1_1 or MQTT_5."""
        return self._protocol.version

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def is_connected(self) -> bool:
        return self._state is ClientState.CONNECTED

    @property
    def session_present(self) -> bool:
        """Whether the server resumed an existing session on the last connection."""
        return self._protocol.session_present

    @property
    def server_properties(self) -> Properties:
        """The last CONNACK's properties (MQTT 5): the server's limits."""
        return self._protocol.server

    async def wait_connected(self) -> None:
        """Return once connected; raise ConnectionLostError if the client is closed."""
        while self._state is not ClientState.CONNECTED:
            if self._state is ClientState.CLOSED:
                raise self._closed_error()
            await self._state_changed.park()

    async def wait_disconnected(self) -> None:
        """Return once the current connection (if any) has ended."""
        connection = self._connections
        while self._state is ClientState.CONNECTED and self._connections == connection:
            await self._state_changed.park()

    def _set_state(self, state: ClientState) -> None:
        self._state = state
        self._state_changed.unpark_all()
        self._window.unpark_all()
        if state is ClientState.CLOSED:
            for waiter in self._pending.values():
                waiter.done.set()  # without an ack: nothing will acknowledge it any more

    # ------------------------------------------------------------------ context manager

    async def __aenter__(self) -> Client:
        stack = AsyncExitStack()
        nursery = await stack.enter_async_context(trio.open_nursery())
        with _single_errors():
            try:
                await nursery.start(self._run)
            except BaseException as exc:
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        self._stack, self._nursery = stack, nursery
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        assert self._stack is not None and self._nursery is not None
        self._closing = True
        if exc is None:
            await self._goodbye()
        self._set_state(ClientState.CLOSED)
        self._nursery.cancel_scope.cancel()
        try:
            with _single_errors():
                return await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            self._inbox.close()  # ends `async for` loops over messages()

    async def _goodbye(self) -> None:
        """Send DISCONNECT, after the acknowledgements already queued."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + GOODBYE_TIMEOUT
            if self._state is ClientState.CONNECTED:
                self._protocol.disconnect()
                await self._flushed(self._queue())

    # ------------------------------------------------------------------ publishing

    async def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                      retain: bool = False, properties: Properties = NO_PROPERTIES) -> None:
        """Publish a message; return once it is sent (QoS 0) or acknowledged (QoS 1 and 2).

        QoS 1/2 waits for a free slot in the server's receive window, and keeps
        waiting across reconnects: the message is re-sent with DUP. Cancelling
        the call stops the wait, not the delivery.
        """
        await (await self.start_publish(topic, payload, qos, retain, properties)).done()

    async def start_publish(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                            retain: bool = False, properties: Properties = NO_PROPERTIES
                            ) -> Publishing:
        """Queue a message as soon as the server's window has room, and return without
        waiting for its acknowledgement: `await publishing.done()` does.

        For a pipeline that keeps the window full and its messages in order, such as
        a bridge: one task starts the publishes, others wait for them.
        """
        data = payload.encode() if isinstance(payload, str) else payload
        protocol = self._protocol
        if not qos:
            await self.wait_connected()
            protocol.publish(topic, data, 0, retain, properties)
            return Publishing(self, topic, self._queue(), None)
        while True:
            await self.wait_connected()
            if protocol.can_publish:
                break
            await self._window.park()
        packet_id = protocol.publish(topic, data, qos, retain, properties)
        assert packet_id is not None
        waiter = self._pending[packet_id] = _Waiter()
        self._queue()
        return Publishing(self, topic, packet_id, waiter)

    # ------------------------------------------------------------------ subscribing

    async def subscribe(
        self,
        topic_filter: str | SubscriptionRequest | Sequence[str | SubscriptionRequest],
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: RetainHandling = RetainHandling.SEND_ON_SUBSCRIBE,
        identifier: int | None = None,
        properties: Properties = NO_PROPERTIES,
    ) -> tuple[int, ...]:
        """Subscribe to one or more filters; return the SUBACK reason codes, one per filter.

        A code below 0x80 is the granted QoS; the options apply to plain string
        filters, a SubscriptionRequest carries its own. Granted subscriptions
        are restored after a reconnect that finds no session on the server.
        """
        items = [topic_filter] if isinstance(topic_filter, str | SubscriptionRequest) \
            else topic_filter
        requests = [
            item if isinstance(item, SubscriptionRequest)
            else SubscriptionRequest(item, qos, no_local, retain_as_published, retain_handling)
            for item in items
        ]
        await self.wait_connected()
        ack = await self._wait_for(self._protocol.subscribe(requests, identifier, properties))
        assert isinstance(ack, SubAck)
        return ack.reason_codes

    async def unsubscribe(self, topic_filter: str | Sequence[str],
                          properties: Properties = NO_PROPERTIES) -> tuple[int, ...]:
        """Unsubscribe; return the UNSUBACK reason codes (MQTT 5; empty for 3.1.1)."""
        filters = [topic_filter] if isinstance(topic_filter, str) else topic_filter
        await self.wait_connected()
        ack = await self._wait_for(self._protocol.unsubscribe(filters, properties))
        assert isinstance(ack, UnsubAck)
        return ack.reason_codes

    def messages(self) -> Messages:
        """Every incoming message that no `subscription()` block took, in arrival order.

        Messages wait here even before anyone iterates, so none is lost between
        `subscribe()` and the loop; a QoS 1/2 message is acknowledged when it is
        taken, or with `ClientOptions(manual_ack=True)` when `message.ack()` is
        called. Each call returns a new handle on the same queue; closing it is
        harmless.
        """
        return Messages(self._inbox)

    @asynccontextmanager
    async def subscription(
        self,
        topic_filter: str,
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: RetainHandling = RetainHandling.SEND_ON_SUBSCRIBE,
        identifier: int | None = None,
        manual_ack: bool = False,
        keep: bool = False,
    ) -> AsyncIterator[Messages]:
        """Subscribe for the duration of the block and receive just the matching messages.

        The messages are matched locally, so overlapping blocks each get a copy;
        matching messages already waiting in the inbox (a resumed session's)
        come first. Raises SubscribeError if the server refuses; unsubscribes on
        exit unless another block still uses the same filter, or `keep` is set.

        `keep` is for a persistent session whose subscription must outlive the
        program: a block that ends because the program stops leaves the
        subscription in the session, so the server queues what is published
        meanwhile, and the next run (clean start off) receives it. Do not end
        such a block while the client goes on: its messages would wait in the
        inbox.

        A QoS 1/2 message is acknowledged when the block takes it, or with
        `manual_ack` only when the application calls `message.ack()`: for
        at-least-once processing, a message is then sent again (DUP) if the
        program dies before it is done. Messages the block never took are
        acknowledged when it ends, except with `manual_ack`.
        """
        queue = _Queue(self, f"the consumer of {clip(topic_filter)}", self._options.message_buffer,
                       manual_ack)
        consumer = _Consumer(topic_filter, queue)
        self._consumers.append(consumer)  # before SUBSCRIBE: retained messages follow SUBACK
        self._inbox.move_to(queue, consumer.match_filter)
        subscribed = False
        try:
            [code] = await self.subscribe(
                topic_filter, qos, no_local=no_local, retain_as_published=retain_as_published,
                retain_handling=retain_handling, identifier=identifier)
            if code >= 0x80:
                raise SubscribeError(topic_filter, code)
            subscribed = True
            yield Messages(queue)
        finally:
            self._consumers.remove(consumer)
            left = queue.close()
            if not manual_ack:
                for delivery in left:
                    delivery.release()
            still_used = any(other.topic_filter == topic_filter for other in self._consumers)
            if subscribed and not (keep or still_used) and self._state is not ClientState.CLOSED:
                # No need to wait for UNSUBACK: the block's messages are already unrouted.
                self._protocol.unsubscribe((topic_filter,))
                self._queue()

    # ------------------------------------------------------------------ waiting

    def _queue(self) -> int:
        """Wake the writer for newly queued output; return a ticket for `_flushed`."""
        self._queued += 1
        self._writer.unpark()
        return self._queued

    async def _flushed(self, ticket: int) -> None:
        """Wait until the output queued before `ticket` was handed to the socket (or lost)."""
        while self._written < ticket:
            await self._written_lot.park()

    async def _wait_for(self, packet_id: int) -> PubAck | PubRec | PubComp | SubAck | UnsubAck:
        waiter = self._pending[packet_id] = _Waiter()
        self._queue()
        try:
            await waiter.done.wait()
        finally:
            if self._pending.get(packet_id) is waiter:
                del self._pending[packet_id]
        if waiter.ack is None:
            raise self._closed_error()
        return waiter.ack

    def _closed_error(self) -> ConnectionLostError:
        return self._failure or ConnectionLostError(
            f"the client to {self.host}:{self.port} is closed")

    # ------------------------------------------------------------------ connections

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                   ) -> None:
        """Connect, serve the connection, and reconnect until closed."""
        backoff = self._options.backoff
        attempt = 0
        where = f"{self.host}:{self.port}"
        while True:
            try:
                stream = await self._connect()
            except (OSError, ConnectionLostError, ConnectError, RemoteProtocolError) as exc:
                if isinstance(exc, ConnectError) and self._refuses_bridge_bit(exc):
                    continue
                if not self._reconnect or (isinstance(exc, ConnectError) and not exc.transient
                                           and not self._options.retry_refusals):
                    raise
                delay = backoff.delay(attempt)
                attempt += 1
                log.info("client %s: cannot connect to %s (%s); retrying in %.1f s",
                         clip(self.client_id), where, _describe(exc), delay)
                await trio.sleep(delay)
                continue
            log.log(logging.INFO if self._connections > 1 else logging.DEBUG,
                    "client %s: connected to %s (%s session)", clip(self.client_id), where,
                    "resumed" if self.session_present else "new")
            attempt = 0
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            reason = None
            try:
                reason = await self._serve(stream)
            finally:
                if reason is not None and not (self._reconnect or self._closing):
                    self._failure = ConnectionLostError(f"connection to {where} lost: {reason}")
                self._connection_ended()
                await trio.aclose_forcefully(stream)
            if self._failure is not None:
                raise self._failure
            if self._closing:
                return  # the server's answer to our DISCONNECT, not a loss
            delay = backoff.delay(attempt)
            attempt += 1
            log.info("client %s: connection to %s lost (%s); reconnecting in %.1f s",
                     clip(self.client_id), where, reason, delay)
            await trio.sleep(delay)

    def _refuses_bridge_bit(self, exc: ConnectError) -> bool:
        """A server that does not know the bridge bit refuses the protocol version: try
        again as an ordinary client, as Mosquitto's bridges do."""
        connect = self._protocol.connect
        if not connect.bridge or exc.reason_code != ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
            return False
        log.warning("client %s: %s:%d refuses bridges (try_private); connecting as an "
                    "ordinary client", clip(self.client_id), self.host, self.port)
        self._protocol.connect = replace(connect, bridge=False)
        return True

    async def _connect(self) -> trio.abc.Stream:
        """Open TCP (and TLS) and exchange CONNECT / CONNACK, within the connect timeout."""
        protocol = self._protocol
        stream: trio.abc.Stream | None = None
        timeout = self._options.connect_timeout
        tls = self._options.tls
        connector = self._options.connector
        try:
            if connector is not None:
                stream = await connector()
            with trio.fail_after(timeout):
                if stream is None and tls is None:
                    stream = await trio.open_tcp_stream(self.host, self.port)
                elif stream is None:
                    stream = await trio.open_ssl_over_tcp_stream(self.host, self.port,
                                                                 ssl_context=tls)
                protocol.start()
                await stream.send_all(protocol.data_to_send())
                self._last_sent = trio.current_time()
                while (event := protocol.next_event()) is None:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        raise ConnectionLostError("the server closed the connection before CONNACK")
                    protocol.receive_data(data)
        except BaseException as exc:
            protocol.connection_lost()
            if stream is not None:
                await trio.aclose_forcefully(stream)
            failure = _connect_failure(exc, timeout)
            if failure is exc:
                raise
            raise failure from None
        assert isinstance(event, Connected)
        self._connected(event.connack)
        return stream

    def _connected(self, connack: ConnAck) -> None:
        self._connections += 1
        server_keepalive = connack.properties.server_keep_alive
        self._keepalive = (self._protocol.connect.keepalive if server_keepalive is None
                           else server_keepalive)
        self._set_state(ClientState.CONNECTED)
        if self._protocol.has_output:  # re-sent publishes, restored subscriptions
            self._queue()

    def _connection_ended(self) -> None:
        self._protocol.connection_lost()
        reconnecting = self._reconnect and not self._closing
        self._set_state(ClientState.RECONNECTING if reconnecting else ClientState.CLOSED)
        self._written = self._queued  # QoS 0 output not yet sent is lost with the connection
        self._written_lot.unpark_all()

    async def _serve(self, stream: trio.abc.Stream) -> str:
        """Run one connection until it ends; return why it ended."""
        reasons: list[str] = []
        async with trio.open_nursery() as nursery:

            def lose(reason: str) -> None:
                reasons.append(reason)
                nursery.cancel_scope.cancel()

            nursery.start_soon(self._write_loop, stream, lose)
            nursery.start_soon(self._keepalive_loop, lose)
            lose(await self._read_loop(stream))
        return reasons[0]

    async def _read_loop(self, stream: trio.abc.Stream) -> str:
        protocol = self._protocol
        try:
            while True:
                while (event := protocol.next_event()) is not None:
                    reason = self._handle(event)
                    if reason is not None:
                        return reason
                if protocol.has_output:
                    self._queue()
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    return "the server closed the connection"
                protocol.receive_data(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            return _describe(exc)
        except RemoteProtocolError as exc:
            if protocol.version == MQTT_5:
                protocol.disconnect(exc.reason_code)
                with trio.move_on_after(GOODBYE_TIMEOUT):
                    await self._flushed(self._queue())
            return f"protocol error by the server: {exc}"

    def _handle(self, event: Event) -> str | None:
        """Act on one event; return a reason if it ends the connection."""
        match event:
            case MessageReceived():
                self._deliver(event)
            case Completed(packet_id=packet_id, ack=ack):
                if isinstance(ack, PubAck | PubRec | PubComp):
                    self._window.unpark()
                waiter = self._pending.pop(packet_id, None)
                if waiter is not None:
                    waiter.ack = ack
                    waiter.done.set()
            case PingResponse():
                self._pong.set()
            case ServerDisconnected(disconnect=packet):
                reason = f"the server disconnected: {reason_name(packet.reason_code)}"
                if packet.properties.reason_string:
                    reason += f": {clip(packet.properties.reason_string, SENTENCE_LIMIT)}"
                return reason
        return None

    def _deliver(self, event: MessageReceived) -> None:
        """Queue a message for every consumer it matches, or for the inbox."""
        message = event.message
        topic = message.topic
        queues = [consumer.queue for consumer in self._consumers
                  if matches(consumer.match_filter, topic)] or [self._inbox]
        incoming = event.incoming
        delivery = None if incoming is None else _Delivery(self, incoming, len(queues))
        for queue in queues:
            queue.put(message, delivery)

    def _acknowledge(self, incoming: Incoming) -> None:
        self._protocol.acknowledge(incoming)
        if self._protocol.has_output:
            self._queue()

    async def _write_loop(self, stream: trio.abc.Stream, lose: Callable[[str], None]) -> None:
        protocol = self._protocol
        try:
            while True:
                while not protocol.has_output:
                    await self._writer.park()
                ticket = self._queued
                await stream.send_all(protocol.data_to_send())
                self._last_sent = trio.current_time()
                self._written = ticket
                self._written_lot.unpark_all()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            lose(_describe(exc))

    async def _keepalive_loop(self, lose: Callable[[str], None]) -> None:
        """[MQTT-3.1.2-23] ping when idle; no PINGRESP in time means the connection is dead."""
        interval = self._keepalive
        if not interval:
            return
        timeout = self._options.ping_timeout or interval
        while True:
            await trio.sleep_until(self._last_sent + interval)
            if trio.current_time() < self._last_sent + interval:
                continue  # something was sent while we slept
            self._pong = pong = trio.Event()
            self._protocol.ping()
            self._queue()
            with trio.move_on_after(timeout):
                await pong.wait()
            if not pong.is_set():
                lose(f"no PINGRESP within {timeout:g} s")
                return


def _describe(exc: BaseException) -> str:
    """One line for a log or an error message; trio's Broken... errors hide the OSError."""
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _connect_failure(exc: BaseException, timeout: float) -> BaseException:
    """The error a failed connection attempt should raise, in the OSError family if possible."""
    if isinstance(exc, trio.TooSlowError):
        return TimeoutError(f"no connection and CONNACK within {timeout:g} s")
    if isinstance(exc, trio.BrokenResourceError):
        return ConnectionLostError(f"connection lost before CONNACK: {_describe(exc)}")
    cause = exc.__cause__
    if isinstance(exc, OSError) and isinstance(cause, BaseExceptionGroup):
        # trio tried every address; the last attempt's error says what went wrong.
        errors = [error for error in cause.exceptions if isinstance(error, OSError)]
        if errors:
            return errors[-1]
    return exc


@contextmanager
def _single_errors() -> Iterator[None]:
    """Let a lone error leave our internal nursery as itself, not in an ExceptionGroup."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        # The same error raised by several waiting tasks counts once.
        errors = list({id(leaf): leaf for leaf in leaves
                       if not isinstance(leaf, trio.Cancelled)}.values())
        single = errors if errors else leaves
        if len(single) != 1:
            raise
        raise single[0] from single[0].__cause__


def _leaves(group: BaseExceptionGroup[Any]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


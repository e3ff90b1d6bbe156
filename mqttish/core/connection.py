"""One client connection as a sans-IO state machine: bytes in, bytes out.

Theory of operation: the transport feeds whatever it reads to
`receive_data(data, now)`. The decoder turns it into packets, and each packet
goes to its `_handle_<packet>` method, which asks the broker to act
(connect, publish, subscribe, ...). Nothing here awaits: a PUBLISH is routed
to every subscriber's session queue before `receive_data` returns.

Replies (CONNACK, PUBACK, ...) are encoded into an output list at once;
deliveries wait in the session's queue until the transport's writer calls
`data_to_send(now)`, which turns as many as the client's receive window allows
into PUBLISH bytes. `on_output` is called (once until the next drain) whenever
there is something new to send.

The state machine is AWAITING_CONNECT -> CONNECTED -> CLOSED, and all of its
transitions happen in this module. CLOSED is final: the transport sends what
is left in the output and closes the stream.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from typing import Any, Protocol

from mqttish.core.broker import Accepted, Broker, HeldPublish
from mqttish.core.hooks import ClientInfo, Decision, PublishGrants
from mqttish.core.message import Message
from mqttish.core.rates import ClientRates
from mqttish.core.session import Delivery, Session
from mqttish.errors import MQTTError, RemoteProtocolError, protocol_error
from mqttish.log_text import clip
from mqttish.protocol.codec import NEED_DATA, PINGRESP, PacketDecoder, encode, encode_puback
from mqttish.protocol.flow import AliasesIn, AliasesOut, FlightState
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)
from mqttish.protocol.properties import NO_PROPERTIES, Properties
from mqttish.protocol.reason_codes import ALLOWED_REASON_CODES, ReasonCode

log = logging.getLogger("mqttish.connection")

DISCONNECT_REASON_CODES = ALLOWED_REASON_CODES["DISCONNECT"]
REPLY_BACKLOG = 1000  # replies (PUBACK, PINGRESP, ...) waiting to be sent, at most
DEFER_LIMIT = 65536  # bytes of packets a held publisher may have waiting behind its PUBLISH
# Packets (acknowledgements aside) a publisher catching up after a hold handles per call
# of receive_data: the rest waits a turn, so that what it read meanwhile (up to 64 KiB)
# does not keep others' input waiting, above all a subscriber's acknowledgements.
PACKETS_PER_TURN = 16


class ListenerCounters(Protocol):
    """Figures of the listener a connection came in on, which the connection keeps up."""

    clients: int  # MQTT clients connected now
    clients_total: int  # MQTT clients accepted (CONNACK 0) since start
    dropped: int  # deliveries dropped for its clients


class ConnectionState(Enum):
    AWAITING_CONNECT = 1
    CONNECTED = 2
    CLOSED = 3


_AWAITING_CONNECT = ConnectionState.AWAITING_CONNECT  # (module constants: enum lookups
_CONNECTED = ConnectionState.CONNECTED  # on the hot path cost)
_CLOSED = ConnectionState.CLOSED


def _no_output() -> None:
    pass


class Connection:
    """The protocol state of one network connection, from CONNECT to close."""

    __slots__ = (
        "_after_commit",
        "_backlogged",
        "_catching_up",
        "_deferred",
        "_deferred_bytes",
        "_held",
        "_hold_started",
        "_input_ended",
        "_out",
        "_publish_grants",
        "_resend_later",
        "_turn_over",
        "_unblocked",
        "_waiting_commit",
        "broker",
        "client",
        "close_reason",
        "config",
        "counters",
        "decoder",
        "graceful",
        "identity",
        "keepalive",
        "last_input",
        "listener",
        "max_send_packet_size",
        "metrics",
        "on_output",
        "on_resume",
        "opened_at",
        "outgoing_aliases",
        "peer",
        "pending_connect",
        "rates",
        "send_quota",
        "session",
        "state",
        "topic_aliases",
        "version",
        "wake_pending",
        "will",
    )

    def __init__(
        self,
        broker: Broker,
        peer: str,
        now: float,
        on_output: Callable[[], None] = _no_output,
        counters: ListenerCounters | None = None,
        on_resume: Callable[[], None] = _no_output,
        listener: int = 0,
        identity: str | None = None,
    ) -> None:
        self.broker = broker
        self.config = broker.config
        self.metrics = broker.metrics
        self.peer = peer
        self.opened_at = now
        self.last_input = now  # when bytes last came from the client (keepalive)
        self.on_output = on_output
        self.counters = counters
        # Security: the listener (index in config.listeners) whose settings apply, and
        # the user name a client certificate gives (mutual TLS), which replaces the
        # CONNECT's. A CONNECT waits in `pending_connect` while the transport has its
        # credentials checked off the event loop (`Hook.authenticate_blocking`).
        self.listener = listener
        self.identity = identity
        self.pending_connect: Connect | None = None
        config = self.config
        self.rates = (ClientRates(config.max_message_rate, config.max_byte_rate, now)
                      if config.max_message_rate or config.max_byte_rate else None)
        self.state = _AWAITING_CONNECT
        self.decoder = PacketDecoder(max_packet_size=self.config.max_packet_size)
        self.version = MQTT_3_1_1
        self.session: Session | None = None
        self.client: ClientInfo | None = None
        self.will: Will | None = None
        self.keepalive = 0
        self.graceful = False  # the client said DISCONNECT: no will
        self.close_reason = ""
        self.wake_pending = False
        # What the client told us about itself (MQTT 5; 3.1.1 clients have no limits).
        self.send_quota = self.config.max_inflight_messages
        self.max_send_packet_size: int | None = None
        # Topic aliases (MQTT 5), made on first use: the client's for its PUBLISHes,
        # and ours for PUBLISHes to it.
        self.topic_aliases: AliasesIn | None = None
        self.outgoing_aliases: AliasesOut | None = None
        self._out: list[bytes] = []
        self._publish_grants: PublishGrants | None = None  # made on the first check
        # Replies that promise durability wait for the store's commit (and the replies
        # after them wait too, to keep their order): (journal position or 0, bytes).
        self._after_commit: deque[tuple[int, bytes]] | None = None
        self._waiting_commit = False
        self._resend_later: deque[int] | None = None  # flights of a resumed session to resend
        # Input flow control: `on_resume` tells the transport to read (and to call
        # receive_data) again after `wants_input` was false.
        self.on_resume = on_resume
        self._backlogged = False  # too many replies unread: input stopped until they go
        self._turn_over = False  # PACKETS_PER_TURN handled: the rest after others' turn
        # Held since it last sent no more than a turn's worth: what it read meanwhile goes
        # in turns, so that its catching up does not keep others waiting.
        self._catching_up = False
        self._input_ended = False  # the client closed its side; what it sent is still handled
        # Backpressure: the PUBLISH whose fan-out waits for a full queue, and the packets
        # read behind it, which wait their turn (acknowledgements do not: see _skim).
        self._held: tuple[HeldPublish, Publish, int] | None = None  # (.., journal mark)
        self._unblocked = False  # the queue it waits for released it: resume on next input
        self._deferred: deque[Packet] | None = None
        self._deferred_bytes = 0
        # When its PUBLISHes started waiting: those deferred behind a held one have waited
        # since then too, and none waits longer than stall_timeout from it. A queue that
        # drains and releases it starts the clock again (see `unblocked`).
        self._hold_started: float | None = None

    def __repr__(self) -> str:
        who = self.client.client_id if self.client else "?"
        return f"Connection({who!r} from {self.peer}, {self.state.name})"

    @property
    def name(self) -> str:
        """How log lines name this connection."""
        if self.client is None:
            return self.peer
        return f"{clip(self.client.client_id)} ({self.peer})"

    @property
    def wants_input(self) -> bool:
        """Should the transport read more of the client's bytes now?

        Not while too many replies wait for the client to read them (a client that
        publishes but never reads costs bounded memory), nor while a PUBLISH is held
        (backpressure reaches the client through TCP) unless the broker waits for the
        client's acknowledgements, and then only until DEFER_LIMIT bytes of packets
        wait behind it, nor while its CONNECT's credentials are being checked, nor
        while what it read waits for its next turn (PACKETS_PER_TURN).
        `on_resume` is called when this turns true again (for a held publisher, also
        when output for it may make its acknowledgements due), and to ask for the
        next turn.
        """
        return not self._backlogged and not self._turn_over \
            and self.pending_connect is None and (
                self._held is None or (self._deferred_bytes < DEFER_LIMIT and self.answers_due))

    @property
    def answers_due(self) -> bool:
        """Does the broker wait for this client's acknowledgements (of deliveries in
        flight or about to be)? Only then is a held publisher read on (`_skim`): one
        that only publishes is left unread, so its PUBLISH packets are decoded and
        handled once, in order, when it goes on."""
        session = self.session
        return session is not None and bool(session.outgoing.flights or session.queue)

    @property
    def held(self) -> bool:
        """A PUBLISH of this client waits for room in a subscriber's queue."""
        return self._held is not None and not self._unblocked

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    def read_deadline(self, now: float) -> float:
        """When the transport should give up waiting for the client's next bytes."""
        if self.state is _CLOSED:
            return math.inf  # the transport bounds the time a closing connection lingers
        if self.state is _AWAITING_CONNECT:
            return self.opened_at + self.config.connect_timeout
        if self.held:  # we are the ones not reading: no keepalive, a stall check
            assert self._held is not None
            held = self._held[0]
            timeout = self.config.stall_timeout
            return min(held.blocker.stall_deadline(timeout), held.since + timeout)
        if self.keepalive:
            return self.last_input + self.keepalive * 1.5  # [MQTT-3.1.2-24]
        return math.inf

    # ------------------------------------------------------------------ transport side

    def receive_data(self, data: bytes | bytearray, now: float) -> None:
        """Process bytes read from the network (none: go on with what is buffered).

        Packets are handled in order until the input runs out, the connection
        closes, too many replies are unread, or a PUBLISH is held by a full queue;
        what is left stays buffered until `on_resume`.
        """
        if self.state is _CLOSED:
            return
        self._turn_over = False
        if data:
            self.last_input = now
            self.metrics.bytes_received += len(data)
        decoder = self.decoder
        decoder.feed(data)
        if self.rates is not None and (code := self.rates.received(len(data), now)):
            self._fail(RemoteProtocolError("sends more bytes per second than max_byte_rate",
                                           code), now)
            return
        if self.pending_connect is not None:
            return  # nothing more until the credentials are checked
        handlers = self._handlers
        handle_publish = self._handle_publish
        next_packet = decoder.next
        closed = _CLOSED
        count = turn = 0
        take_puback = decoder.take_puback
        session = self.session
        # Only a client with deliveries in flight sends PUBACKs worth the fast path.
        acks_due = session is not None and bool(session.outgoing.flights)
        try:
            if self._unblocked or self._deferred:
                self._go_on(now)
            if self._held is None and not self._backlogged:
                while True:
                    if acks_due and (packet_id := take_puback()):
                        count += 1
                        self._puback(packet_id, now)
                        continue
                    if (packet := next_packet()) is NEED_DATA:
                        if data and turn < PACKETS_PER_TURN:
                            self._catching_up = False  # it sends no more than it is served
                        break
                    count += 1
                    if type(packet) is Publish:
                        handle_publish(packet, now)
                    else:
                        handlers[type(packet)](self, packet, now)
                    if self.state is closed or self._held is not None \
                            or self.pending_connect is not None:
                        break
                    if len(self._out) + len(self._after_commit or ()) >= REPLY_BACKLOG:
                        self._backlogged = True
                        break
                    turn += 1
                    if turn >= PACKETS_PER_TURN and self._catching_up and decoder.buffered:
                        self._turn_over = True
                        self.on_resume()
                        break
            if self._held is not None and self.state is not closed and self.answers_due:
                self._skim(now)
            if self._input_ended:
                self._end_if_done(now)
        except MQTTError as exc:
            self._fail(exc, now)
        except Exception:
            self.internal_error(now)
        self.metrics.messages_received += count

    def data_to_send(self, now: float) -> bytes:
        """Everything ready to go to the client: replies, then queued deliveries."""
        self.wake_pending = False
        out = self._out
        if self._after_commit:
            self._release_committed(out)
        session = self.session
        if session is not None and (session.queue or self._resend_later) \
                and self.state is _CONNECTED:
            if self._resend_later:
                self._resend_in_window(session, out, now)
            if session.queue:
                self._encode_deliveries(session, out, now)
        if not out:
            return b""
        data = b"".join(out) if len(out) > 1 else out[0]
        out.clear()
        self.metrics.bytes_sent += len(data)
        if self._backlogged:
            self._backlogged = False
            self.on_resume()
        return data

    def notify(self) -> None:
        """Something is ready to send: wake the transport's writer once."""
        if not self.wake_pending:
            self.wake_pending = True
            self.on_output()
            if self._held is not None:  # its acknowledgements may be due: read it on
                self.on_resume()

    def read_deadline_expired(self, now: float) -> None:
        """The transport's `read_deadline` passed without the bytes it waited for.

        For a held publisher, that is the stall deadline of the queue it waits for:
        the broker checks it, and the transport asks for the next deadline. A
        deadline that has moved since the transport read it is no deadline.
        """
        if self.read_deadline(now) > now:
            return
        if self.state is _AWAITING_CONNECT:
            self.close(now, "no CONNECT within the connect timeout")
        elif self.held:
            assert self._held is not None
            held = self._held[0]
            self.broker.check_stall(held.blocker, now)  # it may release everyone
            if self.held and now >= held.since + self.config.stall_timeout:
                held.blocker.remove_waiter(self)  # it has waited long enough
                self._unblocked = True  # (the clock goes on for what waits behind it)
                self.on_resume()
        else:
            self.close(
                now,
                f"keepalive timeout ({self.keepalive} s x 1.5 of silence)",
                ReasonCode.KEEP_ALIVE_TIMEOUT,
            )

    def close(self, now: float, reason: str, code: ReasonCode | None = None) -> None:
        """End the connection: an MQTT 5 client is told why with a DISCONNECT (if `code`
        is given), the broker detaches the session and sends the will if the end was
        abnormal, and the transport is told to flush and close."""
        if self.state is _CLOSED:
            return
        if self._held is not None:
            self._release_held(now)
        if self.state is _CONNECTED:
            if code is not None and self.version == MQTT_5:
                self._out.append(encode(Disconnect(code), MQTT_5))
            if self.counters is not None:
                self.counters.clients -= 1
        self.state = _CLOSED
        self.close_reason = reason
        if self.session is not None and self.client is not None:
            self.broker.disconnected(self, self.session, self.client,
                                     None if self.graceful else self.will, reason, now)
        self.wake_pending = True
        self.on_output()  # always: the transport must learn of the close

    def input_ended(self, now: float) -> None:
        """The client closed its side of the connection. What it sent before is still
        handled, in order (a held PUBLISH, and what waits behind it, included); the
        connection closes once it is."""
        self._input_ended = True
        self._end_if_done(now)

    def _end_if_done(self, now: float) -> None:
        if (self._held is None and not self._deferred and not self._backlogged
                and self.state is not _CLOSED):
            self.close(now, "connection closed by peer")

    def connection_lost(self, now: float, reason: str = "connection closed by peer") -> None:
        """The transport is done with this connection (a no-op if it was closed already)."""
        self.close(now, reason)

    # ------------------------------------------------------------------ backpressure

    def unblocked(self, now: float) -> None:
        """The queue our held PUBLISH waits for has room (or stalled): go on at the next
        `receive_data`, which the transport makes when `on_resume` reaches it.

        The wait is over, so what was read behind it starts a new one: a publisher that
        floods on without pause would otherwise have waited "since" its first hold for
        ever, and gone past every full queue after stall_timeout.
        """
        if self._held is not None and self.state is not _CLOSED:
            self._unblocked = True
            self._hold_started = None
            self.on_resume()

    def _go_on(self, now: float) -> None:
        """Resume a released PUBLISH, then the packets deferred behind it, in order."""
        if self._unblocked:
            self._unblocked = False
            held = self._held
            if held is not None:
                self._held = None
                self._route(held[1], self.broker.resume_publish(held[0], now, self), held[2])
        deferred = self._deferred
        while deferred and self._held is None and self.state is not _CLOSED:
            packet = deferred.popleft()
            self._deferred_bytes -= _deferred_size(packet)
            self._handlers[type(packet)](self, packet, now)
        if self._held is None:
            if not deferred:
                self._hold_started = None
            if self._deferred_bytes < DEFER_LIMIT:
                self.on_resume()  # there may be room to read again

    def _skim(self, now: float) -> None:
        """While a PUBLISH is held, read on: acknowledgements and pings are handled at
        once (so no queue waits on this client while it waits on another), everything
        else waits behind the PUBLISH in order, up to DEFER_LIMIT bytes."""
        deferred = self._deferred
        for packet in self.decoder:
            self.metrics.messages_received += 1
            kind = type(packet)
            if kind in _SKIMMED:
                self._handlers[kind](self, packet, now)
                continue
            if deferred is None:
                deferred = self._deferred = deque()
            deferred.append(packet)
            self._deferred_bytes += _deferred_size(packet)
            if self._deferred_bytes >= DEFER_LIMIT:
                return

    def _release_held(self, now: float) -> None:
        """The connection ends while a PUBLISH is held: finish its fan-out without
        waiting (full queues drop it, counted), and forget what was read behind it.
        It was not acknowledged, so the client sends it again (QoS 2: only to be
        acknowledged, since its id is held)."""
        assert self._held is not None
        held = self._held[0]
        self._held = None
        held.blocker.remove_waiter(self)
        self.broker.resume_publish(held, now, None)
        self._deferred = None
        self._deferred_bytes = 0

    # ------------------------------------------------------------------ helpers

    def _send(self, packet: Packet) -> None:
        self._reply(encode(packet, self.version))

    def _reply(self, data: bytes) -> None:
        """Send a reply, after any that waits for a commit."""
        after = self._after_commit
        if after:
            after.append((0, data))
        else:
            self._out.append(data)
        self.metrics.messages_sent += 1
        self.notify()

    def _reply_when_committed(self, data: bytes, position: int) -> None:
        """Send a reply once the journal is committed up to `position`."""
        after = self._after_commit
        if after is None:
            after = self._after_commit = deque()
        after.append((position, data))
        self.metrics.messages_sent += 1
        self._wait_for_commit()

    def _wait_for_commit(self) -> None:
        journal = self.broker.journal
        if not self._waiting_commit and journal is not None:
            self._waiting_commit = True
            journal.wait(self)

    def committed(self) -> None:
        """The journal committed more: replies waiting for it may go."""
        self._waiting_commit = False
        self.notify()

    def _release_committed(self, out: list[bytes]) -> None:
        after = self._after_commit
        assert after is not None and self.broker.journal is not None
        committed = self.broker.journal.committed
        while after and after[0][0] <= committed:
            out.append(after.popleft()[1])
        if after:
            self._wait_for_commit()

    def _fail(self, exc: MQTTError, now: float) -> None:
        log.warning("closing %s: %s", self.name, exc)
        if self.state is _AWAITING_CONNECT:
            if exc.reason_code is ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
                # The client's version is unknown: answer as 3.1.1 does [MQTT-3.1.2-2].
                self._out.append(encode(ConnAck(False, exc.reason_code), MQTT_3_1_1))
            self.close(now, str(exc))
        elif exc.reason_code in DISCONNECT_REASON_CODES:
            self.close(now, str(exc), exc.reason_code)
        else:  # a CONNECT-only code (a second CONNECT of an unknown version, say)
            self.close(now, str(exc), ReasonCode.PROTOCOL_ERROR)  # [MQTT-3.14.2-1]

    def internal_error(self, now: float) -> None:
        """An unexpected exception (ours, not the client's) while serving this connection:
        log it with its traceback, count it, and end this connection only.

        Called from an `except` block. The connection's state may be half-updated, so
        closing it is itself guarded: whatever happens, it ends CLOSED.
        """
        log.exception("internal error while serving %s: closing its connection", self.name)
        self.metrics.connection_errors += 1
        try:
            self.close(now, "internal error", ReasonCode.UNSPECIFIED_ERROR)
        except Exception:
            log.exception("internal error while closing %s", self.name)
            self.state = _CLOSED
            self.on_output()

    def _require_session(self) -> Session:
        session = self.session
        if session is None:
            raise protocol_error("[MQTT-3.1.0-1] the first packet must be CONNECT")
        return session

    def _encode_deliveries(self, session: Session, out: list[bytes], now: float) -> None:
        """Move queued deliveries into `out`, within the client's receive window."""
        # The hot loop of every delivery: locals instead of attribute lookups.
        queue = session.queue
        inflight = session.outgoing.flights
        quota = self.send_quota
        version = self.version
        # 3.1.1 packets carry nothing per delivery; MQTT 5 ones may (ids, expiry, alias).
        shared_frames = version != MQTT_5 or self.outgoing_aliases is None
        max_size = self.max_send_packet_size
        counts_bytes = session.limits.max_queued_bytes
        journal = session.journal
        committed = journal.committed if journal is not None else 0
        sent = payload_bytes = 0
        while queue:
            delivery = queue[0]
            message = delivery.message
            expires_at = message.expires_at
            if expires_at is not None and expires_at <= now:
                session.discard(session.pop_queued())
                continue
            qos = delivery.qos
            if qos and len(inflight) >= quota:
                break
            if qos == 2 and delivery.durable_at > committed:
                # Exactly once across a crash: a QoS 2 message goes out only once the
                # broker's receipt of it is on disk, or the publisher would send it again
                # after a crash and this client get it twice. The commit wakes us.
                assert journal is not None
                self._wait_for_commit()
                break
            if counts_bytes:
                session.pop_queued()
            else:
                queue.popleft()
            if shared_frames and not delivery.dup and (version != MQTT_5 or not (
                    delivery.subscription_ids or expires_at is not None)):
                head, tail = message.frame(version, qos, delivery.retain)
                if max_size is not None and len(head) + len(tail) + 2 * (qos > 0) > max_size:
                    self._drop_oversize(message)
                    continue
                out.append(head)
                if qos:
                    out.append(session.start_flight(delivery).to_bytes(2, "big"))
                    out.append(tail)
            else:
                packet = self._publish_packet(delivery, now)
                if packet is None:
                    continue
                out.append(packet)
            sent += 1
            payload_bytes += len(message.payload)
        metrics = self.metrics
        metrics.publish_sent += sent
        metrics.messages_sent += sent
        metrics.publish_bytes_sent += payload_bytes
        if sent:  # progress (Session.progressed, inline: once per batch, on the hot path)
            session.last_progress = now
            session.stalled = False
        if session.waiters and session.drained:
            session.release_waiters(now)

    def _publish_packet(self, delivery: Delivery, now: float, dup: bool = False) -> bytes | None:
        """A PUBLISH encoded for this delivery alone: with DUP, or MQTT 5 properties
        of its own (subscription identifiers, remaining expiry, a topic alias)."""
        message = delivery.message
        properties = message.properties
        topic = message.topic
        new_alias = None
        if self.version == MQTT_5:
            changes: dict[str, Any] = {}
            if delivery.subscription_ids:
                changes["subscription_identifiers"] = delivery.subscription_ids
            if message.expires_at is not None:
                changes["message_expiry_interval"] = message.remaining_expiry(now)
            if self.outgoing_aliases is not None:
                alias, new = self.outgoing_aliases.choose(topic)
                if alias is not None and not new:
                    topic = ""  # the client knows the topic by its alias already
                elif new:
                    new_alias = alias
                changes["topic_alias"] = alias
            if changes:
                properties = replace(properties, **changes)
        session = self._require_session()
        packet_id = delivery.packet_id
        starts_flight = bool(delivery.qos and not packet_id)
        if starts_flight:
            packet_id = session.start_flight(delivery)
        packet = Publish(topic, message.payload, delivery.qos, delivery.retain,
                         dup or delivery.dup, packet_id or None, properties)
        data = encode(packet, self.version)
        if self.max_send_packet_size is not None and len(data) > self.max_send_packet_size:
            if starts_flight:
                for taken in session.outgoing.take([packet_id]):
                    session.discard(taken)
            self._drop_oversize(message)
            return None
        if new_alias is not None and self.outgoing_aliases is not None:
            self.outgoing_aliases.remember(message.topic, new_alias)
        return data

    def _drop_oversize(self, message: Message) -> None:
        """[MQTT-3.1.2-25] a message too large for the client is discarded for it."""
        self.dropped()
        log.info("dropping message on %s for %s: larger than its maximum packet size",
                 clip(message.topic), self.name)

    def dropped(self) -> None:
        """Count a delivery lost for this client (the caller has counted it for its session)."""
        self.metrics.publish_dropped += 1
        if self.counters is not None:
            self.counters.dropped += 1

    def resend_inflight(self, now: float) -> None:
        """After a session resumes: re-send unacknowledged PUBLISH (DUP) and PUBREL, in
        order, as many as the client's receive window takes now; the rest as it opens."""
        session = self._require_session()
        self._resend_later = deque(packet_id for packet_id, _, _ in session.outgoing.resend())
        self._resend_in_window(session, self._out, now)

    def _resend_in_window(self, session: Session, out: list[bytes], now: float) -> None:
        later = self._resend_later
        assert later is not None
        flights = session.outgoing.flights
        while later and len(flights) - len(later) < self.send_quota:
            packet_id = later.popleft()
            delivery = flights.get(packet_id)
            if delivery is None:
                continue  # taken back meanwhile
            if delivery.state is FlightState.AWAITING_PUBCOMP:
                out.append(encode(PubRel(packet_id), self.version))
                continue
            data = self._publish_packet(delivery, now, dup=True)
            if data is not None:
                out.append(data)
        if not later:
            self._resend_later = None

    # ------------------------------------------------------------------ handlers

    def _handle_connect(self, packet: Connect, now: float) -> None:
        if self.state is not _AWAITING_CONNECT:
            raise protocol_error("[MQTT-3.1.0-2] a second CONNECT is a protocol violation")
        self.version = packet.protocol_level
        props = packet.properties
        if props.receive_maximum is not None:
            self.send_quota = min(props.receive_maximum, self.config.max_inflight_messages)
        self.max_send_packet_size = props.maximum_packet_size
        if props.topic_alias_maximum:
            self.outgoing_aliases = AliasesOut(props.topic_alias_maximum)
        if self.identity is not None:
            packet = replace(packet, username=self.identity, password=None)
        if self.broker.hooks.blocking_authenticators or (
                self.broker.remote is not None and packet.client_id):
            # The transport checks the credentials off the loop, or claims the client id
            # in the cluster (its session may be on another node), then calls
            # credentials_checked().
            self.pending_connect = packet
            return
        self._connect(packet, now, Decision.DEFER)

    def credentials_checked(self, decision: Decision, now: float) -> None:
        """The transport's answer for `pending_connect`: finish the CONNECT, then go on
        with whatever the client sent after it."""
        packet, self.pending_connect = self.pending_connect, None
        if packet is None or self.state is _CLOSED:
            return
        try:
            self._connect(packet, now, decision)
        except MQTTError as exc:
            self._fail(exc, now)
            return
        self.receive_data(b"", now)

    def _connect(self, packet: Connect, now: float, decision: Decision) -> None:
        accepted = self.broker.connect(packet, self.peer, now, self, listener=self.listener,
                                       verdict=decision)
        if type(accepted) is ConnAck:  # refused
            self._send(accepted)
            self.close(now, f"connection refused: {ReasonCode(accepted.reason_code).name}")
            return
        assert type(accepted) is Accepted
        self.session = accepted.session
        self.client = accepted.client
        self.will = packet.will
        self.keepalive = accepted.keepalive
        self._send(accepted.connack)
        connack = accepted.connack
        self.state = _CONNECTED
        if self.counters is not None:
            self.counters.clients += 1
            self.counters.clients_total += 1
        if connack.session_present:
            self.resend_inflight(now)
        if self._require_session().queue:
            self.notify()

    def _handle_publish(self, packet: Publish, now: float) -> None:
        session = self.session
        client = self.client
        if session is None or client is None:
            raise protocol_error("[MQTT-3.1.0-1] the first packet must be CONNECT")
        config = self.config
        qos = packet.qos
        packet_id = packet.packet_id or 0
        topic = packet.topic
        props = packet.properties
        expires_at = None
        if self.version == MQTT_5:
            if qos > config.max_qos:
                raise RemoteProtocolError(
                    f"[MQTT-3.2.2-11] QoS {qos} exceeds the maximum QoS {config.max_qos}",
                    ReasonCode.QOS_NOT_SUPPORTED,
                )
            if packet.retain and not config.retain_available:
                raise RemoteProtocolError(
                    "[MQTT-3.2.2-14] retain is not available", ReasonCode.RETAIN_NOT_SUPPORTED
                )
            if props is not NO_PROPERTIES:
                if props.subscription_identifiers:
                    raise protocol_error(
                        "[MQTT-3.3.4-6] a client's PUBLISH must not carry a subscription "
                        "identifier")
                topic = self._resolve_alias(topic, props)
                if props.payload_format_indicator == 1 and not _is_utf8(packet.payload):
                    self._reject_publish(packet, ReasonCode.PAYLOAD_FORMAT_INVALID)
                    return
                if props.message_expiry_interval:
                    expires_at = now + props.message_expiry_interval
                props = _forwarded(props)
        if self.rates is not None and (code := self.rates.published(now)):
            raise RemoteProtocolError("publishes more messages per second than "
                                      "max_message_rate", code)
        size_limit = config.message_size_limit
        if size_limit and len(packet.payload) > size_limit:  # Mosquitto's message_size_limit
            log.info("dropped publish by %s: payload of %d bytes over message_size_limit",
                     self.name, len(packet.payload))
            self._reject_publish(packet, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR)
            return
        if len(topic) >= config.unchecked_topic_length and (
                len(topic) > config.max_topic_length
                or topic.count("/") >= config.max_topic_levels):
            log.info("refused publish by %s: topic longer or deeper than the limits", self.name)
            self._reject_publish(packet, ReasonCode.TOPIC_NAME_INVALID)
            return
        broker = self.broker
        if (broker.hooks.acl_hooks or topic[0] == "$") and not self._may_publish(client, topic):
            log.info("denied publish to %s by %s", clip(topic), self.name)
            self._reject_publish(packet, ReasonCode.NOT_AUTHORIZED)
            return
        if qos == 2:
            if packet_id in session.incoming_qos2:  # a copy: acknowledged, not routed again
                self._send(PubRec(packet_id))
                return
            pending = len(session.incoming_qos2)
            if self.version == MQTT_5 and pending >= config.max_inflight_messages:
                raise RemoteProtocolError(
                    "[MQTT-3.3.4-7] more QoS 2 messages in flight than the receive maximum",
                    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                )
        metrics = self.metrics
        metrics.publish_received += 1
        metrics.publish_bytes_received += len(packet.payload)
        message = Message(topic, packet.payload, qos, packet.retain, props, expires_at,
                          client.client_id)
        if packet.raw is not None:
            message.arrived_as(packet.raw)
        journal = broker.journal
        mark = journal.position if journal is not None else 0
        if qos == 2:  # before routing: a copy sent again is never routed twice
            session.hold_incoming(packet_id)
        routed = broker.publish(message, now, client, self, self._hold_started)
        if (qos == 1 and type(routed) is int and (routed or self.version != MQTT_5)
                and not self._after_commit and (journal is None or journal.position == mark)):
            # The common case, inline: a plain PUBACK that waits for nothing.
            self._out.append(encode_puback(packet_id))
            metrics.messages_sent += 1
            self.notify()
        else:
            self._route(packet, routed, mark)

    def _route(self, packet: Publish, routed: int | HeldPublish, mark: int) -> None:
        """Acknowledge a PUBLISH whose fan-out is done, or hold it. `mark` is where
        the journal was before its fan-out: an acknowledgement that made durable
        changes waits until they are committed."""
        if not isinstance(routed, int):
            self._held = (routed, packet, mark)
            self._catching_up = True
            if self._hold_started is None:
                self._hold_started = routed.since
            return
        qos = packet.qos
        if not qos:
            return
        packet_id = packet.packet_id or 0
        if qos == 2:
            ack = encode(PubRec(packet_id), self.version)
        elif routed or self.version != MQTT_5:
            ack = encode_puback(packet_id)
        else:
            ack = encode(PubAck(packet_id, ReasonCode.NO_MATCHING_SUBSCRIBERS), MQTT_5)
        journal = self.broker.journal
        if journal is not None and journal.position > mark:
            self._reply_when_committed(ack, journal.position)
        else:
            self._reply(ack)

    def _window_opened(self, session: Session, now: float) -> None:
        """An acknowledgement freed a place in the client's receive window."""
        session.last_progress = now  # (Session.progressed, inline: once per acknowledgement)
        session.stalled = False
        if session.shared_groups:
            self.broker.member_ready(session, now)
        if session.queue:
            self.notify()

    def _resolve_alias(self, topic: str, props: Properties) -> str:
        alias = props.topic_alias
        if alias is None:
            return topic
        aliases = self.topic_aliases
        if aliases is None:
            aliases = self.topic_aliases = AliasesIn(self.broker.topic_alias_maximum,
                                                     "MQTT-3.3.2-9")
        return aliases.resolve(topic, alias)

    def _may_publish(self, client: ClientInfo, topic: str) -> bool:
        """The broker's answer, remembered for this connection where hooks allow."""
        broker = self.broker
        hooks = broker.hooks
        if not hooks.stable_acl_answers:
            return broker.may_publish(client, topic)
        grants = self._publish_grants
        if grants is None or grants.generation != hooks.rules_generation:
            grants = self._publish_grants = PublishGrants(hooks.rules_generation)
        allowed = grants.answers.get(topic)
        if allowed is None:
            allowed = broker.may_publish(client, topic)
            grants.remember(topic, allowed)
        return allowed

    def _reject_publish(self, packet: Publish, code: ReasonCode) -> None:
        """Refuse one PUBLISH: MQTT 5 says why; 3.1.1 can only acknowledge and drop."""
        answer = code if self.version == MQTT_5 else ReasonCode.SUCCESS
        if packet.qos == 1:
            self._send(PubAck(packet.packet_id or 0, answer))
        elif packet.qos == 2:
            self._send(PubRec(packet.packet_id or 0, answer))

    def _handle_puback(self, packet: PubAck, now: float) -> None:
        self._puback(packet.packet_id, now)

    def _puback(self, packet_id: int, now: float) -> None:
        session = self._require_session()
        if session.acknowledged(packet_id) is None:
            log.debug("%s acknowledged unknown packet id %d", self.name, packet_id)
        else:
            self._window_opened(session, now)

    def _handle_pubrec(self, packet: PubRec, now: float) -> None:
        session = self._require_session()
        mark = self._journal_mark()
        refused, reply = session.pubrec(packet.packet_id, packet.reason_code)
        if reply is not None:  # once its PUBREC is durable: a crash then resends PUBREL, not
            self._reply_durably(reply, mark)  # the PUBLISH the client may have released
        if refused is not None:
            self._window_opened(session, now)

    def _handle_pubrel(self, packet: PubRel, now: float) -> None:
        mark = self._journal_mark()
        reply = self._require_session().release_incoming(packet.packet_id)
        # Once the release is durable: else, after a crash, the id would still be held,
        # and the client's next message under it taken for a copy and lost.
        self._reply_durably(reply, mark)

    def _journal_mark(self) -> int:
        journal = self.broker.journal
        return journal.position if journal is not None else 0

    def _reply_durably(self, packet: Packet, mark: int) -> None:
        """Reply once the changes made since `mark` are committed (at once if none)."""
        journal = self.broker.journal
        if journal is not None and journal.position > mark:
            self._reply_when_committed(encode(packet, self.version), journal.position)
        else:
            self._send(packet)

    def _handle_pubcomp(self, packet: PubComp, now: float) -> None:
        session = self._require_session()
        if session.completed(packet.packet_id) is not None:
            self._window_opened(session, now)

    def _handle_subscribe(self, packet: Subscribe, now: float) -> None:
        session = self._require_session()
        assert self.client is not None
        identifiers = packet.properties.subscription_identifiers
        identifier = identifiers[0] if identifiers else None
        codes = [
            self.broker.subscribe(self.client, session, request, identifier, now)
            for request in packet.subscriptions
        ]
        # The SUBACK goes out before the retained messages the subscriptions queued.
        self._send(SubAck(packet.packet_id, tuple(codes)))

    def _handle_unsubscribe(self, packet: Unsubscribe, now: float) -> None:
        session = self._require_session()
        codes = tuple(
            ReasonCode.SUCCESS if self.broker.unsubscribe(session, topic_filter, now)
            else ReasonCode.NO_SUBSCRIPTION_EXISTED
            for topic_filter in packet.topic_filters
        )
        self._send(UnsubAck(packet.packet_id, codes if self.version == MQTT_5 else ()))

    def _handle_pingreq(self, packet: PingReq, now: float) -> None:
        self._require_session()
        self._reply(PINGRESP)

    def _handle_disconnect(self, packet: Disconnect, now: float) -> None:
        session = self._require_session()
        expiry = packet.properties.session_expiry_interval
        if expiry is not None:
            if session.expiry_interval == 0 and expiry != 0:
                raise protocol_error(
                    "[MQTT-3.14.2-2] session expiry cannot be set at DISCONNECT after 0 at CONNECT"
                )
            session.expiry_interval = self.broker.capped_expiry(expiry)
        self.graceful = packet.reason_code != ReasonCode.DISCONNECT_WITH_WILL_MESSAGE
        reason = "client disconnected"
        if packet.reason_code:
            reason += f" ({ReasonCode(packet.reason_code).name})"
        self.close(now, reason)

    def _handle_auth(self, packet: Auth, now: float) -> None:
        raise protocol_error(
            "[MQTT-4.12.0-1] AUTH without an authentication method agreed at CONNECT"
        )

    def _handle_unexpected(self, packet: Packet, now: float) -> None:
        if self.state is _AWAITING_CONNECT:
            raise protocol_error("[MQTT-3.1.0-1] the first packet must be CONNECT")
        raise protocol_error(f"a client must not send {type(packet).__name__}")

    _handlers: dict[type, Callable[[Connection, Any, float], None]] = {
        Connect: _handle_connect,
        Publish: _handle_publish,
        PubAck: _handle_puback,
        PubRec: _handle_pubrec,
        PubRel: _handle_pubrel,
        PubComp: _handle_pubcomp,
        Subscribe: _handle_subscribe,
        Unsubscribe: _handle_unsubscribe,
        PingReq: _handle_pingreq,
        Disconnect: _handle_disconnect,
        Auth: _handle_auth,
        ConnAck: _handle_unexpected,
        SubAck: _handle_unexpected,
        UnsubAck: _handle_unexpected,
        PingResp: _handle_unexpected,
    }


# What a held publisher still handles at once: nothing else depends on their order.
_SKIMMED = frozenset({PubAck, PubRec, PubRel, PubComp, PingReq})


def _deferred_size(packet: Packet) -> int:
    """What a deferred packet counts against DEFER_LIMIT: about its size on the wire."""
    if type(packet) is Publish:
        return len(packet.payload) + len(packet.topic) + 16
    return 16


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True


def _forwarded(props: Properties) -> Properties:
    """The properties a subscriber receives: not the publisher's alias or expiry."""
    if props.topic_alias is None and props.message_expiry_interval is None:
        return props
    return replace(props, topic_alias=None, message_expiry_interval=None)


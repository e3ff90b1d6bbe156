"""Connection sequences in any order, against the sans-IO core (hypothesis stateful testing).

Three client slots share one Broker. Each rule is something a client can do
at any moment, allowed or not: CONNECT (again), SUBSCRIBE, PUBLISH at QoS 0-2,
acknowledge what the broker sent (or an id it never sent), PUBREL, PINGREQ,
DISCONNECT, garbage, a dropped socket, time passing. The invariants: nothing
but MQTTError escapes the core (internal errors included, see adapter.py),
everything the broker sends decodes, the bookkeeping stays bounded and
consistent, no client has more in flight than its receive maximum, and a
closed connection stays closed and silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mqttish.config import Config
from mqttish.errors import MQTTError
from mqttish.protocol.codec import PacketDecoder, encode
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    SubscriptionRequest,
    Unsubscribe,
    Will,
)
from mqttish.protocol.properties import NO_PROPERTIES, Properties
from tests.fuzz.adapter import (
    CoreClient,
    bookkeeping_problems,
    in_flight,
    internal_errors,
    new_broker,
    tick,
)

CONFIG = Config(listeners=(), max_inflight_messages=4, max_queued_messages=8,
                max_queued_bytes=400, queue_qos0_messages=True, persistent_client_expiration=60)
CLIENT_IDS = ("a", "b", "c")
TOPICS = ("t", "t/1", "$SYS/x", "u")
FILTERS = ("t", "t/#", "+/1", "#", "$share/g/t/#", "$share/g/#")

slots = st.integers(0, 2)
qos_levels = st.integers(0, 2)
packet_ids = st.integers(1, 6)


@dataclass
class Slot:
    """One client's open connection and what it owes the broker."""

    connection: CoreClient
    version: int
    client_id: str
    receive_maximum: int  # 0: none asked for (3.1.1)
    decoder: PacketDecoder
    resumed_flights: int = 0  # in flight when its session resumed, re-sent at once
    to_ack: list[Packet] = field(default_factory=list)


class BrokerSequences(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.errors = internal_errors()
        self.errors.__enter__()
        self.broker = new_broker(CONFIG)
        self.now = 0.0
        self.slots: dict[int, Slot] = {}
        self.closed: list[CoreClient] = []  # flushed after closing: must stay closed and silent
        self.next_id = 1

    def teardown(self) -> None:
        self.errors.__exit__(None, None, None)

    # ------------------------------------------------------------------ helpers

    def _send(self, index: int, *packets: Packet | bytes) -> None:
        slot = self.slots[index]
        data = b"".join(p if isinstance(p, bytes) else encode(p, slot.version) for p in packets)
        try:
            output = slot.connection.exchange(data, self.now)
        except MQTTError:
            output = b""
            slot.connection.lose(self.now)
        self._received(index, output)

    def _received(self, index: int, output: bytes) -> None:
        slot = self.slots[index]
        slot.decoder.version = slot.connection.version
        slot.decoder.feed(output)
        for packet in slot.decoder:  # raises if the broker sent something malformed
            if isinstance(packet, Publish) and packet.packet_id:
                slot.to_ack.append((PubAck if packet.qos == 1 else PubRec)(packet.packet_id))
            elif isinstance(packet, PubRel):
                slot.to_ack.append(PubComp(packet.packet_id))
        if slot.connection.closed:
            self.closed.append(slot.connection)
            del self.slots[index]
        for other in [i for i, s in self.slots.items() if s.connection.closed]:
            # Closed by what this client did (a takeover): it flushes its last bytes.
            self._received(other, self.slots[other].connection.drain(self.now))

    def _publish_id(self) -> int:
        self.next_id = self.next_id % 6 + 1
        return self.next_id

    # ------------------------------------------------------------------ rules

    @rule(index=slots, version=st.sampled_from((MQTT_3_1_1, MQTT_5)),
          client_id=st.sampled_from(CLIENT_IDS), clean=st.booleans(),
          receive_maximum=st.integers(1, 3), expiry=st.sampled_from((0, 5, 100)),
          will=st.booleans())
    def connect(self, index: int, version: int, client_id: str, clean: bool,
                receive_maximum: int, expiry: int, will: bool) -> None:
        """A new connection, or a second CONNECT on an open one."""
        props = (Properties(session_expiry_interval=expiry, receive_maximum=receive_maximum)
                 if version == MQTT_5 else NO_PROPERTIES)
        if index not in self.slots:
            self.slots[index] = Slot(CoreClient(self.broker, self.now), version, client_id,
                                     receive_maximum if version == MQTT_5 else 0,
                                     PacketDecoder(version))
        before = in_flight(self.broker).get(client_id, 0)
        self._send(index, Connect(client_id, version, clean, 10,
                                  Will("t", b"will", 1) if will else None, properties=props))
        if index in self.slots:
            self.slots[index].resumed_flights = before

    @precondition(lambda self: self.slots)
    @rule(data=st.data(), topic_filter=st.sampled_from(FILTERS), qos=qos_levels)
    def subscribe(self, data: st.DataObject, topic_filter: str, qos: int) -> None:
        index = data.draw(st.sampled_from(sorted(self.slots)))
        self._send(index, Subscribe(self._publish_id(), (SubscriptionRequest(topic_filter, qos),)))

    @precondition(lambda self: self.slots)
    @rule(data=st.data(), topic_filter=st.sampled_from(FILTERS))
    def unsubscribe(self, data: st.DataObject, topic_filter: str) -> None:
        index = data.draw(st.sampled_from(sorted(self.slots)))
        self._send(index, Unsubscribe(self._publish_id(), (topic_filter,)))

    @precondition(lambda self: self.slots)
    @rule(data=st.data(), topic=st.sampled_from(TOPICS), qos=qos_levels, retain=st.booleans(),
          packet_id=packet_ids)
    def publish(self, data: st.DataObject, topic: str, qos: int, retain: bool,
                packet_id: int) -> None:
        index = data.draw(st.sampled_from(sorted(self.slots)))
        self._send(index, Publish(topic, b"m" * 50, qos, retain, False,
                                  packet_id if qos else None))

    @precondition(lambda self: any(slot.to_ack for slot in self.slots.values()))
    @rule(data=st.data(), how_many=st.integers(1, 4))
    def acknowledge(self, data: st.DataObject, how_many: int) -> None:
        """Answer what the broker sent (PUBACK, PUBREC, PUBCOMP), oldest first."""
        index = data.draw(st.sampled_from([i for i, s in self.slots.items() if s.to_ack]))
        slot = self.slots[index]
        acks, slot.to_ack = slot.to_ack[:how_many], slot.to_ack[how_many:]
        self._send(index, *acks)

    @precondition(lambda self: self.slots)
    @rule(data=st.data(), kind=st.sampled_from((PubAck, PubRec, PubRel, PubComp)),
          packet_id=packet_ids)
    def stray_ack(self, data: st.DataObject, kind: type[PubAck], packet_id: int) -> None:
        """An acknowledgement or PUBREL for an id that may mean nothing to the broker."""
        index = data.draw(st.sampled_from(sorted(self.slots)))
        self._send(index, kind(packet_id))

    @precondition(lambda self: self.slots)
    @rule(data=st.data())
    def ping(self, data: st.DataObject) -> None:
        self._send(data.draw(st.sampled_from(sorted(self.slots))), PingReq())

    @precondition(lambda self: self.slots)
    @rule(data=st.data(), reason=st.sampled_from((0, 4)))
    def disconnect(self, data: st.DataObject, reason: int) -> None:
        index = data.draw(st.sampled_from(sorted(self.slots)))
        self._send(index, Disconnect(reason if self.slots[index].version == MQTT_5 else 0))

    @precondition(lambda self: self.slots)
    @rule(data=st.data(), garbage=st.binary(min_size=1, max_size=12))
    def garbage(self, data: st.DataObject, garbage: bytes) -> None:
        self._send(data.draw(st.sampled_from(sorted(self.slots))), garbage)

    @precondition(lambda self: self.slots)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        """The socket goes away without DISCONNECT."""
        index = data.draw(st.sampled_from(sorted(self.slots)))
        self.slots[index].connection.lose(self.now)
        self._received(index, b"")

    @precondition(lambda self: self.slots)
    @rule(data=st.data())
    def drain(self, data: st.DataObject) -> None:
        """The writer takes what other clients' publications queued for this one."""
        index = data.draw(st.sampled_from(sorted(self.slots)))
        self._received(index, self.slots[index].connection.drain(self.now))

    @rule(seconds=st.sampled_from((0.5, 6.0, 20.0, 200.0)))
    def time_passes(self, seconds: float) -> None:
        """Housekeeping runs, and silent connections reach their keepalive deadline."""
        self.now += seconds
        tick(self.broker, self.now)
        for index in list(self.slots):
            self.slots[index].connection.expire(self.now)
            self._received(index, self.slots[index].connection.drain(self.now))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def bookkeeping_is_consistent(self) -> None:
        assert bookkeeping_problems(self.broker) == []
        assert len(self.broker.sessions) <= len(CLIENT_IDS)

    @invariant()
    def within_receive_maximum(self) -> None:
        """No new flight beyond the client's receive maximum. (What was in flight when the
        session resumed is re-sent at once, even past a receive maximum lowered since.)"""
        flights = in_flight(self.broker)
        for slot in self.slots.values():
            if slot.receive_maximum and not slot.connection.closed:
                window = max(slot.receive_maximum, slot.resumed_flights)
                assert flights.get(slot.client_id, 0) <= window

    @invariant()
    def closed_stays_closed(self) -> None:
        for connection in self.closed:
            assert connection.closed
            assert connection.exchange(b"\xc0\x00", self.now) == b""


BrokerSequences.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestBrokerSequences = BrokerSequences.TestCase

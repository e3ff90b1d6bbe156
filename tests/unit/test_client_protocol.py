"""The sans-IO client protocol: packets in, events and packets out, across reconnects."""

from __future__ import annotations

import pytest

from mqttish.client.errors import ConnectError
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
)
from mqttish.errors import LocalProtocolError, RemoteProtocolError
from mqttish.protocol.codec import NEED_DATA, PacketDecoder, encode
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
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
    SubscriptionRequest,
    UnsubAck,
    Unsubscribe,
)
from mqttish.protocol.properties import Properties
from mqttish.protocol.reason_codes import ReasonCode


def connected(version: int = MQTT_5, connack: ConnAck | None = None, **connect: object
              ) -> ClientProtocol:
    protocol = ClientProtocol(Connect("c1", version, **connect))  # type: ignore[arg-type]
    protocol.start()
    protocol.data_to_send()
    feed(protocol, connack or ConnAck())
    assert isinstance(protocol.next_event(), Connected)
    return protocol


def feed(protocol: ClientProtocol, *packets: Packet) -> None:
    for packet in packets:
        protocol.receive_data(encode(packet, protocol.version))


def events(protocol: ClientProtocol) -> list[Event]:
    out = []
    while (event := protocol.next_event()) is not None:
        out.append(event)
    return out


def sent(protocol: ClientProtocol) -> list[Packet]:
    decoder = PacketDecoder(protocol.version)
    decoder.feed(protocol.data_to_send())
    packets = []
    while (packet := decoder.next()) is not NEED_DATA:
        packets.append(packet)
    return packets  # type: ignore[return-value]


# ------------------------------------------------------------------ connecting


def test_start_sends_connect_and_connack_connects() -> None:
    protocol = ClientProtocol(Connect("c1", MQTT_5, keepalive=5))
    protocol.start()
    [connect] = sent(protocol)
    assert isinstance(connect, Connect) and connect.client_id == "c1"
    feed(protocol, ConnAck(session_present=False))
    [event] = events(protocol)
    assert isinstance(event, Connected) and not protocol.session_present


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_refused_connack_raises_connect_error_with_reason(version: int) -> None:
    protocol = ClientProtocol(Connect("c1", version))
    protocol.start()
    feed(protocol, ConnAck(reason_code=ReasonCode.NOT_AUTHORIZED))
    with pytest.raises(ConnectError) as caught:
        protocol.next_event()
    assert caught.value.reason_code == ReasonCode.NOT_AUTHORIZED
    assert "NOT_AUTHORIZED" in str(caught.value)


def test_packet_before_connack_is_a_protocol_error() -> None:
    protocol = ClientProtocol(Connect("c1", MQTT_5))
    protocol.start()
    feed(protocol, PingResp())
    with pytest.raises(RemoteProtocolError, match=r"MQTT-3\.2\.0-1"):
        protocol.next_event()


def test_assigned_client_id_is_kept_for_reconnects() -> None:
    protocol = connected(connack=ConnAck(properties=Properties(
        assigned_client_identifier="mqttish-abc")))
    assert protocol.connect.client_id == "mqttish-abc"


@pytest.mark.parametrize(("version", "clean_start", "expiry", "resumes"), [
    (MQTT_3_1_1, True, None, False),
    (MQTT_3_1_1, False, None, True),
    (MQTT_5, True, None, False),
    (MQTT_5, True, 3600, True),
])
def test_reconnect_resumes_a_session_that_outlives_the_connection(
        version: int, clean_start: bool, expiry: int | None, resumes: bool) -> None:
    protocol = connected(version, clean_start=clean_start,
                         properties=Properties(session_expiry_interval=expiry))
    assert protocol.connect.clean_start is not resumes


# ------------------------------------------------------------------ incoming messages


def received(protocol: ClientProtocol) -> list[MessageReceived]:
    """The messages among the next events, which must all be messages."""
    out = events(protocol)
    assert all(isinstance(event, MessageReceived) for event in out)
    return out  # type: ignore[return-value]


def incoming(event: MessageReceived) -> Incoming:
    assert event.incoming is not None
    return event.incoming


def reconnect(protocol: ClientProtocol, session_present: bool = True) -> None:
    protocol.connection_lost()
    protocol.start()
    sent(protocol)
    feed(protocol, ConnAck(session_present=session_present))
    assert isinstance(protocol.next_event(), Connected)


def test_qos1_message_is_acknowledged_only_when_the_application_is_done() -> None:
    protocol = connected()
    feed(protocol, Publish("a/b", b"x", qos=1, packet_id=7))
    [event] = received(protocol)
    assert event.message == Message("a/b", b"x", 1)
    assert sent(protocol) == []  # the server's window stays occupied meanwhile
    protocol.acknowledge(incoming(event))
    assert sent(protocol) == [PubAck(7)]
    protocol.acknowledge(incoming(event))
    assert sent(protocol) == []  # once


def test_qos0_message_has_nothing_to_acknowledge() -> None:
    protocol = connected()
    feed(protocol, Publish("a/b", b"x"))
    assert events(protocol) == [MessageReceived(Message("a/b", b"x"), None)]
    assert sent(protocol) == []


def test_dup_flag_reaches_the_application() -> None:
    protocol = connected()
    feed(protocol, Publish("a", b"x", qos=1, dup=True, packet_id=1))
    [event] = received(protocol)
    assert event.message.dup


@pytest.mark.parametrize("qos", [1, 2])
def test_acknowledgements_go_out_in_the_order_the_messages_came(qos: int) -> None:
    protocol = connected()
    feed(protocol, *(Publish("a", str(n).encode(), qos=qos, packet_id=n) for n in (5, 3, 9)))
    first, second, third = received(protocol)
    ack = PubAck if qos == 1 else PubRec
    protocol.acknowledge(incoming(third))
    protocol.acknowledge(incoming(second))
    assert sent(protocol) == []  # [MQTT-4.6.0-2] [MQTT-4.6.0-3]: 5 first
    protocol.acknowledge(incoming(first))
    assert sent(protocol) == [ack(5), ack(3), ack(9)]


def test_qos2_message_is_delivered_exactly_once() -> None:
    protocol = connected()
    feed(protocol, Publish("a/b", b"x", qos=2, packet_id=9))
    [event] = received(protocol)
    feed(protocol, Publish("a/b", b"x", qos=2, dup=True, packet_id=9))
    assert events(protocol) == []  # a re-send before our PUBREC: not delivered again...
    assert sent(protocol) == []  # ...and not acknowledged before the application is done
    protocol.acknowledge(incoming(event))
    assert sent(protocol) == [PubRec(9)]
    feed(protocol, Publish("a/b", b"x", qos=2, dup=True, packet_id=9))
    assert events(protocol) == []  # a re-send after it: answered, not delivered again
    assert sent(protocol) == [PubRec(9)]
    feed(protocol, PubRel(9))
    assert events(protocol) == []
    assert sent(protocol) == [PubComp(9)]
    feed(protocol, Publish("a/b", b"new", qos=2, packet_id=9))  # the id is free again
    [event] = received(protocol)
    assert event.message.payload == b"new"


@pytest.mark.parametrize("qos", [1, 2])
def test_message_resent_on_a_resumed_session_is_not_delivered_twice(qos: int) -> None:
    protocol = connected(MQTT_3_1_1, clean_start=False)
    feed(protocol, Publish("a", b"held", qos=qos, packet_id=4),
         Publish("a", b"done", qos=qos, packet_id=5))
    held, done = received(protocol)
    protocol.connection_lost()
    protocol.acknowledge(incoming(done))  # while disconnected: kept for later
    protocol.start()
    sent(protocol)
    feed(protocol, ConnAck(session_present=True),
         Publish("a", b"held", qos=qos, dup=True, packet_id=4),
         Publish("a", b"done", qos=qos, dup=True, packet_id=5))
    assert isinstance(protocol.next_event(), Connected)
    assert events(protocol) == []  # the application has both already
    assert sent(protocol) == []  # 5 waits for 4, which the application still holds
    protocol.acknowledge(incoming(held))
    ack = PubAck if qos == 1 else PubRec
    assert sent(protocol) == [ack(4), ack(5)]


def test_messages_the_server_does_not_resend_neither_block_nor_get_acknowledged() -> None:
    # A broker may take back a shared subscription's messages from a member that went
    # away (mqttish does) and reuse their ids, even with DUP for another redelivery.
    protocol = connected(MQTT_3_1_1, clean_start=False)
    feed(protocol, Publish("orders/1", b"1", qos=1, packet_id=1),
         Publish("orders/2", b"2", qos=1, packet_id=2))
    first, second = received(protocol)
    reconnect(protocol)
    feed(protocol, Publish("orders/3", b"3", qos=1, packet_id=3),
         Publish("orders/9", b"9", qos=1, dup=True, packet_id=2))
    third, other = received(protocol)  # id 2 is another message now: delivered
    assert (other.message.payload, other.message.dup) == (b"9", True)
    protocol.acknowledge(incoming(third))
    assert sent(protocol) == [PubAck(3)]  # not held up by message 1, never re-sent
    protocol.acknowledge(incoming(second))
    protocol.acknowledge(incoming(first))
    assert sent(protocol) == []  # the server gave those up: nothing to acknowledge
    protocol.acknowledge(incoming(other))
    assert sent(protocol) == [PubAck(2)]


@pytest.mark.parametrize("session_present", [True, False])
def test_qos2_ids_awaiting_pubrel_are_forgotten_with_the_session(session_present: bool) -> None:
    protocol = connected(MQTT_3_1_1, clean_start=False)
    feed(protocol, Publish("a", b"x", qos=2, packet_id=4))
    [event] = received(protocol)
    protocol.acknowledge(incoming(event))
    protocol.connection_lost()
    protocol.start()
    feed(protocol, ConnAck(session_present=session_present),
         Publish("a", b"y", qos=2, dup=session_present, packet_id=4))
    assert isinstance(protocol.next_event(), Connected)
    delivered = events(protocol)
    # The same id is a re-send on a resumed session, a new message on a new one.
    assert len(delivered) == (0 if session_present else 1)


def test_unacknowledged_messages_are_forgotten_with_the_session() -> None:
    protocol = connected(MQTT_3_1_1, clean_start=False)
    feed(protocol, Publish("a", b"x", qos=1, packet_id=4))
    [old] = received(protocol)
    reconnect(protocol, session_present=False)
    feed(protocol, Publish("a", b"x", qos=1, packet_id=4))
    [new] = received(protocol)  # a new session's message, though it looks the same
    protocol.acknowledge(incoming(old))
    assert sent(protocol) == []
    protocol.acknowledge(incoming(new))
    assert sent(protocol) == [PubAck(4)]


def test_unknown_pubrel_is_answered_with_packet_identifier_not_found() -> None:
    protocol = connected()
    feed(protocol, PubRel(3))
    events(protocol)
    assert sent(protocol) == [PubComp(3, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)]


def test_topic_aliases_are_resolved_and_stripped() -> None:
    protocol = connected(properties=Properties(topic_alias_maximum=4))
    feed(protocol,
         Publish("long/topic", b"1", properties=Properties(topic_alias=2)),
         Publish("", b"2", properties=Properties(topic_alias=2, content_type="text/plain")))
    first, second = events(protocol)
    assert isinstance(first, MessageReceived) and isinstance(second, MessageReceived)
    assert first.message == Message("long/topic", b"1")
    assert second.message == Message("long/topic", b"2",
                                      properties=Properties(content_type="text/plain"))


def test_topic_alias_above_our_maximum_is_refused() -> None:
    protocol = connected(properties=Properties(topic_alias_maximum=4))
    feed(protocol, Publish("t", properties=Properties(topic_alias=5)))
    with pytest.raises(RemoteProtocolError) as caught:
        protocol.next_event()
    assert caught.value.reason_code is ReasonCode.TOPIC_ALIAS_INVALID


def test_topic_aliases_do_not_outlive_the_connection() -> None:
    protocol = connected(properties=Properties(topic_alias_maximum=4))
    feed(protocol, Publish("t", properties=Properties(topic_alias=1)))
    events(protocol)
    protocol.connection_lost()
    protocol.start()
    feed(protocol, ConnAck(), Publish("", properties=Properties(topic_alias=1)))
    assert isinstance(protocol.next_event(), Connected)
    with pytest.raises(RemoteProtocolError, match="never set"):
        protocol.next_event()


def test_ping_and_server_disconnect_are_events() -> None:
    protocol = connected()
    protocol.ping()
    assert sent(protocol) == [PingReq()]
    feed(protocol, PingResp(), Disconnect(ReasonCode.SERVER_SHUTTING_DOWN))
    assert events(protocol) == [PingResponse(),
                                ServerDisconnected(Disconnect(ReasonCode.SERVER_SHUTTING_DOWN))]


# ------------------------------------------------------------------ outgoing requests


def test_qos1_publish_completes_on_puback() -> None:
    protocol = connected()
    packet_id = protocol.publish("a", b"x", qos=1)
    assert sent(protocol) == [Publish("a", b"x", 1, packet_id=packet_id)]
    feed(protocol, PubAck(packet_id or 0))
    assert events(protocol) == [Completed(packet_id or 0, PubAck(packet_id or 0))]
    assert protocol.outgoing.flights == {}


def test_qos2_publish_answers_pubrec_and_completes_on_pubcomp() -> None:
    protocol = connected()
    packet_id = protocol.publish("a", b"x", qos=2)
    assert packet_id is not None
    sent(protocol)
    feed(protocol, PubRec(packet_id))
    assert events(protocol) == []
    assert sent(protocol) == [PubRel(packet_id)]
    feed(protocol, PubComp(packet_id))
    assert events(protocol) == [Completed(packet_id, PubComp(packet_id))]


def test_refusing_pubrec_completes_without_pubrel() -> None:
    protocol = connected()
    packet_id = protocol.publish("a", b"x", qos=2)
    assert packet_id is not None
    sent(protocol)
    refusal = PubRec(packet_id, ReasonCode.NOT_AUTHORIZED)
    feed(protocol, refusal)
    assert events(protocol) == [Completed(packet_id, refusal)]
    assert sent(protocol) == []


def test_receive_maximum_bounds_the_send_window() -> None:
    protocol = connected(connack=ConnAck(properties=Properties(receive_maximum=2)))
    protocol.publish("a", b"", qos=1)
    assert protocol.can_publish
    protocol.publish("a", b"", qos=2)
    assert not protocol.can_publish


def test_packet_ids_in_use_are_skipped() -> None:
    protocol = connected()
    first = protocol.publish("a", b"", qos=1)
    protocol.outgoing._next_id = first or 0  # wrap around onto the id still in flight
    second = protocol.publish("a", b"", qos=1)
    assert second != first


def test_subscribe_and_unsubscribe_complete_on_their_acks() -> None:
    protocol = connected()
    request = SubscriptionRequest("a/#", 1)
    packet_id = protocol.subscribe([request], identifier=3)
    [subscribe] = sent(protocol)
    assert subscribe == Subscribe(packet_id, (request,),
                                  Properties(subscription_identifiers=(3,)))
    feed(protocol, SubAck(packet_id, (1,)))
    assert events(protocol) == [Completed(packet_id, SubAck(packet_id, (1,)))]
    assert protocol.subscriptions == {"a/#": (request, 3)}
    packet_id = protocol.unsubscribe(["a/#"])
    assert sent(protocol) == [Unsubscribe(packet_id, ("a/#",))]
    assert protocol.subscriptions == {}
    feed(protocol, UnsubAck(packet_id, (0,)))
    assert events(protocol) == [Completed(packet_id, UnsubAck(packet_id, (0,)))]


@pytest.mark.parametrize(("call", "match"), [
    (lambda p: p.publish("a/#", b""), "MQTT-3.3.2-2"),
    (lambda p: p.publish("", b""), "MQTT-4.7.3-1"),
    (lambda p: p.subscribe([SubscriptionRequest("a/#/b")]), "MQTT-4.7.1-2"),
    (lambda p: p.subscribe([]), "MQTT-3.8.3-3"),
    (lambda p: p.unsubscribe(["a+"]), "MQTT-4.7.1-3"),
])
def test_misuse_is_a_local_protocol_error(call: object, match: str) -> None:
    protocol = connected()
    with pytest.raises(LocalProtocolError, match=match):
        call(protocol)  # type: ignore[operator]


def test_limits_announced_in_connack_are_enforced_locally() -> None:
    protocol = connected(connack=ConnAck(properties=Properties(
        maximum_qos=1, retain_available=0, maximum_packet_size=64)))
    with pytest.raises(LocalProtocolError) as caught:
        protocol.publish("a", b"", qos=2)
    assert caught.value.reason_code is ReasonCode.QOS_NOT_SUPPORTED
    with pytest.raises(LocalProtocolError, match="retain"):
        protocol.publish("a", b"", retain=True)
    with pytest.raises(LocalProtocolError, match="maximum packet size"):
        protocol.publish("a", b"x" * 100)


# ------------------------------------------------------------------ reconnecting


def test_reconnect_resends_unfinished_work_in_order() -> None:
    protocol = connected(MQTT_3_1_1, clean_start=False)
    qos1 = protocol.publish("a", b"1", qos=1)
    qos2 = protocol.publish("a", b"2", qos=2)
    assert qos1 is not None and qos2 is not None
    feed(protocol, PubRec(qos2))
    events(protocol)
    sub = protocol.subscribe([SubscriptionRequest("s", 1)])
    protocol.connection_lost()
    assert protocol.publish("a", b"offline") is None  # QoS 0 is not kept for later
    protocol.start()
    [connect] = sent(protocol)
    assert isinstance(connect, Connect) and not connect.clean_start
    feed(protocol, ConnAck(session_present=True))
    events(protocol)
    assert sent(protocol) == [
        Publish("a", b"1", 1, dup=True, packet_id=qos1),
        PubRel(qos2),
        Subscribe(sub, (SubscriptionRequest("s", 1),)),
    ]


@pytest.mark.parametrize("session_present", [False, True])
def test_subscriptions_are_restored_only_on_a_new_session(session_present: bool) -> None:
    protocol = connected(MQTT_5, properties=Properties(session_expiry_interval=60))
    plain, tagged = SubscriptionRequest("a", 1), SubscriptionRequest("b", 2)
    for request, identifier in ((plain, None), (tagged, 7)):
        packet_id = protocol.subscribe([request], identifier)
        feed(protocol, SubAck(packet_id, (request.qos,)))
    events(protocol)
    sent(protocol)
    protocol.connection_lost()
    protocol.start()
    sent(protocol)
    feed(protocol, ConnAck(session_present=session_present))
    events(protocol)
    restored = [(p.subscriptions, p.properties.subscription_identifiers)
                for p in sent(protocol) if isinstance(p, Subscribe)]
    assert restored == ([] if session_present else [((plain,), ()), ((tagged,), (7,))])

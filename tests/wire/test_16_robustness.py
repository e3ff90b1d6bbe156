"""No client, however broken or hostile, stops the broker (issue #10's findings, one test each).

Each test does what one hostile client did, then proves the broker still serves
everyone else: a fresh client connects and round-trips a message.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable

import pytest
from wsproto.events import CloseConnection

from mqttish.core.hooks import ClientInfo, Hook
from mqttish.protocol.codec import encode
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Disconnect,
    PubAck,
    Publish,
    Subscribe,
    SubscriptionRequest,
)
from mqttish.protocol.properties import Properties
from mqttish.protocol.reason_codes import ReasonCode
from tests.conftest import BrokerThread, websocket_listeners
from tests.wire.mqtt5 import v5
from tests.wire.paho_client import V311, PahoClient
from tests.wire.raw_client import RawClient
from tests.wire.test_14_websocket import WSClient, http, status, upgrade_request
from tests.wire.test_15_sys_metrics import scrape

TIMEOUT = 5.0


def assert_serving(port: int) -> None:
    """The broker is alive and routes messages (its thread would have died otherwise)."""
    client = PahoClient(port, "witness")
    client.subscribe("witness/t", 1)
    client.publish("witness/t", b"alive", qos=1)
    assert client.expect()[0].payload == b"alive"
    client.disconnect()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked WebSocket frame (RFC 6455 5.2), for payloads under 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked


def response_head(port: int, request: bytes) -> bytes:
    """The head of the answer to one HTTP request (the socket may stay open after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, f"closed before a whole response head: {head!r}"
            head += chunk
    return head.split(b"\r\n\r\n", 1)[0]


def test_v5_disconnect_with_undefined_reason_code(broker: BrokerThread) -> None:
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("bad-disconnect")
    raw.send(b"\xe0\x01\x05")
    answer = raw.receive()
    assert isinstance(answer, Disconnect)
    assert answer.reason_code == ReasonCode.PROTOCOL_ERROR
    assert raw.closed_by_broker()
    assert_serving(broker.port)


@pytest.mark.parametrize("offer", [
    "permessage-deflate; client_max_window_bits=x",
    "permessage-deflate; server_max_window_bits=",
    "permessage-deflate; server_max_window_bits=99",
])
def test_malformed_deflate_parameters_are_declined(ws_broker: BrokerThread, offer: str) -> None:
    answer = response_head(ws_broker.ports[1], upgrade_request(
        extra=f"Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Extensions: {offer}\r\n"))
    assert status(answer) == 101  # accepted, without the extension [RFC 7692 5.1]
    assert b"sec-websocket-extensions" not in answer.lower()
    assert_serving(ws_broker.port)


def test_unparsable_origin_is_refused(start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(listeners=websocket_listeners(
        allowed_origins=("https://dashboard.example.com",)))
    answer = http(broker.ports[1], upgrade_request(extra="Origin: http://[\r\n"))
    assert status(answer) == 403
    assert_serving(broker.port)


def test_ping_and_text_after_the_brokers_close(ws_broker: BrokerThread) -> None:
    client = WSClient(ws_broker.ports[1])
    client.accepted  # noqa: B018
    client.connect("ws-late-frames")
    client.send_message(encode(Disconnect(), MQTT_3_1_1))
    assert isinstance(client.receive_packet(), CloseConnection)  # the broker's Close
    # The broker is now LOCAL_CLOSING: no Pong may follow. (Our wsproto client would refuse
    # to send after a Close, so these frames are made by hand.)
    client.sock.sendall(client_frame(0x9, b"late") + client_frame(0x1, b"late")
                        + client_frame(0x8, b"\x03\xe8"))
    assert client.closed_by_server()
    assert_serving(ws_broker.port)


def test_close_while_the_broker_sends(ws_broker: BrokerThread) -> None:
    """A browser tab closing in the middle of traffic: Close arrives while the writer sends."""
    publisher = PahoClient(ws_broker.port, "flood")
    for attempt in range(5):
        client = WSClient(ws_broker.ports[1])
        client.connect(f"ws-closer-{attempt}")
        client.send_message(encode(Subscribe(1, (SubscriptionRequest("flood/t", 0),)),
                                   MQTT_3_1_1))
        client.receive_packet()  # SUBACK
        for _ in range(300):
            publisher.publish("flood/t", b"x" * 1000, wait=False)
        client.send(CloseConnection(1000))
        assert client.closed_by_server()
    publisher.disconnect()
    assert_serving(ws_broker.port)
    assert ws_broker.broker.metrics.connection_errors == 0


@pytest.mark.parametrize("version", [V311, 5], ids=["3.1.1", "5"])
def test_clients_cannot_publish_into_sys(broker: BrokerThread, version: int) -> None:
    watcher = PahoClient(broker.port, "watcher", protocol=version)
    watcher.subscribe("$SYS/#", 0)
    spoofer = PahoClient(broker.port, "spoofer", protocol=version)
    refused = ReasonCode.NOT_AUTHORIZED if version == 5 else ReasonCode.SUCCESS
    for topic in ("$SYS/broker/version", "$share/x"):
        reason = spoofer.publish(topic, b"evil 0.0", qos=1, retain=True)
        assert reason is not None and reason.value == refused
    # Bridges report their state here, as with Mosquitto.
    spoofer.publish("$SYS/broker/connection/x/state", b"1", qos=1)
    seen = [watcher.expect()[0]]
    while seen[-1].topic != "$SYS/broker/connection/x/state":
        seen.append(watcher.expect()[0])
    assert (b"evil 0.0") not in {message.payload for message in seen}
    retained = broker.call(lambda: list(broker.broker.retained.match("$SYS/#")))
    assert b"evil 0.0" not in {message.payload for message in retained}
    spoofer.disconnect()
    watcher.disconnect()


def test_will_into_sys_is_refused(broker: BrokerThread) -> None:
    client = PahoClient(broker.port, "will-spoofer", will=("$SYS/broker/uptime", b"0", 0, True))
    assert client.connect_reason is not None
    assert client.connect_reason.value == ReasonCode.NOT_AUTHORIZED
    client.kill()


def test_subscription_identifier_from_a_client_is_a_protocol_error(broker: BrokerThread) -> None:
    subscriber = v5(broker.port, "sub-id-victim")
    subscriber.subscribe("ids/t", 0)
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("sub-id-forger")
    raw.send(Publish("ids/t", b"forged", properties=Properties(subscription_identifiers=(7,))))
    answer = raw.receive()
    assert isinstance(answer, Disconnect) and answer.reason_code == ReasonCode.PROTOCOL_ERROR
    assert raw.closed_by_broker()
    subscriber.subscribe("ids/marker", 0)
    PahoClient(broker.port, "marker").publish("ids/marker", b"m", qos=1)
    assert subscriber.expect()[0].topic == "ids/marker"  # the forged one never arrived
    subscriber.disconnect()


def test_allow_anonymous_does_not_widen_the_bind(
        start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(allow_anonymous=True)
    assert broker.server is not None
    assert broker.server.listener_stats[0].host == "127.0.0.1"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        probe.connect(("127.0.0.1", broker.port))


class FaultyPlugin(Hook):
    """A hook with a bug: it raises for one topic filter."""

    def on_subscribe(self, client: ClientInfo, topic_filter: str, qos: int) -> None:
        if topic_filter == "boom":
            raise RuntimeError("plugin bug")


def test_an_internal_error_ends_that_connection_only(
        broker: BrokerThread, caplog: pytest.LogCaptureFixture) -> None:
    bystander = v5(broker.port, "bystander")
    bystander.subscribe("bystander/t", 1)
    broker.call(lambda: broker.broker.hooks.hooks.append(FaultyPlugin()))
    victim = v5(broker.port, "victim")
    with caplog.at_level(logging.ERROR, "mqttish"):
        victim.client.subscribe("boom", 0)
        assert victim.disconnected.wait(TIMEOUT)
    assert victim.disconnect_reason is not None
    assert victim.disconnect_reason.value == ReasonCode.UNSPECIFIED_ERROR
    assert "RuntimeError: plugin bug" in caplog.text  # with its traceback
    assert broker.broker.metrics.connection_errors == 1
    other = v5(broker.port, "other")
    other.publish("bystander/t", b"still here", qos=1)
    assert bystander.expect()[0].payload == b"still here"
    bystander.disconnect()
    other.disconnect()


def test_connection_errors_are_exported(start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(listeners=websocket_listeners())
    broker.call(lambda: setattr(broker.broker.metrics, "connection_errors", 3))
    assert scrape(broker.ports[1])[("mqttish_connection_errors_total", ())] == 3


def test_v5_puback_of_a_refused_sys_publish(broker: BrokerThread) -> None:
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("raw-spoofer")
    raw.send(Publish("$SYS/broker/clients/connected", b"0", qos=1, packet_id=9))
    assert raw.receive() == PubAck(9, ReasonCode.NOT_AUTHORIZED)
    raw.close()


def test_late_bytes_on_a_closed_websocket_are_harmless(ws_broker: BrokerThread) -> None:
    client = WSClient(ws_broker.ports[1])
    client.connect("ws-after-close")
    client.send(CloseConnection(1000))
    with contextlib.suppress(OSError):  # the broker may have closed already
        client.sock.sendall(client_frame(0x2, b"\x00" * 10))
    assert client.closed_by_server()
    assert_serving(ws_broker.port)

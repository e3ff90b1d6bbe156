"""MQTT over WebSocket: paho over ws <-> TCP, raw frames, the handshake, and HTTP on the port."""

from __future__ import annotations

import contextlib
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate

from mqttish.config import ListenerConfig
from mqttish.protocol.codec import NEED_DATA, PacketDecoder, encode
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Publish,
    SubAck,
    Subscribe,
    SubscriptionRequest,
)
from tests.conftest import BrokerThread, websocket_listeners
from tests.wire.paho_client import V5, V311, PahoClient

TIMEOUT = 5.0


class WSClient:
    """A blocking WebSocket client (wsproto) that speaks raw MQTT bytes, frame by frame."""

    def __init__(self, port: int, *, path: str = "/mqtt", subprotocols: Sequence[str] = ("mqtt",),
                 extensions: Sequence[Extension] = (),
                 headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()
        self.decoder = PacketDecoder(version=MQTT_3_1_1)
        self.sock.sendall(self.ws.send(Request(
            host=f"127.0.0.1:{port}", target=path, subprotocols=list(subprotocols),
            extensions=list(extensions), extra_headers=list(headers))))
        self.handshake = self.next_event()

    @property
    def accepted(self) -> AcceptConnection:
        assert isinstance(self.handshake, AcceptConnection), self.handshake
        return self.handshake

    def next_event(self) -> Event:
        while not self.events:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
        return self.events.popleft()

    def send(self, event: Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def send_message(self, data: bytes, finished: bool = True) -> None:
        self.send(BytesMessage(data, message_finished=finished))

    def receive_packet(self) -> Packet | CloseConnection:
        """The next MQTT packet, or the Close frame if the server closes first."""
        while (packet := self.decoder.next()) is NEED_DATA:
            event = self.next_event()
            if isinstance(event, CloseConnection):
                return event
            assert isinstance(event, BytesMessage), event
            self.decoder.feed(event.data)
        return packet  # type: ignore[return-value]

    def connect(self, client_id: str) -> None:
        self.send_message(encode(Connect(client_id), MQTT_3_1_1))
        assert isinstance(self.receive_packet(), ConnAck)

    def closed_by_server(self) -> bool:
        """True once the server has closed the TCP connection."""
        self.sock.settimeout(TIMEOUT)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def http(port: int, request: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send raw bytes and read the whole answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def get(port: int, path: str, headers: str = "") -> bytes:
    return http(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
                      "Connection: close\r\n\r\n".encode())


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def upgrade_request(path: str = "/mqtt", extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


# ---------------------------------------------------------------- real clients


@pytest.mark.parametrize("protocol", [V311, V5], ids=["3.1.1", "5"])
def test_paho_websocket_and_tcp_clients_exchange_messages(ws_broker: BrokerThread,
                                                          protocol: int) -> None:
    tcp_port, ws_port = ws_broker.ports
    browser = PahoClient(ws_port, "ws-sub", protocol=protocol, transport="websockets")
    device = PahoClient(tcp_port, "tcp-sub", protocol=protocol)
    try:
        browser.subscribe("from/tcp", qos=1)
        device.subscribe("from/ws", qos=1)
        device.publish("from/tcp", b"over tcp", qos=1)
        browser.publish("from/ws", b"over websocket", qos=1)
        assert browser.expect()[0].payload == b"over tcp"
        assert device.expect()[0].payload == b"over websocket"
        big = bytes(range(256)) * 300  # several frames' worth, in one PUBLISH
        device.publish("from/tcp", big, qos=1)
        assert browser.expect()[0].payload == big
    finally:
        browser.disconnect()
        device.disconnect()


def test_paho_websocket_qos2_and_retained(ws_broker: BrokerThread) -> None:
    ws_port = ws_broker.ports[1]
    publisher = PahoClient(ws_port, "ws-pub", transport="websockets")
    publisher.publish("state/lamp", b"on", qos=2, retain=True)
    publisher.disconnect()
    late = PahoClient(ws_port, "ws-late", protocol=V5, transport="websockets")
    try:
        late.subscribe("state/#", qos=2)
        message = late.expect()[0]
        assert (message.topic, message.payload, message.retain) == ("state/lamp", b"on", True)
    finally:
        late.disconnect()


# ---------------------------------------------------------------- frames


def test_packets_split_across_frames_and_several_in_one_frame(ws_broker: BrokerThread) -> None:
    client = WSClient(ws_broker.ports[1])
    try:
        connect = encode(Connect("framed"), MQTT_3_1_1)
        client.send_message(connect[:3])  # one packet in three messages...
        client.send_message(connect[3:7])
        client.send_message(connect[7:10], finished=False)  # ...the last one fragmented
        client.send_message(connect[10:])
        assert isinstance(client.receive_packet(), ConnAck)
        several = b"".join([
            encode(Subscribe(1, (SubscriptionRequest("loop/#", 0),)), MQTT_3_1_1),
            encode(Publish("loop/a", b"one"), MQTT_3_1_1),
            encode(Publish("loop/b", b"two"), MQTT_3_1_1),
            encode(PingReq(), MQTT_3_1_1),
        ])
        client.send_message(several[:-1])  # ...and the PINGREQ's last byte in the next frame
        client.send_message(several[-1:])
        received = [client.receive_packet() for _ in range(4)]
        assert isinstance(received[0], SubAck)
        assert [p.payload for p in received[1:3]] == [b"one", b"two"]  # type: ignore[union-attr]
        assert isinstance(received[3], PingResp)
    finally:
        client.close()


def test_websocket_ping_is_answered(ws_broker: BrokerThread) -> None:
    client = WSClient(ws_broker.ports[1])
    try:
        client.connect("pinger")
        client.send(Ping(b"are you there"))
        assert client.next_event() == Pong(b"are you there")
    finally:
        client.close()


def test_close_handshake_started_by_the_client(ws_broker: BrokerThread) -> None:
    client = WSClient(ws_broker.ports[1])
    try:
        client.connect("closer")
        client.send(CloseConnection(1000, "bye"))
        reply = client.next_event()
        assert isinstance(reply, CloseConnection)
        assert reply.code == 1000
        assert client.closed_by_server()
        ws_broker.disconnects.wait("closer")
    finally:
        client.close()


def test_close_handshake_started_by_the_broker(ws_broker: BrokerThread) -> None:
    client = WSClient(ws_broker.ports[1])
    try:
        client.connect("leaver")
        client.send_message(encode(Disconnect(), MQTT_3_1_1))
        close = client.next_event()  # the broker ends the WebSocket after DISCONNECT
        assert isinstance(close, CloseConnection)
        assert close.code == 1000
        client.send(close.response())
        assert client.closed_by_server()
    finally:
        client.close()


def test_text_frame_closes_the_connection(ws_broker: BrokerThread) -> None:
    client = WSClient(ws_broker.ports[1])
    try:
        client.connect("texter")
        client.send(TextMessage("not binary"))
        close = client.next_event()
        assert isinstance(close, CloseConnection)
        assert close.code == 1003  # [MQTT-6.0.0-1] unsupported data
        assert client.closed_by_server()
    finally:
        client.close()


def test_permessage_deflate_is_negotiated(ws_broker: BrokerThread) -> None:
    client = WSClient(ws_broker.ports[1], extensions=[PerMessageDeflate()])
    try:
        assert [e.name for e in client.accepted.extensions] == ["permessage-deflate"]
        client.connect("squeezed")
        client.send_message(encode(Subscribe(1, (SubscriptionRequest("z", 0),)), MQTT_3_1_1))
        assert isinstance(client.receive_packet(), SubAck)
        payload = b"compress me " * 5000
        client.send_message(encode(Publish("z", payload), MQTT_3_1_1))
        echoed = client.receive_packet()
        assert isinstance(echoed, Publish)
        assert echoed.payload == payload
    finally:
        client.close()


# ---------------------------------------------------------------- handshake


@pytest.mark.parametrize(("offered", "chosen"), [
    (["mqtt"], "mqtt"),
    (["mqttv3.1"], "mqttv3.1"),
    ([], None),
    (["chat", "mqtt"], "mqtt"),
])
def test_subprotocol_is_echoed(ws_broker: BrokerThread, offered: list[str],
                               chosen: str | None) -> None:
    client = WSClient(ws_broker.ports[1], subprotocols=offered)
    try:
        assert client.accepted.subprotocol == chosen
        client.connect(f"sub-{chosen}")
    finally:
        client.close()


def test_unknown_subprotocol_is_refused(ws_broker: BrokerThread) -> None:
    answer = http(ws_broker.ports[1],
                  upgrade_request(extra="Sec-WebSocket-Protocol: chat, superchat\r\n"))
    assert status(answer) == 400
    assert b"mqtt" in answer


def test_any_path_is_accepted_by_default(ws_broker: BrokerThread) -> None:
    client = WSClient(ws_broker.ports[1], path="/some/other/path?x=1")
    try:
        client.connect("anywhere")
    finally:
        client.close()


def test_path_can_be_restricted(start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(listeners=websocket_listeners(path="/mqtt"))
    port = broker.ports[1]
    refused = WSClient(port, path="/ws")
    assert isinstance(refused.handshake, RejectConnection)
    assert refused.handshake.status_code == 404
    refused.close()
    client = WSClient(port, path="/mqtt")
    try:
        client.connect("on-path")
    finally:
        client.close()


def test_origin_allow_list(start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(listeners=websocket_listeners(allowed_origins=("https://app.example",)))
    port = broker.ports[1]
    evil = WSClient(port, headers=[(b"Origin", b"https://evil.example")])
    assert isinstance(evil.handshake, RejectConnection)
    assert evil.handshake.status_code == 403
    evil.close()
    for headers in ([(b"Origin", b"https://app.example")],  # listed
                    [(b"Origin", f"http://127.0.0.1:{port}".encode())],  # the dashboard's own
                    []):  # not a browser
        client = WSClient(port, headers=headers)
        assert isinstance(client.handshake, AcceptConnection), headers
        client.close()


def test_bad_websocket_version_is_refused(ws_broker: BrokerThread) -> None:
    answer = http(ws_broker.ports[1], upgrade_request().replace(
        b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"))
    assert status(answer) == 426
    assert b"Sec-WebSocket-Version: 13" in answer


def test_mqtt_listener_does_not_speak_websocket(ws_broker: BrokerThread) -> None:
    with socket.create_connection(("127.0.0.1", ws_broker.ports[0]), timeout=TIMEOUT) as sock:
        sock.sendall(upgrade_request())
        sock.settimeout(TIMEOUT)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""  # an MQTT listener closes on non-MQTT bytes


# ---------------------------------------------------------------- plain HTTP


def test_healthz_and_unknown_paths(ws_broker: BrokerThread) -> None:
    port = ws_broker.ports[1]
    answer = get(port, "/healthz")
    assert status(answer) == 200
    assert answer.endswith(b"\r\n\r\nok\n")
    assert status(get(port, "/nope")) == 404
    assert status(get(port, "/vendor/../package.json")) == 404
    assert status(get(port, "/node_modules/mqtt/package.json")) == 404


def test_dashboard_files_are_served(ws_broker: BrokerThread) -> None:
    port = ws_broker.ports[1]
    page = get(port, "/")
    assert status(page) in (200, 503)  # 503: node_modules missing, said on the page
    assert b"text/html" in page
    script = get(port, "/dashboard.js")
    assert status(script) == 200
    assert b"text/javascript" in script
    config = get(port, "/dashboard/config.json")
    assert b'"websocket_path": "/mqtt"' in config


def test_head_and_other_methods(ws_broker: BrokerThread) -> None:
    port = ws_broker.ports[1]
    head = http(port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status(head) == 200
    assert head.endswith(b"\r\n\r\n")
    post = http(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert status(post) == 405


def test_keep_alive_serves_several_requests(ws_broker: BrokerThread) -> None:
    with socket.create_connection(("127.0.0.1", ws_broker.ports[1]), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2


def test_malformed_http_is_answered_400_and_closed(ws_broker: BrokerThread) -> None:
    answer = http(ws_broker.ports[1], b"THIS IS NOT HTTP\r\n\r\n")
    assert status(answer) == 400
    assert b"Connection: close" in answer


def test_oversized_handshake_is_cut_off(start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(listeners=websocket_listeners(max_handshake_size=1024))
    answer = http(broker.ports[1], b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000
                  + b"\r\n\r\n")
    assert status(answer) == 431


def test_slow_handshake_is_cut_off(start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(listeners=websocket_listeners(handshake_timeout=0.3))
    started = time.monotonic()
    answer = http(broker.ports[1], b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # never finished
    assert status(answer) == 408
    assert time.monotonic() - started < TIMEOUT


def test_idle_connection_is_closed_quietly(start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(listeners=websocket_listeners(handshake_timeout=0.3))
    assert http(broker.ports[1], b"") == b""


def test_max_connections_counts_websocket_sockets(
        start_broker: Callable[..., BrokerThread]) -> None:
    listeners = (ListenerConfig(port=0),
                 ListenerConfig(port=0, protocol="websocket", max_connections=1))
    broker = start_broker(listeners=listeners)
    first = WSClient(broker.ports[1])
    try:
        first.connect("only-one")
        second = socket.create_connection(("127.0.0.1", broker.ports[1]), timeout=TIMEOUT)
        try:
            second.sendall(upgrade_request())
            assert second.recv(100) == b""
        except ConnectionResetError:
            pass
        finally:
            second.close()
    finally:
        first.close()

"""Last will: sent on every abnormal end, never after DISCONNECT; QoS and retain honoured."""

import socket

from mqttish.protocol.packets import Will
from tests.conftest import BrokerThread
from tests.wire.paho_client import PahoClient
from tests.wire.raw_client import RawClient


def watcher(broker: BrokerThread) -> PahoClient:
    client = PahoClient(broker.port, "watcher")
    client.subscribe("wills/#", 2)
    return client


def test_will_on_socket_close(broker: BrokerThread) -> None:
    watch = watcher(broker)
    device = PahoClient(broker.port, "dev", will=("wills/dev", b"offline", 1, True))
    device.kill()
    [message] = watch.expect()
    assert (message.topic, message.payload, message.qos) == ("wills/dev", b"offline", 1)
    late = PahoClient(broker.port, "late")
    late.subscribe("wills/dev", 1)
    [retained] = late.expect()
    assert (retained.payload, retained.retain) == (b"offline", True)


def test_no_will_after_disconnect(broker: BrokerThread) -> None:
    watch = watcher(broker)
    polite = PahoClient(broker.port, "polite", will=("wills/polite", b"offline", 1, False))
    polite.disconnect()
    crashing = PahoClient(broker.port, "crash", will=("wills/crash", b"offline", 0, False))
    crashing.kill()
    assert [m.topic for m in watch.expect(1)] == ["wills/crash"]


def test_will_on_protocol_error(broker: BrokerThread) -> None:
    watch = watcher(broker)
    bad = RawClient(broker.port)
    bad.connect("bad", will=Will("wills/bad", b"violated", 2))
    bad.send(b"\x30\x05\x00\x03a/#")  # wildcard in a topic name
    assert bad.closed_by_broker()
    [message] = watch.expect()
    assert (message.payload, message.qos) == (b"violated", 2)


def test_will_on_keepalive_timeout(broker: BrokerThread) -> None:
    watch = watcher(broker)
    silent = RawClient(broker.port)
    silent.connect("silent", keepalive=1, will=Will("wills/silent", b"timeout"))
    assert silent.closed_by_broker(timeout=10)  # 1.5 s of silence
    assert watch.expect()[0].payload == b"timeout"


def test_will_on_takeover(broker: BrokerThread) -> None:
    watch = watcher(broker)
    PahoClient(broker.port, "twin", will=("wills/twin", b"replaced", 0, False))
    RawClient(broker.port).connect("twin")
    assert watch.expect()[0].payload == b"replaced"


def test_will_on_half_packet_then_reset(broker: BrokerThread) -> None:
    watch = watcher(broker)
    dying = RawClient(broker.port)
    dying.connect("dying", will=Will("wills/dying", b"mid-packet"))
    dying.send(b"\x30\x20\x00\x05hal")  # a PUBLISH cut short
    dying.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    dying.close()  # RST
    assert watch.expect()[0].payload == b"mid-packet"

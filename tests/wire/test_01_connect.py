"""CONNECT handling over real sockets: codes, client ids, protocol versions, takeover."""

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import BrokerThread
from tests.wire.paho_client import PahoClient
from tests.wire.raw_client import RawClient


def test_mqtt_3_1_1_and_3_1_clients_connect(broker: BrokerThread) -> None:
    modern = PahoClient(broker.port, "modern")
    legacy = PahoClient(broker.port, "legacy", protocol=mqtt.MQTTv31)
    assert modern.connect_reason == 0 and legacy.connect_reason == 0
    legacy.subscribe("t", 1)
    modern.publish("t", b"to 3.1", qos=1)
    assert legacy.expect()[0].payload == b"to 3.1"


def test_unsupported_protocol_level_gets_return_code_1(broker: BrokerThread) -> None:
    raw = RawClient(broker.port)
    raw.send(b"\x10\x0d\x00\x04MQTT\x07\x02\x00\x3c\x00\x01c")
    raw.sock.settimeout(5)
    assert raw.sock.recv(4) == b"\x20\x02\x00\x01"
    assert raw.closed_by_broker()


def test_empty_client_id_needs_clean_session(broker: BrokerThread) -> None:
    anonymous = PahoClient(broker.port, "", clean_session=True)
    assert anonymous.connect_reason == 0
    raw = RawClient(broker.port)
    assert raw.connect("", clean_start=False).reason_code == 0x85  # 3.1.1 return code 2
    assert raw.closed_by_broker()


def test_session_present_flag(broker: BrokerThread) -> None:
    first = PahoClient(broker.port, "dev", clean_session=False)
    assert first.connect_flags["session_present"] is False
    first.disconnect()
    second = PahoClient(broker.port, "dev", clean_session=False)
    assert second.connect_flags["session_present"] is True


def test_second_connection_with_same_id_takes_over(broker: BrokerThread) -> None:
    old = RawClient(broker.port)
    old.connect("same", clean_start=False)
    new = RawClient(broker.port)
    assert new.connect("same", clean_start=False).session_present
    assert old.closed_by_broker()
    new.send(b"\xc0\x00")
    assert new.receive() is not None  # the new connection is alive: PINGRESP


def test_first_packet_must_be_connect(broker: BrokerThread) -> None:
    raw = RawClient(broker.port)
    raw.send(b"\xc0\x00")
    assert raw.closed_by_broker()


def test_second_connect_is_a_protocol_violation(broker: BrokerThread) -> None:
    raw = RawClient(broker.port)
    raw.connect("twice")
    raw.send(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1")
    assert raw.closed_by_broker()


@pytest.mark.parametrize("keepalive", [0, 1, 65535])
def test_keepalive_values_accepted(broker: BrokerThread, keepalive: int) -> None:
    raw = RawClient(broker.port)
    assert raw.connect(f"k{keepalive}", keepalive=keepalive).reason_code == 0


def test_silent_socket_closed_after_connect_timeout(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(connect_timeout=0.5)
    raw = RawClient(broker.port)
    assert raw.receive(timeout=5) is None  # closed without any packet


def test_anonymous_refused_when_disallowed(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(allow_anonymous=False)
    raw = RawClient(broker.port)
    assert raw.connect("anon").reason_code == 0x87  # 3.1.1 return code 5, not authorised

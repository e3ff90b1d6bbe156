"""What clients send reaches the log bounded: no 65,000-byte client id or topic, whole.

And `connection_messages: false` keeps the two lines per connection out of a
large fleet's log, as Mosquitto's key of the same name does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from mqttish.protocol.packets import (
    MQTT_5,
    Publish,
    SubAck,
    Subscribe,
    SubscriptionRequest,
    Will,
)
from mqttish.protocol.wire import encode_string, encode_varint
from tests.conftest import BrokerThread
from tests.wire.raw_client import RawClient

LONG = 65_000


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_a_65000_byte_client_id_and_topic_never_reach_the_log_whole(
        start_broker: Callable[..., BrokerThread], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "mqttish")
    broker = start_broker()
    client_id, topic = "c" * LONG, "t" * LONG
    watcher = RawClient(broker.port, MQTT_5)
    watcher.connect("watcher")
    watcher.send(Subscribe(1, (SubscriptionRequest("#"),)))
    assert isinstance(watcher.receive(), SubAck)

    first = RawClient(broker.port, MQTT_5)
    first.connect(client_id, will=Will(topic, b"gone"))
    second = RawClient(broker.port, MQTT_5)  # takes the session over: the first's will goes
    second.connect(client_id, will=Will(topic, b"gone"))
    assert first.closed_by_broker()
    first.close()
    will = watcher.receive()
    assert isinstance(will, Publish) and will.topic == topic
    second.close()  # without DISCONNECT
    broker.disconnects.wait(client_id, count=2)
    will = watcher.receive()
    assert isinstance(will, Publish) and will.topic == topic
    # A protocol name as long as a client id can be.
    bogus = RawClient(broker.port)
    body = encode_string("M" * LONG) + b"\x04\x02\x00\x3c" + encode_string("c")
    bogus.send(b"\x10" + encode_varint(len(body)) + body)
    assert bogus.closed_by_broker()
    bogus.close()
    watcher.close()

    logged = messages(caplog)
    for line in logged:
        assert len(line) < 1000, line[:200]
    joined = "\n".join(logged)
    assert f"client '{'c' * 64}…' ({LONG} chars) connected from" in joined
    assert "taking over its session" in joined
    assert f"publishing will of '{'c' * 64}…' ({LONG} chars) to '{'t' * 64}…' ({LONG} chars)" \
        in joined
    assert f"unknown protocol name '{'M' * 64}…' ({LONG} chars)" in joined


def test_connection_messages_false_leaves_out_connects_and_disconnects(
        start_broker: Callable[..., BrokerThread], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mqttish")
    quiet = start_broker(connection_messages=False)
    chatty = start_broker()
    for broker, client_id in ((quiet, "quiet-sensor"), (chatty, "chatty-sensor")):
        client = RawClient(broker.port)
        client.connect(client_id)
        client.close()
        broker.disconnects.wait(client_id)
    joined = "\n".join(messages(caplog))
    assert "client 'chatty-sensor' connected from" in joined
    assert "client 'chatty-sensor' disconnected" in joined
    assert "quiet-sensor" not in joined

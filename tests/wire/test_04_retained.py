"""Retained messages: stored, replaced, deleted, sent on subscribe, forwarded live unflagged."""

from tests.conftest import BrokerThread
from tests.wire.paho_client import PahoClient


def test_retained_lifecycle(broker: BrokerThread) -> None:
    pub = PahoClient(broker.port, "pub")
    pub.publish("status/a", b"first", qos=1, retain=True)
    pub.publish("status/a", b"second", qos=1, retain=True)
    pub.publish("status/b", b"bee", qos=0, retain=True)
    pub.publish("status/c", b"cee", qos=1, retain=True)
    pub.publish("status/c", b"", qos=1, retain=True)  # deletes
    pub.publish("status/d", b"not retained", qos=1)

    exact = PahoClient(broker.port, "exact")
    exact.subscribe("status/a", 1)
    [message] = exact.expect()
    assert (message.payload, message.retain) == (b"second", True)

    wildcard = PahoClient(broker.port, "wildcard")
    wildcard.subscribe("status/+", 2)
    received = {m.topic: (m.payload, m.retain, m.qos) for m in wildcard.expect(2)}
    assert received == {"status/a": (b"second", True, 1), "status/b": (b"bee", True, 0)}

    pub.publish("status/a", b"live", qos=1, retain=True)
    for client in (exact, wildcard):
        [live] = client.expect()
        assert (live.payload, live.retain) == (b"live", False)


def test_retained_resent_when_subscription_repeated(broker: BrokerThread) -> None:
    pub = PahoClient(broker.port, "pub")
    pub.publish("r", b"kept", qos=1, retain=True)
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("r", 1)
    sub.subscribe("r", 1)
    assert [m.payload for m in sub.expect(2)] == [b"kept", b"kept"]

"""Wildcards and `$` topics."""

from tests.conftest import BrokerThread
from tests.wire.paho_client import PahoClient


def test_wildcard_subscriptions(broker: BrokerThread) -> None:
    plus = PahoClient(broker.port, "plus")
    plus.subscribe("sensors/+/temperature")
    hash_ = PahoClient(broker.port, "hash")
    hash_.subscribe("sensors/#")
    pub = PahoClient(broker.port, "pub")
    for topic in ["sensors/kitchen/temperature", "sensors/kitchen/humidity", "sensors",
                  "sensors/a/b/temperature", "other/x"]:
        pub.publish(topic, topic.encode())
    pub.publish("sensors/barrier/temperature", b"end")
    assert [m.topic for m in plus.expect(2)] == [
        "sensors/kitchen/temperature", "sensors/barrier/temperature"]
    assert [m.topic for m in hash_.expect(5)] == [
        "sensors/kitchen/temperature", "sensors/kitchen/humidity", "sensors",
        "sensors/a/b/temperature", "sensors/barrier/temperature"]


def test_dollar_topics_not_matched_by_leading_wildcards(broker: BrokerThread) -> None:
    everything = PahoClient(broker.port, "everything")
    everything.subscribe("#")
    everything.subscribe("+/status")
    # $SYS itself is busy with the broker's own topics: use another `$` topic.
    dollar = PahoClient(broker.port, "dollar")
    dollar.subscribe("$app/#")
    pub = PahoClient(broker.port, "pub")
    pub.publish("$app/status", b"hidden from #")
    pub.publish("app/status", b"visible")
    assert [m.topic for m in everything.expect(1)] == ["app/status"]
    assert [m.topic for m in dollar.expect(1)] == ["$app/status"]
    pub.publish("app/barrier", b"end")
    assert everything.expect(1)[0].topic == "app/barrier"


def test_unsubscribe_stops_delivery(broker: BrokerThread) -> None:
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("u/+")
    sub.subscribe("barrier")
    sub.unsubscribe("u/+")
    pub = PahoClient(broker.port, "pub")
    pub.publish("u/x", b"after")
    pub.publish("barrier", b"end")
    assert sub.expect(1)[0].payload == b"end"

from tests.conftest import BrokerThread
from tests.wire.paho_client import PahoClient


def test_paho_publish_reaches_subscriber(broker: BrokerThread) -> None:
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("sensors/#", 1)
    pub = PahoClient(broker.port, "pub")
    pub.publish("sensors/kitchen/temperature", b"21.5", qos=1)
    [message] = sub.expect()
    assert (message.topic, message.payload, message.qos) == (
        "sensors/kitchen/temperature", b"21.5", 1)
    pub.disconnect()
    sub.disconnect()

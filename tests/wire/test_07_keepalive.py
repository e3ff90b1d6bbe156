"""Keepalive: pings keep a quiet client connected; silence for 1.5x the interval ends it."""

from mqttish.protocol.packets import PingReq, PingResp
from tests.conftest import BrokerThread
from tests.wire.paho_client import PahoClient
from tests.wire.raw_client import RawClient


def test_pings_keep_an_idle_client_connected(broker: BrokerThread) -> None:
    client = PahoClient(broker.port, "pinger", keepalive=1)
    # The property under test is an absence: no disconnect during 3 keepalive periods.
    assert not client.disconnected.wait(3.0)
    client.subscribe("still/here", 0)


def test_pingreq_gets_pingresp(broker: BrokerThread) -> None:
    raw = RawClient(broker.port)
    raw.connect("raw", keepalive=5)
    raw.send(PingReq())
    assert raw.receive() == PingResp()


def test_silence_closes_after_one_and_a_half_intervals(broker: BrokerThread) -> None:
    import time

    raw = RawClient(broker.port)
    raw.connect("quiet", keepalive=1)
    started = time.monotonic()
    assert raw.receive(timeout=10) is None
    assert 1.4 <= time.monotonic() - started < 5

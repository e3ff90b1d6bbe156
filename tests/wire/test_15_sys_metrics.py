"""$SYS/broker/... topics and /metrics: values move as clients connect, publish and fall behind."""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mqttish.protocol.packets import Subscribe, SubscriptionRequest
from tests.conftest import BrokerThread, websocket_listeners
from tests.wire.paho_client import V5, PahoClient
from tests.wire.raw_client import RawClient

TIMEOUT = 5.0
SYS = "$SYS/broker/"


class SysWatcher:
    """A paho client subscribed to $SYS/broker/#, keeping the latest value of each topic."""

    def __init__(self, port: int) -> None:
        self.client = PahoClient(port, "sys-watcher")
        self.values: dict[str, str] = {}
        self.retained: dict[str, bool] = {}
        self.client.subscribe(SYS + "#")

    def wait(self, topic: str, predicate: Callable[[str], bool] = lambda _: True,
             timeout: float = TIMEOUT) -> str:
        """The first value of `$SYS/broker/<topic>` (seen so far or coming) that satisfies
        `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.values.get(topic)
            if value is not None and predicate(value):
                return value
            remaining = deadline - time.monotonic()
            try:
                message = self.client.messages.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                raise AssertionError(f"$SYS/broker/{topic}: last value {value!r}") from None
            name = message.topic.removeprefix(SYS)
            self.values[name] = message.payload.decode()
            self.retained[name] = message.retain

    def close(self) -> None:
        self.client.disconnect()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed by prometheus-client's parser: {(sample name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_sys_tree_is_published_retained_with_mosquitto_names(broker: BrokerThread) -> None:
    watcher = SysWatcher(broker.port)
    try:
        assert watcher.wait("version") == "mqttish version 0.1.0"
        assert watcher.wait("uptime").endswith(" seconds")
        for topic in ("clients/connected", "clients/disconnected", "clients/maximum",
                      "clients/total", "clients/expired", "messages/received", "messages/sent",
                      "publish/messages/received", "publish/messages/sent",
                      "publish/messages/dropped", "publish/bytes/received",
                      "publish/bytes/sent", "bytes/received", "bytes/sent",
                      "retained messages/count", "subscriptions/count",
                      "store/messages/count", "store/messages/bytes",
                      "load/messages/received/1min", "load/publish/sent/5min",
                      "load/bytes/received/15min", "load/connections/1min",
                      "load/sockets/1min"):
            value = watcher.wait(topic)
            assert float(value) >= 0, (topic, value)
        assert watcher.retained["version"]  # sent to a new subscriber as retained messages
    finally:
        watcher.close()


def test_sys_values_change_as_clients_connect_and_publish(broker: BrokerThread) -> None:
    watcher = SysWatcher(broker.port)
    clients = [PahoClient(broker.port, f"c{i}") for i in range(2)]
    try:
        watcher.wait("clients/connected", lambda v: v == "0")  # the first tree, at start
        for client in clients:
            client.subscribe("room/+", qos=1)
        for index in range(5):
            clients[0].publish(f"room/{index}", b"21.5", qos=1, retain=index == 0)
        for client in clients:
            client.expect(5)
        broker.advance(10)  # the next $SYS update
        assert watcher.wait("clients/connected", lambda v: v == "3")
        assert watcher.wait("clients/maximum", lambda v: v == "3")
        assert watcher.wait("publish/messages/received", lambda v: int(v) >= 5)
        assert watcher.wait("publish/messages/sent", lambda v: int(v) >= 10)
        assert watcher.wait("subscriptions/count", lambda v: v == "3")  # with the watcher's
        assert watcher.wait("retained messages/count", lambda v: int(v) >= 1)
        assert watcher.wait("load/publish/received/1min", lambda v: float(v) > 0)
        assert watcher.wait("uptime", lambda v: int(v.split()[0]) >= 10)
        clients[1].disconnect()
        broker.disconnects.wait("c1")
        broker.advance(10)
        assert watcher.wait("clients/connected", lambda v: v == "2")
        assert watcher.wait("clients/maximum", lambda v: v == "3")
    finally:
        clients[0].disconnect()
        watcher.close()


def test_sys_reports_shared_groups(broker: BrokerThread) -> None:
    watcher = SysWatcher(broker.port)
    workers = [PahoClient(broker.port, f"w{i}", protocol=V5) for i in range(2)]
    try:
        for worker in workers:
            worker.subscribe("$share/pool/jobs/+", qos=1)
        for index in range(4):
            workers[0].publish(f"jobs/{index}", b"work", qos=1)
        broker.advance(10)
        assert watcher.wait("shared/count", lambda v: v == "1")
        assert watcher.wait("shared/members", lambda v: v == "2")
        group = json.loads(watcher.wait(
            "shared/group/pool", lambda v: json.loads(v)["jobs/+"]["delivered"] == 4))
        assert group["jobs/+"]["members"] == 2
        for worker in workers:
            worker.unsubscribe("$share/pool/jobs/+")
        broker.advance(10)
        # The group is gone: its retained figures are cleared (an empty payload).
        assert watcher.wait("shared/group/pool", lambda v: v == "") == ""
    finally:
        for worker in workers:
            worker.disconnect()
        watcher.close()


def test_a_killed_worker_is_a_session_not_a_member(start_broker: Callable[..., BrokerThread]
                                                   ) -> None:
    broker = start_broker(listeners=websocket_listeners())
    tcp_port, ws_port = broker.ports
    watcher = SysWatcher(tcp_port)
    alive = PahoClient(tcp_port, "alive", protocol=V5)
    killed = RawClient(tcp_port)
    try:
        alive.subscribe("$share/pool/jobs/+", qos=1)
        killed.connect("killed", clean_start=False)  # a persistent session: it stays
        killed.send(Subscribe(1, (SubscriptionRequest("$share/pool/jobs/+", 1),)))
        killed.receive()
        killed.close()  # kill -9: no DISCONNECT
        broker.disconnects.wait("killed")
        broker.advance(10)
        group = json.loads(watcher.wait(
            "shared/group/pool", lambda v: json.loads(v)["jobs/+"]["sessions"] == 2))
        assert group["jobs/+"]["members"] == 1
        assert watcher.wait("shared/members", lambda v: v == "1")
        assert watcher.wait("shared/sessions", lambda v: v == "2")
        samples = scrape(ws_port)
    finally:
        alive.disconnect()
        watcher.close()
    labels = (("filter", "jobs/+"), ("group", "pool"))
    assert samples[("mqttish_shared_group_members", labels)] == 1
    assert samples[("mqttish_shared_group_sessions", labels)] == 2


def test_sys_interval_zero_publishes_nothing(start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(sys_interval=0.0)
    client = PahoClient(broker.port, "nosys")
    try:
        client.subscribe(SYS + "#")
        client.subscribe("marker")
        client.publish("marker", b"x")
        assert client.expect()[0].topic == "marker"  # no retained $SYS came first
    finally:
        client.disconnect()


def test_metrics_counters_move(start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(listeners=websocket_listeners(), max_inflight_messages=1,
                          max_queued_messages=1, stall_timeout=2.0)
    tcp_port, ws_port = broker.ports
    before = scrape(ws_port)
    assert before[("mqttish_build_info", (("version", "0.1.0"),))] == 1
    assert before[("mqttish_clients_connected", ())] == 0
    browser = PahoClient(ws_port, "browser", transport="websockets")
    device = PahoClient(tcp_port, "device")
    stalled = RawClient(tcp_port)
    try:
        stalled.connect("stalled")
        stalled.send(Subscribe(1, (SubscriptionRequest("flood", 1),)))
        stalled.receive()
        # QoS 0, so that with a window of 1 the browser never waits for its own acks.
        browser.subscribe("flood", qos=0)
        # "stalled" never acknowledges: 1 in flight, 1 queued, then after stall_timeout
        # it stalls and holds the device back no more: 2 dropped.
        for _ in range(4):
            device.publish("flood", b"reading", qos=1)
        browser.expect(4)
        after = scrape(ws_port)
    finally:
        browser.disconnect()
        device.disconnect()
        stalled.close()
    ws = (("listener", f"127.0.0.1:{ws_port}"), ("protocol", "websocket"))
    tcp = (("listener", f"127.0.0.1:{tcp_port}"), ("protocol", "mqtt"))
    assert after[("mqttish_clients_connected", ())] == 3
    assert after[("mqttish_publish_messages_received_total", ())] == 4
    assert after[("mqttish_publish_messages_dropped_total", ())] == 2
    assert after[("mqttish_consumers_stalled_total", ())] == 1
    received = ("mqttish_bytes_received_total", ())
    assert after[received] > before[received]
    assert after[("mqttish_listener_connections", ws)] == 1
    assert after[("mqttish_listener_connections", tcp)] == 2
    assert after[("mqttish_listener_connections_accepted_total", tcp)] == 2
    assert after[("mqttish_listener_http_requests_total", ws)] == 2  # both scrapes
    assert after[("mqttish_listener_dropped_messages_total", tcp)] == 2
    assert after[("mqttish_listener_dropped_messages_total", ws)] == 0
    assert after[("mqttish_subscriptions", ())] == 2


def test_metrics_show_shared_groups(start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(listeners=websocket_listeners())
    tcp_port, ws_port = broker.ports
    workers = [PahoClient(tcp_port, f"w{i}", protocol=V5) for i in range(2)]
    try:
        for worker in workers:
            worker.subscribe("$share/pool/jobs/#", qos=1)
        for index in range(6):
            workers[0].publish(f"jobs/{index}", b"work", qos=1)
        got = sum(len(w.expect(3)) for w in workers)  # round robin: three each
        assert got == 6
        samples = scrape(ws_port)
    finally:
        for worker in workers:
            worker.disconnect()
    labels = (("filter", "jobs/#"), ("group", "pool"))
    assert samples[("mqttish_shared_groups", ())] == 1
    assert samples[("mqttish_shared_group_members", labels)] == 2
    assert samples[("mqttish_shared_group_sessions", labels)] == 2
    assert samples[("mqttish_shared_group_delivered_total", labels)] == 6
    assert samples[("mqttish_shared_group_redelivered_total", labels)] == 0
    assert samples[("mqttish_shared_group_backlog", labels)] == 0


def test_metrics_can_be_turned_off(start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(listeners=websocket_listeners(metrics=False, dashboard=False))
    port = broker.ports[1]
    for path in ("/metrics", "/"):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT)
        assert error.value.code == 404
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT) as answer:
        assert answer.read() == b"ok\n"

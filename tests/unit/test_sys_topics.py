"""The $SYS tree without I/O: values, changes only, load averages, and the stats snapshot."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from mqttish.config import Config
from mqttish.core.broker import Broker
from mqttish.core.message import Message
from mqttish.core.metrics import BrokerStats, ClusterFigures, NodeFigures, SharedGroupStats
from mqttish.core.sys_topics import SysTree
from mqttish.transport.prometheus import MetricsExporter, Scrape
from tests.unit.peer import Peer

ZERO = BrokerStats(
    uptime=0.0, clients_connected=0, clients_disconnected=0, clients_maximum=0,
    clients_total=0, clients_expired=0, connections_total=0, sockets_total=0, connection_errors=0,
    consumers_stalled=0,
    messages_received=0, messages_sent=0, publish_received=0, publish_sent=0,
    publish_dropped=0, publish_bytes_received=0, publish_bytes_sent=0, bytes_received=0,
    bytes_sent=0, logins_failed=0, logins_delayed=0, retained_count=0, retained_bytes=0,
    subscriptions=0, store_messages=0,
    store_bytes=0,
)


def as_dict(changes: list[tuple[str, bytes]]) -> dict[str, str]:
    return {topic.removeprefix("$SYS/broker/"): payload.decode() for topic, payload in changes}


def test_first_update_publishes_every_topic() -> None:
    values = as_dict(SysTree("1.2.3").update(dataclasses.replace(ZERO, uptime=5.7), 100.0))
    assert values["version"] == "mqttish version 1.2.3"
    assert values["uptime"] == "5 seconds"
    assert values["clients/connected"] == "0"
    assert values["retained messages/count"] == "0"
    assert values["load/publish/received/1min"] == "0.00"
    assert values["load/connections/15min"] == "0.00"
    assert values["shared/count"] == "0"
    assert len(values) > 50


def test_later_updates_publish_only_changes() -> None:
    tree = SysTree("1")
    tree.update(ZERO, 0.0)
    assert tree.update(ZERO, 0.0) == []
    changed = as_dict(tree.update(dataclasses.replace(ZERO, clients_connected=2), 0.0))
    assert changed == {"clients/connected": "2", "clients/active": "2"}


def test_load_averages_follow_mosquitto() -> None:
    tree = SysTree("1")
    tree.update(ZERO, 0.0)
    # 600 PUBLISH in 60 seconds: a rate of 600 per minute, folded into each average.
    values = as_dict(tree.update(dataclasses.replace(ZERO, publish_received=600), 60.0))
    for window, seconds in (("1min", 60), ("5min", 300), ("15min", 900)):
        expected = (1 - math.exp(-60 / seconds)) * 600
        assert float(values[f"load/publish/received/{window}"]) == pytest.approx(expected,
                                                                                 abs=0.01)
    # Nothing more for a long time: the averages decay towards 0.
    values = as_dict(tree.update(dataclasses.replace(ZERO, publish_received=600), 3660.0))
    assert float(values["load/publish/received/1min"]) == 0.0
    assert 0 < float(values["load/publish/received/15min"]) < 10


def test_time_standing_still_changes_no_average() -> None:
    tree = SysTree("1")
    tree.update(ZERO, 10.0)
    assert tree.update(dataclasses.replace(ZERO, bytes_received=100), 10.0) == [
        ("$SYS/broker/bytes/received", b"100")]


def test_shared_groups_appear_and_are_cleared() -> None:
    tree = SysTree("1")
    group = SharedGroupStats("pool", "jobs/+", members=2, sessions=3, delivered=5,
                             redelivered=1, dropped=0, backlog=3)
    values = as_dict(tree.update(dataclasses.replace(ZERO, shared_groups=(group,)), 0.0))
    assert values["shared/count"] == "1"
    assert values["shared/members"] == "2"
    assert values["shared/sessions"] == "3"
    assert json.loads(values["shared/group/pool"]) == {
        "jobs/+": {"members": 2, "sessions": 3, "delivered": 5, "redelivered": 1, "dropped": 0,
                   "backlog": 3}}
    cleared = as_dict(tree.update(ZERO, 1.0))
    assert cleared["shared/group/pool"] == ""  # clears the retained message
    assert cleared["shared/count"] == "0"


def test_broker_stats_counts_what_the_broker_holds() -> None:
    broker = Broker(Config())
    broker.publish(Message("a/b", b"12345", retain=True), 0.0)
    broker.publish(Message("a/c", b"xy", retain=True), 0.0)
    stats = broker.stats(now=30.0, started_at=10.0)
    assert stats.uptime == 20.0
    assert stats.retained_count == 2
    assert stats.store_messages == 2
    assert stats.store_bytes == 7
    assert stats.clients_total == 0
    assert stats.shared_groups == ()


def test_a_killed_members_session_is_no_connected_member() -> None:
    broker = Broker(Config())
    workers = [Peer(broker) for _ in range(3)]
    for index, worker in enumerate(workers):
        worker.connect(f"w{index}", clean_start=False)  # persistent: outlives the connection
        worker.subscribe("$share/pool/jobs/+", 1)
    workers[0].drop()
    [group] = broker.stats(now=1.0, started_at=0.0).shared_groups
    assert (group.members, group.sessions) == (2, 3)


def test_a_cluster_node_reports_the_cluster_too() -> None:
    nodes = (NodeFigures("n1", "n1.a", 3, 4, 10, 20, 0.5),
             NodeFigures("n2", "n2.b", 5, 6, 30, 40, 1.25))
    stats = dataclasses.replace(ZERO, cluster=ClusterFigures("n1.a", nodes, 7, 100, 200, 10,
                                                            20, 30, 1, 2))
    values = dict(SysTree("1.0").update(stats, 0.0))
    assert values["$SYS/broker/cluster/nodes/count"] == b"2"
    assert values["$SYS/broker/cluster/clients/connected"] == b"8"
    assert values["$SYS/broker/cluster/messages/forwarded"] == b"100"
    assert json.loads(values["$SYS/broker/cluster/nodes"])["n2.b"] == {
        "node_id": "n2", "clients": 5, "sessions": 6, "received": 30, "sent": 40, "load": 1.25}
    exported = MetricsExporter(lambda: Scrape(stats, ())).render()[0].decode()
    assert "mqttish_cluster_nodes 2.0" in exported
    assert 'mqttish_cluster_node_clients{member="n2.b",node="n2"} 5.0' in exported
    assert "mqttish_cluster_forwarded_messages_total 100.0" in exported

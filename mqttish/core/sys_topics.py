"""The `$SYS/broker/...` tree: Mosquitto's topic names and meanings, sans-IO.

Theory of operation: every `sys_interval` seconds the server reads a
`BrokerStats` and calls `SysTree.update(stats, now)`, which returns the
(topic, payload) pairs to publish as retained messages: every topic the first
time, afterwards only those whose value changed, and an empty payload (which
clears the retained message) for a topic that no longer exists, such as the
figures of a shared group whose last member left.

Load averages are computed as Mosquitto computes them: at each update, the
per-minute rate of a counter over the time since the last update is folded
into an exponential moving average with weight exp(-elapsed / window), for
windows of 1, 5 and 15 minutes (like Unix load averages). Time is an argument,
so tests drive it with plain numbers.
"""

from __future__ import annotations

import json
import math

from mqttish.core.metrics import BrokerStats

PREFIX = "$SYS/broker/"

# (topic under $SYS/broker/load/, BrokerStats counter): rates per minute.
LOAD_SOURCES: tuple[tuple[str, str], ...] = (
    ("messages/received", "messages_received"),
    ("messages/sent", "messages_sent"),
    ("publish/received", "publish_received"),
    ("publish/sent", "publish_sent"),
    ("publish/dropped", "publish_dropped"),
    ("bytes/received", "bytes_received"),
    ("bytes/sent", "bytes_sent"),
    ("sockets", "sockets_total"),
    ("connections", "connections_total"),
)
LOAD_WINDOWS: tuple[tuple[str, float], ...] = (("1min", 60.0), ("5min", 300.0), ("15min", 900.0))


class LoadAverage:
    """Exponential moving averages of one counter's per-minute rate."""

    __slots__ = ("averages", "last_count")

    def __init__(self, count: int) -> None:
        self.last_count = count
        self.averages = [0.0] * len(LOAD_WINDOWS)

    def update(self, count: int, elapsed: float) -> None:
        """Fold in the rate since the last update, `elapsed` seconds ago (> 0)."""
        rate = (count - self.last_count) * 60.0 / elapsed
        self.last_count = count
        for index, (_, window) in enumerate(LOAD_WINDOWS):
            weight = math.exp(-elapsed / window)
            self.averages[index] = weight * self.averages[index] + (1.0 - weight) * rate


class SysTree:
    """Turns successive `BrokerStats` into the $SYS messages to publish."""

    def __init__(self, version: str) -> None:
        self.version = version
        self._published: dict[str, bytes] = {}
        self._loads: dict[str, LoadAverage] = {}
        self._last_update: float | None = None

    def update(self, stats: BrokerStats, now: float) -> list[tuple[str, bytes]]:
        """The (topic, payload) pairs that changed since the last update."""
        self._update_loads(stats, now)
        current = self.values(stats)
        changes = [(topic, payload) for topic, payload in current.items()
                   if self._published.get(topic) != payload]
        changes.extend((topic, b"") for topic in self._published if topic not in current)
        self._published = current
        return changes

    def values(self, stats: BrokerStats) -> dict[str, bytes]:
        """Every $SYS topic and its payload for `stats` (loads as of the last update)."""
        values: dict[str, str] = {
            "version": f"mqttish version {self.version}",
            "uptime": f"{int(stats.uptime)} seconds",
            "clients/connected": str(stats.clients_connected),
            "clients/active": str(stats.clients_connected),  # Mosquitto's older name
            "clients/disconnected": str(stats.clients_disconnected),
            "clients/inactive": str(stats.clients_disconnected),  # Mosquitto's older name
            "clients/maximum": str(stats.clients_maximum),
            "clients/total": str(stats.clients_total),
            "clients/expired": str(stats.clients_expired),
            "clients/stalled": str(stats.consumers_stalled),
            "messages/received": str(stats.messages_received),
            "messages/sent": str(stats.messages_sent),
            "messages/stored": str(stats.store_messages),  # Mosquitto's older name
            "publish/messages/received": str(stats.publish_received),
            "publish/messages/sent": str(stats.publish_sent),
            "publish/messages/dropped": str(stats.publish_dropped),
            "publish/bytes/received": str(stats.publish_bytes_received),
            "publish/bytes/sent": str(stats.publish_bytes_sent),
            "bytes/received": str(stats.bytes_received),
            "bytes/sent": str(stats.bytes_sent),
            "retained messages/count": str(stats.retained_count),
            "subscriptions/count": str(stats.subscriptions),
            "store/messages/count": str(stats.store_messages),
            "store/messages/bytes": str(stats.store_bytes),
        }
        for name, load in self._loads.items():
            for (window, _), average in zip(LOAD_WINDOWS, load.averages, strict=True):
                values[f"load/{name}/{window}"] = f"{average:.2f}"
        groups = stats.shared_groups
        values["shared/count"] = str(len(groups))
        values["shared/members"] = str(sum(group.members for group in groups))
        values["shared/sessions"] = str(sum(group.sessions for group in groups))
        by_name: dict[str, dict[str, dict[str, int]]] = {}
        for group in groups:
            by_name.setdefault(group.name, {})[group.topic_filter] = {
                "members": group.members, "sessions": group.sessions,
                "delivered": group.delivered,
                "redelivered": group.redelivered, "dropped": group.dropped,
                "backlog": group.backlog,
            }
        for name, filters in by_name.items():
            values[f"shared/group/{name}"] = json.dumps(filters, sort_keys=True)
        store = stats.persistence
        if store is not None:
            values["persistence/size"] = str(store.size_bytes)
            values["persistence/commits"] = str(store.commits)
            values["persistence/changes"] = str(store.changes)
            values["persistence/commit/batch"] = str(store.last_batch)
            average = store.latency_sum / store.commits if store.commits else 0.0
            values["persistence/commit/latency"] = f"{average * 1000:.3f} ms"
        cluster = stats.cluster
        if cluster is not None:  # this node's figures above, the cluster's here
            values["cluster/node"] = cluster.member
            values["cluster/nodes/count"] = str(len(cluster.nodes))
            values["cluster/clients/connected"] = str(sum(n.clients for n in cluster.nodes))
            values["cluster/sessions"] = str(sum(n.sessions for n in cluster.nodes))
            values["cluster/routes"] = str(cluster.routes)
            values["cluster/messages/forwarded"] = str(cluster.forwarded)
            values["cluster/messages/received"] = str(cluster.received)
            values["cluster/takeovers"] = str(cluster.takeovers)
            values["cluster/adoptions"] = str(cluster.adoptions)
            values["cluster/nodes"] = json.dumps({
                node.member: {"node_id": node.node_id, "clients": node.clients,
                              "sessions": node.sessions, "received": node.publish_received,
                              "sent": node.publish_sent, "load": round(node.load, 2)}
                for node in cluster.nodes}, sort_keys=True)
        return {PREFIX + topic: value.encode() for topic, value in values.items()}

    def _update_loads(self, stats: BrokerStats, now: float) -> None:
        if self._last_update is None:
            self._loads = {name: LoadAverage(getattr(stats, field))
                           for name, field in LOAD_SOURCES}
            self._last_update = now
            return
        elapsed = now - self._last_update
        if elapsed <= 0:
            return
        for name, field in LOAD_SOURCES:
            self._loads[name].update(getattr(stats, field), elapsed)
        self._last_update = now

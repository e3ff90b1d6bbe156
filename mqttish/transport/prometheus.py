"""`/metrics`: the broker's figures in the Prometheus text format, via prometheus-client.

A custom collector reads a `BrokerStats` (the same snapshot the $SYS tree is
made from) and the listeners' counters at scrape time, on the broker's trio
thread, and `generate_latest` encodes them from a private registry, so no
process-wide default registry or background thread is involved.

Names follow Prometheus conventions: an `mqttish_` prefix, base units, and
`_total` on counters (prometheus-client appends it to counter families).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from mqttish import __version__
from mqttish.bridge.runner import BridgeFigures
from mqttish.core.metrics import BrokerStats, ClusterFigures, PersistenceFigures
from mqttish.transport.listeners import ListenerStats


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one scrape reports."""

    broker: BrokerStats
    listeners: Sequence[ListenerStats]
    bridges: Sequence[BridgeFigures] = ()


# (name, help, BrokerStats field): counters, then gauges.
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("mqttish_bytes_received", "Bytes received from clients", "bytes_received"),
    ("mqttish_bytes_sent", "Bytes sent to clients", "bytes_sent"),
    ("mqttish_messages_received", "MQTT control packets received, of every type",
     "messages_received"),
    ("mqttish_messages_sent", "MQTT control packets sent, of every type", "messages_sent"),
    ("mqttish_publish_messages_received", "PUBLISH packets received", "publish_received"),
    ("mqttish_publish_messages_sent", "PUBLISH packets sent", "publish_sent"),
    ("mqttish_publish_messages_dropped",
     "Deliveries dropped: full client queues or shared-group backlogs, messages too large "
     "for a client", "publish_dropped"),
    ("mqttish_publish_bytes_received", "Payload bytes of PUBLISH packets received",
     "publish_bytes_received"),
    ("mqttish_publish_bytes_sent", "Payload bytes of PUBLISH packets sent", "publish_bytes_sent"),
    ("mqttish_connections", "Client connections accepted (CONNACK 0)",
     "connections_total"),
    ("mqttish_clients_expired", "Persistent sessions expired after their client left",
     "clients_expired"),
    ("mqttish_sockets_opened", "Network connections accepted, MQTT or HTTP", "sockets_total"),
    ("mqttish_logins_failed", "CONNECTs refused for a wrong user name, password or certificate",
     "logins_failed"),
    ("mqttish_logins_delayed", "Logins held back after failed ones from the same address",
     "logins_delayed"),
    ("mqttish_connection_errors",
     "Connections ended by an unexpected error in the broker (each logged with a traceback)",
     "connection_errors"),
    ("mqttish_consumers_stalled",
     "Clients found stalled: no progress for stall_timeout with a full queue",
     "consumers_stalled"),
)
GAUGES: tuple[tuple[str, str, str], ...] = (
    ("mqttish_uptime_seconds", "Seconds since the broker started", "uptime"),
    ("mqttish_clients_connected", "Clients connected now", "clients_connected"),
    ("mqttish_clients_disconnected", "Sessions kept for clients that are offline",
     "clients_disconnected"),
    ("mqttish_clients_maximum", "Most clients connected at once since start", "clients_maximum"),
    ("mqttish_clients", "Sessions, connected or not", "clients_total"),
    ("mqttish_retained_messages", "Retained messages", "retained_count"),
    ("mqttish_retained_bytes", "Payload bytes of retained messages", "retained_bytes"),
    ("mqttish_subscriptions", "Subscriptions, shared ones included", "subscriptions"),
    ("mqttish_store_messages", "Messages held: retained, queued and in flight",
     "store_messages"),
    ("mqttish_store_bytes", "Payload bytes of the messages held", "store_bytes"),
)


class BrokerCollector:
    """A prometheus-client collector that reads the broker when scraped."""

    def __init__(self, scrape: Callable[[], Scrape]) -> None:
        self.scrape = scrape

    def collect(self) -> Iterable[Metric]:
        scrape = self.scrape()
        stats = scrape.broker
        info = InfoMetricFamily("mqttish_build", "The broker's version")
        info.add_metric([], {"version": __version__})
        yield info
        for name, documentation, field in COUNTERS:
            yield CounterMetricFamily(name, documentation, value=getattr(stats, field))
        for name, documentation, field in GAUGES:
            yield GaugeMetricFamily(name, documentation, value=getattr(stats, field))
        yield from _listener_metrics(scrape)
        yield from _shared_metrics(stats)
        if stats.persistence is not None:
            yield from _persistence_metrics(stats.persistence)
        yield from _bridge_metrics(scrape.bridges)
        if stats.cluster is not None:
            yield from _cluster_metrics(stats.cluster)


def _listener_metrics(scrape: Scrape) -> Iterable[Metric]:
    labels = ["listener", "protocol"]
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        "open": GaugeMetricFamily("mqttish_listener_sockets", "Sockets open now", labels=labels),
        "accepted": CounterMetricFamily("mqttish_listener_sockets_accepted",
                                        "Sockets accepted", labels=labels),
        "refused": CounterMetricFamily("mqttish_listener_sockets_refused",
                                       "Sockets refused at max_connections or max_connection_rate",
                                       labels=labels),
        "clients": GaugeMetricFamily("mqttish_listener_connections",
                                     "MQTT clients connected now", labels=labels),
        "clients_total": CounterMetricFamily("mqttish_listener_connections_accepted",
                                             "MQTT clients accepted (CONNACK 0)",
                                             labels=labels),
        "http_requests": CounterMetricFamily("mqttish_listener_http_requests",
                                             "Plain HTTP requests answered", labels=labels),
        "dropped": CounterMetricFamily("mqttish_listener_dropped_messages",
                                       "Deliveries dropped for clients of this listener",
                                       labels=labels),
    }
    for listener in scrape.listeners:
        values = [listener.name, listener.protocol]
        for attribute, family in families.items():
            family.add_metric(values, getattr(listener, attribute))
    yield from families.values()


def _shared_metrics(stats: BrokerStats) -> Iterable[Metric]:
    groups = stats.shared_groups
    yield GaugeMetricFamily("mqttish_shared_groups", "Shared subscription groups",
                            value=len(groups))
    labels = ["group", "filter"]
    members = GaugeMetricFamily("mqttish_shared_group_members",
                                "Connected members of a shared group", labels=labels)
    sessions = GaugeMetricFamily("mqttish_shared_group_sessions",
                                 "Member sessions of a shared group, connected or not",
                                 labels=labels)
    backlog = GaugeMetricFamily("mqttish_shared_group_backlog",
                                "Messages waiting for an available member", labels=labels)
    delivered = CounterMetricFamily("mqttish_shared_group_delivered",
                                    "Messages given to a member", labels=labels)
    redelivered = CounterMetricFamily(
        "mqttish_shared_group_redelivered",
        "Messages taken back from a departed member and given to another", labels=labels)
    dropped = CounterMetricFamily("mqttish_shared_group_dropped",
                                  "Messages a shared group dropped", labels=labels)
    for group in groups:
        values = [group.name, group.topic_filter]
        members.add_metric(values, group.members)
        sessions.add_metric(values, group.sessions)
        backlog.add_metric(values, group.backlog)
        delivered.add_metric(values, group.delivered)
        redelivered.add_metric(values, group.redelivered)
        dropped.add_metric(values, group.dropped)
    yield from (members, sessions, backlog, delivered, redelivered, dropped)


def _bridge_metrics(bridges: Sequence[BridgeFigures]) -> Iterable[Metric]:
    labels = ["bridge"]
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        "connected": GaugeMetricFamily("mqttish_bridge_up",
                                       "1 while the bridge is connected to its remote broker",
                                       labels=labels),
        "connects": CounterMetricFamily("mqttish_bridge_connects",
                                        "Connections made to the remote broker", labels=labels),
        "sent": CounterMetricFamily("mqttish_bridge_messages_sent",
                                    "Messages forwarded to the remote broker (acknowledged "
                                    "by it at QoS 1 and 2)", labels=labels),
        "received": CounterMetricFamily("mqttish_bridge_messages_received",
                                        "Messages brought in from the remote broker",
                                        labels=labels),
        "dropped": CounterMetricFamily("mqttish_bridge_messages_dropped",
                                       "Messages not forwarded: refused by the other side, "
                                       "or too large for it", labels=labels),
        "queued": GaugeMetricFamily("mqttish_bridge_queued_messages",
                                    "Messages waiting here for the remote broker, queued "
                                    "or in flight", labels=labels),
    }
    for bridge in bridges:
        for attribute, family in families.items():
            family.add_metric([bridge.name], float(getattr(bridge, attribute)))
    yield from families.values()


def _persistence_metrics(store: PersistenceFigures) -> Iterable[Metric]:
    yield GaugeMetricFamily("mqttish_store_size_bytes",
                            "Bytes of the durable store on disk, its write-ahead log included",
                            value=store.size_bytes)
    yield CounterMetricFamily("mqttish_store_commits", "Group commits of the journal",
                              value=store.commits)
    yield CounterMetricFamily("mqttish_store_changes", "Journal records committed",
                              value=store.changes)
    yield GaugeMetricFamily("mqttish_store_commit_batch", "Journal records in the last commit",
                            value=store.last_batch)
    cumulative = 0
    buckets = []
    for bound, count in zip((*map(str, store.latency_bounds), "+Inf"), store.latency_counts,
                            strict=True):
        cumulative += count
        buckets.append((bound, cumulative))
    yield HistogramMetricFamily("mqttish_store_commit_seconds", "Time one group commit takes",
                                buckets=buckets, sum_value=store.latency_sum)


def _cluster_metrics(cluster: ClusterFigures) -> Iterable[Metric]:
    yield GaugeMetricFamily("mqttish_cluster_nodes", "Live nodes of the cluster",
                            value=len(cluster.nodes))
    yield GaugeMetricFamily("mqttish_cluster_routes",
                            "Route table entries of the other nodes, as known here",
                            value=cluster.routes)
    for name, documentation, value in (
            ("mqttish_cluster_forwarded_messages", "Messages sent to other nodes",
             cluster.forwarded),
            ("mqttish_cluster_received_messages", "Messages other nodes sent here",
             cluster.received),
            ("mqttish_cluster_batches_sent", "Inbox entries written for other nodes",
             cluster.batches_sent),
            ("mqttish_cluster_batches_received", "Inbox entries delivered here",
             cluster.batches_received),
            ("mqttish_cluster_commits", "Commits to Redis (journal and cluster traffic)",
             cluster.commits),
            ("mqttish_cluster_takeovers", "Sessions taken over from another node",
             cluster.takeovers),
            ("mqttish_cluster_adoptions", "Dead nodes adopted by this one", cluster.adoptions)):
        yield CounterMetricFamily(name, documentation, value=value)
    labels = ["node", "member"]
    clients = GaugeMetricFamily("mqttish_cluster_node_clients",
                                "Clients connected to each node", labels=labels)
    sessions = GaugeMetricFamily("mqttish_cluster_node_sessions", "Sessions on each node",
                                 labels=labels)
    load = GaugeMetricFamily("mqttish_cluster_node_load",
                             "One-minute load average of each node's machine", labels=labels)
    for node in cluster.nodes:
        values = [node.node_id, node.member]
        clients.add_metric(values, node.clients)
        sessions.add_metric(values, node.sessions)
        load.add_metric(values, node.load)
    yield from (clients, sessions, load)


class MetricsExporter:
    """Renders /metrics from a private registry holding one `BrokerCollector`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, scrape: Callable[[], Scrape]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(scrape))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), self.content_type

"""Counters and gauges of broker activity, read by $SYS topics and /metrics.

Plain integer attributes: incrementing one on the hot path costs one
attribute store. Names follow Mosquitto's $SYS tree.

`Broker.stats()` reads everything the $SYS tree and /metrics show into one
frozen `BrokerStats`, so both report the same figures; it walks the sessions
and shared groups, so it is for the periodic $SYS update and a scrape, not
for the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass


class Metrics:
    __slots__ = (
        "bytes_received", "bytes_sent", "clients_connected", "clients_expired",
        "clients_maximum", "clients_total_connections", "connection_errors", "consumers_stalled",
        "logins_delayed", "logins_failed", "messages_received",
        "messages_sent",
        "publish_bytes_received", "publish_bytes_sent", "publish_dropped", "publish_received",
        "publish_sent", "sockets_opened",
    )

    def __init__(self) -> None:
        self.bytes_received = 0
        self.bytes_sent = 0
        self.messages_received = 0  # every control packet received
        self.messages_sent = 0
        self.publish_received = 0
        self.publish_sent = 0
        self.publish_dropped = 0  # deliveries lost to a full queue
        self.publish_bytes_received = 0
        self.publish_bytes_sent = 0
        self.clients_connected = 0
        self.clients_maximum = 0
        self.clients_expired = 0
        self.clients_total_connections = 0  # connections accepted since start
        self.sockets_opened = 0  # network connections accepted, MQTT or not (the transport counts)
        self.logins_failed = 0  # CONNECTs refused for their credentials (the transport counts)
        self.logins_delayed = 0  # logins held back after failures from their address
        # Connections closed by an unexpected error of ours (a bug), at any layer: each one is
        # logged with its traceback and ends that connection only.
        self.connection_errors = 0
        # Times an online client was found stalled (no progress for stall_timeout with a
        # full queue): from then on its overflow is dropped, or it is disconnected.
        self.consumers_stalled = 0

    def client_connected(self) -> None:
        self.clients_connected += 1
        self.clients_total_connections += 1
        if self.clients_connected > self.clients_maximum:
            self.clients_maximum = self.clients_connected


@dataclass(frozen=True, slots=True)
class SharedGroupStats:
    """One shared subscription group (`$share/<name>/<topic_filter>`)."""

    name: str
    topic_filter: str
    members: int  # connected members: those that can be given a message now
    sessions: int  # member sessions, connected or not (a killed worker's persistent one)
    delivered: int  # messages given to a member
    redelivered: int  # messages taken back from a departed member and given to another
    dropped: int  # messages lost to a full backlog or a member's full queue
    backlog: int  # messages waiting for an available member


@dataclass(frozen=True, slots=True)
class PersistenceFigures:
    """The durable store and its group commits (the server fills these in)."""

    size_bytes: int  # on disk, write-ahead log included
    commits: int
    changes: int  # journal records committed
    last_batch: int  # records in the last commit
    latency_sum: float  # seconds, over all commits
    latency_bounds: tuple[float, ...]  # upper bounds of the histogram's buckets, seconds
    latency_counts: tuple[int, ...]  # commits per bucket (one more: above the last bound)


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """One node of a cluster, as it last reported itself (every lease / 3 seconds)."""

    node_id: str
    member: str  # node id and the token of this run
    clients: int  # connected now
    sessions: int
    publish_received: int
    publish_sent: int
    load: float  # its machine's 1-minute load average


@dataclass(frozen=True, slots=True)
class ClusterFigures:
    """This node's part in a cluster (the server fills these in)."""

    member: str
    nodes: tuple[NodeFigures, ...]  # every live node, this one first
    routes: int  # route table entries of the other nodes known here
    forwarded: int  # messages sent to other nodes
    received: int  # messages other nodes sent here
    batches_sent: int
    batches_received: int
    commits: int
    takeovers: int  # sessions taken over from another node
    adoptions: int  # dead nodes whose sessions and wills this node took over


@dataclass(frozen=True, slots=True)
class BrokerStats:
    """Everything $SYS and /metrics report, read at one instant."""

    uptime: float  # seconds
    clients_connected: int
    clients_disconnected: int  # sessions kept for clients that are offline
    clients_maximum: int
    clients_total: int  # sessions, connected or not
    clients_expired: int
    connections_total: int  # CONNECTs accepted since start
    sockets_total: int  # network connections accepted since start
    connection_errors: int  # connections ended by an unexpected error of ours
    consumers_stalled: int  # clients found stalled with a full queue
    messages_received: int  # control packets of every type
    messages_sent: int
    publish_received: int
    publish_sent: int
    publish_dropped: int
    publish_bytes_received: int
    publish_bytes_sent: int
    bytes_received: int
    bytes_sent: int
    logins_failed: int
    logins_delayed: int
    retained_count: int
    retained_bytes: int
    subscriptions: int
    store_messages: int  # retained messages plus deliveries queued or in flight
    store_bytes: int  # their payload bytes
    shared_groups: tuple[SharedGroupStats, ...] = ()
    persistence: PersistenceFigures | None = None  # None: nothing is stored
    cluster: ClusterFigures | None = None  # None: not a node of a cluster

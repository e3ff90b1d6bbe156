"""Counters and gauges of broker activity, read by $SYS topics and /metrics.

Plain integer attributes: incrementing one on the hot path costs one
attribute store. Names follow Mosquitto's $SYS tree.
"""


class Metrics:
    __slots__ = (
        "bytes_received", "bytes_sent", "clients_connected", "clients_expired",
        "clients_maximum", "clients_total_connections", "messages_received", "messages_sent",
        "publish_bytes_received", "publish_bytes_sent", "publish_dropped", "publish_received",
        "publish_sent",
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

    def client_connected(self) -> None:
        self.clients_connected += 1
        self.clients_total_connections += 1
        if self.clients_connected > self.clients_maximum:
            self.clients_maximum = self.clients_connected

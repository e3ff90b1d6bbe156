"""The limits and options the broker's core obeys.

These are the keys of the configuration that concern MQTT itself; the server's
`Config` (mqttish/config.py) adds listeners, logging and persistence, and is
validated there. The core is given a `BrokerSettings` and reads nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal


@dataclass(frozen=True)
class RedirectConfig:
    """Send MQTT 5 clients to another server (CONNACK 0x9C, or 0x9D when permanent)."""

    server: str
    permanent: bool = False


@dataclass(frozen=True)
class BrokerSettings:
    allow_anonymous: bool | None = None  # None: allowed on loopback listeners only
    connection_messages: bool = True  # log each client's connect and disconnect
    log_packets: bool = False  # log every packet in and out, as `mosquitto -v` (debug level)

    connect_timeout: float = 10.0
    max_keepalive: int = 65535
    max_packet_size: int = 1_048_576
    message_size_limit: int = 0  # largest payload routed (bigger: acknowledged, dropped); 0: any
    max_inflight_messages: int = 20
    max_queued_messages: int = 1000
    max_queued_bytes: int = 0  # 0: no byte limit, only the message count
    queue_qos0_messages: bool = False
    # Overload: a full queue whose client makes progress holds its publishers back; one
    # that made no progress for stall_timeout seconds is stalled: its overflow is dropped
    # (and counted), or it is disconnected.
    backpressure_watermark: int = 1000  # queued messages that hold publishers back (resume: half)
    stall_timeout: float = 2.0
    stall_action: Literal["drop", "disconnect"] = "drop"
    qos0_backpressure: bool = True  # false: QoS 0 overflow is dropped instead of waited for
    retain_available: bool = True
    max_qos: Literal[0, 1, 2] = 2
    topic_alias_maximum: int = 10
    wildcard_subscriptions: bool = True
    subscription_identifiers: bool = True
    shared_subscriptions: bool = True
    shared_subscription_strategy: Literal[
        "round_robin", "random", "least_loaded", "sticky"] = "round_robin"
    redirect: RedirectConfig | None = None
    persistent_client_expiration: float | None = None  # seconds; None: never
    allow_zero_length_clientid: bool = True  # false: a client must name itself
    # Abuse limits (docs/security.md)
    max_client_id_length: int = 65535  # the protocol's own limit
    max_topic_length: int = 65535
    max_topic_levels: int = 200  # as Mosquitto's hard limit
    max_subscriptions_per_client: int = 10_000  # 0: no limit
    max_message_rate: float = 0  # PUBLISH packets per second from one client; 0: no limit
    max_byte_rate: float = 0  # bytes per second from one client; 0: no limit

    @cached_property
    def unchecked_topic_length(self) -> int:
        """Topics shorter than this are within both topic limits (length and levels), so
        the hot path need not count their levels."""
        return min(self.max_topic_length + 1, self.max_topic_levels)

"""Broker configuration: frozen dataclasses, loaded from YAML with precise errors.

Every key a user can write is a dataclass field here, with its default. Loading
is strict: an unknown key or a value of the wrong type raises `ConfigError`
naming the key path (`listeners[0].port: expected integer, got 'abc'`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml

from mqttish.typed_yaml import SchemaError, build

LOOPBACK = "127.0.0.1"


class ConfigError(ValueError):
    """A configuration problem, with the path of the offending key."""


@dataclass(frozen=True)
class ListenerConfig:
    """One socket the broker accepts clients on.

    A `websocket` listener speaks HTTP: it upgrades WebSocket requests to MQTT
    and answers plain requests (the dashboard, /metrics, /healthz). The keys
    after `max_connections` apply to websocket listeners only.
    """

    port: int = 1883
    bind: str | None = None  # None: loopback only
    protocol: Literal["mqtt", "websocket"] = "mqtt"
    max_connections: int = 0  # 0: unlimited
    path: str | None = None  # WebSocket upgrades only on this path; None: any path
    allowed_origins: tuple[str, ...] = ()  # () : any Origin; else these and same-origin
    handshake_timeout: float = 10.0  # seconds to send a whole HTTP request head
    max_handshake_size: int = 16384  # bytes of HTTP request line and headers
    dashboard: bool = True  # serve the live dashboard at /
    metrics: bool = True  # serve Prometheus metrics at /metrics

    def __post_init__(self) -> None:
        # Errors name the key; Config prefixes the listener's index.
        if self.protocol != "websocket":
            default = ListenerConfig.__dataclass_fields__
            for key in _WEBSOCKET_KEYS:
                if getattr(self, key) != default[key].default:
                    raise ConfigError(f"{key}: only applies to 'protocol: websocket' listeners")
        if self.path is not None and (not self.path.startswith("/") or "?" in self.path
                                      or any(c.isspace() for c in self.path)):
            raise ConfigError(f"path: must be an absolute URL path like '/mqtt', "
                              f"got {self.path!r}")
        for index, origin in enumerate(self.allowed_origins):
            problem = _origin_problem(origin)
            if problem:
                raise ConfigError(f"allowed_origins[{index}]: {problem}")
        if not 0 < self.handshake_timeout <= 3600:
            raise ConfigError("handshake_timeout: must be more than 0 and at most 3600 seconds")
        if not 1024 <= self.max_handshake_size <= 1_048_576:
            raise ConfigError("max_handshake_size: must be between 1024 and 1048576 bytes")
        if self.max_connections < 0:
            raise ConfigError("max_connections: must be 0 (unlimited) or more")


_WEBSOCKET_KEYS = ("path", "allowed_origins", "handshake_timeout", "max_handshake_size",
                   "dashboard", "metrics")


def _origin_problem(origin: str) -> str | None:
    """Why `origin` is not a browser Origin (`scheme://host[:port]`), or None if it is."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an origin like 'https://example.com:8443', got {origin!r}"
    if parts.path or parts.query or parts.fragment or parts.username is not None:
        return f"an origin has no path, query or user part, got {origin!r}"
    try:
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        return f"invalid port in {origin!r}"
    return None


def default_listeners() -> tuple[ListenerConfig, ...]:
    """MQTT on 1883 and MQTT over WebSocket (with the dashboard) on 8083."""
    return (ListenerConfig(), ListenerConfig(port=8083, protocol="websocket"))


@dataclass(frozen=True)
class RedirectConfig:
    """Send MQTT 5 clients to another server (CONNACK 0x9C, or 0x9D when permanent)."""

    server: str
    permanent: bool = False


@dataclass(frozen=True)
class Config:
    listeners: tuple[ListenerConfig, ...] = default_listeners()
    allow_anonymous: bool | None = None  # None: allowed on loopback listeners only
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    connection_messages: bool = True  # log each client's connect and disconnect

    connect_timeout: float = 10.0
    max_keepalive: int = 65535
    max_packet_size: int = 1_048_576
    max_inflight_messages: int = 20
    max_queued_messages: int = 1000
    max_queued_bytes: int = 0  # 0: no byte limit, only the message count
    queue_qos0_messages: bool = False
    # Overload: a full queue whose client makes progress holds its publishers back; one
    # that made no progress for stall_timeout seconds is stalled: its overflow is dropped
    # (and counted), or it is disconnected.
    stall_timeout: float = 5.0
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
    sys_interval: float = 10.0

    def __post_init__(self) -> None:
        for index, listener in enumerate(self.listeners):
            if not 0 <= listener.port <= 65535:
                raise ConfigError(f"listeners[{index}].port: must be between 0 and 65535")
            exposed = listener.bind not in (None, LOOPBACK, "localhost", "::1")
            if exposed and not self.allow_anonymous:
                raise ConfigError(
                    f"listeners[{index}].bind: listening on {listener.bind} without "
                    "authentication requires 'allow_anonymous: true'"
                )
        for name in ("max_packet_size", "max_inflight_messages", "max_queued_messages"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1")
        if self.max_packet_size > 268_435_460:
            raise ConfigError("max_packet_size: must be at most 268435460")
        if not 0 < self.max_keepalive <= 65535:
            raise ConfigError("max_keepalive: must be between 1 and 65535")
        if self.max_inflight_messages > 65535:
            raise ConfigError("max_inflight_messages: must be at most 65535")
        if not 0 <= self.topic_alias_maximum <= 65535:
            raise ConfigError("topic_alias_maximum: must be between 0 and 65535")
        if not 0 < self.stall_timeout <= 3600:
            raise ConfigError("stall_timeout: must be more than 0 and at most 3600 seconds")
        if self.sys_interval < 0:
            raise ConfigError("sys_interval: must be 0 (no $SYS topics) or more seconds")

    def bind_address(self, listener: ListenerConfig) -> str:
        """Where a listener binds: loopback unless its `bind` says otherwise.

        Never widened by other settings (`allow_anonymous: true` included): exposing a
        listener to the network takes an explicit `bind`.
        """
        return listener.bind if listener.bind is not None else LOOPBACK


DEFAULT_CONFIG_PATH = Path(__file__).parent.parent / "config" / "mqttish.yaml"


def load_config(path: str | Path | None) -> Config:
    """Read a YAML file (or use the defaults for None) into a validated Config."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, str(path))


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    if raw is None:
        raw = {}
    try:
        return build(Config, raw)
    except SchemaError as exc:
        raise ConfigError(str(exc)) from None

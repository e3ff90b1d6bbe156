"""Broker configuration: frozen dataclasses, loaded from YAML with precise errors.

Every key a user can write is a dataclass field here, with its default. Loading
is strict: an unknown key or a value of the wrong type raises `ConfigError`
naming the key path (`listeners[0].port: expected integer, got 'abc'`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml

from mqttish.bridge.config import BridgeConfig
from mqttish.core.settings import BrokerSettings
from mqttish.typed_yaml import SchemaError, build

LOOPBACK = "127.0.0.1"
UNSET_PORT = -1


class ConfigError(ValueError):
    """A configuration problem, with the path of the offending key."""


@dataclass(frozen=True)
class ListenerConfig:
    """One socket the broker accepts clients on.

    A `websocket` listener speaks HTTP: it upgrades WebSocket requests to MQTT
    and answers plain requests (the dashboard, /metrics, /healthz). The keys
    from `path` to `metrics` apply to websocket listeners only (and
    `handshake_timeout` to TLS listeners too). With `certfile` and `keyfile` a
    listener speaks TLS: MQTT over TLS, or wss.
    """

    port: int = UNSET_PORT  # 1883, or 8883 with TLS
    bind: str | None = None  # None: loopback only
    protocol: Literal["mqtt", "websocket"] = "mqtt"
    max_connections: int = 0  # 0: unlimited
    path: str | None = None  # WebSocket upgrades only on this path; None: any path
    allowed_origins: tuple[str, ...] = ()  # () : any Origin; else these and same-origin
    handshake_timeout: float = 10.0  # seconds to send a whole HTTP request head
    max_handshake_size: int = 16384  # bytes of HTTP request line and headers
    dashboard: bool = True  # serve the live dashboard at /
    metrics: bool = True  # serve Prometheus metrics at /metrics
    # --- security (docs/security.md): TLS, and authentication set for this listener only
    certfile: str | None = None  # PEM server certificate (chain): TLS on this listener
    keyfile: str | None = None  # PEM private key of certfile
    cafile: str | None = None  # PEM CA certificates that client certificates must chain to
    tls_version: Literal["tlsv1.2", "tlsv1.3"] = "tlsv1.2"  # the oldest version accepted
    ciphers: str | None = None  # OpenSSL cipher list for TLS 1.2; None: Python's defaults
    require_certificate: bool = False  # mutual TLS: clients must present a certificate
    use_identity_as_username: bool = False  # the certificate's CN is the user name
    use_subject_as_username: bool = False  # the certificate's subject (RFC 2253) is
    allow_anonymous: bool | None = None  # None: the global setting
    password_file: str | None = None  # None: the global setting
    acl_file: str | None = None  # None: the global setting

    def __post_init__(self) -> None:
        # Errors name the key; Config prefixes the listener's index.
        if self.port == UNSET_PORT:
            object.__setattr__(self, "port", 8883 if self.tls else 1883)
        if self.protocol != "websocket":
            default = ListenerConfig.__dataclass_fields__
            for key in _WEBSOCKET_KEYS:
                if key == "handshake_timeout" and self.tls:
                    continue
                if getattr(self, key) != default[key].default:
                    raise ConfigError(f"{key}: only applies to 'protocol: websocket' listeners")
        self._check_tls()
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

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def certificate_username(self) -> bool:
        """Clients are known by their certificate, not by a user name and password."""
        return self.use_identity_as_username or self.use_subject_as_username

    def _check_tls(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("certfile: TLS needs both 'certfile' and 'keyfile'")
        tls_only = ("cafile", "ciphers", "require_certificate", "use_identity_as_username",
                    "use_subject_as_username")
        default = ListenerConfig.__dataclass_fields__
        for key in tls_only:
            if not self.tls and getattr(self, key) != default[key].default:
                raise ConfigError(f"{key}: needs TLS ('certfile' and 'keyfile')")
        if self.require_certificate and self.cafile is None:
            raise ConfigError("require_certificate: needs 'cafile', the CA that signs the "
                              "client certificates")
        if self.certificate_username and not self.require_certificate:
            key = ("use_identity_as_username" if self.use_identity_as_username
                   else "use_subject_as_username")
            raise ConfigError(f"{key}: needs 'require_certificate: true'")
        if self.use_identity_as_username and self.use_subject_as_username:
            raise ConfigError("use_subject_as_username: choose one of it and "
                              "use_identity_as_username")


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


@dataclass(frozen=True)
class ClusterConfig:
    """Several mqttish processes acting as one broker through Redis (docs/scaling.md)."""

    redis: str  # redis://host:port/db, rediss://..., or unix:///path/to/redis.sock
    node_id: str | None = None  # how logs, $SYS and the dashboard name this node; None: host-pid
    lease: float = 5.0  # seconds: a node that has not renewed its lease for this long is dead
    prefix: str = "mqttish"  # of every Redis key, so that clusters can share one Redis

    def __post_init__(self) -> None:
        if not self.redis.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"redis: expected a redis://, rediss:// or unix:// URL, "
                              f"got {self.redis!r}")
        if not 0.5 <= self.lease <= 300:
            raise ConfigError("lease: must be between 0.5 and 300 seconds")
        for key in ("node_id", "prefix"):
            value = getattr(self, key)
            if value is not None and (not value or any(c in value for c in ": \t\n")):
                raise ConfigError(f"{key}: must be a non-empty name without ':' or spaces")


def default_listeners() -> tuple[ListenerConfig, ...]:
    """MQTT on 1883 and MQTT over WebSocket (with the dashboard) on 8083."""
    return (ListenerConfig(), ListenerConfig(port=8083, protocol="websocket"))


@dataclass(frozen=True)
class Config(BrokerSettings):
    """Everything a configuration file can say: the core's settings (BrokerSettings,
    which the core is given alone) and what belongs to the server."""

    listeners: tuple[ListenerConfig, ...] = default_listeners()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_dest: tuple[Literal["stderr", "stdout"], ...] = ("stderr",)  # (): only log_file
    log_file: str | None = None  # also append log lines to this file
    sys_interval: float = 10.0
    # --- security (docs/security.md); listeners may override allow_anonymous and the files
    password_file: str | None = None  # Mosquitto's format: user:hash lines
    acl_file: str | None = None  # Mosquitto's acl_file format
    max_connection_rate: float = 0  # new connections per second from one address; 0: no limit
    # Durable state (docs/persistence.md), with Mosquitto's key names: sessions and
    # retained messages in the SQLite file persistence_location/persistence_file.
    persistence: bool = False
    persistence_location: str | None = None  # a directory; None: the current one (as Mosquitto)
    persistence_file: str = "mqttish.db"
    persistence_sync: Literal["normal", "full"] = "normal"  # full: also survive a power loss
    # Scaling out (docs/scaling.md): nodes of one cluster share Redis; `workers` processes
    # on this machine share the listening ports (a private redis-server if no cluster).
    cluster: ClusterConfig | None = None
    workers: int = 1
    bridges: tuple[BridgeConfig, ...] = ()  # docs/configuration.md, 'Bridges'

    def __post_init__(self) -> None:
        for index, listener in enumerate(self.listeners):
            if not 0 <= listener.port <= 65535:
                raise ConfigError(f"listeners[{index}].port: must be between 0 and 65535")
            exposed = listener.bind not in (None, LOOPBACK, "localhost", "::1")
            if exposed and not self.authenticates(listener) and self.anonymous_unset(listener):
                raise ConfigError(
                    f"listeners[{index}].bind: listening on {listener.bind} without "
                    "authentication requires 'allow_anonymous: true'"
                )
        for name in ("max_client_id_length", "max_topic_length", "max_topic_levels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1")
        for name in ("max_subscriptions_per_client", "max_connection_rate", "max_message_rate",
                     "max_byte_rate", "message_size_limit", "max_queued_bytes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be 0 (no limit) or more")
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
        if not 1 <= self.workers <= 256:
            raise ConfigError("workers: must be between 1 and 256")
        if self.cluster is not None and self.persistence:
            raise ConfigError("persistence: a cluster keeps sessions and retained messages in "
                              "Redis; remove 'persistence' (or 'cluster')")
        if Path(self.persistence_file).name != self.persistence_file or \
                self.persistence_file in ("", ".", ".."):
            raise ConfigError("persistence_file: must be a file name; its directory goes in "
                              "persistence_location")
        self._check_bridges()

    def _check_bridges(self) -> None:
        names: set[str] = set()
        client_ids: set[str] = set()
        for index, bridge in enumerate(self.bridges):
            if bridge.name in names:
                raise ConfigError(f"bridges[{index}].name: another bridge is called "
                                  f"{bridge.name!r}")
            if bridge.local_client_id in client_ids:
                raise ConfigError(f"bridges[{index}].local_clientid: another bridge uses "
                                  f"{bridge.local_client_id!r}")
            names.add(bridge.name)
            client_ids.add(bridge.local_client_id)

    def broker_settings(self) -> BrokerSettings:
        """The part of the configuration the broker's core obeys."""
        return BrokerSettings(**{field.name: getattr(self, field.name)
                                 for field in fields(BrokerSettings)})

    # --- per-listener security settings: the listener's own, else the global ones

    def password_file_for(self, listener: ListenerConfig) -> str | None:
        return listener.password_file if listener.password_file is not None \
            else self.password_file

    def acl_file_for(self, listener: ListenerConfig) -> str | None:
        return listener.acl_file if listener.acl_file is not None else self.acl_file

    def authenticates(self, listener: ListenerConfig) -> bool:
        """Clients of this listener prove who they are (a password, or a certificate)."""
        return self.password_file_for(listener) is not None or listener.certificate_username

    def anonymous_unset(self, listener: ListenerConfig) -> bool:
        """Neither this listener nor the global settings say whether anonymous clients
        may connect (`allow_anonymous: false` exposes nothing, `true` is a choice)."""
        return listener.allow_anonymous is None and self.allow_anonymous is None

    def anonymous_allowed(self, listener: ListenerConfig) -> bool:
        """Clients without a user name may connect: as configured; unset, only where
        nothing authenticates (the start-up check keeps such listeners on loopback)."""
        value = listener.allow_anonymous
        if value is None:
            value = self.allow_anonymous
        return not self.authenticates(listener) if value is None else value

    def secured(self) -> bool:
        """Some listener authenticates, authorises or refuses anonymous clients."""
        return any(
            self.authenticates(lc) or self.acl_file_for(lc) is not None
            or not self.anonymous_allowed(lc) for lc in self.listeners)

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

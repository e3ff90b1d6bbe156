"""What a bridge is configured with: the `bridges:` list (and Mosquitto's `connection`).

The keys keep Mosquitto's names where Mosquitto has one (`remote_clientid`,
`try_private`, `restart_timeout`, ...), without the `bridge_` prefix of its TLS
keys. A topic line maps topics as Mosquitto's `topic pattern direction qos
local-prefix remote-prefix` does: `L/pattern` here is `R/pattern` there.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Literal

from mqttish.errors import RemoteProtocolError
from mqttish.protocol.topics import matches, validate_topic_filter

DEFAULT_PORT = 1883
NEVER = 0xFFFFFFFF  # an MQTT 5 session expiry interval that never ends


class BridgeConfigError(ValueError):
    """A bridge key is wrong; the message starts with the key."""


@dataclass(frozen=True)
class BridgeTopic:
    """Topics matching `pattern` under `local_prefix` here are those under `remote_prefix`
    there; `out` sends ours there, `in` brings theirs here, `both` does both."""

    pattern: str
    direction: Literal["out", "in", "both"] = "out"
    qos: Literal[0, 1, 2] = 0
    local_prefix: str = ""
    remote_prefix: str = ""

    def __post_init__(self) -> None:
        for key in ("local_prefix", "remote_prefix"):
            prefix = getattr(self, key)
            if "+" in prefix or "#" in prefix:
                raise BridgeConfigError(f"{key}: a prefix cannot hold wildcards, got {prefix!r}")
        if not self.pattern and not (self.local_prefix and self.remote_prefix):
            raise BridgeConfigError('pattern: an empty pattern ("") needs both a local and a '
                                    "remote prefix (it maps one topic to another)")
        for where, topic_filter in (("local", self.local_filter),
                                    ("remote", self.remote_filter)):
            try:
                validate_topic_filter(topic_filter)
            except RemoteProtocolError as exc:
                raise BridgeConfigError(
                    f"pattern: the {where} filter {topic_filter!r} is invalid: {exc}") from None

    @property
    def outgoing(self) -> bool:
        return self.direction != "in"

    @property
    def incoming(self) -> bool:
        return self.direction != "out"

    @property
    def local_filter(self) -> str:
        """What the bridge subscribes to here (for `out`), or publishes under (for `in`)."""
        return self.local_prefix + self.pattern if self.pattern else self.local_prefix

    @property
    def remote_filter(self) -> str:
        return self.remote_prefix + self.pattern if self.pattern else self.remote_prefix

    def to_remote(self, topic: str) -> str | None:
        """The remote topic for a local one this line sends out, or None if it does not."""
        return _remap(topic, self.local_filter, self.local_prefix, self.remote_prefix)

    def to_local(self, topic: str) -> str | None:
        return _remap(topic, self.remote_filter, self.remote_prefix, self.local_prefix)


def _remap(topic: str, topic_filter: str, source: str, target: str) -> str | None:
    if not matches(topic_filter, topic):
        return None
    return target + topic[len(source):]


@dataclass(frozen=True)
class BridgeConfig:
    """One bridge: a connection to another broker and the topics it shares."""

    name: str
    addresses: tuple[str, ...]  # host[:port], tried in order (failover)
    topics: tuple[BridgeTopic, ...]
    round_robin: bool = False  # false: the first address is the main one, gone back to
    protocol_version: Literal["mqttv311", "mqttv50"] = "mqttv311"
    remote_clientid: str | None = None  # None: '<hostname>.<name>', as Mosquitto
    remote_username: str | None = None
    remote_password: str | None = None
    local_clientid: str | None = None  # None: 'local.<remote_clientid>'
    clean_session: bool = False  # false: the remote keeps our subscriptions and messages
    local_clean_session: bool | None = None  # None: as clean_session
    session_expiry: int | None = None  # MQTT 5 remote session; None: 0 if clean, else never
    keepalive: int = 60
    try_private: bool = True  # announce a bridge (loop prevention with MQTT 3.1.1)
    notifications: bool = True  # publish our state (1 / 0) on the remote broker
    notification_topic: str | None = None  # None: $SYS/broker/connection/<remote_clientid>/state
    restart_timeout: tuple[float, ...] = (5.0, 30.0)  # backoff from base to cap, or a constant
    start_type: Literal["automatic", "once"] = "automatic"
    bind_address: str | None = None  # the local address to connect from
    max_packet_size: int = 0  # messages larger than this are not sent out; 0: no limit
    outgoing_retain: bool = True  # false: the retain flag is cleared on what is sent out
    attempt_unsubscribe: bool = True  # unsubscribe `out` topics' remote filters at start
    # TLS to the remote broker
    tls: bool = False
    cafile: str | None = None  # None: the system's CA certificates
    capath: str | None = None
    certfile: str | None = None  # our client certificate, if the remote asks for one
    keyfile: str | None = None
    tls_version: Literal["tlsv1.2", "tlsv1.3"] = "tlsv1.2"  # the oldest accepted
    tls_insecure: bool = False  # do not check the remote's host name (tests only)
    alpn: str | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/+#") or self.name.isspace():
            raise BridgeConfigError(f"name: must be a word without '/', '+' or '#', "
                                    f"got {self.name!r}")
        if not self.addresses:
            raise BridgeConfigError("addresses: a bridge needs at least one address")
        for index, address in enumerate(self.addresses):
            try:
                split_address(address)
            except ValueError as exc:
                raise BridgeConfigError(f"addresses[{index}]: {exc}") from None
        if not self.topics:
            raise BridgeConfigError("topics: a bridge needs at least one topic")
        if not 5 <= self.keepalive <= 65535:
            raise BridgeConfigError("keepalive: must be between 5 and 65535 seconds")
        if not 1 <= len(self.restart_timeout) <= 2 or min(self.restart_timeout) <= 0 or \
                self.restart_timeout[0] > self.restart_timeout[-1]:
            raise BridgeConfigError("restart_timeout: one delay, or a base and a cap (base <= "
                                    "cap), in seconds above 0")
        if self.session_expiry is not None and not 0 <= self.session_expiry <= NEVER:
            raise BridgeConfigError(f"session_expiry: must be between 0 and {NEVER}")
        if self.session_expiry is not None and self.protocol_version != "mqttv50":
            raise BridgeConfigError("session_expiry: needs 'protocol_version: mqttv50'")
        if self.max_packet_size < 0:
            raise BridgeConfigError("max_packet_size: must be 0 (no limit) or more")
        if self.remote_password is not None and self.remote_username is None:
            raise BridgeConfigError("remote_password: needs remote_username")
        if self.local_client_id == self.remote_client_id:
            raise BridgeConfigError("local_clientid: must differ from remote_clientid")
        if not self.tls:
            for key in ("cafile", "capath", "certfile", "keyfile", "alpn"):
                if getattr(self, key) is not None:
                    raise BridgeConfigError(f"{key}: needs 'tls: true'")
        if (self.certfile is None) != (self.keyfile is None):
            raise BridgeConfigError("certfile: a client certificate needs both 'certfile' and "
                                    "'keyfile'")

    @property
    def remote_client_id(self) -> str:
        return self.remote_clientid or f"{socket.gethostname()}.{self.name}"

    @property
    def local_client_id(self) -> str:
        return self.local_clientid or f"local.{self.remote_client_id}"

    @property
    def local_clean(self) -> bool:
        return self.clean_session if self.local_clean_session is None else \
            self.local_clean_session

    @property
    def state_topic(self) -> str:
        """Where this broker shows whether the bridge is up: 1, or 0 (retained)."""
        return f"$SYS/broker/connection/{self.name}/state"

    @property
    def remote_state_topic(self) -> str:
        """Where the remote broker learns it: Mosquitto's notification topic."""
        return self.notification_topic or \
            f"$SYS/broker/connection/{self.remote_client_id}/state"


def split_address(address: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or `v6:port` -> (host, port)."""
    host, port = address.strip(), DEFAULT_PORT
    if host.startswith("["):
        inner, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"expected '[address]:port', got {address!r}")
        host, port_text = inner, rest[1:]
        if port_text:
            port = _port(port_text, address)
    elif ":" in host:
        host, _, port_text = host.rpartition(":")
        port = _port(port_text, address)
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"expected 'host' or 'host:port', got {address!r}")
    return host, port


def _port(text: str, address: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ValueError(f"expected a port between 1 and 65535 in {address!r}")
    return int(text)

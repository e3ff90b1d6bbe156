"""Listener stacks: a configured listener becomes trio listeners plus a stream handler."""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

import trio

from mqttish.config import Config, ListenerConfig

log = logging.getLogger("mqttish.listeners")


class StartupError(Exception):
    """The broker cannot start: one line for the user, no traceback."""


def peer_name(stream: trio.abc.Stream) -> str:
    socket_stream = stream
    while not isinstance(socket_stream, trio.SocketStream):
        inner = getattr(socket_stream, "transport_stream", None)
        if inner is None:
            return "?"
        socket_stream = inner
    try:
        host, port = socket_stream.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


async def open_listeners(config: Config, listener: ListenerConfig) -> list[trio.SocketListener]:
    host = config.bind_address(listener)
    try:
        return await trio.open_tcp_listeners(listener.port, host=host, backlog=4096)
    except OSError as exc:
        reason = {
            errno.EADDRINUSE: "address already in use",
            errno.EACCES: "permission denied",
            errno.EADDRNOTAVAIL: "address not available",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {host}:{listener.port}: {reason}") from None


class ListenerStats:
    """What one listener has seen, for /metrics: sockets, MQTT connections, HTTP requests."""

    __slots__ = ("accepted", "clients", "clients_total", "host", "http_requests", "open", "peers",
                 "port", "protocol", "refused")

    def __init__(self, host: str, port: int, protocol: str) -> None:
        self.host = host
        self.port = port
        self.protocol = protocol
        self.open = 0  # sockets open now
        self.accepted = 0  # sockets accepted since start
        self.refused = 0  # sockets refused at max_connections
        self.clients = 0  # MQTT connections being served now
        self.clients_total = 0
        self.http_requests = 0  # plain HTTP requests answered (websocket listeners)
        self.peers: set[str] = set()  # peer names of the MQTT connections served now

    @property
    def name(self) -> str:
        """How /metrics labels this listener: its address and bound port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class ConnectionLimiter:
    """Refuse connections beyond a listener's `max_connections` (0: no limit)."""

    def __init__(self, limit: int, stats: ListenerStats | None = None) -> None:
        self.limit = limit
        self.count = 0
        self.stats = stats

    def wrap(
        self, handler: Callable[[trio.abc.Stream], Awaitable[None]]
    ) -> Callable[[trio.abc.Stream], Awaitable[None]]:
        stats = self.stats

        async def limited(stream: trio.abc.Stream) -> None:
            if self.limit and self.count >= self.limit:
                log.warning("refusing %s: listener at max_connections (%d)", peer_name(stream),
                            self.limit)
                if stats is not None:
                    stats.refused += 1
                await trio.aclose_forcefully(stream)
                return
            self.count += 1
            if stats is not None:
                stats.accepted += 1
                stats.open += 1
            try:
                await handler(stream)
            finally:
                self.count -= 1
                if stats is not None:
                    stats.open -= 1

        return limited

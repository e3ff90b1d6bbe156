"""Listener stacks: a configured listener becomes trio listeners plus a stream handler."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable

import trio

from mqttish.config import Config, ListenerConfig

log = logging.getLogger("mqttish.listeners")


class StartupError(Exception):
    """The broker cannot start: one line for the user, no traceback."""


def peer_name(stream: trio.abc.Stream) -> str:
    named = getattr(stream, "peer", None)  # an in-process stream names its peer itself
    if isinstance(named, str):
        return named
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


async def open_listeners(config: Config, listener: ListenerConfig, reuse_port: bool = False
                         ) -> list[trio.SocketListener]:
    """The listening sockets of one listener; with `reuse_port`, shared with other processes
    that listen on the same port (SO_REUSEPORT: the kernel spreads connections among them)."""
    host = config.bind_address(listener)
    try:
        if reuse_port:
            return await _reuse_port_listeners(host, listener.port)
        return await trio.open_tcp_listeners(listener.port, host=host, backlog=4096)
    except OSError as exc:
        reason = {
            errno.EADDRINUSE: "address already in use",
            errno.EACCES: "permission denied",
            errno.EADDRNOTAVAIL: "address not available",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {host}:{listener.port}: {reason}") from None


async def _reuse_port_listeners(host: str, port: int) -> list[trio.SocketListener]:
    listeners = []
    for family, kind, proto, _, address in await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
        sock = trio.socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind(address)
            sock.listen(4096)
        except OSError:
            sock.close()
            raise
        listeners.append(trio.SocketListener(sock))
    return listeners


ACCEPT_RETRY = 0.1  # seconds to wait when accept() fails for lack of resources
CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


async def accept_connections(
    listener: trio.SocketListener,
    limit: int,
    stats: ListenerStats,
    serve: Callable[[trio.SocketStream], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Accept sockets for ever, starting `serve(stream)` in `nursery` for each,
    and refusing those beyond `limit` open at once (0: no limit).

    Our own loop rather than `trio.serve_listeners`: one coroutine frame less
    per connection, and the limit is checked before a task exists.
    """
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in CAPACITY_ERRNOS:
                raise
            log.error("cannot accept on %s (%s): retrying in %.1f s", stats.name, exc.strerror,
                      ACCEPT_RETRY)
            await trio.sleep(ACCEPT_RETRY)
            continue
        if limit and stats.open >= limit:
            stats.refused += 1
            log.warning("refusing %s: listener %s at max_connections (%d)", peer_name(stream),
                        stats.name, limit)
            await trio.aclose_forcefully(stream)
            continue
        stats.accepted += 1
        stats.open += 1
        nursery.start_soon(serve, stream)


class ListenerStats:
    """What one listener has seen, for /metrics: sockets, MQTT clients, HTTP requests.

    The sockets are counted by the server's accept loop; the MQTT figures by each
    connection, to which this is its `ListenerCounters`.
    """

    __slots__ = ("accepted", "clients", "clients_total", "dropped", "host", "http_requests",
                 "open", "port", "protocol", "refused")

    def __init__(self, host: str, port: int, protocol: str) -> None:
        self.host = host
        self.port = port
        self.protocol = protocol
        self.open = 0  # sockets open now
        self.accepted = 0  # sockets accepted since start
        self.refused = 0  # sockets refused at max_connections
        self.clients = 0  # MQTT clients connected now
        self.clients_total = 0  # MQTT clients accepted since start
        self.dropped = 0  # deliveries dropped for its clients
        self.http_requests = 0  # plain HTTP requests answered (websocket listeners)

    @property
    def name(self) -> str:
        """How /metrics labels this listener: its address and bound port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

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


class ConnectionLimiter:
    """Refuse connections beyond a listener's `max_connections` (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def wrap(
        self, handler: Callable[[trio.abc.Stream], Awaitable[None]]
    ) -> Callable[[trio.abc.Stream], Awaitable[None]]:
        async def limited(stream: trio.abc.Stream) -> None:
            if self.limit and self.count >= self.limit:
                log.warning("refusing %s: listener at max_connections (%d)", peer_name(stream),
                            self.limit)
                await trio.aclose_forcefully(stream)
                return
            self.count += 1
            try:
                await handler(stream)
            finally:
                self.count -= 1

        return limited

"""The running broker: listeners, connection tasks, housekeeping, graceful shutdown.

`Server.run` is started in a nursery (`await nursery.start(server.run)`); it
reports readiness with `task_status.started(server)` once every listener is
bound, so tests and the CLI never sleep to wait for it. `request_shutdown()`
stops accepting, asks every client to go (MQTT 5 clients get DISCONNECT
0x8B), gives writers a grace period to flush, saves sessions and returns.
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from mqttish import __version__
from mqttish.config import LOOPBACK, Config, ListenerConfig
from mqttish.core.broker import Broker
from mqttish.transport.connection import serve_connection
from mqttish.transport.listeners import ConnectionLimiter, open_listeners, peer_name

log = logging.getLogger("mqttish.server")

HOUSEKEEPING_INTERVAL = 1.0
SHUTDOWN_GRACE = 5.0


class Server:
    def __init__(self, config: Config, broker: Broker | None = None) -> None:
        self.config = config
        self.broker = broker
        self.ports: list[int] = []  # bound ports, in listener order (useful with port 0)
        self._shutdown = trio.Event()
        self._connections = 0
        self._all_closed = trio.Event()

    def request_shutdown(self) -> None:
        self._shutdown.set()

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        config = self.config
        if self.broker is None:
            self.broker = Broker(config, now=trio.current_time())
        broker = self.broker
        bound = [(lc, await open_listeners(config, lc)) for lc in config.listeners]
        self.ports = [listeners[0].socket.getsockname()[1] for _, listeners in bound]
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as accepting:
                async with trio.open_nursery() as services:
                    for (listener_config, listeners), port in zip(bound, self.ports, strict=True):
                        handler = ConnectionLimiter(listener_config.max_connections).wrap(
                            partial(self._handle, broker, nursery)
                        )
                        services.start_soon(partial(
                            trio.serve_listeners, handler, listeners, handler_nursery=nursery
                        ))
                        self._log_listener(listener_config, port)
                    services.start_soon(self._housekeeping, broker)
                    task_status.started(self)
                    await self._shutdown.wait()
                    accepting.cancel()
            log.info("shutting down")
            broker.shutdown(trio.current_time())
            with trio.move_on_after(SHUTDOWN_GRACE):
                if self._connections:
                    await self._all_closed.wait()
            nursery.cancel_scope.cancel()
        log.info("stopped")

    async def _handle(self, broker: Broker, spawner: trio.Nursery,
                      stream: trio.abc.Stream) -> None:
        self._connections += 1
        try:
            await serve_connection(stream, broker, peer_name(stream), spawner)
        finally:
            self._connections -= 1
            if not self._connections and self._shutdown.is_set():
                self._all_closed.set()

    async def _housekeeping(self, broker: Broker) -> None:
        while True:
            await trio.sleep(HOUSEKEEPING_INTERVAL)
            broker.housekeeping(trio.current_time())

    def _log_listener(self, listener: ListenerConfig, port: int) -> None:
        host = self.config.bind_address(listener)
        log.info("mqttish %s listening on %s:%d (%s)", __version__, host, port, listener.protocol)
        if listener.bind is None and host == LOOPBACK:
            log.info(
                "no authentication configured: listening on loopback only. To accept clients "
                "from the network, set 'bind: 0.0.0.0' and 'allow_anonymous: true' "
                "(see docs/configuration.md)"
            )

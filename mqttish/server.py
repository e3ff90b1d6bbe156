"""The running broker: listeners, connection tasks, housekeeping, graceful shutdown.

`Server.run` is started in a nursery (`await nursery.start(server.run)`); it
reports readiness with `task_status.started(server)` once every listener is
bound, so tests and the CLI never sleep to wait for it. `request_shutdown()`
stops accepting, asks every client to go (MQTT 5 clients get DISCONNECT
0x8B), gives writers a grace period to flush, saves sessions and returns.

An `mqtt` listener hands each socket to `serve_connection`; a `websocket`
listener hands it to `serve_http`, which upgrades it to a WebSocket stream for
`serve_connection` or answers plain HTTP (dashboard, /metrics, /healthz).
Every `sys_interval` seconds a task publishes the `$SYS/broker/...` tree
(`core/sys_topics.py`) as retained messages.
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from mqttish import __version__
from mqttish.config import LOOPBACK, Config, ListenerConfig
from mqttish.core.broker import Broker
from mqttish.core.message import Message
from mqttish.core.metrics import BrokerStats, broker_stats
from mqttish.core.sys_topics import SysTree
from mqttish.transport.connection import serve_connection
from mqttish.transport.http import Site, serve_http
from mqttish.transport.listeners import (
    ListenerStats,
    accept_connections,
    open_listeners,
    peer_name,
)
from mqttish.transport.prometheus import MetricsExporter, Scrape

log = logging.getLogger("mqttish.server")

HOUSEKEEPING_INTERVAL = 1.0
SHUTDOWN_GRACE = 5.0


class Server:
    def __init__(self, config: Config, broker: Broker | None = None) -> None:
        self.config = config
        self.broker = broker
        self.ports: list[int] = []  # bound ports, in listener order (useful with port 0)
        self.listener_stats: list[ListenerStats] = []  # in listener order
        self.started_at = 0.0  # on the trio clock
        self._site: Site | None = None
        self._shutdown = trio.Event()
        self._mqtt_tasks = 0  # MQTT connections being served, over TCP or WebSocket
        self._all_closed = trio.Event()

    def request_shutdown(self) -> None:
        self._shutdown.set()

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        config = self.config
        self.started_at = trio.current_time()
        if self.broker is None:
            self.broker = Broker(config, now=self.started_at)
        broker = self.broker
        bound = [(lc, await open_listeners(config, lc)) for lc in config.listeners]
        self.ports = [listeners[0].socket.getsockname()[1] for _, listeners in bound]
        self.listener_stats = [
            ListenerStats(config.bind_address(lc), port, lc.protocol)
            for (lc, _), port in zip(bound, self.ports, strict=True)
        ]
        if any(lc.protocol == "websocket" for lc in config.listeners):
            self._site = Site(MetricsExporter(self.scrape).render)
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as accepting:
                async with trio.open_nursery() as services:
                    for (listener_config, listeners), stats in zip(
                            bound, self.listener_stats, strict=True):
                        serve = partial(self._serve, broker, listener_config, stats, nursery)
                        for listener in listeners:
                            services.start_soon(accept_connections, listener,
                                                listener_config.max_connections, stats, serve,
                                                nursery)
                        self._log_listener(listener_config, stats.port)
                    services.start_soon(self._housekeeping, broker)
                    services.start_soon(self._publish_sys, broker)
                    task_status.started(self)
                    await self._shutdown.wait()
                    accepting.cancel()
            log.info("shutting down")
            broker.shutdown(trio.current_time())
            with trio.move_on_after(SHUTDOWN_GRACE):
                if self._mqtt_tasks:
                    await self._all_closed.wait()
            nursery.cancel_scope.cancel()
        log.info("stopped")

    async def _serve(self, broker: Broker, listener: ListenerConfig, stats: ListenerStats,
                     spawner: trio.Nursery, stream: trio.abc.Stream) -> None:
        """One accepted socket, to its end: an MQTT client, or HTTP that may become one.

        Plain MQTT is served right here, so that an idle TCP client costs as few
        coroutine frames as possible.
        """
        broker.metrics.sockets_opened += 1
        mqtt = listener.protocol == "mqtt"
        self._mqtt_tasks += mqtt
        try:
            if mqtt:
                await serve_connection(stream, broker, spawner, stats)
            else:
                assert self._site is not None
                upgraded = partial(self._serve_websocket, broker, spawner, stats)
                await serve_http(stream, listener, self._site, upgraded, stats)
        except Exception:  # the fault domain of one socket: it never reaches the nursery
            log.exception("internal error while serving %s: closing it", peer_name(stream))
            broker.metrics.connection_errors += 1
        finally:
            await trio.aclose_forcefully(stream)
            stats.open -= 1
            if mqtt:
                self._mqtt_task_done()

    async def _serve_websocket(self, broker: Broker, spawner: trio.Nursery,
                               stats: ListenerStats, stream: trio.abc.Stream) -> None:
        self._mqtt_tasks += 1
        try:
            await serve_connection(stream, broker, spawner, stats)
        finally:
            self._mqtt_task_done()

    def _mqtt_task_done(self) -> None:
        self._mqtt_tasks -= 1
        if not self._mqtt_tasks and self._shutdown.is_set():
            self._all_closed.set()

    async def _housekeeping(self, broker: Broker) -> None:
        while True:
            await trio.sleep(HOUSEKEEPING_INTERVAL)
            try:
                broker.housekeeping(trio.current_time())
            except Exception:  # a bug must not stop expiry and wills for good, nor the broker
                log.exception("internal error in housekeeping")

    async def _publish_sys(self, broker: Broker) -> None:
        """Publish the $SYS tree now and every `sys_interval` seconds (0: never)."""
        interval = self.config.sys_interval
        if not interval:
            return
        tree = SysTree(__version__)
        while True:
            now = trio.current_time()
            for topic, payload in tree.update(self.stats(now), now):
                broker.publish(Message(topic, payload, 0, True), now)
            await trio.sleep(interval)

    def stats(self, now: float) -> BrokerStats:
        assert self.broker is not None
        return broker_stats(self.broker, now, self.started_at)

    def scrape(self) -> Scrape:
        """What /metrics reports, read now (on the broker's trio thread)."""
        return Scrape(self.stats(trio.current_time()), self.listener_stats)

    def _log_listener(self, listener: ListenerConfig, port: int) -> None:
        host = self.config.bind_address(listener)
        log.info("mqttish %s listening on %s:%d (%s)", __version__, host, port, listener.protocol)
        if listener.protocol == "websocket":
            shown = "localhost" if host in (LOOPBACK, "0.0.0.0") else host
            endpoint = listener.path or "/mqtt"
            if listener.dashboard:
                log.info("dashboard at http://%s:%d/, MQTT over WebSocket at ws://%s:%d%s",
                         shown, port, shown, port, endpoint)
        if listener.bind is None and listener is self.config.listeners[0]:
            log.info(
                "no 'bind' configured: listening on loopback only. To accept clients "
                "from the network, set 'bind: 0.0.0.0' and 'allow_anonymous: true' "
                "(see docs/configuration.md)"
            )

"""The running broker: listeners, connection tasks, housekeeping, graceful shutdown.

`Server.run` is started in a nursery (`await nursery.start(server.run)`); it
reports readiness with `task_status.started(server)` once every listener is
bound, so tests and the CLI never sleep to wait for it. `request_shutdown()`
stops accepting, asks every client to go (MQTT 5 clients get DISCONNECT
0x8B), gives writers a grace period to flush, saves sessions and returns.

An `mqtt` listener hands each socket to `serve_stream`; a `websocket`
listener hands it to `serve_http`, which upgrades it to a WebSocket stream for
`serve_stream` or answers plain HTTP (dashboard, /metrics, /healthz).
Every `sys_interval` seconds a task publishes the `$SYS/broker/...` tree
(`core/sys_topics.py`) as retained messages.

Security (docs/security.md): a TLS listener does the handshake in the
connection's task before anything else; `max_connection_rate` refuses sockets
from an address that connects too often; the `SecurityHook` (passwords, ACLs)
is installed in the broker when the configuration asks for any of it.
`reload()` (SIGHUP) reads the password files, ACL files and certificates again.

With `cluster` configured, the server is one node of a cluster
(mqttish/cluster): its journal goes to Redis with the cluster's own traffic,
and a CONNECT claims its client id cluster-wide before it is accepted.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Sequence
from functools import partial

import trio

from mqttish import __version__, collector
from mqttish.auth.gate import ConnectionSecurity, LoginGate
from mqttish.auth.hook import SecurityFileError, SecurityHook
from mqttish.auth.throttle import ConnectionRate, LoginThrottle, host_of
from mqttish.bridge.remote import BridgeTlsError
from mqttish.bridge.runner import Bridge
from mqttish.cluster.node import ClusterNode
from mqttish.config import LOOPBACK, Config, ListenerConfig
from mqttish.core.broker import Broker
from mqttish.core.hooks import Hook
from mqttish.core.journal import Journal
from mqttish.core.message import Message
from mqttish.core.metrics import BrokerStats
from mqttish.core.store import Store, StoreError
from mqttish.core.sys_topics import SysTree
from mqttish.log_text import clip
from mqttish.persistence.group_commit import GroupCommit
from mqttish.protocol.reason_codes import ReasonCode
from mqttish.transport import multiplexer as multiplexing
from mqttish.transport.http import Site, serve_http
from mqttish.transport.listeners import (
    ListenerStats,
    StartupError,
    accept_connections,
    open_listeners,
    peer_name,
)
from mqttish.transport.prometheus import MetricsExporter, Scrape
from mqttish.transport.stream import serve_stream
from mqttish.transport.tls import TlsError, TlsListener

log = logging.getLogger("mqttish.server")

HOUSEKEEPING_INTERVAL = 1.0
SHUTDOWN_GRACE = 5.0


class Server:
    """The running broker. `hooks` plug into its core; with a `store`, its state is
    durable: restored at start, journalled as it changes, committed in groups."""

    def __init__(self, config: Config, hooks: Sequence[Hook] = (),
                 store: Store | None = None, *, reuse_port: bool = False) -> None:
        self.config = config
        self.hooks = hooks
        self.store = store
        self.reuse_port = reuse_port  # share the ports with the other workers (--workers)
        self.broker: Broker | None = None  # made by run()
        self.commits: GroupCommit | None = None  # with a store
        self.cluster: ClusterNode | None = None  # with `cluster` configured
        self.failure: StoreError | None = None  # why the server stopped, if it failed
        self.ports: list[int] = []  # bound ports, in listener order (useful with port 0)
        self.listener_stats: list[ListenerStats] = []  # in listener order
        self.bridges: list[Bridge] = []  # made by run(), in config.bridges order
        self.started_at = 0.0  # on the trio clock
        self._site: Site | None = None
        self._shutdown = trio.Event()
        self._mqtt_tasks = 0  # MQTT connections being served, over TCP or WebSocket
        self._all_closed = trio.Event()
        # Security: made in run(), where start-up errors are reported.
        self.security: SecurityHook | None = None
        self._tls: list[TlsListener | None] = []  # by listener index
        self._plain: list[ConnectionSecurity] = []  # by listener index, for clients without a
        self._logins = LoginGate(LoginThrottle())  # certificate name
        rate = config.max_connection_rate
        self._connection_rate = ConnectionRate(rate) if rate else None

    def request_shutdown(self) -> None:
        self._shutdown.set()

    def _store_failed(self, error: StoreError) -> None:
        """The store cannot be written: stop, rather than acknowledge what is not saved."""
        self.failure = error
        self.request_shutdown()

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        config = self.config
        self.started_at = trio.current_time()
        try:
            self.bridges = [Bridge(bridge, config.connect_timeout) for bridge in config.bridges]
        except BridgeTlsError as exc:
            raise StartupError(str(exc)) from None
        broker = self.broker = await self._make_broker()
        self._set_up_security(broker)
        bound = [(lc, await open_listeners(config, lc, self.reuse_port))
                 for lc in config.listeners]
        self.ports = [listeners[0].socket.getsockname()[1] for _, listeners in bound]
        self.listener_stats = [
            ListenerStats(config.bind_address(lc), port, lc.protocol)
            for (lc, _), port in zip(bound, self.ports, strict=True)
        ]
        if any(lc.protocol == "websocket" for lc in config.listeners):
            self._site = Site(MetricsExporter(self.scrape).render)
        multiplexer = None
        if multiplexing.AVAILABLE and any(map(self._multiplexed, config.listeners)):
            multiplexer = multiplexing.Multiplexer(broker, self._logins, self._connection_rate)
        async with trio.open_nursery() as nursery:
            if self.commits is not None:
                nursery.start_soon(self.commits.run, self._store_failed)
            if self.cluster is not None:
                try:
                    await nursery.start(self.cluster.run, self._store_failed)
                except StoreError as exc:
                    raise StartupError(f"cannot join the cluster: {exc}") from None
            if multiplexer is not None:
                await nursery.start(multiplexer.run)
            with trio.CancelScope() as accepting:
                async with trio.open_nursery() as services:
                    for index, ((listener_config, listeners), stats) in enumerate(zip(
                            bound, self.listener_stats, strict=True)):
                        limit = listener_config.max_connections
                        serve = partial(self._serve, broker, index, stats, nursery)
                        for listener in listeners:
                            if multiplexer is not None and self._multiplexed(listener_config):
                                sock = socket.socket(fileno=listener.socket.detach())
                                multiplexer.add_listener(sock, limit, stats, index)
                                continue
                            services.start_soon(accept_connections, listener, limit, stats,
                                                serve, nursery)
                        self._log_listener(listener_config, stats.port)
                    services.start_soon(self._housekeeping, broker)
                    services.start_soon(self._publish_sys, broker)
                    for bridge in self.bridges:  # one task each (mqttish/bridge/runner.py)
                        services.start_soon(bridge.run, broker, self._logins)
                    task_status.started(self)
                    await self._shutdown.wait()
                    accepting.cancel()
            log.info("shutting down")
            if multiplexer is not None:
                multiplexer.stop_accepting()
            broker.shutdown(trio.current_time())
            with trio.move_on_after(SHUTDOWN_GRACE):
                if self._mqtt_tasks:
                    await self._all_closed.wait()
                if multiplexer is not None:
                    await multiplexer.wait_closed()
            if self.cluster is not None:
                with trio.move_on_after(SHUTDOWN_GRACE):
                    await self.cluster.leave()
            nursery.cancel_scope.cancel()
        if self.commits is not None and self.store is not None:
            await self.commits.flush()  # what was acknowledged before the end
            self.store.close()
        log.info("stopped")

    async def _make_broker(self) -> Broker:
        """The broker, with what the store kept (if any) and a journal for what changes."""
        settings = self.config.broker_settings()
        if self.config.cluster is not None:  # the cluster's Redis is the store
            broker = Broker(settings, self.hooks, Journal())
            self.cluster = ClusterNode(self.config.cluster, broker)
            self._logins.claim = self.cluster.claim
            return broker
        if self.store is None:
            return Broker(settings, self.hooks)
        journal = Journal()
        broker = Broker(settings, self.hooks, journal)
        with collector.paused():
            state = await trio.to_thread.run_sync(self.store.load)
            broker.restore(state, trio.current_time())
        self.commits = GroupCommit(journal, self.store)
        return broker

    def _set_up_security(self, broker: Broker) -> None:
        """TLS contexts and the security hook; StartupError names what is wrong."""
        config = self.config
        self._tls = [
            TlsListener(lc, f"{config.bind_address(lc)}:{lc.port}") if lc.tls else None
            for lc in config.listeners]
        self._plain = [ConnectionSecurity(index, None, self._logins)
                       for index in range(len(config.listeners))]
        if config.secured():
            try:
                self.security = SecurityHook(config)
            except SecurityFileError as exc:
                raise StartupError(str(exc)) from None
            broker.hooks.install(self.security)

    async def reload(self) -> bool:
        """Read password files, ACL files and certificates again (SIGHUP).

        All or nothing for the password and ACL files: if one fails, the old rules
        stay and the error is logged with its line. Clients of users no longer in a
        password file are disconnected; a changed ACL applies from the next message.
        Returns whether everything was reloaded.
        """
        ok = True
        for tls in self._tls:
            if tls is not None:
                try:
                    tls.reload()
                except TlsError as exc:
                    log.error("reload: listener %s keeps its old certificate: %s", tls.name, exc)
                    ok = False
        security = self.security
        if security is not None:
            try:
                rules = await trio.to_thread.run_sync(security.read_rules)
            except SecurityFileError as exc:
                log.error("reload: keeping the old password and ACL rules: %s", exc)
                return False
            self._disconnect_removed(security.apply(rules))
            if self.broker is not None:
                self.broker.hooks.rules_changed()
        log.info("reloaded certificates, password and ACL files")
        return ok

    def _disconnect_removed(self, removed: dict[int, set[str]]) -> None:
        if not removed or self.broker is None:
            return
        now = trio.current_time()
        for session in list(self.broker.sessions.values()):
            connection = session.connection
            client = session.client
            if connection is None or client is None:
                continue
            if client.username in removed.get(client.listener, ()):
                log.info("disconnecting %s: user %s was removed from the password file",
                         clip(client.client_id), clip(client.username or ""))
                connection.close(now, "user removed from the password file",
                                 ReasonCode.NOT_AUTHORIZED)

    @staticmethod
    def _multiplexed(listener: ListenerConfig) -> bool:
        """Plain TCP listeners are served by the multiplexer (transport/multiplexer.py);
        TLS ones need trio's SSLStream, and so a task per connection (serve_stream)."""
        return listener.protocol == "mqtt" and not listener.tls

    async def _serve(self, broker: Broker, index: int, stats: ListenerStats,
                     spawner: trio.Nursery, stream: trio.abc.Stream) -> None:
        """One accepted socket, to its end: an MQTT client, or HTTP that may become one.

        Plain MQTT is served right here, so that an idle TCP client costs as few
        coroutine frames as possible.
        """
        broker.metrics.sockets_opened += 1
        listener = self.config.listeners[index]
        mqtt = listener.protocol == "mqtt"
        self._mqtt_tasks += mqtt
        try:
            rate = self._connection_rate
            if rate is not None and not rate.admit(host_of(peer_name(stream)),
                                                   trio.current_time()):
                stats.refused += 1
                log.info("refusing %s: more than max_connection_rate (%g/s)",
                         peer_name(stream), rate.rate)
                return
            security = self._plain[index]
            tls = self._tls[index]
            if tls is not None:
                secured = await tls.handshake(stream)
                if secured is None:
                    return
                stream = secured
                identity = tls.username(secured)
                if identity is not None:
                    security = ConnectionSecurity(index, identity, self._logins)
                elif listener.certificate_username:
                    log.info("closing %s on %s: its certificate gives no user name",
                             peer_name(stream), tls.name)
                    return
            if mqtt:
                await serve_stream(stream, broker, spawner, stats, security)
            else:
                assert self._site is not None
                upgraded = partial(self._serve_websocket, broker, spawner, stats, security)
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
                               stats: ListenerStats, security: ConnectionSecurity,
                               stream: trio.abc.Stream) -> None:
        self._mqtt_tasks += 1
        try:
            await serve_stream(stream, broker, spawner, stats, security)
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
            for bridge in self.bridges:
                for topic, payload in bridge.sys_topics():
                    broker.publish(Message(topic, payload, 0, True), now)
            await trio.sleep(interval)

    def stats(self, now: float) -> BrokerStats:
        assert self.broker is not None
        stats = self.broker.stats(now, self.started_at)
        if self.cluster is not None:
            return dataclasses.replace(stats, cluster=self.cluster.stats())
        if self.commits is None or self.store is None:
            return stats
        return dataclasses.replace(
            stats, persistence=self.commits.stats.figures(self.store.stats()))

    def scrape(self) -> Scrape:
        """What /metrics reports, read now (on the broker's trio thread)."""
        return Scrape(self.stats(trio.current_time()), self.listener_stats,
                      [bridge.figures() for bridge in self.bridges])

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

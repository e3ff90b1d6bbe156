"""Checking credentials off the event loop, with failed logins slowed down.

The core keeps a CONNECT in `Connection.pending_connect` when some hook has a
blocking check (`Hook.authenticate_blocking`: hashing a password). The
connection's task then awaits `LoginGate.check`, which waits for the
address's turn if it failed before (`LoginThrottle`), runs the check in a
worker thread (`HASH_THREADS` at once: a storm of logins costs bounded CPU
and memory, and leaves a core to the event loop) and hands the answer back to the core, which sends
the CONNACK. Only that connection waits; every other one goes on. A connection that
closed while its check waited for its turn is not checked at all. In a
cluster the CONNECT waits the same way while its client id is claimed
(mqttish/cluster: the session may have to come from another node).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from mqttish.auth.throttle import LoginThrottle, host_of
from mqttish.core.connection import Connection
from mqttish.core.hooks import ClientInfo, Decision

log = logging.getLogger("mqttish.auth")

HASH_THREADS = 1  # two let 1,000 argon2id checks add ~70 ms to others' p99 on 2 cores


class LoginGate:
    def __init__(self, throttle: LoginThrottle | None = None) -> None:
        self.throttle = throttle
        self._threads = trio.CapacityLimiter(HASH_THREADS)
        # In a cluster: claim a client id (taking its session over from the node that has
        # it) before the core accepts the CONNECT; False if that did not finish in time.
        self.claim: Callable[[str, float], Awaitable[bool]] | None = None

    async def check(self, connection: Connection, deadline: float) -> None:
        """Decide `connection.pending_connect`, answering by `deadline` at the latest."""
        packet = connection.pending_connect
        assert packet is not None
        address = host_of(connection.peer)
        throttle = self.throttle
        metrics = connection.metrics
        if throttle is not None:
            wait = throttle.wait(address, trio.current_time())
            if wait:
                metrics.logins_delayed += 1
            if wait is None or trio.current_time() + wait >= deadline:
                log.info("refused login from %s without checking: too many failures",
                         connection.peer)
                connection.credentials_checked(Decision.DENY, trio.current_time())
                return
            if wait:
                await trio.sleep(wait)
        client = ClientInfo(packet.client_id, packet.username, connection.peer,
                            packet.protocol_level, connection.listener)
        hooks = connection.broker.hooks
        decision = Decision.DEFER
        if hooks.blocking_authenticators:
            async with self._threads:
                if connection.closed:
                    # It left (or hit the connect timeout) while waiting for its turn: a
                    # hash for no one would only delay those behind it, and a burst of
                    # CONNECTs that close at once would cost a core for minutes.
                    return
                decision = await trio.to_thread.run_sync(hooks.authenticate_blocking, client,
                                                         packet)
        if decision is not Decision.DENY and self.claim is not None and packet.client_id \
                and not await self.claim(packet.client_id, deadline):
            connection.close(trio.current_time(), "its session could not be taken over from "
                             "another node of the cluster in time")
            return
        if decision is Decision.DENY:
            metrics.logins_failed += 1
            if throttle is not None:
                throttle.failed(address, trio.current_time())
        elif decision is Decision.ALLOW and throttle is not None:
            throttle.succeeded(address)
        connection.credentials_checked(decision, trio.current_time())


@dataclass(frozen=True, slots=True)
class ConnectionSecurity:
    """What the transport knows about a connection's security, for the core."""

    listener: int  # index in config.listeners
    identity: str | None  # the user name its client certificate gives
    logins: LoginGate

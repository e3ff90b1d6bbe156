"""The bridge's connection to this broker: in-process, with no listener.

The bridge's local side is an ordinary MQTT client of the broker, connected
through a `pipe` whose other end `serve_stream` serves exactly as it serves a
socket: the same sans-IO `Connection`, session, queue, flow control and
journal. Its clients are trusted (`INTERNAL_LISTENER`), as Mosquitto trusts
its bridges.

The link is open only while the remote broker is connected. While the remote
is away the bridge's session is offline, so the broker queues what the
bridge subscribed to, as for any persistent session that went away: bounded
by `max_queued_messages`, journalled when persistence is on, and never
holding publishers back.
"""

from __future__ import annotations

import trio

from mqttish.auth.gate import ConnectionSecurity, LoginGate
from mqttish.bridge.pipe import PipeEnd, pipe
from mqttish.core.broker import Broker
from mqttish.core.hooks import INTERNAL_LISTENER
from mqttish.transport.listeners import ListenerStats
from mqttish.transport.stream import serve_stream


class LocalLink:
    def __init__(self, name: str, broker: Broker, logins: LoginGate,
                 nursery: trio.Nursery) -> None:
        self.peer = f"bridge:{name}"
        self.broker = broker
        self.security = ConnectionSecurity(INTERNAL_LISTENER, None, logins)
        self.counters = ListenerStats("in-process", 0, "bridge")
        self._nursery = nursery  # where the broker's side of the link is served
        self._open = False  # whether the link may be open (the remote is connected)
        self._changed = trio.lowlevel.ParkingLot()
        self._end: PipeEnd | None = None

    def allow(self) -> None:
        """The remote is connected: the bridge's client may connect here."""
        self._open = True
        self._changed.unpark_all()

    def cut(self) -> None:
        """The remote is away: end the link, so that the broker queues for the bridge."""
        self._open = False
        if self._end is not None:
            self._end.cut()
            self._end = None

    async def connect(self) -> trio.abc.Stream:
        """The bridge client's connector: waits until the link may open, then opens it."""
        while not self._open:
            await self._changed.park()
        ours, theirs = pipe(self.peer)
        self._nursery.start_soon(serve_stream, theirs, self.broker, self._nursery,
                                 self.counters, self.security)
        self._end = ours
        return ours

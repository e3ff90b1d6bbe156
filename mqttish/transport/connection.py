"""Serve one MQTT connection over any trio byte stream (TCP, TLS or WebSocket).

Two tasks per connection, in one nursery: the reader feeds received bytes to
the sans-IO `Connection` (which routes every PUBLISH before returning), the
writer sleeps until the connection has output and sends it all with one
`send_all`. Whichever side sees the end first tells the other: the writer
cancels the reader once a CLOSED connection's last bytes are out; the reader
gives the writer a short grace period to flush them.
"""

from __future__ import annotations

import logging

import trio

from mqttish.core.broker import Broker
from mqttish.core.connection import Connection

log = logging.getLogger("mqttish.transport")

RECEIVE_SIZE = 65536
FLUSH_GRACE = 5.0  # seconds a closing connection may take to send its last bytes


class Wakeup:
    """A flag one task sleeps on and anyone can raise; cheap to raise again and again."""

    __slots__ = ("_raised", "_waiter")

    def __init__(self) -> None:
        self._raised = False
        self._waiter: trio.lowlevel.Task | None = None

    def set(self) -> None:
        self._raised = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    async def wait(self) -> None:
        if self._raised:
            self._raised = False
            await trio.lowlevel.checkpoint()
            return
        self._waiter = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        self._raised = False


async def serve_connection(stream: trio.abc.Stream, broker: Broker, peer: str) -> None:
    """Run one client connection to its end; never raises for the client's faults."""
    wakeup = Wakeup()
    connection = Connection(broker, peer, trio.current_time(), wakeup.set)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write_loop, stream, connection, wakeup, nursery.cancel_scope)
            await _read_loop(stream, connection)
            nursery.cancel_scope.deadline = trio.current_time() + FLUSH_GRACE
    finally:
        connection.connection_lost(trio.current_time())
        await trio.aclose_forcefully(stream)


async def _read_loop(stream: trio.abc.Stream, connection: Connection) -> None:
    with trio.CancelScope() as idle:
        while not connection.closed:
            idle.deadline = connection.read_deadline(trio.current_time())
            try:
                data = await stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                connection.close(f"connection lost: {exc or type(exc).__name__}")
                return
            if not data:
                connection.close("connection closed by peer")
                return
            connection.receive_data(data, trio.current_time())
    if idle.cancelled_caught:
        connection.read_deadline_expired()


async def _write_loop(
    stream: trio.abc.Stream, connection: Connection, wakeup: Wakeup, scope: trio.CancelScope
) -> None:
    try:
        while True:
            await wakeup.wait()
            data = connection.data_to_send(trio.current_time())
            if data:
                await stream.send_all(data)
            if connection.closed:
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        connection.close(f"connection lost: {exc or type(exc).__name__}")
    finally:
        scope.cancel()

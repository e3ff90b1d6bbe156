"""Serve one MQTT connection over any trio byte stream (TCP, TLS or WebSocket).

Two tasks per connection, in one nursery: the reader feeds received bytes to
the sans-IO `Connection` (which routes every PUBLISH before returning), the
writer sleeps until the connection has output and sends it all with one
`send_all`.

Closing: whoever closes the connection (the client's DISCONNECT, a protocol
error, a takeover, a timeout, shutdown) puts it in the CLOSED state, and from
then on the whole connection task has `CLOSE_GRACE` seconds left. The writer
sends the last bytes (an MQTT 5 DISCONNECT with the reason) and half-closes
the stream; the reader keeps reading and discarding until the client closes
its side, so that unread input does not turn our close into a TCP reset that
would destroy the DISCONNECT before the client reads it.
"""

from __future__ import annotations

import trio

from mqttish.core.broker import Broker
from mqttish.core.connection import Connection

RECEIVE_SIZE = 65536
CLOSE_GRACE = 5.0  # seconds a closing connection has to flush and linger

_LOST = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


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
            scope = nursery.cancel_scope

            def on_output() -> None:
                wakeup.set()
                if connection.closed:
                    scope.deadline = min(scope.deadline, trio.current_time() + CLOSE_GRACE)

            connection.on_output = on_output
            nursery.start_soon(_write_loop, stream, connection, wakeup)
            await _read_loop(stream, connection)
    finally:
        connection.connection_lost(trio.current_time())
        await trio.aclose_forcefully(stream)


async def _read_loop(stream: trio.abc.Stream, connection: Connection) -> None:
    with trio.CancelScope() as idle:
        while True:
            idle.deadline = connection.read_deadline(trio.current_time())
            try:
                data = await stream.receive_some(RECEIVE_SIZE)
            except _LOST as exc:
                _lost(connection, exc)
                return
            if not data:
                connection.close(trio.current_time(), "connection closed by peer")
                return
            connection.receive_data(data, trio.current_time())
    if idle.cancelled_caught:
        connection.read_deadline_expired(trio.current_time())


async def _write_loop(stream: trio.abc.Stream, connection: Connection, wakeup: Wakeup) -> None:
    try:
        while True:
            if not connection.closed:
                await wakeup.wait()
            data = connection.data_to_send(trio.current_time())
            if data:
                await stream.send_all(data)
            elif connection.closed:  # and everything it said last is sent
                if isinstance(stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()
                return
    except _LOST as exc:
        _lost(connection, exc)


def _lost(connection: Connection, exc: BaseException) -> None:
    connection.close(trio.current_time(), f"connection lost: {exc or type(exc).__name__}")

"""Serve one MQTT connection over any trio byte stream (TCP, TLS or WebSocket).

The connection's task reads: it feeds received bytes to the sans-IO
`Connection`, which routes every PUBLISH before returning. Sending is done by
a writer task that exists only while the connection has output: the first
new output starts it, it sends everything ready with one `send_all` per
batch, and it ends when nothing is left. An idle connection therefore costs
one task, which is most of what keeps memory per connection small.

Closing: whoever closes the connection (the client's DISCONNECT, a protocol
error, a takeover, a timeout, shutdown) puts it in the CLOSED state, and from
then on the whole connection task has `CLOSE_GRACE` seconds left. The writer
sends the last bytes (an MQTT 5 DISCONNECT with the reason) and half-closes
the stream; the reader keeps reading and discarding until the client closes
its side, so that unread input does not turn our close into a TCP reset that
would destroy the DISCONNECT before the client reads it.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from mqttish.auth.gate import ConnectionSecurity
from mqttish.core.broker import Broker
from mqttish.core.connection import Connection, ListenerCounters
from mqttish.core.packet_log import connection_type
from mqttish.transport.listeners import peer_name

RECEIVE_SIZE = 65536
CLOSE_GRACE = 5.0  # seconds a closing connection has to flush and linger

_LOST = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _Writer:
    """Sends a connection's output, and resumes its input, from a task that runs only
    while there is such work.

    The task is started in `spawner`, the server's nursery of connection tasks,
    so an idle connection owns no task, nursery or cancel scope for writing.
    Resumed input (the queue a held PUBLISH waited for has room) is processed
    here too, because the reader may be waiting for bytes the client will not
    send before it gets its PUBACK.
    """

    __slots__ = ("changed", "connection", "finished", "reading", "resume", "running", "scope",
                 "spawner", "stream")

    def __init__(self, stream: trio.abc.Stream, connection: Connection,
                 spawner: trio.Nursery) -> None:
        self.stream = stream
        self.connection = connection
        self.spawner: trio.Nursery | None = spawner  # None once the connection is over
        self.running = False
        self.resume = False  # the connection asked to go on with its buffered input
        self.scope: trio.CancelScope | None = None  # while running
        self.reading: trio.CancelScope | None = None  # the reader's, while it reads
        self.finished: trio.Event | None = None  # made when someone waits for the task
        self.changed: trio.Event | None = None  # made while the reader waits for a change

    def on_output(self) -> None:
        """The connection has something new to send (or has just closed)."""
        if self.spawner is None:
            return
        if self.connection.closed:
            if self.reading is not None:
                grace = trio.current_time() + CLOSE_GRACE
                self.reading.deadline = min(self.reading.deadline, grace)
            self._changed()
        self._run()

    def on_resume(self) -> None:
        """The connection wants input again, or has buffered input to go on with."""
        if self.spawner is None:
            return
        self.resume = True
        self._run()

    def _run(self) -> None:
        if not self.running and self.spawner is not None:
            self.running = True
            self.spawner.start_soon(self._send)

    async def _send(self) -> None:
        connection = self.connection
        stream = self.stream
        try:
            with trio.CancelScope() as self.scope:
                while True:
                    if self.resume:
                        self.resume = False
                        connection.receive_data(b"", trio.current_time())
                        self._changed()
                    data = connection.data_to_send(trio.current_time())
                    if data:
                        await stream.send_all(data)
                        continue
                    if self.resume:
                        continue
                    if connection.closed:
                        await self._finish()
                    return
        except _LOST as exc:
            _lost(connection, exc)
        except Exception:
            connection.internal_error(trio.current_time())
            if self.reading is not None:  # the connection is over: no lingering
                self.reading.cancel()
        finally:
            self.scope = None
            self.running = False
            for event in (self.finished, self.changed):  # nobody waits for a gone writer
                if event is not None:
                    event.set()

    async def _finish(self) -> None:
        """The last bytes are sent: half-close, and let the reader linger for the
        client's close, unless the whole broker is stopping."""
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            await self.stream.send_eof()
        if self.connection.broker.shutting_down and self.reading is not None:
            self.reading.cancel()

    def _changed(self) -> None:
        if self.changed is not None:
            self.changed.set()

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        """Wait until `ready()`, checked whenever the connection resumes or closes."""
        try:
            while not ready():
                self.changed = trio.Event()
                await self.changed.wait()
        finally:
            self.changed = None

    async def wait_until_sent(self, deadline: float) -> None:
        """Let a running writer finish its last bytes, until `deadline`."""
        if self.running:
            self.finished = trio.Event()
            with trio.move_on_at(deadline):
                await self.finished.wait()

    def stop(self) -> None:
        self.spawner = None
        if self.scope is not None:
            self.scope.cancel()


async def serve_stream(stream: trio.abc.Stream, broker: Broker, spawner: trio.Nursery,
                       counters: ListenerCounters, security: ConnectionSecurity) -> None:
    """Run one client connection to its end; never raises.

    This task reads: until the client closes, or the deadline of `reading`
    passes (the keepalive, or the close grace; for a held publisher, the stall
    check of the queue it waits for, after which it reads on). `spawner` is a
    nursery that outlives the connection (the server's), where its writer runs
    while there is output; `counters` are its listener's, and `security` what
    the listener knows of the client (which listener, its certificate's name)
    and where its credentials are checked. One function, not a reader helper:
    each coroutine frame is memory every idle client holds.
    """
    connection = connection_type(broker.config)(
        broker, peer_name(stream), trio.current_time(), counters=counters,
        listener=security.listener, identity=security.identity)
    writer = _Writer(stream, connection, spawner)
    connection.on_output = writer.on_output
    connection.on_resume = writer.on_resume
    try:
        ended = eof = False
        while not ended:
            ended = True
            with trio.CancelScope() as reading:
                writer.reading = reading
                while True:
                    if not connection.closed:
                        reading.deadline = connection.read_deadline(trio.current_time())
                    if eof:  # what the client sent before its close is still being handled
                        if connection.closed:
                            break
                        await writer.wait_until(lambda: connection.closed)
                        continue
                    if not connection.wants_input:
                        await writer.wait_until(
                            lambda: connection.wants_input or connection.closed)
                        continue
                    try:
                        data = await stream.receive_some(RECEIVE_SIZE)
                    except _LOST as exc:
                        _lost(connection, exc)
                        break
                    if not data:
                        eof = True
                        connection.input_ended(trio.current_time())
                        continue
                    connection.receive_data(data, trio.current_time())
                    if connection.pending_connect is not None:  # security: off the loop
                        await security.logins.check(connection, reading.deadline)
            writer.reading = None
            if reading.cancelled_caught and not connection.closed:
                connection.read_deadline_expired(trio.current_time())
                ended = connection.closed
        await writer.wait_until_sent(trio.current_time() + CLOSE_GRACE)
    except Exception:  # a fault domain: an error of ours ends this connection, nothing else
        connection.internal_error(trio.current_time())
    finally:
        writer.stop()
        try:
            connection.connection_lost(trio.current_time())
        except Exception:
            connection.internal_error(trio.current_time())
        await trio.aclose_forcefully(stream)


def _lost(connection: Connection, exc: BaseException) -> None:
    connection.close(trio.current_time(), f"connection lost: {exc or type(exc).__name__}")

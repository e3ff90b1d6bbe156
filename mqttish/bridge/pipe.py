"""A byte stream between two tasks of one process, bounded, for the bridge's local link.

`pipe(name)` returns two connected `trio.abc.HalfCloseableStream`s: what one
end sends, the other receives. Each direction buffers at most `limit` bytes;
a sender waits beyond that, as it would on a socket whose peer does not read.
`cut()` ends both directions at once: the receiving ends see the end of the
stream, senders get BrokenResourceError, as when a network connection drops.
"""

from __future__ import annotations

import trio

PIPE_LIMIT = 256 * 1024  # bytes buffered per direction


class _Direction:
    """The bytes going one way."""

    __slots__ = ("broken", "data", "eof", "limit", "readers", "writers")

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit
        self.eof = False  # the sender is done: the receiver gets b"" once the data is read
        self.broken = False  # the receiver is gone: sending fails
        self.readers = trio.lowlevel.ParkingLot()
        self.writers = trio.lowlevel.ParkingLot()

    def end(self) -> None:
        self.eof = self.broken = True
        self.readers.unpark_all()
        self.writers.unpark_all()


class PipeEnd(trio.abc.HalfCloseableStream):
    """One end of a `pipe`. `peer` names the other end in log lines."""

    def __init__(self, incoming: _Direction, outgoing: _Direction, peer: str) -> None:
        self._incoming = incoming
        self._outgoing = outgoing
        self.peer = peer
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        outgoing = self._outgoing
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closed or (outgoing.eof and not outgoing.broken):
                raise trio.ClosedResourceError("this end of the pipe is closed")
            if outgoing.broken:
                raise trio.BrokenResourceError("the other end of the pipe is gone")
            if len(outgoing.data) < outgoing.limit:
                break
            await outgoing.writers.park()
        outgoing.data += data
        outgoing.readers.unpark_all()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        outgoing = self._outgoing
        while len(outgoing.data) >= outgoing.limit and not outgoing.broken:
            await outgoing.writers.park()
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        self._outgoing.eof = True
        self._outgoing.readers.unpark_all()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        incoming = self._incoming
        await trio.lowlevel.checkpoint_if_cancelled()
        while not incoming.data and not incoming.eof:
            if self._closed:
                raise trio.ClosedResourceError("this end of the pipe is closed")
            await incoming.readers.park()
        size = len(incoming.data) if max_bytes is None else min(max_bytes, len(incoming.data))
        chunk = bytes(incoming.data[:size])
        del incoming.data[:size]
        incoming.writers.unpark_all()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return chunk

    def cut(self) -> None:
        """End the link both ways at once, from outside either end's tasks."""
        self._incoming.end()
        self._outgoing.end()

    async def aclose(self) -> None:
        self._closed = True
        self.cut()
        await trio.lowlevel.checkpoint()


def pipe(name: str, limit: int = PIPE_LIMIT) -> tuple[PipeEnd, PipeEnd]:
    """Two connected ends; each one's `peer` is `name`."""
    forth, back = _Direction(limit), _Direction(limit)
    return PipeEnd(back, forth, name), PipeEnd(forth, back, name)

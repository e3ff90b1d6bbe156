"""Plain TCP clients served from one task, in the order their bytes arrived.

Theory of operation. A trio task per connection costs several KiB (the task,
its coroutine frame, a cancel scope, trio's socket objects) and two task
switches per message, and trio runs the tasks woken by one poll in an order
of its own: input from two clients could take effect in the opposite order
from the one it arrived in (a SUBSCRIBE sent before another client's PUBLISH
would miss it). So plain TCP sockets get no task of their own. They are
registered with an epoll object of ours, whose file descriptor trio watches
(`trio.lowlevel.wait_readable`), and one task, `Multiplexer.run`, serves them:

1. it takes the ready sockets in the order the kernel reports them, which is
   the order they became ready, and reads at most one chunk from each, which
   its sans-IO `Connection` handles at once;
2. after each chunk, it sends the output that chunk made ready, with
   non-blocking sends, in the order it was made (a message's deliveries, then
   its PUBACK), before it reads the next socket: deliveries and
   acknowledgements always go out before more input is taken, and a
   subscriber whose acknowledgements reopened its window gets its next
   messages while the publishers are read;
3. connections that go on with input they read before (a publisher released
   by a drained queue, or one catching up after a hold, which goes in turns of
   PACKETS_PER_TURN) go next, and between their turns the subscribers whose
   acknowledgements have arrived are read (`_serve_consumers_if_due`): ten
   publishers catching up take milliseconds, and a window of 20 in flight
   must not stay shut that long;
4. then it sleeps until a socket is ready (trio's poll answers at once if one
   already is), a deadline passes, or another task gives one of its connections
   output (which cancels the sleep); with work left over, it only lets other
   trio tasks run before it goes round again.

A socket that cannot take all its output is also watched for writability;
until it drains, its client's deliveries wait in the session queue, which is
what bounds them and what tells backpressure whether the client is making
progress. A connection that does not want input (its PUBLISH is held by a
full queue, or it does not read its replies) is not watched for readability:
TCP pushes back on the client. Deadlines (connect timeout, keepalive, a held
publisher's stall check, the close grace) live in a heap, one entry per
connection, moved lazily.

Closing follows transport/stream.py: the last bytes, then a half-close,
then reading and discarding until the client closes (at most CLOSE_GRACE
seconds), so that unread input does not turn the close into a reset.

TLS and WebSocket connections keep a task each (transport/stream.py), as
do all connections where there is no epoll (not Linux).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import math
import select
import socket

import trio

from mqttish.auth.gate import LoginGate
from mqttish.auth.throttle import ConnectionRate
from mqttish.core.broker import Broker
from mqttish.core.connection import Connection
from mqttish.core.packet_log import connection_type
from mqttish.transport.listeners import ACCEPT_RETRY, CAPACITY_ERRNOS, ListenerStats
from mqttish.transport.stream import CLOSE_GRACE, RECEIVE_SIZE

log = logging.getLogger("mqttish.multiplexer")

AVAILABLE = hasattr(select, "epoll")
MAX_EVENTS = 1024  # sockets handled per round
# Between turns of buffered input, subscribers whose acknowledgements arrived are read
# if the last poll is this old (seconds): see `_serve_consumers_if_due`.
CONSUMERS_EVERY = 0.0001
ACCEPT_BATCH = 64  # connections accepted per listener per round

_IN = getattr(select, "EPOLLIN", 1)
_OUT = getattr(select, "EPOLLOUT", 4)
_FAILED = getattr(select, "EPOLLERR", 8) | getattr(select, "EPOLLHUP", 16)
# accept() errors that concern only the client that gave up meanwhile.
_CLIENT_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}


class _Listener:
    """A listening socket, its connection limit, its figures and its index (whose
    security settings apply to its clients)."""

    __slots__ = ("index", "limit", "sock", "stats")

    def __init__(self, sock: socket.socket, limit: int, stats: ListenerStats,
                 index: int) -> None:
        self.sock = sock
        self.limit = limit
        self.stats = stats
        self.index = index


class _Slot:
    """One client socket and its sans-IO connection."""

    __slots__ = ("checking", "closed", "closing_at", "connection", "deadline", "eof", "fd",
                 "lingering", "mask", "mux", "pending", "resume", "scheduled", "sock", "stats",
                 "timer")

    def __init__(self, mux: Multiplexer, sock: socket.socket, stats: ListenerStats) -> None:
        self.mux = mux
        self.sock = sock
        self.fd = sock.fileno()
        self.stats = stats
        self.connection: Connection  # set right after, with these callbacks
        self.mask = _IN  # what epoll watches for
        self.pending: memoryview | None = None  # output the socket has not taken yet
        self.resume = False  # the connection asked to go on with its buffered input
        self.scheduled = False  # in the multiplexer's work list
        self.deadline = math.inf
        self.timer = math.inf  # when its heap entry is due
        self.closing_at = math.inf  # end of the close grace, once the connection closed
        self.lingering = False  # half-closed: reading until the client closes
        self.eof = False  # the client closed its side
        self.closed = False  # the socket is closed and forgotten
        self.checking = False  # its CONNECT's credentials are being checked off the loop

    def output_ready(self) -> None:
        self.mux.schedule(self)

    def input_ready(self) -> None:
        if not self.resume:
            self.resume = True
            self.mux.resumed.append(self)
        self.mux.schedule(self)


class Multiplexer:
    """Serves the plain TCP connections of every `mqtt` listener from one task.

    `logins` checks credentials that need a worker thread (a password hash), in a
    task of its own per login; `connection_rate` refuses addresses that connect
    too often.
    """

    def __init__(self, broker: Broker, logins: LoginGate,
                 connection_rate: ConnectionRate | None = None) -> None:
        self.broker = broker
        self.logins = logins
        self.connection_rate = connection_rate
        self._checks: trio.Nursery | None = None  # where login checks run
        self._epoll = select.epoll()
        self._slots: dict[int, _Slot] = {}
        self._listeners: dict[int, _Listener] = {}
        self._work: list[_Slot] = []
        # Connections that may go on with their input (a full queue released them):
        # they go before the next socket is read, see `_serve_resumed`.
        self.resumed: list[_Slot] = []
        self._timers: list[tuple[float, int, _Slot | _Listener]] = []
        self._sequence = itertools.count()
        self._wake = trio.CancelScope()  # cancelled to wake the task, see `run`
        self._polled_at = 0.0  # when the epoll was last asked for ready sockets
        self._sleeping = False
        self._closed_all: trio.Event | None = None  # made when someone waits for it

    @property
    def connections(self) -> int:
        return len(self._slots)

    def add_listener(self, sock: socket.socket, limit: int, stats: ListenerStats,
                     index: int) -> None:
        """Accept on `sock` (a listening socket now ours), up to `limit` open (0: any),
        for listener number `index`."""
        sock.setblocking(False)
        self._listeners[sock.fileno()] = _Listener(sock, limit, stats, index)
        self._epoll.register(sock.fileno(), _IN)

    def stop_accepting(self) -> None:
        for fd, listener in list(self._listeners.items()):
            self._epoll_forget(fd)
            listener.sock.close()
        self._listeners.clear()

    async def wait_closed(self) -> None:
        """Wait until every connection is gone (at shutdown)."""
        if self._slots:
            self._closed_all = trio.Event()
            await self._closed_all.wait()

    def schedule(self, slot: _Slot) -> None:
        """The connection has output, or input to go on with: serve it this round."""
        if not slot.scheduled and not slot.closed:
            slot.scheduled = True
            self._work.append(slot)
            if self._sleeping:
                self._sleeping = False
                self._wake.cancel()

    # ------------------------------------------------------------------ the task

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        try:
            async with trio.open_nursery() as self._checks:
                task_status.started()
                while True:
                    # A scope lives until a deadline or `schedule()` cancels it, not one
                    # per sleep: entering and leaving one cost a third of a wake-up.
                    with trio.CancelScope() as self._wake:
                        await self._serve()
        finally:
            for slot in list(self._slots.values()):
                self._close(slot, trio.current_time())
            self.stop_accepting()
            self._epoll.close()

    async def _serve(self) -> None:
        """Serve rounds until `self._wake` is cancelled."""
        poll = self._epoll.poll
        timers = self._timers
        wake = self._wake
        epoll_fd = self._epoll.fileno()
        while True:
            events = poll(0, MAX_EVENTS)
            now = self._polled_at = trio.current_time()
            for fd, mask in events:
                self._handle(fd, mask, now)
                if self.resumed:
                    self._serve_resumed(now)
                if self._work:
                    self._serve_work(now)
            if timers and timers[0][0] <= now:
                self._expire(now)
            if self._work:
                self._serve_work(now)
            if self.resumed:
                self._serve_resumed(now)
            if self._work:
                await trio.lowlevel.checkpoint()
                continue
            # Sleep after a busy round too: trio's poll says at once if more is ready,
            # where a checkpoint and a poll of ours would cost a pass more.
            deadline = timers[0][0] if timers else math.inf
            if wake.deadline != deadline:
                wake.deadline = deadline
            self._sleeping = True
            try:
                await trio.lowlevel.wait_readable(epoll_fd)
            finally:
                self._sleeping = False

    # ------------------------------------------------------------------ events

    def _handle(self, fd: int, mask: int, now: float) -> None:
        slot = self._slots.get(fd)
        if slot is None:
            listener = self._listeners.get(fd)
            if listener is not None:
                self._accept(listener, now)
            return
        try:
            if mask & _OUT and slot.pending is not None:
                self._send(slot, now)
            if mask & _IN:
                if not slot.resume:  # (else its buffered input goes first)
                    self._read(slot, now)
            elif mask & _FAILED:  # not reading, and the socket failed: nothing more to do
                slot.connection.close(now, "connection lost")
                self._close(slot, now)
            if not slot.closed and not slot.scheduled:  # (if it is, the work updates it)
                self._update(slot, now)
        except Exception:  # a fault domain: an error of ours ends this connection only
            self._internal_error(slot, now)

    def _read(self, slot: _Slot, now: float) -> None:
        connection = slot.connection
        try:
            data = slot.sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            connection.close(now, f"connection lost: {exc.strerror or exc}")
            self._close(slot, now)
            return
        if not data:
            slot.eof = True
            if connection.closed:
                self._close(slot, now)
            else:
                connection.input_ended(now)  # what it sent before is still handled
            return
        connection.receive_data(data, now)  # discarded if it is closed (lingering)
        if connection.pending_connect is not None and not slot.checking:
            slot.checking = True
            assert self._checks is not None
            self._checks.start_soon(self._check_login, slot)

    async def _check_login(self, slot: _Slot) -> None:
        """Have a CONNECT's credentials checked off the event loop, then go on with it."""
        try:
            await self.logins.check(slot.connection, slot.deadline)
        except Exception:
            self._internal_error(slot, trio.current_time())
            return
        slot.checking = False
        self.schedule(slot)

    def _serve_resumed(self, now: float) -> None:
        """Let released publishers go on at once, in the order their queue released
        them: a publisher whose socket is read first would otherwise take the room a
        drained queue made every time, and never wait its turn (one of ten flooding
        publishers got 40 times the others' share). Their output goes with the work."""
        resumed, self.resumed = self.resumed, []
        for slot in resumed:
            if slot.closed or not slot.resume:
                continue
            slot.resume = False
            try:
                slot.connection.receive_data(b"", now)
            except Exception:
                self._internal_error(slot, now)
            self._serve_consumers_if_due()

    def _serve_consumers_if_due(self) -> None:
        """Between turns of buffered input (PACKETS_PER_TURN each), read the sockets of
        clients whose acknowledgements the broker waits for, and send what that made
        ready: ten released publishers' turns take milliseconds, and a subscriber's
        window must not stay shut meanwhile. Others wait for the next round."""
        now = trio.current_time()
        if now - self._polled_at < CONSUMERS_EVERY:
            return
        self._polled_at = now
        for fd, mask in self._epoll.poll(0, MAX_EVENTS):
            slot = self._slots.get(fd)
            if slot is None or slot.resume or not mask & _IN \
                    or not slot.connection.answers_due:
                continue  # the others wait for the next round
            self._handle(fd, mask, now)
            if slot.scheduled and slot.pending is None and not slot.closed:
                try:
                    self._send(slot, now)
                except Exception:
                    self._internal_error(slot, now)

    def _serve_work(self, now: float) -> None:
        work, self._work = self._work, []
        for slot in work:
            slot.scheduled = False
            if slot.closed:
                continue
            went_on = slot.resume
            try:
                if went_on:
                    slot.resume = False
                    slot.connection.receive_data(b"", now)
                if slot.pending is None and not slot.resume:  # (else after its last turn)
                    self._send(slot, now)
                if not slot.closed:
                    self._update(slot, now)
            except Exception:
                self._internal_error(slot, now)
            if went_on:
                self._serve_consumers_if_due()

    def _send(self, slot: _Slot, now: float) -> None:
        """Send pending output, then whatever the connection has ready, until the
        socket would block."""
        connection = slot.connection
        send = slot.sock.send
        while True:
            pending = slot.pending
            data: memoryview | bytes
            if pending is None:
                data = connection.data_to_send(now)
                if not data:
                    return
            else:
                data = pending
            try:
                sent = send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                slot.pending = None
                connection.close(now, f"connection lost: {exc.strerror or exc}")
                self._close(slot, now)
                return
            if sent < len(data):
                slot.pending = memoryview(data)[sent:]
                return
            slot.pending = None
            if pending is None:
                return  # (`data_to_send` gave everything it had)

    def _update(self, slot: _Slot, now: float) -> None:
        """Watch the socket for what the connection needs now, and set its deadline."""
        connection = slot.connection
        if connection.closed:
            if slot.closing_at == math.inf:
                slot.closing_at = now + CLOSE_GRACE
                if slot.pending is None:
                    self._send(slot, now)  # the last bytes, a DISCONNECT with the reason
                    if slot.closed:
                        return
            if slot.pending is None and not slot.lingering:
                if slot.eof or self.broker.shutting_down:
                    self._close(slot, now)
                    return
                try:
                    slot.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    self._close(slot, now)
                    return
                slot.lingering = True
            want = _IN | (_OUT if slot.pending is not None else 0)
            deadline = slot.closing_at
        else:
            # A connection that goes on with buffered input next (`resume`) stays
            # watched: it is read after its turn, and not registered again every turn.
            want = (_IN if (connection.wants_input or slot.resume) and not slot.eof else 0) | (
                _OUT if slot.pending is not None else 0)
            deadline = connection.read_deadline(now)
        if want != slot.mask:
            self._epoll.modify(slot.fd, want)
            slot.mask = want
        slot.deadline = deadline
        if deadline < slot.timer:
            slot.timer = deadline
            heapq.heappush(self._timers, (deadline, next(self._sequence), slot))

    # ------------------------------------------------------------------ deadlines

    def _expire(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, item = heapq.heappop(timers)
            if type(item) is _Listener:
                self._resume_accepting(item)
                continue
            slot: _Slot = item  # type: ignore[assignment]
            if slot.closed or when != slot.timer:
                continue  # superseded by an earlier entry, or gone
            slot.timer = math.inf
            if slot.deadline > now:  # it moved on since: come back then
                slot.timer = slot.deadline
                heapq.heappush(timers, (slot.deadline, next(self._sequence), slot))
                continue
            try:
                if slot.connection.closed:
                    slot.connection.close(now, "close grace over")
                    self._close(slot, now)
                    continue
                slot.connection.read_deadline_expired(now)
                self._update(slot, now)
            except Exception:
                self._internal_error(slot, now)

    # ------------------------------------------------------------------ sockets

    def _accept(self, listener: _Listener, now: float) -> None:
        stats = listener.stats
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = listener.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _CLIENT_GONE:
                    continue
                log.error("cannot accept on %s (%s): retrying in %.1f s", stats.name,
                          exc.strerror or exc, ACCEPT_RETRY)
                if exc.errno in CAPACITY_ERRNOS:
                    self._epoll_forget(listener.sock.fileno())
                    heapq.heappush(self._timers,
                                   (now + ACCEPT_RETRY, next(self._sequence), listener))
                return
            peer = f"{address[0]}:{address[1]}"
            rate = self.connection_rate
            if rate is not None and not rate.admit(str(address[0]), now):
                stats.refused += 1
                log.info("refusing %s: more than max_connection_rate (%g/s)", peer, rate.rate)
                sock.close()
                continue
            if listener.limit and stats.open >= listener.limit:
                stats.refused += 1
                log.warning("refusing %s: listener %s at max_connections (%d)", peer,
                            stats.name, listener.limit)
                sock.close()
                continue
            self._add(sock, peer, listener, now)

    def _resume_accepting(self, listener: _Listener) -> None:
        if listener.sock.fileno() in self._listeners:
            self._epoll.register(listener.sock.fileno(), _IN)

    def _add(self, sock: socket.socket, peer: str, listener: _Listener, now: float) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stats = listener.stats
        slot = _Slot(self, sock, stats)
        slot.connection = connection_type(self.broker.config)(
            self.broker, peer, now, on_output=slot.output_ready, counters=stats,
            on_resume=slot.input_ready, listener=listener.index)
        self._slots[slot.fd] = slot
        self._epoll.register(slot.fd, _IN)
        stats.accepted += 1
        stats.open += 1
        self.broker.metrics.sockets_opened += 1
        self._update(slot, now)

    def _close(self, slot: _Slot, now: float) -> None:
        """Forget a socket; its connection ends now if it had not yet."""
        if slot.closed:
            return
        slot.closed = True
        slot.pending = None
        del self._slots[slot.fd]
        self._epoll_forget(slot.fd)
        slot.sock.close()
        slot.stats.open -= 1
        try:
            slot.connection.connection_lost(now)
        except Exception:
            slot.connection.internal_error(now)
        if not self._slots and self._closed_all is not None:
            self._closed_all.set()

    def _internal_error(self, slot: _Slot, now: float) -> None:
        slot.connection.internal_error(now)  # logged with its traceback, and counted
        self._close(slot, now)

    def _epoll_forget(self, fd: int) -> None:
        with contextlib.suppress(OSError, ValueError):  # not registered, or already closed
            self._epoll.unregister(fd)

"""The load generator: one scenario against one broker, results as JSON lines on stdout.

    python -m bench.loadgen --scenario fan-in-qos0 --port 1883 --broker-pid 1234 [--smoke]

The harness runs it pinned to the load CPU. Theory of operation:

* Plain non-blocking sockets and one `selectors` loop; no framework between
  the generator and the kernel. Publishers build whole batches of PUBLISH
  packets with one `struct.pack` per packet and hand them to `send` at once.
* Every payload is 64 bytes: send time (`time.monotonic_ns`, which all
  processes of the machine share), publisher number and sequence number, then
  padding. The subscriber keeps one bitmap per publisher, so it counts unique
  messages, duplicates and reordering exactly, and loss is sent - unique.
* End-to-end flow control lives in this one process: a publisher may have at
  most `window` messages that the subscriber has not seen yet, read straight
  from the subscriber's per-publisher "highest sequence seen" counter. Loss
  cannot stall a window forever: when a publisher sees no progress for
  `stall` seconds, its outstanding messages are written off (they still count
  as lost, from the bitmaps) and it goes on.
* Timeline: connect and subscribe, `warmup` seconds of load, `duration`
  seconds measured (CPU of the broker and of this process are read from /proc
  at both ends), then the load stops and stragglers get up to `drain` seconds.
* Output: `{"event": "measuring", ...}` when the measured window opens (the
  harness starts the profiler then), `{"event": "measured"}` when a window
  of no set length closes (it stops the profiler), and finally
  `{"result": {...}}`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from bench import mqtt, store_metrics
from bench.auth_files import BENCH_PASSWORD, BENCH_USER
from bench.procstat import CpuMeter, raise_fd_limit, rss_kib
from bench.scenarios import AUTH, SCENARIOS, Params, params_for

HOST = "127.0.0.1"
RECV_SIZE = 1 << 18
LINGER_RESET = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT piles up between runs
SATURATED = 90.0  # percent of its core above which the generator is the bottleneck
COALESCE_BYTES = 32768
COALESCE_SLEEP = 0.0005
SNDBUF_FLOOD = 65536  # bytes: a flooding publisher's socket send buffer

Result = dict[str, Any]


class SetupError(Exception):
    """The broker refused or dropped a client while the scenario was being set up."""


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


# ---------------------------------------------------------------------------- sockets


def open_socket(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    return sock


def open_client(port: int, client_id: str, timeout: float = 10.0, clean: bool = True,
                login: tuple[str, str] | None = None) -> socket.socket:
    """A connected MQTT client socket (blocking, CONNACK received)."""
    sock = open_socket(port, timeout)
    username, password = login or (None, None)
    sock.sendall(mqtt.connect(client_id, clean=clean, username=username, password=password))
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        if not chunk:
            raise SetupError(f"{client_id}: connection closed before CONNACK")
        connack += chunk
    if connack[0] != mqtt.CONNACK or connack[3] != 0:
        raise SetupError(f"{client_id}: CONNECT refused: {connack.hex()}")
    return sock


class Endpoint:
    """A non-blocking socket with an output buffer; `loop` keeps its selector interest."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()
        self.closed = False
        self.loop: Loop | None = None

    def send(self, data: bytes) -> None:
        if self.out:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.closed = True
            return
        if sent < len(data):
            self.out += data[sent:]
            if self.loop is not None:
                self.loop.want_write(self, True)

    def flush(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.closed = True
            sent = len(self.out)
        del self.out[:sent]
        if not self.out and self.loop is not None:
            self.loop.want_write(self, False)

    def on_readable(self, now_ns: int) -> None:
        raise NotImplementedError

    def receive(self) -> bytes:
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self.closed = True
            if self.loop is not None:
                self.loop.remove(self)
        elif self.loop is not None:
            self.loop.received += len(data)
        return data

    def close(self) -> None:
        if self.loop is not None:
            self.loop.remove(self)
        self.sock.close()


class Loop:
    """A selector over endpoints: read interest always, write interest while output waits."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.polls = 0
        self.received = 0  # bytes read by all endpoints

    def add(self, endpoint: Endpoint) -> None:
        endpoint.sock.setblocking(False)
        endpoint.loop = self
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if endpoint.out else 0)
        self.selector.register(endpoint.sock, events, endpoint)

    def remove(self, endpoint: Endpoint) -> None:
        if endpoint.loop is self:
            endpoint.loop = None
            self.selector.unregister(endpoint.sock)

    def want_write(self, endpoint: Endpoint, wanted: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wanted else 0)
        self.selector.modify(endpoint.sock, events, endpoint)

    def poll(self, timeout: float) -> None:
        events = self.selector.select(max(timeout, 0.0))
        self.polls += 1
        now_ns = time.monotonic_ns()
        for key, mask in events:
            endpoint: Endpoint = key.data
            if mask & selectors.EVENT_WRITE and endpoint.loop is self:
                endpoint.flush()
            if mask & selectors.EVENT_READ and endpoint.loop is self:
                endpoint.on_readable(now_ns)


# ---------------------------------------------------------------------------- clients


class Subscriber(Endpoint):
    """Receives benchmark PUBLISH packets and keeps exact per-publisher books."""

    def __init__(self, sock: socket.socket, publishers: int) -> None:
        super().__init__(sock)
        self.buffer = bytearray()
        self.received = 0  # PUBLISH packets, duplicates included
        self.retained = 0  # of which with the RETAIN flag
        self.duplicates = 0
        self.reordered = 0  # arrived after a later message of the same publisher
        self.unique = [0] * publishers
        self.top = [-1] * publishers  # highest sequence number seen, per publisher
        self.seen = [bytearray(1 << 16) for _ in range(publishers)]
        self.latencies: list[int] | None = None  # ns, while recording
        self.sample_every = 1  # record the latency of messages whose seq is a multiple of this
        self.subacks: list[bytes] = []
        self.unexpected = 0  # packets other than PUBLISH and SUBACK

    def subscribe(self, topic_filter: str, qos: int) -> None:
        self.send(mqtt.subscribe(1 + len(self.subacks), topic_filter, qos))

    def total_unique(self) -> int:
        return sum(self.unique)

    def on_readable(self, now_ns: int) -> None:
        data = self.receive()
        if data:
            self.feed(data, now_ns)

    def feed(self, data: bytes, now_ns: int) -> None:
        buf = self.buffer
        buf += data
        n = len(buf)
        pos = 0
        unpack = mqtt.STAMP.unpack_from
        seen, top, unique = self.seen, self.top, self.unique
        latencies, sample = self.latencies, self.sample_every
        pubacks = mqtt.PUBACKS
        acks: list[bytes] = []
        received = duplicates = reordered = retained = 0
        while n - pos >= 2:
            kind = buf[pos]
            length = buf[pos + 1]
            head = pos + 2
            if length & 0x80:
                decoded = _long_length(buf, pos)
                if decoded is None:
                    break
                length, head = decoded
            end = head + length
            if end > n:
                break
            if kind & 0xF0 == 0x30:
                p = head + 2 + (buf[head] << 8 | buf[head + 1])
                if kind & 0x06:
                    acks.append(pubacks[buf[p] << 8 | buf[p + 1]])
                    p += 2
                retained += kind & 1
                sent_ns, publisher, seq = unpack(buf, p)
                bits = seen[publisher]
                while seq >= len(bits):
                    bits.extend(bytes(len(bits)))
                if bits[seq]:
                    duplicates += 1
                else:
                    bits[seq] = 1
                    unique[publisher] += 1
                    if seq < top[publisher]:
                        reordered += 1
                    else:
                        top[publisher] = seq
                if latencies is not None and not seq % sample:
                    latencies.append(now_ns - sent_ns)
                received += 1
            elif kind == mqtt.SUBACK:
                self.subacks.append(bytes(buf[head + 2:end]))
            else:
                self.unexpected += 1
            pos = end
        del buf[:pos]
        self.received += received
        self.duplicates += duplicates
        self.reordered += reordered
        self.retained += retained
        if acks:
            self.send(b"".join(acks))


def _long_length(buf: bytearray, pos: int) -> tuple[int, int] | None:
    """(remaining length, offset of the body) of the packet at `pos`; None if incomplete."""
    length, shift, index = 0, 0, pos + 1
    while index < len(buf):
        byte = buf[index]
        length |= (byte & 0x7F) << shift
        index += 1
        if not byte & 0x80:
            return length, index
        shift += 7
    return None


class AckBook:
    """Which QoS 1 PUBLISH of one publisher were acknowledged, and how long each waited.

    A PUBACK names a packet id, and packet id `seq % 65535 + 1` is unique among
    the (at most a few hundred) messages in flight, so each maps back to its
    sequence number exactly. Brokers must acknowledge in order [MQTT-4.6.0-2];
    a batch of PUBACKs whose first and last ids are the expected ones is booked
    with one slice assignment, anything else one by one.

    The wait of a message is from the moment the generator handed its batch to
    the socket to the moment its PUBACK was read: a broker that holds a
    publisher back, by not reading it or by not acknowledging, makes it longer.
    """

    def __init__(self) -> None:
        self.acked = bytearray(1 << 12)  # 1 per acknowledged sequence number
        self.count = 0  # PUBACKs booked
        self.low = 0  # every sequence number below this one is acknowledged
        self.sent = 0
        self.batches: deque[tuple[int, int]] = deque()  # (end seq, sent ns), not all acked
        self.max_wait_ns = 0
        self.out_of_order = 0
        self.unknown = 0  # PUBACKs for nothing in flight (or duplicates)
        self.waits: list[int] | None = None  # ns per batch, while recording

    def on_sent(self, count: int, now_ns: int) -> None:
        self.sent += count
        self.batches.append((self.sent, now_ns))
        while self.sent > len(self.acked):
            self.acked.extend(bytes(len(self.acked)))

    def on_pubacks(self, data: bytes | bytearray, now_ns: int) -> None:
        """Book `data`, a run of whole 4-byte PUBACK packets."""
        n = len(data) >> 2
        low = self.low
        first = data[2] << 8 | data[3]
        last = data[-2] << 8 | data[-1]
        if (low + n <= self.sent and first == low % 0xFFFF + 1
                and last == (low + n - 1) % 0xFFFF + 1 and not self.out_of_order):
            self.acked[low:low + n] = bytes([1]) * n
            self.low = low + n
            self.count += n
        else:
            self._one_by_one(data)
        batches = self.batches
        while batches and batches[0][0] <= self.low:
            wait = now_ns - batches.popleft()[1]
            if wait > self.max_wait_ns:
                self.max_wait_ns = wait
            if self.waits is not None:
                self.waits.append(wait)

    def _one_by_one(self, data: bytes | bytearray) -> None:
        acked, low, sent = self.acked, self.low, self.sent
        for i in range(2, len(data), 4):
            pid = data[i] << 8 | data[i + 1]
            seq = low + (pid - 1 - low) % 0xFFFF
            if seq >= sent or acked[seq]:
                self.unknown += 1
                continue
            if seq != low:
                self.out_of_order += 1
            acked[seq] = 1
            self.count += 1
            while low < sent and acked[low]:
                low += 1
        self.low = low

    def longest_wait_ns(self, now_ns: int) -> int:
        """The longest wait so far, counting a message still waiting at `now_ns`."""
        waiting = now_ns - self.batches[0][1] if self.batches else 0
        return max(self.max_wait_ns, waiting)

    def lost(self, seen: bytearray) -> int:
        """Acknowledged messages that are not marked in `seen` (a subscriber's bitmap)."""
        size = len(self.acked)
        seen_part = bytes(seen[:size]).ljust(size, b"\0")
        acked = int.from_bytes(self.acked, "little")
        return (acked & ~int.from_bytes(seen_part, "little")).bit_count()


class Publisher(Endpoint):
    """Sends batches of benchmark PUBLISH packets; counts PUBACKs at QoS 1.

    With an `AckBook` (`book=True`), it also knows which PUBLISH were
    acknowledged and how long each waited.
    """

    def __init__(self, sock: socket.socket, number: int, topic: str, qos: int,
                 book: bool = False) -> None:
        super().__init__(sock)
        self.number = number
        self.qos = qos
        self.book = AckBook() if book else None
        head = mqtt.publish_head(topic, qos)
        pad = len(mqtt.PADDING)
        packet_id = "H" if qos else ""
        # One pack() per packet: head, [packet id], send time, publisher, seq, padding.
        self.packer = struct.Struct(f">{len(head)}s{packet_id}QIQ{pad}x")
        self.head = head
        self.sent = 0
        self.acked = 0
        self.base = 0  # messages up to here are seen by the subscriber (or written off)
        self.progress_at = time.monotonic()
        self.acked_at = self.progress_at
        self._acked_before = 0
        self.written_off = 0
        self.ack_stalls = 0
        self.buffer = bytearray()
        self.next_at = 0.0  # for paced publishing

    def publish(self, count: int, now_ns: int) -> None:
        pack, head, number, start = self.packer.pack, self.head, self.number, self.sent
        if self.qos:
            data = b"".join([pack(head, seq % 0xFFFF + 1, now_ns, number, seq)
                             for seq in range(start, start + count)])
        else:
            data = b"".join([pack(head, now_ns, number, seq)
                             for seq in range(start, start + count)])
        self.sent += count
        if self.book is not None:
            self.book.on_sent(count, now_ns)
        self.send(data)

    def on_readable(self, now_ns: int) -> None:
        data = self.receive()
        if not data:
            return
        buf = self.buffer
        buf += data
        whole = len(buf) & ~3
        acks = buf.count(b"\x40\x02", 0, whole)  # PUBACKs are the only thing a publisher gets
        if acks * 4 != whole:
            pubacks = [p for p in mqtt.PacketSplitter().feed(bytes(buf[:whole]))
                       if p.kind == mqtt.PUBACK]
            acks = len(pubacks)
            if self.book is not None and pubacks:
                self.book.on_pubacks(b"".join(bytes([mqtt.PUBACK, 2]) + p.body
                                              for p in pubacks), now_ns)
        elif self.book is not None and whole:
            self.book.on_pubacks(buf[:whole], now_ns)
        del buf[:whole]
        self.acked += acks

    def check_acks(self, now: float, stall: float) -> int:
        """PUBLISH not yet acknowledged; written off (and counted) after a stall."""
        if self.acked != self._acked_before:
            self._acked_before, self.acked_at = self.acked, now
        unacked = self.sent - self.acked
        if not unacked:
            self.acked_at = now
        elif now - self.acked_at > stall:
            self.ack_stalls += 1  # the broker owes PUBACKs: go on, and report it
            self.acked = self._acked_before = self.sent
            self.acked_at = now
            unacked = 0
        return unacked

    def update_progress(self, seen_upto: int, now: float, stall: float) -> None:
        """Move the window base to what the subscriber saw; write it off after a stall."""
        if seen_upto > self.base:
            self.base = seen_upto
            self.progress_at = now
        elif self.sent > self.base and now - self.progress_at > stall:
            self.written_off += self.sent - self.base
            self.base = self.sent
            self.progress_at = now


# ---------------------------------------------------------------------------- the timeline


class Run:
    """Warm-up, measured window, drain: drives a Loop and calls the scenario's hooks."""

    def __init__(self, ctx: Context, loop: Loop, counter: Callable[[], int],
                 warmup: float | None = None) -> None:
        self.ctx = ctx
        self.loop = loop
        self.counter = counter  # messages delivered so far
        self.warmup = ctx.params.warmup if warmup is None else warmup
        self.meter = CpuMeter([ctx.broker_pid, os.getpid()], ctx.broker_cpu)
        self.measured = 0
        self.elapsed = 0.0
        self.cpu: list[float] = [math.nan, math.nan]
        self.drained = True
        self.phase = "warmup"
        self.coalesce = True
        self.also: dict[str, Callable[[], int]] = {}  # more counters, rated like `counter`
        self.rates: dict[str, float] = {}

    def run(self, produce: Callable[[float, int], float | None],
            settled: Callable[[], bool], on_measure: Callable[[], None] | None = None) -> None:
        """`produce(now, now_ns)` sends what it may and returns when it next wants to run."""
        params = self.ctx.params
        start = time.monotonic()
        measure_at = start + self.warmup
        stop_at = measure_at + params.duration
        count_at_start = 0
        also_at_start: dict[str, int] = {}
        while True:
            now = time.monotonic()
            if self.phase == "warmup" and now >= measure_at:
                self.phase = "measure"
                count_at_start = self.counter()
                also_at_start = {name: count() for name, count in self.also.items()}
                self.meter.start()
                window_start = now
                if on_measure is not None:
                    on_measure()
                emit({"event": "measuring", "seconds": params.duration})
            if self.phase == "measure" and now >= stop_at:
                self.measured = self.counter() - count_at_start
                self.elapsed = now - window_start
                self.rates = {name: (count() - also_at_start[name]) / self.elapsed
                              for name, count in self.also.items()}
                self.cpu = self.meter.stop()
                break
            wake = produce(now, time.monotonic_ns())
            deadline = measure_at if self.phase == "warmup" else stop_at
            if wake is not None:
                deadline = min(deadline, wake)
            before = self.loop.received
            self.loop.poll(min(deadline - time.monotonic(), 0.05))
            if self.coalesce and self.loop.received - before < COALESCE_BYTES:
                # A trickle: let it pile up rather than spend a wake-up per packet. The
                # windows hold tens of milliseconds of traffic, so this never starves them.
                time.sleep(COALESCE_SLEEP)
        self.phase = "drain"
        self.drain(settled)

    def drain(self, settled: Callable[[], bool]) -> None:
        """Wait for stragglers: until `settled()`, or no progress for a while, or `drain` s."""
        params = self.ctx.params
        give_up = time.monotonic() + params.drain
        last, quiet_since = self.counter(), time.monotonic()
        while not settled():
            now = time.monotonic()
            if now > give_up or now - quiet_since > min(params.stall, params.drain):
                self.drained = False
                return
            self.loop.poll(0.05)
            count = self.counter()
            if count != last:
                last, quiet_since = count, time.monotonic()

    @property
    def rate(self) -> float:
        return self.measured / self.elapsed if self.elapsed else 0.0

    def cpu_fields(self) -> Result:
        broker, generator = self.cpu
        return {"broker_cpu": broker, "generator_cpu": generator, "other_cpu": self.meter.other,
                "saturated": generator > SATURATED}


class Context:
    def __init__(self, port: int, broker_pid: int, params: Params,
                 broker_cpu: int | None = None, dropped_topic: str | None = None,
                 sys_interval: float = 1.0) -> None:
        self.port = port
        self.broker_pid = broker_pid
        self.broker_cpu = broker_cpu  # where the broker is pinned, if it is
        self.params = params
        self.dropped_topic = dropped_topic  # the broker's $SYS drop counter, if it has one
        self.sys_interval = sys_interval  # how often the broker updates it
        self.login: tuple[str, str] | None = None  # user name and password of every client
        self.metrics_port: int | None = None  # where mqttish serves /metrics, if asked to

    def broker_alive(self) -> bool:
        return os.path.exists(f"/proc/{self.broker_pid}")

    def open_client(self, client_id: str, clean: bool = True) -> socket.socket:
        return open_client(self.port, client_id, clean=clean, login=self.login)


def wait_subacks(subscribers: Sequence[Subscriber], timeout: float) -> None:
    """Read until every subscriber has its SUBACK (blocking setup helper)."""
    deadline = time.monotonic() + timeout
    loop = Loop()
    for sub in subscribers:
        loop.add(sub)
    try:
        while not all(sub.subacks for sub in subscribers):
            if time.monotonic() > deadline:
                missing = sum(1 for sub in subscribers if not sub.subacks)
                raise SetupError(f"{missing} subscribers got no SUBACK in {timeout:.0f} s")
            if any(sub.closed for sub in subscribers):
                raise SetupError("broker closed a subscriber's connection before SUBACK")
            loop.poll(0.05)
    finally:
        for sub in subscribers:
            loop.remove(sub)
            sub.sock.setblocking(True)
    refused = [sub.subacks[0] for sub in subscribers if sub.subacks[0][:1] == b"\x80"]
    if refused:
        raise SetupError(f"{len(refused)} subscriptions refused")


def _fairness(sub: Subscriber) -> float:
    """The slowest publisher's delivered messages over the fastest one's (1: all alike)."""
    most = max(sub.unique)
    return min(sub.unique) / most if most else math.nan


def _loss_fields(sent: int, unique: int, subs: Sequence[Subscriber]) -> Result:
    return {
        "sent": sent,
        "loss": sent - unique,
        "loss_pct": 100 * (sent - unique) / sent if sent else 0.0,
        "duplicates": sum(s.duplicates for s in subs),
        "reordered": sum(s.reordered for s in subs),
    }


def _close_all(endpoints: Sequence[Endpoint]) -> None:
    for endpoint in endpoints:
        endpoint.close()


# ---------------------------------------------------------------------------- scenarios


def fan_in(ctx: Context, qos: int, persistent: bool = False) -> Result:
    """Fan-in with end-to-end windows. `persistent`: into a persistent session (clean
    session off), with PUBACK waits booked and, for mqttish, its commits read from /metrics."""
    params = ctx.params
    count = params.publishers
    sub = Subscriber(ctx.open_client("bench-sub", clean=not persistent), count)
    sub.subscribe("bench/#", qos)
    wait_subacks([sub], params.timeout)
    pubs = [Publisher(ctx.open_client(f"bench-pub-{i}"), i, f"bench/p/{i:02d}", qos,
                      book=persistent) for i in range(count)]
    books = [pub.book for pub in pubs if pub.book is not None]
    loop = Loop()
    for endpoint in [sub, *pubs]:
        loop.add(endpoint)
    window, inflight, stall = params.window, params.inflight, params.stall
    batch = max(1, (inflight if qos else window) // 4)
    top = sub.top

    def produce(now: float, now_ns: int) -> None:
        for pub in pubs:
            pub.update_progress(top[pub.number] + 1, now, stall)
            if pub.out:
                continue
            credit = window - (pub.sent - pub.base)
            if qos:
                credit = min(credit, inflight - pub.check_acks(now, stall))
            if credit >= batch or (credit > 0 and pub.sent == pub.base):
                pub.publish(credit, now_ns)

    def settled() -> bool:
        return (sub.total_unique() >= sum(p.sent for p in pubs)
                and (not qos or all(p.acked >= p.sent for p in pubs)))

    commits: list[store_metrics.CommitFigures] = []

    def record() -> None:
        for book in books:
            book.waits = []
        if ctx.metrics_port is not None:
            commits.append(store_metrics.scrape(ctx.metrics_port))

    run = Run(ctx, loop, sub.total_unique)
    run.run(produce, settled, record)
    sent = sum(p.sent for p in pubs)
    result: Result = {
        "rate": run.rate,
        "drained": run.drained,
        **_loss_fields(sent, sub.total_unique(), [sub]),
        "written_off": sum(p.written_off for p in pubs),
        "ack_stalls": sum(p.ack_stalls for p in pubs),
        "unacked": sum(p.sent - p.acked for p in pubs) if qos else 0,
        "polls": loop.polls,
        **run.cpu_fields(),
    }
    if persistent:
        waits = sorted(wait for book in books for wait in book.waits or [])
        result["puback_p99_ms"] = percentile(waits, 99) / 1e6
        if commits:
            result.update(_commit_fields(store_metrics.scrape(ctx.metrics_port or 0)
                                         - commits[0]))
    _close_all([sub, *pubs])
    return result


def _commit_fields(figures: store_metrics.CommitFigures) -> Result:
    """What the broker's group commits did between two reads of its /metrics."""
    p99, bound = figures.quantile(0.99)
    commits = figures.commits
    return {
        "commits": commits,
        "records_per_commit": figures.changes / commits if commits else math.nan,
        "commit_mean_ms": 1000 * figures.latency_sum / commits if commits else math.nan,
        "commit_p99_ms": 1000 * p99,
        "commit_p99_bucket_ms": 1000 * bound,
    }


def fan_out(ctx: Context) -> Result:
    params = ctx.params
    subs = [Subscriber(ctx.open_client(f"bench-sub-{i}"), 1)
            for i in range(params.fanout_subscribers)]
    for sub in subs:
        sub.subscribe("bench/#", 0)
    wait_subacks(subs, params.timeout)
    pub = Publisher(ctx.open_client("bench-pub"), 0, "bench/fanout", 0)
    loop = Loop()
    for endpoint in [*subs, pub]:
        loop.add(endpoint)
    window, stall = params.fanout_window, params.stall
    batch = max(1, window // 4)

    def produce(now: float, now_ns: int) -> None:
        if pub.out:
            return
        pub.update_progress(min(sub.top[0] for sub in subs) + 1, now, stall)
        credit = window - (pub.sent - pub.base)
        if credit >= batch:
            pub.publish(credit, now_ns)

    def delivered() -> int:
        return sum(sub.unique[0] for sub in subs)

    run = Run(ctx, loop, delivered)
    run.run(lambda now, now_ns: produce(now, now_ns),
            lambda: delivered() >= pub.sent * len(subs))
    result: Result = {
        "rate": run.rate,
        "drained": run.drained,
        **_loss_fields(pub.sent * len(subs), delivered(), subs),
        "published": pub.sent,
        "written_off": pub.written_off,
        **run.cpu_fields(),
    }
    _close_all([*subs, pub])
    return result


def latency(ctx: Context) -> Result:
    params = ctx.params
    count = params.publishers
    sub = Subscriber(open_client(ctx.port, "bench-sub"), count)
    sub.subscribe("bench/#", 1)
    wait_subacks([sub], params.timeout)
    pubs = [Publisher(open_client(ctx.port, f"bench-pub-{i}"), i, f"bench/p/{i:02d}", 1,
                      book=True) for i in range(count)]
    loop = Loop()
    for endpoint in [sub, *pubs]:
        loop.add(endpoint)
    interval = 1.0 / params.latency_rate
    start = time.monotonic()
    for pub in pubs:  # spread the publishers evenly over one interval
        pub.next_at = start + interval * pub.number / count

    def produce(now: float, now_ns: int) -> float:
        for pub in pubs:
            if now >= pub.next_at:
                pub.publish(1, time.monotonic_ns())
                pub.next_at += interval
                if pub.next_at < now - 1.0:  # fell far behind: do not burst to catch up
                    pub.next_at = now + interval
        return min(pub.next_at for pub in pubs)

    books = [pub.book for pub in pubs if pub.book is not None]

    def record() -> None:
        sub.latencies = []
        for book in books:  # one message per batch here: a wait per PUBLISH
            book.waits = []

    def settled() -> bool:
        return (sub.total_unique() >= sum(p.sent for p in pubs)
                and all(p.acked >= p.sent for p in pubs))

    run = Run(ctx, loop, sub.total_unique)
    run.coalesce = False  # every wake-up on time: it is what is measured
    run.run(produce, settled, record)
    samples = sorted(sub.latencies or [])
    round_trips = sorted(wait for book in books for wait in book.waits or [])
    sent = sum(p.sent for p in pubs)
    result: Result = {
        "samples": len(samples),
        "rate": run.rate,
        "p50_us": percentile(samples, 50) / 1000,
        "p99_us": percentile(samples, 99) / 1000,
        "max_us": samples[-1] / 1000 if samples else math.nan,
        "puback_p50_us": percentile(round_trips, 50) / 1000,
        "puback_p99_us": percentile(round_trips, 99) / 1000,
        "drained": run.drained,
        **_loss_fields(sent, sub.total_unique(), [sub]),
        **run.cpu_fields(),
    }
    _close_all([sub, *pubs])
    return result


def percentile(samples: Sequence[float], percent: float) -> float:
    if not samples:
        return math.nan
    index = min(len(samples) - 1, max(0, math.ceil(percent / 100 * len(samples)) - 1))
    return float(samples[index])


class Connector(Endpoint):
    """One idle client: non-blocking connect and CONNECT, wait for CONNACK, then stay put."""

    def __init__(self, sock: socket.socket, client_id: str, owner: Connections) -> None:
        super().__init__(sock)
        self.owner = owner
        self.client_id = client_id
        self.connected = False
        self.reply = b""

    def on_readable(self, now_ns: int) -> None:
        data = self.receive()
        if self.connected:  # an idle client should hear nothing, not even its end
            self.owner.disturbed += 1
            if self.loop is not None:
                self.loop.remove(self)
            return
        if not data:
            self.owner.failed(self, "closed before CONNACK")
            return
        self.reply += data
        if len(self.reply) >= 4:
            if self.reply[:4] != b"\x20\x02\x00\x00":
                self.owner.failed(self, f"CONNECT refused: {self.reply[:4].hex()}")
                return
            self.connected = True
            self.owner.done(self)


class Connections:
    """Connects `total` idle clients, at most `parallel` handshakes at a time."""

    def __init__(self, port: int, total: int, parallel: int, prefix: str) -> None:
        self.port = port
        self.total = total
        self.parallel = parallel
        self.prefix = prefix
        self.loop = Loop()
        self.clients: list[Connector] = []
        self.pending = 0
        self.connected = 0
        self.errors: dict[str, int] = {}
        self.disturbed = 0

    def failed(self, client: Connector, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.pending -= 1
        client.close()

    def done(self, client: Connector) -> None:
        self.pending -= 1
        self.connected += 1

    def start_one(self, index: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        sock.setblocking(False)
        client = Connector(sock, f"{self.prefix}{index}", self)
        error = sock.connect_ex((HOST, self.port))
        if error not in (0, 115):  # EINPROGRESS
            self.errors[os.strerror(error)] = self.errors.get(os.strerror(error), 0) + 1
            sock.close()
            return
        self.loop.add(client)
        self.clients.append(client)
        self.pending += 1
        # On loopback the handshake is usually done already; if not, send() buffers the
        # CONNECT until the socket turns writable. A refused connect reads as an early EOF.
        client.send(mqtt.connect(client.client_id))

    def connect_all(self, timeout: float) -> float:
        """Connect everyone; return the seconds it took (until the last CONNACK)."""
        start = time.monotonic()
        index = 0
        while self.connected + sum(self.errors.values()) < self.total:
            while index < self.total and self.pending < self.parallel:
                self.start_one(index)
                index += 1
            if time.monotonic() - start > timeout:
                self.errors["timed out"] = self.total - self.connected - sum(self.errors.values())
                break
            self.loop.poll(0.05)
        return time.monotonic() - start

    def idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.loop.poll(end - time.monotonic())

    def close(self) -> None:
        for client in self.clients:
            client.close()


def connections(ctx: Context) -> Result:
    params = ctx.params
    total = params.idle_clients
    limit = raise_fd_limit(total + 256)
    if limit < total + 64:
        raise SetupError(f"file descriptor limit {limit} is too low for {total} clients")
    # Warm the broker's connection path once so the baseline includes its code and caches.
    open_client(ctx.port, "bench-warmup").close()
    time.sleep(0.5)
    before = rss_kib(ctx.broker_pid)
    meter = CpuMeter([ctx.broker_pid, os.getpid()], ctx.broker_cpu)
    meter.start()
    emit({"event": "measuring", "seconds": 0})
    clients = Connections(ctx.port, total, parallel=100, prefix="bench-idle-")
    elapsed = clients.connect_all(params.timeout)
    broker_cpu, generator_cpu = meter.stop()
    emit({"event": "measured"})
    clients.idle(1.0)
    after = rss_kib(ctx.broker_pid)
    clients.idle(1.0)
    connected = clients.connected
    result: Result = {
        "clients": total,
        "connected": connected,
        "connect_s": elapsed,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": (after - before) / connected if connected else math.nan,
        "disturbed": clients.disturbed,
        "connect_errors": clients.errors,
        "broker_cpu": broker_cpu,
        "generator_cpu": generator_cpu,
        "other_cpu": meter.other,
        "saturated": generator_cpu > SATURATED,
    }
    clients.close()
    return result


def retained(ctx: Context) -> Result:
    params = ctx.params
    total = params.retained
    groups = max(1, total // 100)
    topics = [f"bench/ret/{i // 100:04d}/{i % 100:02d}" for i in range(total)]
    narrow_group = min(42, groups - 1)
    narrow_filter = f"bench/ret/{narrow_group:04d}/+"
    narrow_expected = sum(1 for i in range(total) if i // 100 == narrow_group)
    meter = CpuMeter([ctx.broker_pid, os.getpid()], ctx.broker_cpu)
    meter.start()

    # 1. Store: every retained message in one stream, then a QoS 1 barrier.
    pub = open_client(ctx.port, "bench-retainer")
    now_ns = time.monotonic_ns()
    data = b"".join(mqtt.publish(topic, mqtt.payload(0, i, now_ns), retain=True)
                    for i, topic in enumerate(topics))
    barrier = mqtt.publish("bench/barrier", mqtt.payload(1, 0, now_ns), qos=1, packet_id=1)
    start = time.monotonic()
    pub.settimeout(params.timeout)
    pub.sendall(data + barrier)
    ack = b""
    while len(ack) < 4:
        chunk = pub.recv(4 - len(ack))
        if not chunk:
            raise SetupError("broker closed the publisher before acknowledging the barrier")
        ack += chunk
    stored_s = time.monotonic() - start
    if ack != mqtt.PUBACKS[1]:
        raise SetupError(f"expected PUBACK for the barrier, got {ack.hex()}")

    # 2. A narrow wildcard, then 3. everything, each timed from SUBSCRIBE to the last message.
    narrow_s, narrow_got = _receive_retained(ctx, "bench-narrow", narrow_filter, narrow_expected)
    emit({"event": "measuring", "seconds": 0})
    all_s, all_got = _receive_retained(ctx, "bench-all", "#", total)
    broker_cpu, generator_cpu = meter.stop()
    emit({"event": "measured"})
    pub.close()
    return {
        "stored_s": stored_s,
        "narrow_filter": narrow_filter,
        "narrow_expected": narrow_expected,
        "narrow_received": narrow_got,
        "narrow_ms": narrow_s * 1000,
        "all_expected": total,
        "all_received": all_got,
        "all_s": all_s,
        "rss_kib": rss_kib(ctx.broker_pid),
        "broker_cpu": broker_cpu,
        "generator_cpu": generator_cpu,
        "other_cpu": meter.other,
        "saturated": False,  # not a throughput test: the generator mostly waits
    }


def _receive_retained(ctx: Context, client_id: str, topic_filter: str,
                      expected: int) -> tuple[float, int]:
    """Subscribe and wait for `expected` retained messages; (seconds, how many came)."""
    params = ctx.params
    sub = Subscriber(open_client(ctx.port, client_id), 2)
    loop = Loop()
    loop.add(sub)
    start = time.monotonic()
    last_at, last_count = start, 0
    sub.subscribe(topic_filter, 0)
    while sub.unique[0] < expected and not sub.closed:
        now = time.monotonic()
        if now - start > params.timeout or now - last_at > max(5.0, params.stall):
            break
        loop.poll(0.05)
        if sub.unique[0] != last_count:
            last_at, last_count = time.monotonic(), sub.unique[0]
    elapsed = last_at - start if sub.unique[0] else math.nan
    if sub.unique[0] >= expected:
        elapsed = time.monotonic() - start
    got = sub.unique[0]
    sub.close()
    return elapsed, got


# ---------------------------------------------------------------------------- overload


class SysMonitor(Endpoint):
    """Follows one numeric `$SYS` topic (a retained counter the broker republishes)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.splitter = mqtt.PacketSplitter()
        self.value: int | None = None
        self.subscribed = False

    def on_readable(self, now_ns: int) -> None:
        for packet in self.splitter.feed(self.receive()):
            if packet.kind == mqtt.SUBACK:
                self.subscribed = True
            elif packet.kind & 0xF0 == mqtt.PUBLISH and not packet.kind & 0x06:
                topic_length = int.from_bytes(packet.body[:2], "big")
                text = packet.body[2 + topic_length:].decode(errors="replace").strip()
                if text.isdigit():
                    self.value = int(text)


def open_monitor(ctx: Context, loop: Loop) -> SysMonitor | None:
    if ctx.dropped_topic is None:
        return None
    monitor = SysMonitor(open_client(ctx.port, "bench-sys"))
    loop.add(monitor)
    monitor.send(mqtt.subscribe(1, ctx.dropped_topic, 0))
    return monitor


def read_dropped(ctx: Context, loop: Loop, monitor: SysMonitor | None) -> int | None:
    """The broker's drop counter once it has been republished after the load stopped.

    Brokers republish a $SYS counter every `sys_interval` seconds, some only
    when it changed: after the drain, keep polling (the healthy subscriber
    keeps reading) for one and a half intervals and take the last value.
    """
    if monitor is None:
        return None
    end = time.monotonic() + 1.5 * ctx.sys_interval + 0.2
    while time.monotonic() < end:
        loop.poll(end - time.monotonic())
    return monitor.value if monitor.value is not None else (0 if monitor.subscribed else None)


def open_stalled_subscriber(ctx: Context) -> socket.socket:
    """A subscriber to `bench/#` at QoS 1 that, after its SUBACK, never reads again."""
    sock = open_client(ctx.port, "bench-stalled")
    sock.sendall(mqtt.subscribe(1, "bench/#", 1))
    splitter = mqtt.PacketSplitter()
    sock.settimeout(ctx.params.timeout)
    while True:
        data = sock.recv(4096)
        if not data:
            raise SetupError("broker closed the stalled subscriber before its SUBACK")
        if any(p.kind == mqtt.SUBACK for p in splitter.feed(data)):
            return sock


def overload_qos1(ctx: Context, stalled: bool) -> Result:
    """Fan-in at QoS 1 with no end-to-end window: publish as fast as the broker acknowledges.

    Each publisher keeps up to `inflight` PUBLISH unacknowledged, like a device
    with a receive maximum; nothing else slows it. Loss is what the broker
    acknowledged and the (healthy) subscriber never received.

    With a stalled subscriber, the warm-up is longer by twice the stall timeout:
    a broker may hold everyone back until it finds that subscriber stalled, and
    that is measured as the longest PUBACK wait (over the whole run); the
    delivered rate is the steady state after it.
    """
    params = ctx.params
    count = params.publishers
    sub = Subscriber(open_client(ctx.port, "bench-sub"), count)
    sub.subscribe("bench/#", 1)
    wait_subacks([sub], params.timeout)
    stalled_sock = open_stalled_subscriber(ctx) if stalled else None
    pubs = [Publisher(open_client(ctx.port, f"bench-pub-{i}"), i, f"bench/p/{i:02d}", 1,
                      book=True) for i in range(count)]
    books = [pub.book for pub in pubs if pub.book is not None]
    loop = Loop()
    for endpoint in [sub, *pubs]:
        loop.add(endpoint)
    monitor = open_monitor(ctx, loop)
    inflight = params.inflight
    batch = max(1, inflight // 4)

    def produce(now: float, now_ns: int) -> None:
        for pub, book in zip(pubs, books, strict=True):
            if pub.out:
                continue
            credit = inflight - (book.sent - book.count)
            if credit >= batch or (credit > 0 and book.sent == book.count):
                pub.publish(credit, now_ns)

    def acked() -> int:
        return sum(book.count for book in books)

    def settled() -> bool:
        return all(book.count >= book.sent for book in books) and sub.total_unique() >= acked()

    warmup = params.warmup + (2 * params.stall_timeout if stalled else 0.0)
    run = Run(ctx, loop, sub.total_unique, warmup)
    # The subscriber's PUBACKs go back at once: with the brokers' default window of 20
    # unacknowledged deliveries, a 0.5 ms nap per wake-up would be the limit.
    run.coalesce = False
    run.also["acked"] = acked
    run.run(produce, settled)
    dropped = read_dropped(ctx, loop, monitor)
    now_ns = time.monotonic_ns()
    lost = sum(book.lost(sub.seen[pub.number]) for pub, book in zip(pubs, books, strict=True))
    total_acked = acked()
    result: Result = {
        "rate": run.rate,
        "acked_rate": run.rates["acked"],
        "sent": sum(book.sent for book in books),
        "acked": total_acked,
        "received": sub.total_unique(),
        "loss": lost,
        "loss_pct": 100 * lost / total_acked if total_acked else 0.0,
        "unacked": sum(book.sent - book.count for book in books),
        "max_wait_ms": max(book.longest_wait_ns(now_ns) for book in books) / 1e6,
        "fairness": _fairness(sub),
        "delivered_per_publisher": list(sub.unique),
        "broker_dropped": dropped,
        "duplicates": sub.duplicates,
        "reordered": sub.reordered,
        "acks_out_of_order": sum(book.out_of_order for book in books),
        "acks_unknown": sum(book.unknown for book in books),
        "drained": run.drained,
        "rss_kib": rss_kib(ctx.broker_pid),
        "stall_timeout_s": params.stall_timeout,
        **run.cpu_fields(),
    }
    _close_all([sub, *pubs, *([monitor] if monitor else [])])
    if stalled_sock is not None:
        stalled_sock.close()
    return result


def overload_qos0(ctx: Context) -> Result:
    """Fan-in at QoS 0 with no window: publishers write whenever their socket takes more.

    Each publisher fills its socket until the kernel refuses more; its send buffer
    is fixed at `SNDBUF_FLOOD` so that latency measures the broker's queueing more
    than the generator's kernel buffers.
    """
    params = ctx.params
    count = params.publishers
    sub = Subscriber(open_client(ctx.port, "bench-sub"), count)
    sub.subscribe("bench/#", 0)
    wait_subacks([sub], params.timeout)
    sub.sample_every = params.latency_sample
    pubs = [Publisher(open_client(ctx.port, f"bench-pub-{i}"), i, f"bench/p/{i:02d}", 0)
            for i in range(count)]
    loop = Loop()
    for pub in pubs:
        pub.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_FLOOD)
    for endpoint in [sub, *pubs]:
        loop.add(endpoint)
    monitor = open_monitor(ctx, loop)
    batch = max(1, params.inflight)

    def produce(now: float, now_ns: int) -> None:
        for pub in pubs:
            while not pub.out and not pub.closed:  # until the kernel refuses more
                pub.publish(batch, now_ns)

    def sent() -> int:
        return sum(p.sent for p in pubs)

    def record() -> None:
        sub.latencies = []

    run = Run(ctx, loop, sub.total_unique)
    run.also["sent"] = sent
    run.run(produce, lambda: sub.total_unique() >= sent(), record)
    dropped = read_dropped(ctx, loop, monitor)
    samples = sorted(sub.latencies or [])
    result: Result = {
        "rate": run.rate,
        "sent_rate": run.rates["sent"],
        **_loss_fields(sent(), sub.total_unique(), [sub]),
        "broker_dropped": dropped,
        "samples": len(samples),
        "p50_ms": percentile(samples, 50) / 1e6,
        "p99_ms": percentile(samples, 99) / 1e6,
        "fairness": _fairness(sub),
        "delivered_per_publisher": list(sub.unique),
        "drained": run.drained,
        "rss_kib": rss_kib(ctx.broker_pid),
        **run.cpu_fields(),
    }
    _close_all([sub, *pubs, *([monitor] if monitor else [])])
    return result


def login_storm(ctx: Context) -> Result:
    from bench.login_storm import run  # it builds on this module: imported when needed
    return run(ctx)


RUNNERS: dict[str, Callable[[Context], Result]] = {
    "fan-in-qos0": lambda ctx: fan_in(ctx, 0),
    "fan-in-qos1": lambda ctx: fan_in(ctx, 1),
    "fan-out-qos0": fan_out,
    "latency": latency,
    "connections": connections,
    "retained": retained,
    "overload-qos1": lambda ctx: overload_qos1(ctx, stalled=False),
    "overload-stalled": lambda ctx: overload_qos1(ctx, stalled=True),
    "overload-qos0": overload_qos0,
    "fan-in-qos0-auth": lambda ctx: fan_in(ctx, 0),
    "fan-out-qos0-auth": fan_out,
    "login-storm": login_storm,
    "login-storm-argon2id": login_storm,  # the same, against the broker's other password file
    "fan-in-qos1-persistent": lambda ctx: fan_in(ctx, 1, persistent=True),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--scenario", required=True, choices=SCENARIOS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--broker-pid", type=int, required=True)
    parser.add_argument("--broker-cpu", type=int, help="the CPU the broker is pinned to")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--dropped-topic", help="the broker's $SYS counter of dropped messages")
    parser.add_argument("--sys-interval", type=float, default=1.0,
                        help="seconds between the broker's $SYS updates")
    parser.add_argument("--metrics-port", type=int, help="where mqttish serves /metrics")
    args = parser.parse_args(argv)
    ctx = Context(args.port, args.broker_pid, params_for(args.smoke, args.param), args.broker_cpu,
                  args.dropped_topic, args.sys_interval)
    ctx.metrics_port = args.metrics_port
    if args.scenario in AUTH:
        ctx.login = (BENCH_USER, BENCH_PASSWORD)
    raise_fd_limit(4096)
    try:
        result = RUNNERS[args.scenario](ctx)
    except (SetupError, OSError) as exc:
        alive = "" if ctx.broker_alive() else " (the broker process is gone)"
        emit({"error": f"{type(exc).__name__}: {exc}{alive}"})
        return 1
    emit({"result": result})
    return 0


if __name__ == "__main__":
    # As bench.loadgen, not as __main__: scenario modules that build on this one
    # (bench.login_storm) must share its classes (SetupError) with main().
    from bench.loadgen import main as generate
    sys.exit(generate())

"""Phase 2: a live broker process under fire, and one healthy client timing it.

Theory of operation: the broker runs as `python -m mqttish` in a subprocess
with an MQTT listener and two WebSocket listeners (one open, one with a path
and an Origin allow-list), all on free ports, so that nothing the fuzzer does
to it can be mistaken for the broker surviving. A heartbeat process
(`heartbeat.py`, paho-mqtt) publishes a QoS 1 message to itself through the
broker every 100 ms and times each one. Meanwhile trio tasks in this process
open connection after connection: `FuzzClient` streams over TCP, the same
streams in WebSocket frames (`websocket_fuzz.Framer`), and upgrade requests
with odd headers.

The broker's log is read as it is written. A traceback in it is an internal
error (the broker must close the connection, log it and count it in
`mqttish_connection_errors_total`, which is read from /metrics at the end);
the connection named in the log line is saved as a reproducer. If the broker
process dies, the connections open at that moment are saved, and a new broker
is started for the rest of the run (a *round* per broker). `replay FILE`
sends each saved connection again, one at a time, to a fresh broker, and says
which one kills it or makes it log a traceback.
"""

from __future__ import annotations

import collections
import json
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import RemoteProtocolError as WSRemoteProtocolError

from tests.fuzz.clients import Ending, FuzzClient
from tests.fuzz.seeds import Corpus, build_corpus
from tests.fuzz.websocket_fuzz import (
    BINARY,
    CLOSE,
    Framer,
    accepted_extensions,
    close_payload,
    frame,
    upgrade_request,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """\
log_level: info
sys_interval: 1
listeners:
  - port: 0
  - port: 0
    protocol: websocket
    handshake_timeout: 2
  - port: 0
    protocol: websocket
    path: /mqtt
    allowed_origins: ["https://example.com"]
    handshake_timeout: 2
"""
LISTENING = re.compile(r"listening on \S+:(\d+) \((mqtt|websocket)\)")
PEER = re.compile(r"127\.0\.0\.1:(\d+)")
# In a traceback: the line naming the exception (code lines are indented, log records dated).
EXCEPTION_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Group|Exit|"
                            r"Interrupt|Warning)\w*)(?::\s.*)?$")
GROUP_PREFIX = re.compile(r"^\s*\| ")
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d ")
START_TIMEOUT = 20.0
CONNECTION_TIMEOUT = 10.0  # no fuzz connection lives longer
RECENT = 2000  # finished connections kept for reproducers
TRANSCRIPT_LIMIT = 256 * 1024  # bytes recorded per connection
STAYERS = 32  # connections left open at once (Ending.STAY)
MAX_ROUNDS = 50
SUSPECT_SECONDS = 3.0
_LOST = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


# ----------------------------------------------------------------------------- the broker


class BrokerProcess:
    """`python -m mqttish` on free ports; its log is scanned for tracebacks as it comes."""

    def __init__(self, log_path: Path, on_error: Callable[[str, str], None],
                 command: list[str] | None = None, options: tuple[str, ...] = ()) -> None:
        """`options`: more top-level configuration keys, as `key=value` (YAML value)."""
        self.workdir = tempfile.TemporaryDirectory(prefix="mqttish-fuzz-")
        config = Path(self.workdir.name) / "fuzz.yaml"
        config.write_text(CONFIG + "".join(
            "{}: {}\n".format(*option.split("=", 1)) for option in options))
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "mqttish", "-c", str(config)], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace")
        self.ports: list[int] = []
        self.longest_line = 0  # log lines must not echo unbounded client input
        self.ready = threading.Event()
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self.on_error = on_error  # (exception line, log line that named the connection)
        self.log = log_path.open("a")
        self._pump = threading.Thread(target=self._read_log, daemon=True)
        self._pump.start()

    def _read_log(self) -> None:
        assert self.process.stdout is not None
        in_traceback = False
        context = ""  # the last ERROR record, which names the connection that failed
        raised: list[str] = []  # exception lines of the traceback being read
        written = 0
        for line in self.process.stdout:
            if written < 200 * 1024 * 1024:  # the log file is bounded too
                self.log.write(line)
                written += len(line)
            self.tail.append(line)
            self.longest_line = max(self.longest_line, len(line))
            if not self.ready.is_set():
                match = LISTENING.search(line)
                if match:
                    self.ports.append(int(match.group(1)))
                    if len(self.ports) == 3:
                        self.ready.set()
            if "Traceback (most recent call last)" in line:
                in_traceback = True
            elif LOG_RECORD.match(line):
                if raised:  # a chain's last exception is the one that was raised
                    self.on_error(raised[-1], context)
                    raised = []
                in_traceback = False
                if " ERROR " in line or " CRITICAL " in line:
                    context = line.strip()
            elif in_traceback:
                # Inside an exception group, each line is prefixed with "| ".
                content = GROUP_PREFIX.sub("", line.rstrip("\n"), count=1)
                match = EXCEPTION_LINE.match(content)
                if match and not match.group(1).endswith("Group"):
                    raised.append(content[:300])
        if raised:
            self.on_error(raised[-1], context)
        self.log.flush()
        self.ready.set()

    def wait_ready(self) -> list[int]:
        if not self.ready.wait(START_TIMEOUT) or len(self.ports) < 3:
            raise RuntimeError("the broker did not start:\n" + "".join(self.tail))
        return self.ports

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM and wait for a graceful exit; its exit status (None if it hung)."""
        if self.alive:
            self.process.terminate()
        try:
            code = self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = None
        self._pump.join(5)
        self.log.close()
        self.workdir.cleanup()
        return code


class HeartbeatProcess:
    def __init__(self, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.heartbeat", str(port)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"the heartbeat client did not start: {line!r}")

    def stop(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        line = self.process.stdout.readline()
        self.process.wait(10)
        return json.loads(line) if line else {"sent": 0, "latencies": [], "missed": [],
                                               "max_gap": 0.0, "disconnects": ["no report"],
                                               "pings": [], "pings_missed": 0}


# ----------------------------------------------------------------------------- transcripts


@dataclass
class Transcript:
    """What one fuzz connection sent, for replaying it."""

    kind: str  # tcp, ws or ws-restricted
    port: int = 0  # its own (local) port, which the broker's log names
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    truncated: bool = False
    ended: float = 0.0  # on the trio clock, once closed

    def add(self, data: bytes) -> None:
        if self.size + len(data) > TRANSCRIPT_LIMIT:
            self.truncated = True
            return
        self.chunks.append(data)
        self.size += len(data)

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "port": self.port, "truncated": self.truncated,
                "chunks": [chunk.hex() for chunk in self.chunks]}


@dataclass
class WireReport:
    latency_bound: float  # seconds within which each ping must be answered
    seconds: float = 0.0  # fuzzing, not counting broker start-ups
    rounds: int = 0
    connections: Counter[str] = field(default_factory=Counter)
    handshakes: Counter[str] = field(default_factory=Counter)
    packets: int = 0
    bytes_sent: int = 0
    mutations: Counter[str] = field(default_factory=Counter)
    deaths: Counter[str] = field(default_factory=Counter)  # what ended each broker that died
    errors: Counter[str] = field(default_factory=Counter)  # tracebacks the broker logged
    exit_codes: list[int | None] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    heartbeats: int = 0
    missed: int = 0
    max_gap: float = 0.0  # the longest time without a heartbeat coming back
    pings: list[float] = field(default_factory=list)  # PINGREQ to PINGRESP, seconds
    pings_missed: int = 0
    pings_late: int = 0  # answered, but later than the bound
    heartbeat_disconnects: list[str] = field(default_factory=list)
    connection_errors: int | None = None  # mqttish_connection_errors_total; None: not exported
    reproducers: list[str] = field(default_factory=list)
    longest_log_line: int = 0  # characters

    @property
    def ok(self) -> bool:
        return (not self.deaths and not self.errors and not self.missed
                and not self.pings_missed and not self.pings_late and not self.heartbeat_disconnects
                and not self.connection_errors and all(code == 0 for code in self.exit_codes))


class Round:
    """One broker process, the heartbeat, and the fuzz connections against them."""

    def __init__(self, report: WireReport, corpus: Corpus, out_dir: Path | None,
                 options: tuple[str, ...]) -> None:
        self.report = report
        self.options = options
        self.corpus = corpus
        self.out_dir = out_dir
        self.active: dict[int, Transcript] = {}
        self.recent: collections.OrderedDict[int, Transcript] = collections.OrderedDict()
        self.errors: list[tuple[str, str]] = []  # (exception, context) from the log thread
        self.lock = threading.Lock()
        self.stayers = trio.CapacityLimiter(STAYERS)
        self.number = 0
        self.suspects: list[Transcript] = []  # connections open when the broker died

    def _suspects(self) -> list[Transcript]:
        """Connections open now, or closed in the last seconds (the broker's death
        may have ended them before we noticed it)."""
        since = trio.current_time() - SUSPECT_SECONDS
        return [*self.active.values(), *(t for t in self.recent.values() if t.ended >= since)]

    def _on_error(self, exception: str, context: str) -> None:
        with self.lock:
            self.errors.append((exception, context))

    async def run(self, seed: int, seconds: float, workers: int, log_path: Path) -> float:
        """Fuzz for at most `seconds` once the broker and heartbeat are ready; return the
        time spent fuzzing (less if the broker died)."""
        broker = await trio.to_thread.run_sync(BrokerProcess, log_path, self._on_error, None,
                                               self.options)
        died = False
        spent = 0.0
        try:
            ports = await trio.to_thread.run_sync(broker.wait_ready)
            heartbeat = await trio.to_thread.run_sync(HeartbeatProcess, ports[0])
            self.report.rounds += 1
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.cancel_scope.deadline = started + seconds

                async def watch() -> None:
                    nonlocal died
                    await trio.to_thread.run_sync(broker.process.wait, abandon_on_cancel=True)
                    died = True
                    self.suspects = self._suspects()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                for index in range(workers):
                    rng = random.Random(seed * 1000 + index)
                    nursery.start_soon(self._worker, rng, ports, index % 3, nursery)
            spent = trio.current_time() - started
            beats = await trio.to_thread.run_sync(heartbeat.stop)
            self._heartbeat(beats)
            if died:
                self._died(broker)
            else:
                self.report.connection_errors = _add(self.report.connection_errors,
                                                     await scrape_connection_errors(ports[1]))
        finally:
            code = await trio.to_thread.run_sync(broker.stop)
            self.report.longest_log_line = max(self.report.longest_log_line,
                                               broker.longest_line)
            if not died:
                self.report.exit_codes.append(code)
            self._logged_errors()
        return spent

    def _heartbeat(self, beats: dict[str, Any]) -> None:
        report = self.report
        latencies = beats["latencies"]
        report.heartbeats += beats["sent"]
        report.latencies.extend(latencies)
        report.missed += len(beats["missed"])
        report.pings.extend(beats.get("pings", []))
        report.pings_missed += beats.get("pings_missed", 0)
        report.pings_late += sum(1 for rtt in beats.get("pings", []) if rtt > report.latency_bound)
        report.max_gap = max(report.max_gap, beats["max_gap"])
        report.heartbeat_disconnects.extend(beats["disconnects"])

    def _died(self, broker: BrokerProcess) -> None:
        tail = "".join(broker.tail)
        with self.lock:
            errors, self.errors = self.errors, []
        cause = errors[-1][0] if errors else "(no traceback in the log)"
        self.report.deaths[error_kind(cause)] += 1
        if self.report.deaths[error_kind(cause)] == 1:
            self._save("death", cause, self.suspects, tail)

    def _logged_errors(self) -> None:
        with self.lock:
            errors, self.errors = self.errors, []
        for exception, context in errors:
            kind = error_kind(exception)
            self.report.errors[kind] += 1
            if self.report.errors[kind] > 1:
                continue
            ports = [int(p) for p in PEER.findall(context)]
            culprits = [t for p in ports for t in (self.recent.get(p), self.active.get(p)) if t]
            self._save("error", exception, culprits, context)

    def _save(self, what: str, exception: str, transcripts: list[Transcript], log: str) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", exception.lower()).strip("-")[:50]
        path = self.out_dir / f"wire-{what}-{slug}.json"
        path.write_text(json.dumps({"exception": exception, "log": log[-20000:],
                                    "connections": [t.record() for t in transcripts]},
                                   indent=1) + "\n")
        self.report.reproducers.append(str(path))

    # ------------------------------------------------------------------ fuzz connections

    async def _worker(self, rng: random.Random, ports: list[int], kind: int,
                      nursery: trio.Nursery) -> None:
        while True:
            self.number += 1
            if kind == 0:
                transcript = Transcript("tcp")
                port = ports[0]
            else:
                transcript = Transcript("ws" if kind == 1 else "ws-restricted")
                port = ports[kind]
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.1)  # the broker is refusing: let the watcher see why
                continue
            transcript.port = stream.socket.getsockname()[1]
            self.active[transcript.port] = transcript
            self.report.connections[transcript.kind] += 1
            stay = False
            try:
                with trio.move_on_after(CONNECTION_TIMEOUT):
                    if kind == 0:
                        stay = await self._tcp(rng, stream, transcript)
                    else:
                        stay = await self._websocket(rng, stream, transcript, port)
            except* _LOST:
                pass  # the broker closed on us: that is its right
            if stay:
                nursery.start_soon(self._linger, rng, stream, transcript)
            else:
                await self._close(rng, stream, transcript)

    async def _linger(self, rng: random.Random, stream: trio.SocketStream,
                      transcript: Transcript) -> None:
        async with self.stayers:
            with trio.move_on_after(rng.uniform(0.5, 5.0)):
                await _drain(stream)
        await self._close(rng, stream, transcript)

    async def _close(self, rng: random.Random, stream: trio.SocketStream,
                     transcript: Transcript) -> None:
        if rng.random() < 0.3:  # a reset rather than a FIN
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await trio.aclose_forcefully(stream)
        transcript.ended = trio.current_time()
        self.active.pop(transcript.port, None)
        self.recent[transcript.port] = transcript
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)

    def _client(self, rng: random.Random) -> FuzzClient:
        return FuzzClient(rng, self.corpus, self.report.mutations, self.number)

    async def _send(self, stream: trio.SocketStream, transcript: Transcript, data: bytes) -> None:
        transcript.add(data)
        self.report.bytes_sent += len(data)
        await stream.send_all(data)

    async def _tcp(self, rng: random.Random, stream: trio.SocketStream,
                   transcript: Transcript) -> bool:
        client = self._client(rng)
        closed = trio.Event()
        async with trio.open_nursery() as nursery:
            if rng.random() >= 0.1:  # else a client that never reads what it is sent
                nursery.start_soon(_read_into, stream, client.observe_bytes, closed)
            while (reads := client.next_reads()) is not None:
                for data in reads:
                    await self._send(stream, transcript, data)
            self.report.packets += client.packets
            stay = await self._end(client, closed)
            nursery.cancel_scope.cancel()
        return stay

    async def _end(self, client: FuzzClient, closed: trio.Event) -> bool:
        """Finish as the client chose to; True if the connection should stay open."""
        if client.ending is Ending.STAY:
            return True
        if client.ending in (Ending.DISCONNECT, Ending.SILENCE):
            with trio.move_on_after(2.0):  # until the broker closes (keepalive 1 s: 1.5 s)
                await closed.wait()
        return False

    async def _websocket(self, rng: random.Random, stream: trio.SocketStream,
                         transcript: Transcript, port: int) -> bool:
        weirdness = rng.choice((0.0, 0.0, 0.02, 0.1, 0.3, 0.8))
        request = upgrade_request(rng, f"127.0.0.1:{port}", "/mqtt", weirdness)
        client = self._client(rng)
        if rng.random() < 0.15:  # MQTT right behind the request, before the 101 comes back
            early = client.next_reads() or []
            request += b"".join(frame(BINARY, data, key=rng.randbytes(4)) for data in early)
        elif rng.random() < 0.03:  # part of a request, then silence
            request = request[:rng.randrange(1, len(request))]
        await self._send(stream, transcript, request)
        head, rest = await _response_head(stream)
        status = head.split(b" ", 2)[1].decode("ascii", "replace") if b" " in head else "none"
        self.report.handshakes[status] += 1
        if status != "101":
            return False
        extensions = accepted_extensions(head)
        framer = Framer(rng, extensions, weirdness)
        reader = _ServerFrames(extensions, client.observe_bytes)
        reader.feed(rest)
        closed = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_into, stream, reader.feed, closed)
            while (reads := client.next_reads()) is not None and not framer.closed:
                for data in reads:
                    await self._send(stream, transcript, framer.message(data))
                if rng.random() < weirdness / 20:
                    await self._send(stream, transcript, framer.oversized())
            self.report.packets += client.packets
            if rng.random() < 0.5 and not framer.closed:
                # A Close racing whatever the broker is sending, and junk after it.
                close = framer.frame(CLOSE, close_payload(rng) if weirdness else b"\x03\xe8")
                await self._send(stream, transcript, close + (
                    framer.after_close() if rng.random() < weirdness * 2 else b""))
            stay = await self._end(client, closed)
            nursery.cancel_scope.cancel()
        return stay


class _ServerFrames:
    """The broker's WebSocket frames, read with wsproto as a client would."""

    def __init__(self, extensions: str | None, on_data: Callable[[bytes], None]) -> None:
        deflate = []
        if extensions is not None and extensions.startswith("permessage-deflate"):
            extension = PerMessageDeflate()
            try:
                extension.finalize(extensions)
                deflate.append(extension)
            except ValueError:
                pass
        self.ws = WSConnection(ConnectionType.CLIENT, deflate)  # type: ignore[arg-type]
        self.on_data = on_data
        self.broken = False

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, BytesMessage):
                    self.on_data(bytes(event.data))
        except (WSRemoteProtocolError, ValueError):
            self.broken = True  # it closed on us mid-frame, or our own junk confused it


async def _read_into(stream: trio.SocketStream, sink: Callable[[bytes], None],
                     closed: trio.Event | None = None) -> None:
    """Read until the broker closes (then set `closed`), passing what comes to `sink`."""
    try:
        while data := await stream.receive_some(65536):
            sink(data)
    except _LOST:
        pass
    if closed is not None:
        closed.set()


async def _drain(stream: trio.SocketStream) -> None:
    await _read_into(stream, lambda data: None)


async def _response_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """The HTTP response head (status line and headers), or what came before EOF, and
    what came after it (the first WebSocket frames)."""
    head = b""
    with trio.move_on_after(5.0):
        while b"\r\n\r\n" not in head and len(head) < 65536:
            data = await stream.receive_some(65536)
            if not data:
                break
            head += data
    head, _, rest = head.partition(b"\r\n\r\n")
    return head, rest


async def scrape_connection_errors(port: int) -> int | None:
    """mqttish_connection_errors_total from /metrics, or None if it is not exported."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"GET /metrics HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n")
            body = b""
            while data := await stream.receive_some(65536):
                body += data
    match = re.search(rb"^mqttish_connection_errors_total(?:\{[^}]*\})? (\S+)$", body, re.M)
    return int(float(match.group(1))) if match else None


def error_kind(exception: str) -> str:
    """An exception line without the data in it, so the same bug counts once."""
    text = re.sub(r"""b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*"|\d+""", "_", exception)
    return text[:160]


def _add(total: int | None, value: int | None) -> int | None:
    if value is None:
        return total
    return (total or 0) + value


def run_wire(seed: int, seconds: float, workers: int = 12, out_dir: Path | None = None,
             latency_bound: float = 1.0, log_path: Path | None = None,
             options: tuple[str, ...] = ()) -> WireReport:
    """Fuzz a live broker (with configuration `options`, `key=value`) for `seconds`;
    the same seed sends the same inputs."""
    report = WireReport(latency_bound)
    corpus = build_corpus(seed)
    log = log_path or Path(tempfile.gettempdir()) / f"mqttish-fuzz-broker-{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")

    async def main() -> None:
        for round_number in range(MAX_ROUNDS):
            report.seconds += await Round(report, corpus, out_dir, options).run(
                seed + round_number, seconds - report.seconds, workers, log)
            if report.seconds >= seconds:
                break

    trio.run(main)
    return report


def replay_wire(path: Path) -> list[str]:
    """Send each recorded connection of a reproducer to a fresh broker, one at a time;
    the lines say which ones kill it or make it log a traceback."""
    record = json.loads(path.read_text())
    findings = []
    for index, connection in enumerate(record["connections"]):
        errors: list[str] = []
        log = Path(tempfile.gettempdir()) / "mqttish-fuzz-replay.log"
        log.write_text("")
        broker = BrokerProcess(log, lambda exception, context, errors=errors: errors.append(
            exception))
        ports = broker.wait_ready()
        port = {"tcp": ports[0], "ws": ports[1], "ws-restricted": ports[2]}[connection["kind"]]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                for chunk in connection["chunks"]:
                    sock.sendall(bytes.fromhex(chunk))
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            except OSError:
                pass
        died = not broker.alive or broker.process.poll() is not None
        alive_after = _still_serving(ports[0])
        code = broker.stop()
        if died or not alive_after or errors or code != 0:
            findings.append(f"connection {index} ({connection['kind']}): "
                            f"{'broker died; ' if died or not alive_after else ''}"
                            f"{'; '.join(errors) or 'no traceback'}; exit status {code}")
    return findings


def _still_serving(port: int) -> bool:
    """Does the broker still answer a CONNECT?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02ok")
            return sock.recv(4) == b"\x20\x02\x00\x00"
    except OSError:
        return False


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


__all__ = ["WireReport", "percentile", "replay_wire", "run_wire"]

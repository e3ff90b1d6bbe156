"""restart: how long a broker with persistence takes to come back with its state (issue #14).

Driven by the harness itself (it must stop and start the broker), on the load CPU:

1. Fill: `restart_sessions` persistent sessions (clean session off), each
   subscribed at QoS 1 to its own `bench/s/NNNN` and then gone; `restart_retained`
   retained messages (QoS 0, then a retained QoS 1 barrier: its PUBACK comes
   once all are stored, with mqttish committed); `restart_queued` QoS 1
   messages for each session (`restart_sessions` x `restart_queued` in all,
   each acknowledged: with mqttish, committed).
2. Stop the broker with SIGTERM (a clean shutdown; Mosquitto writes its
   database then) and time it.
3. Start it again and time, from just before the process is started: the
   first CONNACK (the listener accepts), a retained message arriving at a new
   subscriber, and session 0 getting its queued messages back. The last of
   these is the figure of the target (< 5 s).
4. Then check that everything is there: every retained message to a `#`
   subscriber, every session's queued messages (read back by 100 sessions at
   a time, acknowledged), also timed from the start.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import mqtt
from bench.brokers import BrokerError, BrokerKind, Pinning, RunningBroker
from bench.loadgen import Loop, SetupError, Subscriber, open_client
from bench.procstat import CpuMeter, rss_kib
from bench.scenarios import BrokerSettings, Params

POLL = 0.002  # seconds between attempts to connect while the broker starts
QUEUE_WINDOW = 1000  # QoS 1 PUBLISH the filler has unacknowledged at most
READERS_AT_ONCE = 100  # sessions reading their queued messages back at once


def retained_topic(number: int) -> str:
    return f"bench/ret/{number // 100:04d}/{number % 100:02d}"


def session_topic(number: int) -> str:
    return f"bench/s/{number:04d}"


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise SetupError("the broker closed the connection")
        data += chunk
    return data


def fill(port: int, params: Params) -> dict[str, Any]:
    started = time.monotonic()
    for number in range(params.restart_sessions):
        sock = open_client(port, f"bench-session-{number}", clean=False)
        sock.settimeout(params.timeout)
        sock.sendall(mqtt.subscribe(1, session_topic(number), 1))
        if _read_exactly(sock, 5)[0] != mqtt.SUBACK:
            raise SetupError(f"session {number}: no SUBACK")
        sock.sendall(mqtt.DISCONNECT)
        sock.close()
    sessions_s = time.monotonic() - started

    pub = open_client(port, "bench-filler")
    pub.settimeout(params.timeout)
    now_ns = time.monotonic_ns()
    pub.sendall(b"".join(mqtt.publish(retained_topic(n), mqtt.payload(0, n, now_ns), retain=True)
                         for n in range(params.restart_retained))
                + mqtt.publish("bench/barrier", b"", qos=1, retain=True, packet_id=1))
    if _read_exactly(pub, 4) != mqtt.PUBACKS[1]:
        raise SetupError("no PUBACK for the barrier after the retained messages")
    retained_s = time.monotonic() - started - sessions_s

    total = params.restart_sessions * params.restart_queued
    for first in range(0, total, QUEUE_WINDOW):
        numbers = range(first, min(total, first + QUEUE_WINDOW))
        pub.sendall(b"".join(
            mqtt.publish(session_topic(n % params.restart_sessions),
                         mqtt.payload(0, n // params.restart_sessions, now_ns), qos=1,
                         packet_id=n % 0xFFFF + 1) for n in numbers))
        acks = _read_exactly(pub, 4 * len(numbers))
        if acks[::4] != bytes([mqtt.PUBACK]) * len(numbers):
            raise SetupError("a queued message was not acknowledged")
    pub.sendall(mqtt.DISCONNECT)
    pub.close()
    return {"fill_sessions_s": sessions_s, "fill_retained_s": retained_s,
            "fill_queued_s": time.monotonic() - started - sessions_s - retained_s}


def _first_connack(broker: RunningBroker, started: float, timeout: float) -> float:
    """Seconds from `started` to the first CONNACK of the restarted broker."""
    while True:
        if broker.process.poll() is not None:
            raise BrokerError(f"{broker.name} exited with {broker.process.returncode} on "
                              f"restart:\n{broker.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", broker.port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                sock.sendall(mqtt.connect("bench-restart-probe"))
                if sock.recv(4)[:1] == bytes([mqtt.CONNACK]):
                    return time.monotonic() - started
        except OSError:
            pass
        if time.monotonic() - started > timeout:
            raise BrokerError(f"{broker.name} did not accept clients within {timeout:.0f} s "
                              f"of its restart:\n{broker.log_tail()}")
        time.sleep(POLL)


def _read_back(port: int, client_ids: list[str], topic_filter: str | None, expected: int,
               params: Params) -> list[int]:
    """Connect these clients (persistent sessions; with `topic_filter`, subscribed to it)
    and read until each has `expected` distinct messages, or none comes for 5 s; the
    count each got. QoS 1 deliveries are acknowledged."""
    readers = [Subscriber(open_client(port, client_id, clean=topic_filter is not None), 1)
               for client_id in client_ids]
    loop = Loop()
    for reader in readers:
        loop.add(reader)
        if topic_filter is not None:
            reader.subscribe(topic_filter, 0)
    quiet_since = time.monotonic()
    last = 0
    while sum(reader.unique[0] for reader in readers) < expected * len(readers):
        if time.monotonic() - quiet_since > max(5.0, params.stall):
            break
        loop.poll(0.05)
        got = sum(reader.unique[0] for reader in readers)
        if got != last:
            last, quiet_since = got, time.monotonic()
    counts = [reader.unique[0] for reader in readers]
    for reader in readers:
        reader.close()
    return counts


def measure_restart(kind: BrokerKind, port: int, workdir: Path, pinning: Pinning,
                    settings: BrokerSettings, params: Params) -> dict[str, Any]:
    started = time.monotonic()
    own_cpu = time.process_time()
    broker = kind.launch(port, workdir, pinning, settings)
    # The broker only: this process's CPU (its children, the broker, included) would
    # count the broker twice; the harness's own is time.process_time().
    meter = CpuMeter([broker.pid], pinning.broker_cpu)
    meter.start()
    try:
        connack_s = _first_connack(broker, started, params.timeout)
        probe = _read_back(port, ["bench-restart-retained"],
                           retained_topic(params.restart_retained // 2), 1, params)
        retained_s = time.monotonic() - started
        first = _read_back(port, ["bench-session-0"], None, params.restart_queued, params)
        session_s = time.monotonic() - started
        [broker_cpu] = meter.stop()
        generator_cpu = 100 * (time.process_time() - own_cpu) / session_s
        retained = _read_back(port, ["bench-restart-all"], "bench/ret/#",
                              params.restart_retained, params)
        all_retained_s = time.monotonic() - started
        queued = list(first)
        names = [f"bench-session-{n}" for n in range(1, params.restart_sessions)]
        for at in range(0, len(names), READERS_AT_ONCE):
            queued += _read_back(port, names[at:at + READERS_AT_ONCE], None,
                                 params.restart_queued, params)
        all_sessions_s = time.monotonic() - started
        rss = rss_kib(broker.pid)
    finally:
        stop = broker.stop()
    if stop.died_early:
        raise BrokerError(f"{kind.name} died after its restart:\n{broker.log_tail()}")
    return {
        "connack_s": connack_s, "retained_s": retained_s, "session_s": session_s,
        "ready_s": max(connack_s, retained_s, session_s),
        "probe_received": probe[0],
        "all_retained_s": all_retained_s, "all_sessions_s": all_sessions_s,
        "retained_expected": params.restart_retained, "retained_received": retained[0],
        "queued_expected": params.restart_sessions * params.restart_queued,
        "queued_received": sum(queued),
        "sessions_complete": sum(1 for count in queued if count >= params.restart_queued),
        "rss_kib": rss, "broker_cpu": broker_cpu, "generator_cpu": generator_cpu,
        "other_cpu": meter.other, "saturated": False,
    }


def run(kind: BrokerKind, port: int, workdir: Path, pinning: Pinning,
        settings: BrokerSettings, params: Params) -> dict[str, Any]:
    """{"result": ...} or {"error": ...}, as the generator's scenarios give."""
    assert settings.store is not None, "restart needs persistence on"
    try:
        broker = kind.start(port, workdir, pinning, settings)
    except BrokerError as exc:
        return {"error": f"broker did not start: {exc}"}
    try:
        try:
            filled = fill(port, params)
        finally:
            stopping = time.monotonic()
            stop = broker.stop()
            stop_s = time.monotonic() - stopping
        if stop.died_early:
            return {"error": f"broker died while being filled:\n{broker.log_tail()}"}
        store_bytes = sum(path.stat().st_size for path in settings.store.rglob("*")
                          if path.is_file())
        result = measure_restart(kind, port, workdir, pinning, settings, params)
    except (SetupError, BrokerError, OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    lost = result["queued_expected"] - result["queued_received"]
    return {"result": {**filled, "stop_s": stop_s, "stop_killed": stop.killed,
                       "store_mib": store_bytes / 2**20, **result,
                       "loss": lost + result["retained_expected"] - result["retained_received"]}}

"""The healthy client of the wire phase, in a process of its own.

`python -m tests.fuzz.heartbeat PORT` connects with paho-mqtt (a client that
shares no code with the broker), subscribes to a topic of its own at QoS 1,
prints READY, then publishes a QoS 1 heartbeat every `INTERVAL` seconds and
times each one's way back through the broker. Beside it, a second connection
(a raw socket) sends a PINGREQ every `INTERVAL` seconds and times its
PINGRESP. When its stdin closes it stops, waits `DRAIN` seconds for
stragglers, and prints one line of JSON: every latency of both, which never
came back, the longest silence between two heartbeats that did, and any
disconnection. Its own process keeps the fuzzer's CPU load out of the
measurement (the machine's load is in it).

The two measure different things. A heartbeat's way back may be held up by
design: fuzz clients that subscribe to `#` share its topic, and a slow one
that makes progress holds its publisher back (backpressure, issue #11), a
stalled one for `stall_timeout` at a time. A ping is answered at once
whatever the publishers wait for, so its round trip is how long the broker's
event loop takes to get to a client: what a blocked loop would show.
"""

from __future__ import annotations

import itertools
import json
import secrets
import socket
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

INTERVAL = 0.1
DRAIN = 10.0  # seconds for heartbeats still held back when it stops (several holds in a row)
CONNECT_TIMEOUT = 10.0


PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"


def _connect_packet(client_id: str) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, keepalive 60 s."""
    name = client_id.encode()
    body = (b"\x00\x04MQTT\x04\x02\x00\x3c" + len(name).to_bytes(2, "big") + name)
    return bytes([0x10, len(body)]) + body


class Pinger:
    """PINGREQ every INTERVAL on a connection of its own, each timed to its PINGRESP."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), CONNECT_TIMEOUT)
        self.sock.sendall(_connect_packet(f"pinger-{secrets.token_hex(8)}"))
        connack = self._read(4)
        if connack[:2] != b"\x20\x02" or connack[3] != 0:
            raise SystemExit(f"pinger: no CONNACK from the broker: {connack.hex()}")
        self.latencies: list[float] = []
        self.missed = 0
        self.failure = ""

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the pinger's connection")
            data += chunk
        return data

    def ping(self, stop: threading.Event) -> None:
        started = time.monotonic()
        count = 0
        self.sock.settimeout(DRAIN)
        try:
            while not stop.is_set():
                sent = time.monotonic()
                self.sock.sendall(PINGREQ)
                try:
                    answer = self._read(2)
                except TimeoutError:
                    self.missed += 1
                    break
                if answer != PINGRESP:
                    raise ConnectionError(f"expected PINGRESP, got {answer.hex()}")
                self.latencies.append(time.monotonic() - sent)
                count += 1
                stop.wait(max(0.0, started + count * INTERVAL - time.monotonic()))
        except OSError as exc:
            self.failure = f"pinger: {exc}"
        finally:
            self.sock.close()


class Heartbeat:
    def __init__(self, port: int) -> None:
        self.port = port
        self.topic = f"fuzz/heartbeat/{secrets.token_hex(6)}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"heartbeat-{secrets.token_hex(8)}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_disconnect = self._on_disconnect
        self.subscribed = threading.Event()
        self.lock = threading.Condition()
        self.sent: dict[int, float] = {}
        self.latencies: dict[int, float] = {}
        self.received_at: list[float] = []
        self.disconnects: list[str] = []
        self.stopping = False
        self.started = self.stopped = 0.0  # when publishing started and stopped

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if message.topic != self.topic:
            return
        try:
            seq = int(message.payload)
        except ValueError:
            return
        with self.lock:
            sent = self.sent.get(seq)
            if sent is not None and seq not in self.latencies:
                self.latencies[seq] = now - sent
                self.received_at.append(now)
                self.lock.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any = None) -> None:
        if not self.stopping:
            self.disconnects.append(str(reason))

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(self.topic, qos=1)
        if not self.subscribed.wait(CONNECT_TIMEOUT):
            raise SystemExit("heartbeat: no SUBACK from the broker")

    def beat(self, stop: threading.Event) -> None:
        seq = 0
        started = self.started = time.monotonic()
        while not stop.is_set():
            with self.lock:
                self.sent[seq] = time.monotonic()
            self.client.publish(self.topic, str(seq).encode(), qos=1)
            seq += 1
            stop.wait(max(0.0, started + seq * INTERVAL - time.monotonic()))
        self.stopped = time.monotonic()
        with self.lock:  # stragglers get DRAIN seconds; any that never come are reported
            self.lock.wait_for(lambda: len(self.latencies) == len(self.sent), DRAIN)
        self.stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def report(self) -> dict[str, Any]:
        with self.lock:
            # Silences: from the start to the first heartbeat back, between two, and from
            # the last one back to the end (if any never came back).
            received = [self.started, *sorted(self.received_at)]
            if len(self.latencies) < len(self.sent):
                received.append(self.stopped)
            gaps = [b - a for a, b in itertools.pairwise(received)]
            return {
                "sent": len(self.sent),
                "latencies": [self.latencies[s] for s in sorted(self.latencies)],
                "missed": sorted(set(self.sent) - set(self.latencies)),
                "max_gap": max(gaps, default=0.0),
                "disconnects": self.disconnects,
            }


def main(argv: list[str]) -> int:
    heartbeat = Heartbeat(int(argv[0]))
    heartbeat.start()
    pinger = Pinger(int(argv[0]))
    print("READY", flush=True)
    stop = threading.Event()
    threads = [threading.Thread(target=heartbeat.beat, args=(stop,)),
               threading.Thread(target=pinger.ping, args=(stop,))]
    for thread in threads:
        thread.start()
    sys.stdin.read()  # until the fuzzer closes our stdin
    stop.set()
    for thread in threads:
        thread.join()
    report = heartbeat.report()
    report["pings"] = pinger.latencies
    report["pings_missed"] = pinger.missed
    if pinger.failure:
        report["disconnects"].append(pinger.failure)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

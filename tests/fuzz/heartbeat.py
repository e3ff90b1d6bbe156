"""The healthy client of the wire phase, in a process of its own.

`python -m tests.fuzz.heartbeat PORT` connects with paho-mqtt (a client that
shares no code with the broker), subscribes to a topic of its own at QoS 1,
prints READY, then publishes a QoS 1 heartbeat every `INTERVAL` seconds and
times each one's way back through the broker. When its stdin closes it
stops publishing, waits `DRAIN` seconds for stragglers, and prints one line of
JSON: every latency, which heartbeats never came back, the longest silence
between two that did, and any disconnection. Its own process keeps the
fuzzer's CPU load out of the measurement (the machine's load is in it).
"""

from __future__ import annotations

import itertools
import json
import secrets
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

INTERVAL = 0.1
DRAIN = 2.0
CONNECT_TIMEOUT = 10.0


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
    print("READY", flush=True)
    stop = threading.Event()
    beating = threading.Thread(target=heartbeat.beat, args=(stop,))
    beating.start()
    sys.stdin.read()  # until the fuzzer closes our stdin
    stop.set()
    beating.join()
    print(json.dumps(heartbeat.report()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

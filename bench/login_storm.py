"""login-storm: how much a burst of wrong passwords delays a healthy client (issue #15).

The healthy client (user `bench`, logged in before anything else) publishes a
QoS 0 message to `bench/rtt` every `rtt_interval` seconds and times the round
trip to its own subscription. Three phases, each with its round trips, their
p50/p99/max and the broker's CPU:

1. alone, `duration` seconds;
2. the storm: `storm_attempts` CONNECTs of existing users with wrong passwords,
   at most `storm_parallel` waiting for their answer at once, from
   `storm_addresses` loopback addresses (127.0.0.1, .2, ...: the broker's
   login throttle counts failures per address). The phase lasts until every
   attempt has its answer (a refusing CONNACK, or the socket closed) or
   `timeout` passes;
3. after, `duration` seconds: a broker still busy with the storm's leftovers
   (hashes of connections already gone) shows here.

The attackers run in a forked process (on the load CPU too, at a lower
priority, so that the generator's own work delays the healthy client as
little as possible); it reports its books over a pipe.
"""

from __future__ import annotations

import json
import os
import random
import select
import socket
import time
from typing import Any

from bench import mqtt
from bench.auth_files import user_names
from bench.loadgen import (
    HOST,
    LINGER_RESET,
    SATURATED,
    Context,
    Endpoint,
    Loop,
    Result,
    SetupError,
    emit,
    percentile,
)
from bench.procstat import CpuMeter
from bench.scenarios import Params

TOPIC = "bench/rtt"
ATTACKER_NICENESS = 10


class HealthyClient:
    """A blocking client that times publish-to-own-subscription round trips."""

    def __init__(self, ctx: Context) -> None:
        self.sock = ctx.open_client("bench-healthy")
        self.sock.settimeout(ctx.params.timeout)
        self.splitter = mqtt.PacketSplitter()
        self.interval = ctx.params.rtt_interval
        self.seq = 0
        self.sock.sendall(mqtt.subscribe(1, TOPIC, 0))
        while not any(p.kind == mqtt.SUBACK for p in self._read()):
            pass

    def _read(self) -> list[mqtt.Packet]:
        data = self.sock.recv(65536)
        if not data:
            raise SetupError("the broker closed the healthy client's connection")
        return self.splitter.feed(data)

    def round_trip(self) -> int:
        """Nanoseconds from handing a PUBLISH to the socket to reading it back."""
        self.seq += 1
        body = self.seq.to_bytes(8, "big")
        started = time.monotonic_ns()
        self.sock.sendall(mqtt.publish(TOPIC, body))
        while True:
            for packet in self._read():
                if packet.kind & 0xF0 == mqtt.PUBLISH and packet.body.endswith(body):
                    return time.monotonic_ns() - started

    def phase(self, ctx: Context, done: Any) -> dict[str, Any]:
        """Round trips until `done()`: their figures and the broker's CPU meanwhile."""
        meter = CpuMeter([ctx.broker_pid, os.getpid()], ctx.broker_cpu)
        meter.start()
        started = time.monotonic()
        times: list[int] = []
        next_at = started
        while not done():
            times.append(self.round_trip())
            next_at += self.interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()
        broker_cpu, generator_cpu = meter.stop()
        times.sort()
        return {"samples": len(times), "p50_ms": percentile(times, 50) / 1e6,
                "p99_ms": percentile(times, 99) / 1e6,
                "max_ms": times[-1] / 1e6 if times else float("nan"),
                "seconds": time.monotonic() - started, "broker_cpu": broker_cpu,
                "generator_cpu": generator_cpu, "other_cpu": meter.other}

    def close(self) -> None:
        self.sock.close()


class Attempt(Endpoint):
    """One wrong-password CONNECT, waiting for its answer."""

    def __init__(self, sock: socket.socket, storm: Storm, started: float) -> None:
        super().__init__(sock)
        self.storm = storm
        self.started = started
        self.reply = b""

    def on_readable(self, now_ns: int) -> None:
        data = self.receive()
        self.reply += data
        if len(self.reply) >= 4 and self.reply[0] == mqtt.CONNACK:
            self.storm.answered(self, "accepted" if self.reply[3] == 0 else "refused")
        elif not data:
            self.storm.answered(self, "closed")


class Storm:
    """`storm_attempts` wrong-password CONNECTs, `storm_parallel` at a time (in the child)."""

    def __init__(self, port: int, params: Params) -> None:
        self.port = port
        self.params = params
        self.loop = Loop()
        self.waiting: list[Attempt] = []
        self.counts = {"refused": 0, "closed": 0, "accepted": 0, "unanswered": 0,
                       "connect failed": 0}
        self.answer_ms: list[float] = []
        names = user_names(params.users)[1:]  # never the healthy client's own user
        chosen = random.Random(42)
        self.users = [chosen.choice(names) for _ in range(params.storm_attempts)]

    def answered(self, attempt: Attempt, how: str) -> None:
        self.counts[how] += 1
        self.answer_ms.append(1000 * (time.monotonic() - attempt.started))
        self.waiting.remove(attempt)
        attempt.close()

    def start(self, number: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        if self.params.storm_addresses > 1:
            sock.bind((f"127.0.0.{1 + number % self.params.storm_addresses}", 0))
        sock.setblocking(False)
        if sock.connect_ex((HOST, self.port)) not in (0, 115):  # EINPROGRESS
            self.counts["connect failed"] += 1
            sock.close()
            return
        attempt = Attempt(sock, self, time.monotonic())
        self.loop.add(attempt)
        self.waiting.append(attempt)
        user = self.users[number]
        attempt.send(mqtt.connect(f"storm-{number}", username=user, password="wrong-" + user))

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        give_up = started + self.params.timeout
        number = 0
        while number < self.params.storm_attempts or self.waiting:
            while number < self.params.storm_attempts and (
                    len(self.waiting) < self.params.storm_parallel):
                self.start(number)
                number += 1
            if time.monotonic() > give_up:
                self.counts["unanswered"] += len(self.waiting)
                for attempt in list(self.waiting):
                    attempt.close()
                break
            self.loop.poll(0.05)
        answers = sorted(self.answer_ms)
        return {"storm_s": time.monotonic() - started, **self.counts,
                "answer_p50_ms": percentile(answers, 50), "answer_max_ms": max(answers,
                                                                                default=0.0)}


def _attack_in_child(ctx: Context) -> tuple[int, int]:
    """Fork the attacker; (its pid, the read end of the pipe its JSON result comes on)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: attack, report, and leave without running the parent's code
        status = 0
        try:
            os.close(reader)
            os.nice(ATTACKER_NICENESS)
            result = Storm(ctx.port, ctx.params).run()
            os.write(writer, json.dumps(result).encode())
        except BaseException as exc:  # reported to the parent, whatever it is
            os.write(writer, json.dumps({"error": repr(exc)}).encode())
            status = 1
        finally:
            os._exit(status)
    os.close(writer)
    return pid, reader


def _finished(pid: int, reader: int, out: dict[str, Any]) -> bool:
    """Whether the attacker is done; its result goes into `out` when it is."""
    if "done" in out:
        return True
    if not select.select([reader], [], [], 0)[0]:
        return False
    chunks = []
    while chunk := os.read(reader, 65536):
        chunks.append(chunk)
    os.close(reader)
    os.waitpid(pid, 0)
    out.update(json.loads(b"".join(chunks) or b'{"error": "the attacker died"}'))
    out["done"] = True
    return True


def run(ctx: Context) -> Result:
    params = ctx.params
    healthy = HealthyClient(ctx)
    alone_until = time.monotonic() + params.duration
    alone = healthy.phase(ctx, lambda: time.monotonic() >= alone_until)
    emit({"event": "measuring", "seconds": 0})
    pid, reader = _attack_in_child(ctx)
    attack: dict[str, Any] = {}
    storm = healthy.phase(ctx, lambda: _finished(pid, reader, attack))
    emit({"event": "measured"})
    if "error" in attack:
        raise SetupError(f"the attacker failed: {attack['error']}")
    after_until = time.monotonic() + params.duration
    after = healthy.phase(ctx, lambda: time.monotonic() >= after_until)
    healthy.close()
    result: Result = {"attempts": params.storm_attempts, **attack}
    result.pop("done")
    for name, phase in (("alone", alone), ("storm", storm), ("after", after)):
        result.update({f"{name}_{key}": value for key, value in phase.items()})
    result["added_p99_ms"] = storm["p99_ms"] - alone["p99_ms"]
    result.update({"broker_cpu": storm["broker_cpu"], "generator_cpu": storm["generator_cpu"],
                   "other_cpu": storm["other_cpu"],
                   "saturated": storm["generator_cpu"] > SATURATED})
    return result

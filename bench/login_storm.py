"""How much a storm of wrong passwords delays a healthy client (issue #15's figure).

    python -m bench.login_storm [--attempts 1000] [--concurrency 100]

Starts `python -m mqttish` with a password file of argon2id hashes (the
slowest to check, `mqttish passwd`'s default), connects a healthy client,
and measures its QoS 0 round trips (publish, receive its own message) first
alone, then while `--attempts` CONNECTs with wrong passwords arrive,
`--concurrency` at a time, from the same machine. Prints p50/p99/max of both.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from mqttish.auth.passwords import hash_password
from mqttish.client import Client
from mqttish.protocol.codec import encode
from mqttish.protocol.packets import Connect

ROUND_TRIPS = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def round_trips(client: Client, count: int, stop: trio.Event | None = None) -> list[float]:
    """Milliseconds per publish-and-receive, `count` of them or until `stop`."""
    times = []
    async with client.subscription("rtt") as messages:
        for n in range(count):
            if stop is not None and stop.is_set():
                break
            start = time.perf_counter()
            await client.publish("rtt", str(n))
            await messages.receive()
            times.append((time.perf_counter() - start) * 1000)
            await trio.sleep(0.005)
    return times


async def attack(port: int, attempts: int, concurrency: int, done: trio.Event) -> dict[str, int]:
    answers = {"refused": 0, "closed": 0}
    limiter = trio.CapacityLimiter(concurrency)
    wrong = encode(Connect("", 4, username="alice", password=b"guess"), 4)

    async def one() -> None:
        async with limiter:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                answers["closed"] += 1
                return
            async with stream:
                try:
                    await stream.send_all(wrong)
                    with trio.fail_after(60):
                        reply = await stream.receive_some(4)
                except (trio.BrokenResourceError, trio.TooSlowError):
                    reply = b""
            answers["refused" if reply[:1] == b"\x20" else "closed"] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(attempts):
            nursery.start_soon(one)
    done.set()
    return answers


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{name}: {len(times)} round trips, p50 {statistics.median(ordered):.2f} ms, "
            f"p99 {p99:.2f} ms, max {ordered[-1]:.2f} ms")


async def measure(port: int, attempts: int, concurrency: int) -> None:
    async with Client("127.0.0.1", port, username="alice", password="right") as client:
        alone = await round_trips(client, ROUND_TRIPS)
        done = trio.Event()
        result: dict[str, int] = {}
        async with trio.open_nursery() as nursery:
            async def run_attack() -> None:
                result.update(await attack(port, attempts, concurrency, done))
            nursery.start_soon(run_attack)
            during = await round_trips(client, 100_000, done)
    print(summary("alone       ", alone))
    print(summary("during storm", during))
    print(f"wrong-password CONNECTs: {attempts} ({result['refused']} answered CONNACK "
          f"'bad user name or password', {result['closed']} closed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        passwd = Path(directory) / "passwd"
        passwd.write_text(f"alice:{hash_password('right')}\n")
        port = free_port()
        config = Path(directory) / "mqttish.yaml"
        config.write_text(f"listeners:\n  - port: {port}\npassword_file: {passwd}\n"
                          "log_level: warning\nsys_interval: 0\n")
        broker = subprocess.Popen([sys.executable, "-m", "mqttish", "-c", str(config)])
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            trio.run(measure, port, args.attempts, args.concurrency)
        finally:
            broker.terminate()
            broker.wait(10)


if __name__ == "__main__":
    main()

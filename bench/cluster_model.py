"""What limits a cluster of 10 or 100 nodes: Redis's cost per operation, measured, and a model.

    python -m bench.cluster_model            (what docs/scaling.md quotes)

Every node talks to one Redis. This script starts a private redis-server, drives
it with the very operations a node makes (a commit through commit.lua carrying
forwarded batches and acknowledgements, an XREAD of an inbox, a broadcast to N
subscribers, journal records of persistent sessions) and reads Redis's own CPU
time per call from `INFO commandstats`, so client overhead does not count. It
also measures the memory of a node's route table. A model then adds it up for a
cluster of N nodes under a stated load and prints how busy Redis is (its one
main thread) and how big each node's route table gets.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import coredis
import trio

from mqttish.cluster.codec import decode_batch, encode_forwarded
from mqttish.cluster.redis_server import RedisServer
from mqttish.cluster.routes import RouteTable
from mqttish.cluster.store import SCRIPT
from mqttish.config import Config
from mqttish.core.broker import Broker
from mqttish.core.connection import Connection
from mqttish.core.message import Message
from mqttish.protocol.codec import encode
from mqttish.protocol.packets import Connect, Publish, Subscribe, SubscriptionRequest

ROUNDS = 2000


@dataclass(frozen=True)
class Costs:
    """Redis CPU time, microseconds."""

    commit_base: float  # a commit with nothing in it (the lease check, the call)
    per_forward: float  # one forwarded batch (an XADD into another node's inbox)
    per_forward_kib: float  # ... per KiB of batch
    per_ack: float  # one inbox entry acknowledged (XDEL)
    xread_base: float  # one XREAD that returns entries
    xread_per_entry: float
    publish_base: float  # one PUBLISH (broadcast)
    publish_per_subscriber: float
    per_record: float  # one journal record of a persistent session (queue, ack, ...)


async def _stats(redis: coredis.Redis[bytes]) -> dict[str, tuple[int, float]]:
    info = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(value["calls"]), float(value["usec"]))
            for name, value in info.items() if isinstance(value, dict)}


async def _usec_per_call(redis: coredis.Redis[bytes], command: str, work: object) -> float:
    await redis.config_resetstat()
    await work()  # type: ignore[operator]
    calls, usec = (await _stats(redis)).get(command, (0, 0.0))
    return usec / calls if calls else 0.0


async def measure(redis: coredis.Redis[bytes], url: str) -> Costs:
    sha = (await redis.script_load(SCRIPT)).decode()
    prefix = "model"
    await redis.hset(f"{prefix}:members", {"b": "{}"})

    async def commits(forwards: int, size: int, acks: int, records: int) -> float:
        batch = b"x" * size
        args: list[str | bytes] = [prefix, "a", "0"]
        for number in range(records):
            args += ("SS", f"c{number}", "3600", "0", "", "")
        for _ in range(forwards):
            args += ("FW", "b", batch)
        for number in range(acks):
            args += ("AK", "a", f"0-{number + 1}")

        async def work() -> None:
            for _ in range(ROUNDS // 4):
                await redis.evalsha(sha, args=args)
        usec = await _usec_per_call(redis, "evalsha", work)
        await redis.delete([f"{prefix}:inbox:b"])
        return usec

    empty = await commits(0, 0, 0, 0)
    one = await commits(1, 1024, 0, 0)
    ten = await commits(10, 1024, 0, 0)
    big = await commits(10, 16384, 0, 0)
    acks = await commits(0, 0, 10, 0)
    records = await commits(0, 0, 0, 50)
    per_forward = (ten - one) / 9
    per_kib = (big - ten) / 10 / 15

    await redis.delete([f"{prefix}:inbox:b"])
    for _ in range(ROUNDS):
        await redis.xadd(f"{prefix}:inbox:b", {"d": b"y" * 1024})

    async def reads(count: int) -> float:
        async def work() -> None:
            for start in range(0, ROUNDS - count, count):
                await redis.xread({f"{prefix}:inbox:b": f"0-{start}"}, count=count)
        return await _usec_per_call(redis, "xread", work)

    one_entry, many = await reads(1), await reads(50)

    async def publishes(subscribers: int) -> float:
        async with AsyncExitStack() as stack:
            for _ in range(subscribers):
                client = await stack.enter_async_context(coredis.Redis.from_url(url))
                await stack.enter_async_context(client.pubsub(channels=["model:ctl"]))

            async def work() -> None:
                for _ in range(ROUNDS // 4):
                    await redis.publish("model:ctl", b"z" * 200)
            return await _usec_per_call(redis, "publish", work)

    alone, twenty = await publishes(1), await publishes(20)
    return Costs(empty, per_forward, per_kib, (acks - empty) / 10, one_entry,
                 (many - one_entry) / 49, alone, (twenty - alone) / 19,
                 (records - empty) / 50)


def node_costs(messages: int = 100_000) -> dict[str, float]:
    """Microseconds of one node's CPU per message (sans-IO core, no sockets): a QoS 0
    PUBLISH read from a local 3.1.1 client and delivered to a local subscriber; the
    same message relayed to another node (routed, encoded, put in the outbox); and
    received from another node and delivered to a local subscriber."""
    def subscribed_broker() -> tuple[Broker, Connection]:
        broker = Broker(Config(max_queued_messages=10**6, backpressure_watermark=10**6))
        subscriber = Connection(broker, "sub", 0.0)
        subscriber.receive_data(encode(Connect("sub")) + encode(
            Subscribe(1, (SubscriptionRequest("bench/#"),))), 0.0)
        subscriber.data_to_send(0.0)
        return broker, subscriber

    frames = [encode(Publish(f"bench/p/{n % 10:02d}", b"x" * 64)) for n in range(messages)]
    chunks = [b"".join(frames[i:i + 100]) for i in range(0, messages, 100)]
    broker, subscriber = subscribed_broker()
    publisher = Connection(broker, "pub", 0.0)
    publisher.receive_data(encode(Connect("pub")), 0.0)
    started = time.perf_counter()
    for chunk in chunks:
        publisher.receive_data(chunk, 0.0)
        subscriber.data_to_send(0.0)
    local = (time.perf_counter() - started) / messages * 1e6

    class Outbox:  # what a relaying node does with a message: match, encode once, append
        def __init__(self) -> None:
            self.records: list[bytes] = []

    relay = Outbox()
    table = RouteTable()
    table.add("other", "bench/#")
    published = []
    for number, frame in enumerate(frames):  # as they arrived from 3.1.1 publishers
        message = Message(f"bench/p/{number % 10:02d}", b"x" * 64, origin=f"p{number % 10}")
        message.arrived_as(frame)
        published.append(message)
    started = time.perf_counter()
    for message in published:
        if table.match(message.topic).members:
            relay.records.append(encode_forwarded(message, 0.0))
    relayed = (time.perf_counter() - started) / messages * 1e6
    batches = [b"".join(relay.records[i:i + 100]) for i in range(0, messages, 100)]

    broker, subscriber = subscribed_broker()
    started = time.perf_counter()
    for batch in batches:
        for forwarded in decode_batch(batch, 0.0):
            broker.publish_forwarded(forwarded.message, 0.0)
        subscriber.data_to_send(0.0)
    received = (time.perf_counter() - started) / messages * 1e6
    return {"local publish, delivered": local, "relayed to another node": relayed,
            "received from another node, delivered": received}


def route_table_bytes(filters: int) -> float:
    """Bytes per (node, filter) entry of a node's RouteTable (tracemalloc)."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    table = RouteTable()
    for number in range(filters):
        table.add(f"n{number % 10}.abcdef01", f"site/{number % 97}/device/{number}/+")
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert table.count == filters
    return size / filters


@dataclass(frozen=True)
class Load:
    """A cluster's load: what each node takes in, and how it spreads."""

    messages_per_node: float = 50_000  # PUBLISH/s arriving at each node
    remote_share: float = 0.5  # of messages, the share with subscribers on other nodes
    destinations: float = 2.0  # other nodes such a message goes to
    commits_per_node: float = 500  # commits/s per node (one per round, ~2 ms at this load)
    subscription_changes_per_node: float = 20  # SUBSCRIBE/UNSUBSCRIBE that change routes, /s
    persistent_records_per_node: float = 5_000  # journal records/s of persistent sessions
    batch_kib: float = 0.0  # set from the above: KiB per forwarded batch


def redis_busy(costs: Costs, nodes: int, load: Load) -> dict[str, float]:
    """Share of Redis's main thread each kind of work takes (1.0: saturated)."""
    per_node_forwards = min(load.commits_per_node * load.destinations, load.messages_per_node
                            * load.remote_share * load.destinations)
    messages_per_batch = (load.messages_per_node * load.remote_share * load.destinations
                          / per_node_forwards)
    kib = messages_per_batch * 0.09  # ~90 bytes per forwarded record (64-byte payloads)
    commit = nodes * load.commits_per_node * costs.commit_base
    forward = nodes * per_node_forwards * (costs.per_forward + kib * costs.per_forward_kib)
    read = nodes * per_node_forwards * (costs.xread_per_entry + costs.per_ack) \
        + nodes * load.commits_per_node * costs.xread_base
    broadcast = nodes * load.subscription_changes_per_node * (
        costs.publish_base + (nodes - 1) * costs.publish_per_subscriber)
    records = nodes * load.persistent_records_per_node * costs.per_record
    parts = {"commits": commit, "forwards": forward, "inbox reads and acks": read,
             "broadcasts": broadcast, "persistent sessions": records}
    return {name: usec / 1e6 for name, usec in parts.items()}


def report(costs: Costs, entry_bytes: float, node: dict[str, float]) -> str:
    load = Load()
    lines = ["A node's CPU per QoS 0 message, 64-byte payload (sans-IO core, microseconds):",
             ""]
    lines += [f"- {name}: {value:.2f}" for name, value in node.items()]
    local, _, received = node.values()
    lines += ["", "Fan-in to one subscriber on two nodes, publishers split evenly: the "
              f"subscriber's node spends {(local + received) / 2:.2f} us per message, "
              f"so at best {2 * local / (local + received):.2f}x one node's rate.", "",
              "Redis CPU per operation (INFO commandstats, microseconds):", ""]
    for name, value in vars(costs).items():
        lines.append(f"- {name}: {value:.2f}")
    lines += ["", f"Route table: {entry_bytes:.0f} bytes per (node, filter) entry", "",
              f"Load per node: {load.messages_per_node:,.0f} msg/s, "
              f"{load.remote_share:.0%} to {load.destinations:g} other nodes, "
              f"{load.commits_per_node:g} commits/s, "
              f"{load.subscription_changes_per_node:g} route changes/s, "
              f"{load.persistent_records_per_node:,.0f} journal records/s", "",
              "| nodes | " + " | ".join(redis_busy(costs, 1, load)) + " | Redis busy | "
              "cluster msg/s |", "| --- " * 8 + "|"]
    for nodes in (1, 10, 30, 100):
        parts = redis_busy(costs, nodes, load)
        total = sum(parts.values())
        lines.append(f"| {nodes} | " + " | ".join(f"{v:.1%}" for v in parts.values())
                     + f" | {total:.0%} | {nodes * load.messages_per_node:,.0f} |")
    return "\n".join(lines)


async def main_async(directory: Path) -> str:
    server = RedisServer(directory).start()
    try:
        async with coredis.Redis.from_url(server.url) as redis:
            costs = await measure(redis, server.url)
    finally:
        server.stop()
    return report(costs, route_table_bytes(100_000), node_costs())


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m bench.cluster_model",
                            description=__doc__.splitlines()[0]).parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mqttish-model-") as directory:
        text = trio.run(main_async, Path(directory))
    print(text)
    print(f"\n(measured in {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

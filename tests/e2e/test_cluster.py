"""Three nodes on a real redis-server act as one broker (issue #17).

Cross-node publish and subscribe at every QoS, retained messages, session
takeover across nodes, a persistent session resumed on another node after its
own was SIGKILLed, a shared group across nodes with a node killed under load,
the jobs waiting in a dead node's backlog of a group, and the wills of a dead
node's clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from mqttish.client import (
    MQTT_5,
    Backoff,
    Client,
    ClientOptions,
    ConnectionLostError,
    Properties,
    Will,
)
from mqttish.cluster.redis_server import RedisServer
from tests.e2e.cluster_nodes import Acknowledged, Cluster, Received, until_received

SESSION = Properties(session_expiry_interval=3600)
FAST = ClientOptions(backoff=Backoff(initial=0.05, maximum=0.3, jitter=0.2), max_inflight=50)


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Cluster]:
    nodes = Cluster(tmp_path, redis_server.url)
    try:
        yield await nodes.start()
    finally:
        nodes.stop()


def client(cluster: Cluster, node: int, client_id: str = "", *, persistent: bool = False,
           reconnect: bool = False, will: Will | None = None) -> Client:
    return Client("127.0.0.1", cluster.ports[node], client_id=client_id, version=MQTT_5,
                  clean_start=not persistent, properties=SESSION if persistent else Properties(),
                  reconnect=reconnect, options=FAST, will=will)


async def test_publish_on_one_node_reaches_subscribers_on_the_others_at_each_qos(
        cluster: Cluster) -> None:
    received = [Received(), Received()]
    async with client(cluster, 0, "sub-a") as sub_a, client(cluster, 2, "sub-c") as sub_c, \
            client(cluster, 1, "pub") as pub, trio.open_nursery() as nursery:
        for subscriber, into in zip((sub_a, sub_c), received, strict=True):
            nursery.start_soon(into.consume, subscriber)
            await subscriber.subscribe("t/#", qos=2)
            await until_received(pub, into, "t/probe")
        sent = []
        for qos in (0, 1, 2):
            for number in range(20):
                payload = f"q{qos}-{number}".encode()
                await pub.publish(f"t/q{qos}", payload, qos=qos)
                sent.append(payload)
        for into in received:
            await into.wait_for(sent)
            assert all(into.counts[payload] == 1 for payload in sent)  # QoS 0 and 2: once
            # Per publisher, order holds end to end.
            got = [p for p in into.counts if not p.startswith(b"probe")]
            assert got == sent
        nursery.cancel_scope.cancel()


async def test_retained_messages_are_cluster_wide(cluster: Cluster) -> None:
    async with client(cluster, 0, "retainer") as pub:
        await pub.publish("r/a", b"kept", qos=1, retain=True)
        await pub.publish("r/b", b"gone", qos=1, retain=True)
        await pub.publish("r/b", b"", qos=1, retain=True)  # cleared
    for node in (1, 2):
        with trio.fail_after(10):
            while True:  # the other nodes learn of it by a broadcast: wait until they have
                seen = Received()
                async with client(cluster, node) as sub, trio.open_nursery() as nursery:
                    nursery.start_soon(seen.consume, sub)
                    await sub.subscribe("r/#", qos=1)
                    with trio.move_on_after(0.2):
                        await seen.wait_for({b"kept"})
                    nursery.cancel_scope.cancel()
                if seen.counts:
                    assert dict(seen.counts) == {b"kept": 1}
                    break


async def test_connecting_to_another_node_takes_the_session_over(cluster: Cluster) -> None:
    async def on_node_0(*, task_status: trio.TaskStatus[None]) -> None:
        async with client(cluster, 0, "roamer", persistent=True) as first:
            await first.subscribe("roam/#", qos=1)
            task_status.started()
            await trio.sleep_forever()  # until the takeover ends it

    async def connected_on_node_0(*, task_status: trio.TaskStatus[None]) -> None:
        with pytest.raises(ConnectionLostError, match="SESSION_TAKEN_OVER"):
            await on_node_0(task_status=task_status)

    async with client(cluster, 2, "pub") as pub:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(connected_on_node_0)
                # Connecting on node 1 closes the connection on node 0 (taken over).
                async with client(cluster, 1, "roamer", persistent=True) as second:
                    assert second.session_present
        # Offline now, owned by node 1: messages queue there, and move with the session.
        witness = Received()  # (node 2 routes roam/# to node 1 once this sees a probe)
        async with client(cluster, 1, "witness") as seen, trio.open_nursery() as nursery:
            nursery.start_soon(witness.consume, seen)
            await seen.subscribe("roam/#", qos=1)
            await until_received(pub, witness, "roam/probe")
            nursery.cancel_scope.cancel()
        for number in range(5):
            await pub.publish("roam/x", f"queued-{number}".encode(), qos=1)
        third = client(cluster, 2, "roamer", persistent=True)
        received = Received()
        async with third, trio.open_nursery() as nursery:
            assert third.session_present
            nursery.start_soon(received.consume, third)
            await received.wait_for([f"queued-{n}".encode() for n in range(5)])
            nursery.cancel_scope.cancel()
    assert "handing 'roamer' over" in cluster.log(0)
    assert "handing 'roamer' over" in cluster.log(1)


async def test_a_persistent_session_resumes_on_another_node_after_its_node_is_killed(
        cluster: Cluster) -> None:
    """Nothing a publisher had acknowledged is lost: QoS 1 at least once, QoS 2 once."""
    received = Received()
    acked = Acknowledged()
    subscriber = client(cluster, 0, "survivor", persistent=True, reconnect=True)
    async with subscriber, client(cluster, 1, "loader", reconnect=True) as pub, \
            trio.open_nursery() as nursery:
        nursery.start_soon(received.consume, subscriber)
        await subscriber.subscribe("load/#", qos=2)
        await until_received(pub, received, "load/probe")

        async def publish_for_ever() -> None:
            for number in range(10**9):
                qos = 1 + number % 2
                payload = f"m{qos}-{number}".encode()
                await pub.publish("load/x", payload, qos=qos)
                acked.append(payload)

        async with trio.open_nursery() as load:
            load.start_soon(publish_for_ever)
            await acked.reach(200)
            cluster.kill(0)
            subscriber.port = cluster.ports[2]  # it comes back on node 2
            await acked.reach(400)
            load.cancel_scope.cancel()
        await pub.publish("load/x", b"marker", qos=2)
        await received.wait_for(set(acked.payloads) | {b"marker"})
        nursery.cancel_scope.cancel()
    missing = [p for p in acked.payloads if not received.counts[p]]
    assert missing == []
    twice = [p for p in acked.payloads if p.startswith(b"m2") and received.counts[p] != 1]
    assert twice == [], "QoS 2 delivered more than once"
    assert "adopted dead node" in cluster.log(1) + cluster.log(2)


async def test_a_shared_group_spans_nodes_and_survives_a_node_kill(cluster: Cluster) -> None:
    either = Received()
    members = [Received(either), Received(either)]
    acked = Acknowledged()
    m0 = client(cluster, 0, "worker-0", persistent=True, reconnect=True)
    m1 = client(cluster, 1, "worker-1", persistent=True, reconnect=True)
    async with m0, m1, client(cluster, 2, "producer") as pub, trio.open_nursery() as nursery:
        for member, into in zip((m0, m1), members, strict=True):
            nursery.start_soon(into.consume, member)
            await member.subscribe("$share/g/jobs/#", qos=1)
        for into in members:  # until the producer's node routes to both members' nodes
            await until_received(pub, into, "jobs/probe")
        # Each message goes to exactly one member, and both get some.
        batch = [f"a-{n}".encode() for n in range(200)]
        for payload in batch:
            await pub.publish("jobs/x", payload, qos=1)
        await either.wait_for(batch)
        assert all(members[0].counts[p] + members[1].counts[p] == 1 for p in batch)
        assert all(any(m.counts[p] for p in batch) for m in members)

        async def produce() -> None:
            for number in range(10**9):
                payload = f"b-{number}".encode()
                await pub.publish("jobs/x", payload, qos=1)
                acked.append(payload)

        async with trio.open_nursery() as load:
            load.start_soon(produce)
            await acked.reach(200)
            cluster.kill(0)  # worker-0's node, under load
            m0.port = cluster.ports[2]  # worker-0 comes back on node 2
            await acked.reach(400)
            load.cancel_scope.cancel()
        await either.wait_for(acked.payloads)  # nothing missing
        nursery.cancel_scope.cancel()


async def test_the_wills_of_a_dead_nodes_clients_are_published(cluster: Cluster) -> None:
    watched = Received()

    async def connected(*, task_status: trio.TaskStatus[None]) -> None:
        will = Will("wills/doomed", b"doomed is gone", qos=1)
        async with client(cluster, 0, "doomed", will=will):
            task_status.started()
            await trio.sleep_forever()  # until its node dies

    async def doomed(*, task_status: trio.TaskStatus[None]) -> None:
        with pytest.raises(ConnectionLostError):
            await connected(task_status=task_status)

    async with client(cluster, 1, "watcher") as watcher, trio.open_nursery() as nursery:
        nursery.start_soon(watched.consume, watcher)
        await watcher.subscribe("wills/#", qos=1)
        async with client(cluster, 0, "graceful", will=Will("wills/graceful", b"no", qos=1)):
            pass  # a clean DISCONNECT: no will
        await nursery.start(doomed)
        async with client(cluster, 2, "probe") as probe:
            await until_received(probe, watched, "wills/probe")
        cluster.kill(0)
        await watched.wait_for({b"doomed is gone"})
        nursery.cancel_scope.cancel()
    assert watched.counts[b"doomed is gone"] == 1
    assert b"no" not in watched.counts


async def test_jobs_waiting_in_a_dead_nodes_shared_backlog_reach_the_group(
        tmp_path: Path, redis_server: RedisServer) -> None:
    """Acknowledged jobs wait in node 0's backlog of the group (its only member is
    offline); node 0 is killed. They were in its memory only: now the node that adopts it
    gives them to the group, and the member gets them when it comes back."""
    nodes = await Cluster(tmp_path, redis_server.url, size=2).start()
    try:
        async with client(nodes, 0, "worker", persistent=True) as worker:
            await worker.subscribe("$share/g/jobs/#", qos=1)
        jobs = [f"job-{n}".encode() for n in range(5)]
        async with client(nodes, 0, "producer") as producer:
            for job in jobs:
                await producer.publish("jobs/x", job, qos=1)  # acknowledged
        nodes.kill(0)
        received = Received()
        worker = client(nodes, 1, "worker", persistent=True, reconnect=True)
        async with worker, trio.open_nursery() as nursery:  # it waits for the adoption
            nursery.start_soon(received.consume, worker)
            await received.wait_for(jobs)
            nursery.cancel_scope.cancel()
        assert "1 shared backlogs" in nodes.log(1)
    finally:
        nodes.stop()

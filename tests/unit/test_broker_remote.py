"""The core's side of a cluster (core/remote.py): what the broker tells its Remote, and how
messages from other nodes and sessions from other nodes enter it. No Redis here."""

from __future__ import annotations

from mqttish.config import Config
from mqttish.core.broker import Broker
from mqttish.core.hooks import Decision
from mqttish.core.journal import Journal
from mqttish.core.message import Message
from mqttish.core.store import StoredDelivery, StoredMessage, StoredSession, StoredSubscription
from mqttish.protocol.flow import FlightState
from mqttish.protocol.packets import (
    ConnAck,
    Connect,
    Disconnect,
    Publish,
    SubscriptionRequest,
    Unsubscribe,
    Will,
)
from mqttish.protocol.properties import Properties
from mqttish.protocol.reason_codes import ReasonCode
from tests.unit.peer import Peer


class Elsewhere:
    """The rest of a cluster, as the core sees it: what it was told, and its answers."""

    def __init__(self, nodes: int = 0, takes_shared: bool = False) -> None:
        self.nodes = nodes
        self.takes_shared = takes_shared
        self.forwarded: list[str] = []
        self.shared: list[tuple[str, str, bool]] = []  # (share name, payload, member here)
        self.events: list[tuple[str, str]] = []

    def forward(self, message: Message, now: float) -> int:
        self.forwarded.append(message.payload.decode())
        return self.nodes

    def share_elsewhere(self, share_name: str, message: Message, dup: bool, member_here: bool,
                        now: float) -> bool:
        self.shared.append((share_name, message.payload.decode(), member_here))
        return self.takes_shared

    def session_started(self, client_id: str, will: Will | None) -> None:
        self.events.append(("started", client_id))

    def session_detached(self, client_id: str) -> None:
        self.events.append(("detached", client_id))

    def session_ended(self, client_id: str) -> None:
        self.events.append(("ended", client_id))


def clustered(remote: Elsewhere) -> tuple[Broker, list[tuple[str, bool]]]:
    broker = Broker(Config(), journal=Journal())
    broker.remote = remote
    routes: list[tuple[str, bool]] = []
    broker.subscriptions.on_route = lambda f, present: routes.append((f, present))
    return broker, routes


def connect(peer: Peer, client_id: str, **fields: object) -> ConnAck:
    """A CONNECT waits for the transport to claim its client id in the cluster."""
    assert peer.send(Connect(client_id, peer.version, **fields)) == []  # type: ignore[arg-type]
    assert peer.connection.pending_connect is not None
    peer.connection.credentials_checked(Decision.DEFER, 0.0)
    connack, *peer.pending = peer.receive()
    assert isinstance(connack, ConnAck)
    return connack


def test_a_publish_goes_to_the_remote_too_and_counts_its_nodes() -> None:
    remote = Elsewhere(nodes=2)
    broker, _ = clustered(remote)
    routed = broker.publish(Message("t", b"m"), 0.0)
    assert routed == 2 and remote.forwarded == ["m"]


def test_the_tree_says_when_a_filter_gets_its_first_and_loses_its_last_subscriber() -> None:
    remote = Elsewhere()
    broker, routes = clustered(remote)
    a, b = Peer(broker), Peer(broker)
    connect(a, "a")
    connect(b, "b")
    a.subscribe("x/#")
    b.subscribe("x/#")
    b.subscribe("$share/g/y", packet_id=2)
    a.subscribe("$share/g/y", packet_id=3)
    a.send(Unsubscribe(4, ("x/#",)))
    b.send(Unsubscribe(5, ("x/#", "$share/g/y")))
    a.send(Disconnect())  # a clean session ends: its last subscription goes
    assert routes == [("x/#", True), ("$share/g/y", True), ("x/#", False),
                      ("$share/g/y", False)]
    assert ("started", "a") in remote.events and ("ended", "a") in remote.events
    assert ("detached", "a") in remote.events


def test_forwarded_messages_reach_local_sessions_only() -> None:
    remote = Elsewhere(nodes=1)
    broker, _ = clustered(remote)
    plain, member = Peer(broker), Peer(broker)
    connect(plain, "plain")
    connect(member, "member")
    plain.subscribe("t/#")
    member.subscribe("$share/g/t/#")
    assert broker.publish_forwarded(Message("t/1", b"one"), 0.0) == 1
    assert [p.payload for p in plain.publishes()] == [b"one"]
    assert member.publishes() == []  # another node chose a member for its groups
    assert remote.forwarded == []  # one hop only
    assert broker.publish_forwarded(Message("t/2", b"two"), 0.0, only=frozenset()) == 0
    assert plain.publishes() == []
    assert broker.give_forwarded("$share/g/t/#", Message("t/3", b"three"), 0.0, False)
    assert [p.payload for p in member.publishes()] == [b"three"]
    assert not broker.give_forwarded("$share/nobody/t/#", Message("t/4", b"x"), 0.0, False)


def test_a_shared_group_asks_the_remote_whose_turn_it_is() -> None:
    remote = Elsewhere(takes_shared=True)
    broker, _ = clustered(remote)
    member = Peer(broker)
    connect(member, "member")
    member.subscribe("$share/g/t")
    broker.publish(Message("t", b"m"), 0.0)
    assert remote.shared == [("$share/g/t", "m", True)]
    assert member.publishes() == []  # another node's member got it
    # A forwarded one stays here while a member here can take it.
    broker.give_forwarded("$share/g/t", Message("t", b"here"), 0.0, False)
    assert [p.payload for p in member.publishes()] == [b"here"]


def test_releasing_a_session_closes_its_connection_as_a_takeover() -> None:
    remote = Elsewhere()
    broker, routes = clustered(remote)
    peer = Peer(broker, version=5)
    connect(peer, "roamer", clean_start=False,
            properties=Properties(session_expiry_interval=60))
    peer.subscribe("r/#")
    broker.release("roamer", 0.0)
    assert "roamer" not in broker.sessions
    assert [p for p in peer.receive() if type(p) is Disconnect] == [
        Disconnect(ReasonCode.SESSION_TAKEN_OVER)]
    assert routes[-1] == ("r/#", False)


def test_an_adopted_session_comes_back_offline_with_its_messages_and_its_will() -> None:
    remote = Elsewhere()
    broker, routes = clustered(remote)
    watcher = Peer(broker)
    connect(watcher, "watcher")
    watcher.subscribe("will/#")
    message = StoredMessage(9, "jobs/1", b"job", 1, False)
    stored = StoredSession(
        "worker", 3600, 3600.0,
        (StoredSubscription(SubscriptionRequest("$share/g/jobs/#", 1)),),
        (StoredDelivery(1, message, 1, False, (), 5, FlightState.AWAITING_PUBACK),))
    session = broker.adopt(stored, Will("will/worker", b"gone"), 0.0)
    assert session.connection is None and len(session.outgoing.flights) == 1
    assert [p.payload for p in watcher.publishes()] == [b"gone"]  # the will, at once
    assert ("$share/g/jobs/#", True) in routes
    # Its unfinished shared message is recognised as the group's, and goes to a member.
    other = Peer(broker)
    connect(other, "other")
    other.subscribe("$share/g/jobs/#", 1)
    broker.redistribute(session, 0.0)
    assert [p.payload for p in other.publishes() if isinstance(p, Publish)] == [b"job"]

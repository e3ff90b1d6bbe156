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

    member = "node-a.1"

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


def _backlogged(remote: Elsewhere) -> tuple[Broker, Journal, Peer]:
    """A node whose only member of `$share/g/jobs/#` is offline, with two jobs waiting."""
    journal = Journal()
    broker = Broker(Config(), journal=journal)
    broker.remote = remote
    worker = Peer(broker)
    connect(worker, "worker", clean_start=False)
    worker.subscribe("$share/g/jobs/#", 1)
    worker.drop()
    pub = Peer(broker)
    connect(pub, "pub")
    pub.send(*(Publish("jobs/x", f"job-{n}".encode(), 1, packet_id=n + 1) for n in range(2)))
    return broker, journal, worker


def test_a_nodes_backlog_is_stored_under_the_nodes_name() -> None:
    _, journal, _ = _backlogged(Elsewhere())
    names = {getattr(change, "client_id", None) for change in journal.changes}
    assert "\x01node-a.1\x01$share/g/jobs/#" in names  # another node's backlog: another name


def test_a_backlog_goes_to_other_nodes_when_the_last_member_here_leaves() -> None:
    remote = Elsewhere()
    broker, _, _ = _backlogged(remote)
    remote.takes_shared = True
    asked_before = len(remote.shared)  # when the jobs came: no member anywhere then
    broker.release("worker", 0.0)  # its session moves to another node
    assert remote.shared[asked_before:] == [("$share/g/jobs/#", "job-0", False),
                                            ("$share/g/jobs/#", "job-1", False)]


def test_a_dead_nodes_stored_backlog_is_taken_whole() -> None:
    broker, journal = clustered(Elsewhere())[0], Journal()
    broker.journal = journal
    job = StoredMessage(7, "jobs/x", b"job", 1, False)
    stored = StoredSession("\x01node-b.2\x01$share/g/jobs/#", 0, None,
                           deliveries=(StoredDelivery(1, job, 1, False),))
    share_name, messages = broker.take_backlog(stored, 0.0)
    assert share_name == "$share/g/jobs/#"
    assert [(m.payload, m.store_id) for m in messages] == [(b"job", 7)]
    assert [type(c).__name__ for c in journal.changes] == ["SessionDeleted"]

"""One node of a cluster: the broker's `Remote`, and the tasks that keep it a member.

Theory of operation (docs/scaling.md has the picture).

Membership. A node is a member named `<node_id>.<token>` (a new token each
run), listed in the `members` hash with a lease key it renews every third of
`lease`. Every commit checks the lease (commit.lua), so a node whose lease
ran out, for whatever reason, can write nothing more: it stops, and the
others treat it as dead.

Routing. The subscription tree tells the node when a filter gets its first
subscriber here or loses its last (`on_route`); the next commit writes the
change to the node's `routes:<member>` hash and broadcasts it, numbered, on
the `ctl` channel. Every node keeps the others' routes in a `RouteTable`, and
reloads everything when a broadcast number shows it missed one.

Forwarding. `forward` (called by `Broker.publish`) encodes a message once
and appends it to the outbox of each node that wants it; one commit sends
each node's records as one entry of its inbox stream (`inbox:<member>`). A
QoS 1/2 message moves the journal's position (`Journal.note`), so its
PUBACK/PUBREC waits for that commit, like a durable delivery. A node reads
its inbox, delivers each entry to its own sessions, and acknowledges it in
the commit that also holds what the delivery changed: a message is always in
an inbox or in session queues.

Shared groups. A node that publishes picks, per group, one node with
members, in turn (itself included); that node gives it to one member. A node
with no member able to take it passes it on once more.

Sessions. A client id belongs to one member (`owner` hash). A CONNECT waits
for its claim (`claim`): if another member owns it, that member is asked to
release the session (its connection closes, as in a takeover), hands the
ownership over in its next commit, and this node loads the session from the
store. Wills of connected clients are kept in `wills:<member>`.

Death. Every node looks at the others' leases; for one that expired, one
node wins `adopting:<member>` and adopts it: it publishes the wills of its
connected clients, takes its persistent sessions (offline), gives their
unfinished shared messages, and the messages of its shared groups' backlogs,
to other members, delivers what was left in its inbox to those sessions, and
removes its routes, all in one commit. From the moment it starts, forwards to
the dead member go to the adopter's inbox (`adopted:<member>`), marked for the
sessions it adopted.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import coredis
import trio
from coredis.exceptions import RedisError
from coredis.tokens import PureToken

from mqttish.cluster import codec
from mqttish.cluster.routes import RouteTable
from mqttish.cluster.store import Ops, RedisStore
from mqttish.config import ClusterConfig
from mqttish.core.backlog import backlog_share_name
from mqttish.core.broker import Broker, HeldPublish
from mqttish.core.journal import Journal
from mqttish.core.message import Message
from mqttish.core.metrics import ClusterFigures, NodeFigures
from mqttish.core.store import (
    MessageSaved,
    RetainedDeleted,
    RetainedSaved,
    StoredMessage,
    StoreError,
)
from mqttish.log_text import clip
from mqttish.persistence.clock import SESSION_EXPIRY_GRACE, deadline
from mqttish.persistence.group_commit import STORE_HOUSEKEEPING_INTERVAL
from mqttish.protocol.packets import Will

log = logging.getLogger("mqttish.cluster")

INBOX_BATCH = 256  # inbox entries read at once
BROADCAST, CONTROL = b"B", b"C"  # what a message on a control channel is
OUTBOX_LIMIT = 32 * 1024 * 1024  # bytes waiting for the next commit, beyond which QoS 0 drops
ADOPTED_MEMORY = 300.0  # seconds a node remembers which sessions it adopted from a dead one


class _InboxWaiter:
    """The inbox reader, held back by a full queue like a publisher (backpressure)."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def unblocked(self, now: float) -> None:
        self.event.set()


class _Claim:
    __slots__ = ("event", "owner")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.owner = ""


class ClusterNode:
    """The cluster as one broker sees it (core/remote.py), and the tasks behind it."""

    def __init__(self, config: ClusterConfig, broker: Broker) -> None:
        assert broker.journal is not None
        self.config = config
        self.broker = broker
        self.journal: Journal = broker.journal
        self.node_id = config.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.member = f"{self.node_id}.{secrets.token_hex(4)}"
        self.prefix = config.prefix
        self.lease = config.lease
        self.routes = RouteTable()
        self.local: set[str] = set()  # filters this node is in the route table for
        self.owned: set[str] = set()  # client ids this node owns
        self.members: dict[str, dict[str, Any]] = {}  # live members and what they report
        self.redis: coredis.Redis[bytes] | None = None
        self.store: RedisStore | None = None
        self.started_at = time.time()
        # What the next commit carries besides the journal.
        self._outbox: dict[str, list[bytes]] = {}
        self._outbox_bytes = 0
        self._ops: Ops = []
        self._first: Ops = []  # ownership that this round's journal records need
        self._acks: list[tuple[str, str]] = []  # (inbox's member, entry id)
        self._route_changes: list[tuple[str, bool]] = []
        self._claims: dict[str, list[_Claim]] = {}
        self._wake = trio.Event()
        self._sequence = 0  # of this node's broadcasts
        self._seen: dict[str, int] = {}  # last broadcast number seen per member
        self._resync = trio.Event()
        self._handovers: dict[str, trio.Event] = {}
        self._members_changed = trio.Event()
        self._adopting: dict[str, trio.Event] = {}
        self._adopted: dict[str, tuple[float, frozenset[str]]] = {}
        self._wills: set[str] = set()  # client ids whose live will is in Redis
        self._turns: dict[str, int] = {}  # round robin per shared group
        self._tasks: trio.CancelScope | None = None
        self._left = trio.Event()
        self._failure: StoreError | None = None
        self._delivering = False  # an inbox entry is being delivered
        self._relaying = False  # ... and its message was passed on once already
        self.figures = {"forwarded": 0, "received": 0, "batches_sent": 0, "batches_received": 0,
                        "commits": 0, "adopted": 0, "takeovers": 0}
        broker.remote = self
        broker.subscriptions.on_route = self._route_changed
        self.journal.on_change = self._wake.set

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # ------------------------------------------------------------------ Remote (core side)

    def forward(self, message: Message, now: float) -> int:
        if message.topic.startswith("$SYS/"):
            return 0  # every node has a $SYS tree of its own
        match = self.routes.match(message.topic)
        if match is None or not (match.members or match.groups):
            return 0
        count = 0
        qos = message.qos
        if match.members:
            record = codec.encode_forwarded(message, now)
            for member in match.members:
                count += self._send(member, record, qos)
        for share_name, members in match.groups:
            if share_name in self.local:
                continue  # a group with members here: Broker._give_to_group asks share_elsewhere
            count += self._send(self._turn(share_name, members, False),
                                codec.encode_forwarded(message, now, share_name), qos)
        if message.qos:
            self.journal.note()
        self.figures["forwarded"] += count
        return count

    def share_elsewhere(self, share_name: str, message: Message, dup: bool, member_here: bool,
                        now: float) -> bool:
        if self._relaying:
            return False  # it was passed on once already: the backlog here takes it
        members = self.routes.sharing(share_name)
        if not members:
            return False
        member = self._turn(share_name, members, member_here)
        if member == self.member:
            return False
        if not self._send(member, codec.encode_forwarded(message, now, share_name, dup,
                                                         relayed=self._delivering), message.qos):
            return True  # dropped (counted): it was not this node's to give either
        if message.qos:
            self.journal.note()
        self.figures["forwarded"] += 1
        return True

    def _turn(self, share_name: str, members: tuple[str, ...], here: bool) -> str:
        turn = self._turns.get(share_name, 0)
        self._turns[share_name] = turn + 1
        choices = len(members) + here
        pick = turn % choices
        return self.member if pick == len(members) else members[pick]

    def _send(self, member: str, record: bytes, qos: int) -> bool:
        """Add a record to `member`'s outbox; False if a QoS 0 one finds it full (dropped:
        QoS 1/2 publishers wait for the commit, so they bound it themselves)."""
        if qos == 0 and self._outbox_bytes >= OUTBOX_LIMIT:
            self.broker.metrics.publish_dropped += 1
            return False
        records = self._outbox.get(member)
        if records is None:
            records = self._outbox[member] = []
            self._wake.set()
        records.append(record)
        self._outbox_bytes += len(record)
        return True

    def session_started(self, client_id: str, will: Will | None) -> None:
        if client_id not in self.owned:  # an id the broker assigned: nobody else has it
            self.owned.add(client_id)
            self._op("CL", client_id)
        if will is not None:
            self._wills.add(client_id)
            self._op("LW", client_id, codec.encode_will(will))

    def session_detached(self, client_id: str) -> None:
        if client_id in self._wills:
            self._wills.discard(client_id)
            self._op("LD", client_id)

    def session_ended(self, client_id: str) -> None:
        self.owned.discard(client_id)
        self._op("UC", client_id)

    def _route_changed(self, topic_filter: str, present: bool) -> None:
        if present:
            self.local.add(topic_filter)
        else:
            self.local.discard(topic_filter)
        self._route_changes.append((topic_filter, present))
        self._wake.set()

    def _op(self, *items: str | bytes) -> None:
        self._ops += items
        self._wake.set()

    # ------------------------------------------------------------------ claims (transport)

    async def claim(self, client_id: str, give_up_at: float) -> bool:
        """Make this node the owner of `client_id` before its CONNECT is accepted: if
        another node has the session, have it released and load it here."""
        while trio.current_time() < give_up_at:
            owner = None
            with trio.move_on_at(give_up_at):  # (commits may have stopped: Redis failed)
                owner = await self._claim_round(client_id)
            if owner is None:
                return False
            if not owner:
                self.owned.add(client_id)
                return True
            if await self._alive(owner):
                log.info("taking over %s from %s", clip(client_id), owner)
                released = self._handovers.setdefault(client_id, trio.Event())
                redis = self._redis()
                await redis.publish(self.key("ctl", owner),
                                    CONTROL + codec.encode_text("Q", client_id, self.member))
                with trio.move_on_at(min(give_up_at, trio.current_time() + self.lease)):
                    await released.wait()
                self._handovers.pop(client_id, None)
                if released.is_set():
                    await self._load_session(client_id)
                    self.figures["takeovers"] += 1
                    return True
            else:  # it died: wait for a node to adopt its sessions
                with trio.move_on_at(min(give_up_at, trio.current_time() + self.lease / 2)):
                    await self._members_changed.wait()
        return False

    async def _claim_round(self, client_id: str) -> str:
        slot = _Claim()
        self._claims.setdefault(client_id, []).append(slot)
        self._wake.set()
        await slot.event.wait()
        return slot.owner

    async def _load_session(self, client_id: str) -> None:
        assert self.store is not None
        stored = await self.store.load_session(client_id)
        self.owned.add(client_id)
        if stored is not None and client_id not in self.broker.sessions:
            self.broker.adopt(stored, None, trio.current_time())

    async def _alive(self, member: str) -> bool:
        return bool(await self._redis().exists([self.key("lease", member)]))

    # ------------------------------------------------------------------ running

    async def run(self, on_failure: Callable[[StoreError], None], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the cluster and serve it until cancelled; then commit what is left and
        leave (the other nodes adopt this one's persistent sessions). A failure to join
        raises StoreError; a failure later is reported to `on_failure`."""
        started = False
        try:
            async with coredis.Redis.from_url(self.config.redis) as redis:
                self.redis = redis
                self.store = RedisStore(redis, self.prefix, self.member, fence=True)
                await self._join()
                channels = [self.key("ctl"), self.key("ctl", self.member)]
                try:
                    async with redis.pubsub(channels=channels) as pubsub:
                        await self._load()
                        async with trio.open_nursery() as nursery:
                            self._tasks = nursery.cancel_scope
                            nursery.start_soon(self._guard, self._listen, pubsub)
                            nursery.start_soon(self._guard, self._commit_loop)
                            nursery.start_soon(self._guard, self._read_inbox)
                            nursery.start_soon(self._guard, self._keep_lease)
                            nursery.start_soon(self._guard, self._watch_members)
                            log.info("cluster node %s joined (%d other nodes, %d routes)",
                                     self.member, len(self.members), self.routes.count)
                            started = True
                            task_status.started()
                        # The tasks ended: `leave` was called, or Redis failed.
                        if self._failure is not None:
                            on_failure(self._failure)
                        else:
                            await self._leave()
                finally:
                    self._left.set()
                    self.redis = None
        except Exception as exc:  # coredis's task groups wrap its errors in groups
            error = self._failure_of(exc)
            if error is None:
                raise
            if not started:
                raise error from exc
            on_failure(error)

    def _failure_of(self, exc: BaseException) -> StoreError | None:
        """The StoreError that `exc` amounts to, if it is Redis failing (None: a bug)."""
        leaves = [exc]
        while any(isinstance(leaf, BaseExceptionGroup) for leaf in leaves):
            leaves = [inner for leaf in leaves for inner in (
                leaf.exceptions if isinstance(leaf, BaseExceptionGroup) else (leaf,))]
        if not all(isinstance(leaf, RedisError | OSError | StoreError) for leaf in leaves):
            return None
        first = leaves[0]
        return first if isinstance(first, StoreError) else StoreError(
            f"Redis at {self.config.redis}: {first}")

    async def _guard(self, task: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Redis errors in a task end the node (the server stops: nothing unsaved is
        acknowledged), as a failing store does."""
        try:
            await task(*args)
        except (RedisError, OSError) as exc:
            self._stop(StoreError(f"Redis at {self.config.redis}: {exc}"))
        except StoreError as exc:
            self._stop(exc)

    def _stop(self, error: StoreError) -> None:
        if self._failure is None:
            self._failure = error
            log.critical("cluster node %s stops: %s", self.member, error)
        if self._tasks is not None:
            self._tasks.cancel()

    def _redis(self) -> coredis.Redis[bytes]:
        assert self.redis is not None
        return self.redis

    async def _join(self) -> None:
        redis = self._redis()
        epoch = await redis.incr(self.key("epoch"))
        self.journal.next_message_id = epoch << 32  # message ids unique across the cluster
        await redis.set(self.key("lease", self.member), "1", px=int(self.lease * 1000),
                        condition=PureToken.NX)
        await redis.hset(self.key("members"), {self.member: self._report()})

    async def leave(self) -> None:
        """Commit what is left, then give up the lease: the others adopt what stays. The
        server calls it at shutdown, once its clients are gone, before it cancels `run`."""
        if self._tasks is not None:
            self._tasks.cancel()  # nothing more comes in: the inbox waits for the adopter
            await self._left.wait()

    async def _leave(self) -> None:
        if self.redis is None:
            return
        try:
            await self._commit()
            await self.redis.delete([self.key("lease", self.member)])
            log.info("cluster node %s left", self.member)
        except (RedisError, OSError, StoreError) as exc:
            log.warning("cluster node %s could not leave cleanly: %s", self.member, exc)

    def _report(self) -> str:
        """What this node tells the others about itself (the `members` hash)."""
        figures = self._own_figures()
        return json.dumps({
            "node_id": self.node_id, "host": socket.gethostname(), "pid": os.getpid(),
            "started": self.started_at, "updated": time.time(), "clients": figures.clients,
            "sessions": figures.sessions, "publish_received": figures.publish_received,
            "publish_sent": figures.publish_sent, "load": figures.load,
        })

    def _own_figures(self) -> NodeFigures:
        metrics = self.broker.metrics
        return NodeFigures(self.node_id, self.member, metrics.clients_connected,
                           len(self.broker.sessions), metrics.publish_received,
                           metrics.publish_sent,
                           os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)

    def stats(self) -> ClusterFigures:
        """$SYS and /metrics: this node and the others as they last reported."""
        nodes = [self._own_figures()]
        for member, report in sorted(self.members.items()):
            nodes.append(NodeFigures(
                str(report.get("node_id", member)), member, int(report.get("clients", 0)),
                int(report.get("sessions", 0)), int(report.get("publish_received", 0)),
                int(report.get("publish_sent", 0)), float(report.get("load", 0.0))))
        figures = self.figures
        return ClusterFigures(self.member, tuple(nodes), self.routes.count,
                              figures["forwarded"], figures["received"],
                              figures["batches_sent"], figures["batches_received"],
                              figures["commits"], figures["takeovers"], figures["adopted"])

    # ------------------------------------------------------------------ routes and retained

    async def _load(self) -> None:
        """Everybody's routes and every retained message, as Redis has them now."""
        redis = self._redis()
        members = await redis.hgetall(self.key("members"))
        self.members = {}
        for raw, report in members.items():
            member = raw.decode()
            if member == self.member:
                continue
            self.members[member] = json.loads(report)
            routes = await redis.hgetall(self.key("routes", member))
            sequence = int(routes.pop(b"#seq", b"0"))
            self.routes.replace(member, (f.decode() for f in routes))
            self._seen[member] = sequence
        for member in self.routes.members():
            if member not in self.members:
                self.routes.drop(member)
        assert self.store is not None
        retained = await self.store.load_retained()
        now = trio.current_time()
        wanted = {stored.topic for stored in retained}
        for message in list(self.broker.retained.messages()):
            if message.topic not in wanted and not message.topic.startswith("$SYS/"):
                self.broker.retained.clear(message.topic)
        for stored in retained:
            self.broker.retained.set(_retained(stored, now))

    async def _listen(self, pubsub: Any) -> None:
        async for message in pubsub:
            if message["type"] != "message":
                continue
            data = message["data"]
            try:
                if data[:1] == BROADCAST:
                    self._broadcast(codec.decode_broadcast(data[1:]))
                elif data[:1] == CONTROL:
                    self._control(codec.decode_text(data[1:]))
            except codec.CodecError as exc:
                log.error("cluster: ignoring a control message: %s", exc)
            if self._resync.is_set():
                self._resync = trio.Event()
                await self._load()

    def _broadcast(self, broadcast: codec.Broadcast) -> None:
        member = broadcast.member
        if member == self.member:
            return
        last = self._seen.get(member, 0)
        if broadcast.sequence <= last:
            return  # older than what was loaded
        if broadcast.sequence > last + 1:
            log.warning("cluster: missed broadcasts of %s (%d after %d): reloading", member,
                        broadcast.sequence, last)
            self._resync.set()
        self._seen[member] = broadcast.sequence
        self.members.setdefault(member, {})
        for topic_filter in broadcast.added:
            self.routes.add(member, topic_filter)
        for topic_filter in broadcast.removed:
            self.routes.remove(member, topic_filter)
        if broadcast.retained or broadcast.cleared:
            now = trio.current_time()
            wall = time.time()
            for message_id, blob in broadcast.retained:
                self.broker.retained.set(_retained(codec.decode_message(message_id, blob, wall),
                                                   now))
            for topic in broadcast.cleared:
                self.broker.retained.clear(topic)

    def _control(self, fields: list[str]) -> None:
        kind = fields[0]
        if kind == "Q" and len(fields) == 3:  # a node asks for a session
            self._release(fields[1], fields[2])
        elif kind == "D" and len(fields) == 2:  # a session was handed over to us
            event = self._handovers.get(fields[1])
            if event is not None:
                event.set()
        elif kind == "G" and len(fields) == 3:  # a dead member was adopted
            self.routes.drop(fields[1])
            self.members.pop(fields[1], None)
            self._seen.pop(fields[1], None)
            self._members_changed.set()
            self._members_changed = trio.Event()

    def _release(self, client_id: str, to: str) -> None:
        log.info("handing %s over to %s", clip(client_id), to)
        self.broker.release(client_id, trio.current_time())
        self.owned.discard(client_id)
        self._op("HO", client_id, to, CONTROL + codec.encode_text("D", client_id))

    # ------------------------------------------------------------------ commits

    async def _commit_loop(self) -> None:
        while True:
            if not self._pending():
                self._wake = trio.Event()
                self.journal.on_change = self._wake.set
                if not self._pending():
                    await self._wake.wait()
            await self._commit()

    def _pending(self) -> bool:
        return bool(self.journal.position > self.journal.committed or self._outbox
                    or self._ops or self._first or self._acks or self._route_changes
                    or self._claims)

    async def _commit(self) -> None:
        """One round: the journal and everything the cluster has to say, in one call."""
        assert self.store is not None
        changes, position = self.journal.take()
        claims, self._claims = self._claims, {}
        ops: Ops = []
        for client_id in claims:
            ops += ("CL", client_id)
        ops += self._ops
        first, self._ops, self._first = self._first, [], []
        outbox, self._outbox = self._outbox, {}
        self._outbox_bytes = 0
        for member, records in outbox.items():
            ops += ("FW", member, b"".join(records))
        for member, entry in self._acks:
            ops += ("AK", member, entry)
        self._acks = []
        broadcast = self._broadcast_of(changes)
        if broadcast is not None:
            for topic_filter in broadcast.added:
                ops += ("RA", topic_filter)
            for topic_filter in broadcast.removed:
                ops += ("RR", topic_filter)
            ops += ("PB", str(broadcast.sequence), BROADCAST + codec.encode_broadcast(broadcast))
        if not changes and not ops and not first:
            self.journal.committed_up_to(position)
            return
        with trio.CancelScope(shield=True):  # a commit that started is waited for
            answers = await self.store.commit(changes, ops, first)
        self.figures["commits"] += 1
        self.figures["batches_sent"] += len(outbox)
        owners = dict(zip(answers[::2], answers[1::2], strict=True))
        for client_id, slots in claims.items():
            for slot in slots:
                slot.owner = owners.get(client_id, "")
                slot.event.set()
        self.journal.committed_up_to(position)

    def _broadcast_of(self, changes: list[Any]) -> codec.Broadcast | None:
        """This commit's route changes and retained messages, for the other nodes."""
        added: dict[str, bool] = {}
        for topic_filter, present in self._route_changes:
            added[topic_filter] = present  # the last word counts
        self._route_changes = []
        retained: list[tuple[int, bytes]] = []
        cleared: list[str] = []
        if any(type(change) in (RetainedSaved, RetainedDeleted) for change in changes):
            saved = {c.message_id: c for c in changes if type(c) is MessageSaved}
            wall = time.time()
            for change in changes:
                if type(change) is RetainedSaved and change.message_id in saved:
                    record = saved[change.message_id]
                    retained.append((record.message_id, codec.encode_message(
                        record, deadline(wall, record.expires_in))))
                elif type(change) is RetainedDeleted:
                    cleared.append(change.topic)
        if not (added or retained or cleared):
            return None
        self._sequence += 1
        return codec.Broadcast(
            self.member, self._sequence, tuple(f for f, present in added.items() if present),
            tuple(f for f, present in added.items() if not present), tuple(retained),
            tuple(cleared))

    # ------------------------------------------------------------------ the inbox

    async def _read_inbox(self) -> None:
        redis = self._redis()
        inbox = self.key("inbox", self.member)
        last = "0"
        block = max(100, int(self.lease * 1000 / 3))
        while True:
            reply = await redis.xread({inbox: last}, count=INBOX_BATCH, block=block)
            if not reply:
                continue
            for entry in reply[inbox.encode()]:
                last = cast(bytes, entry.identifier).decode()
                await self._deliver(entry.field_values, self.member, last)
                await trio.lowlevel.checkpoint()  # let the clients have it before the next

    async def _deliver(self, fields: Any, inbox: str, entry: str) -> None:
        """Deliver one inbox entry here, and acknowledge it in the next commit."""
        dead = fields.get(b"x")
        only: frozenset[str] | None = None
        if dead is not None:  # forwarded to a member that died, which this node adopted
            adoption = self._adopting.get(dead.decode())
            if adoption is not None:
                await adoption.wait()
            only = self._adopted.get(dead.decode(), (0.0, frozenset()))[1]
        now = trio.current_time()
        broker = self.broker
        waiter = _InboxWaiter()
        self._delivering = True
        try:
            for forwarded in codec.decode_batch(fields[b"d"], now):
                message = forwarded.message
                self.figures["received"] += 1
                self._relaying = forwarded.relayed
                if forwarded.share_name is not None:
                    self._give(forwarded.share_name, message, now, forwarded.dup,
                               here=dead is None)
                    continue
                result = broker.publish_forwarded(message, now, waiter, only)
                while type(result) is HeldPublish:
                    result = await self._wait_held(result, waiter)
                    now = trio.current_time()
        except codec.CodecError as exc:
            log.error("cluster: dropping an unreadable inbox entry %s: %s", entry, exc)
        finally:
            self._delivering = self._relaying = False
        self.figures["batches_received"] += 1
        self._acks.append((inbox, entry))
        self._wake.set()

    def _give(self, share_name: str, message: Message, now: float, dup: bool, here: bool
              ) -> None:
        if self.broker.subscriptions.group(share_name) is not None:
            self.broker.give_forwarded(share_name, message, now, dup, here)
        elif not self.share_elsewhere(share_name, message, dup, False, now):
            self.broker.metrics.publish_dropped += 1

    async def _wait_held(self, held: HeldPublish, waiter: _InboxWaiter) -> int | HeldPublish:
        """A full queue of a client that makes progress: wait for room (stall_timeout at
        most), as a held publisher does, then go on."""
        broker = self.broker
        timeout = broker.config.stall_timeout
        with trio.move_on_after(timeout):
            await waiter.event.wait()
        waiter.event = trio.Event()
        now = trio.current_time()
        if now - held.since >= timeout:
            broker.check_stall(held.blocker, now)
            held.blocker.remove_waiter(waiter)
            return broker.resume_publish(held, now, None)
        return broker.resume_publish(held, now, waiter)

    # ------------------------------------------------------------------ leases and death

    async def _keep_lease(self) -> None:
        """Renew the lease and the report (every lease / 3), and now and then have the
        next commit do the store's housekeeping (expired messages, forgotten sessions)."""
        redis = self._redis()
        housekeeping_due = trio.current_time() + STORE_HOUSEKEEPING_INTERVAL
        while True:
            await trio.sleep(self.lease / 3)
            if trio.current_time() >= housekeeping_due:
                housekeeping_due = trio.current_time() + STORE_HOUSEKEEPING_INTERVAL
                self._op("HK", repr(time.time()), repr(SESSION_EXPIRY_GRACE))
            renewed = await redis.set(self.key("lease", self.member), "1",
                                      px=int(self.lease * 1000), condition=PureToken.XX)
            if not renewed:
                raise StoreError(f"cluster node {self.member} lost its lease (it was too slow "
                                 f"to renew it within {self.lease:g} s, or Redis lost it)")
            await redis.hset(self.key("members"), {self.member: self._report()})
            now = trio.current_time()
            for member, (since, _) in list(self._adopted.items()):
                if now - since > ADOPTED_MEMORY:
                    del self._adopted[member]

    async def _watch_members(self) -> None:
        redis = self._redis()
        while True:
            await trio.sleep(self.lease / 2)
            members = await redis.hgetall(self.key("members"))
            for raw, report in members.items():
                member = raw.decode()
                if member == self.member:
                    continue
                if await redis.exists([self.key("lease", member)]):
                    self.members[member] = json.loads(report)
                    continue
                self.members.pop(member, None)
                if member not in self._adopting and await redis.set(
                        self.key("adopting", member), self.member, px=60_000,
                        condition=PureToken.NX):
                    await self._adopt(member)

    async def _adopt(self, dead: str) -> None:
        """Take over what a dead member left (see the module's docstring)."""
        redis = self._redis()
        assert self.store is not None
        done = self._adopting[dead] = trio.Event()
        try:
            await redis.set(self.key("adopted", dead), self.member, ex=int(ADOPTED_MEMORY))
            client_ids = sorted(c.decode() for c in await redis.smembers(self.key("owned", dead)))
            wills = {c.decode(): codec.decode_will(w)
                     for c, w in (await redis.hgetall(self.key("wills", dead))).items()}
            sessions = {client_id: await self.store.load_session(client_id)
                        for client_id in client_ids}
            entries = await redis.xrange(self.key("inbox", dead))
            # From here on nothing awaits: one commit carries all of it.
            now = trio.current_time()
            broker = self.broker
            adopted = set()
            backlogs = []
            for client_id in client_ids:
                stored = sessions[client_id]
                will = wills.get(client_id)
                if backlog_share_name(client_id) is not None:  # a shared group's backlog
                    if stored is not None:
                        self._first += ("OW", client_id, self.member)
                        backlogs.append(broker.take_backlog(stored, now))
                    else:
                        self._op("OW", client_id, "")
                elif stored is not None and client_id not in broker.sessions:
                    broker.adopt(stored, will, now)
                    adopted.add(client_id)
                    self.owned.add(client_id)
                    self._first += ("OW", client_id, self.member)  # before its records
                else:
                    if will is not None:
                        broker.publish_will(client_id, will, now)
                    self._op("OW", client_id, "")
            for client_id in adopted:
                session = broker.sessions[client_id]
                if session.shared_groups:
                    broker.redistribute(session, now)
            only = frozenset(adopted)
            for share_name, messages in backlogs:
                for message in messages:  # DUP: maybe sent before it waited, as after a restart
                    self._give(share_name, message, now, dup=True, here=False)
            self._delivering = True
            try:
                for entry in entries:
                    for forwarded in codec.decode_batch(cast(bytes, entry.field_values[b"d"]),
                                                        now):
                        if forwarded.share_name is not None:
                            self._give(forwarded.share_name, forwarded.message, now,
                                       forwarded.dup, here=False)
                        else:
                            broker.publish_forwarded(forwarded.message, now, None, only)
            finally:
                self._delivering = False
            self._op("AD", dead)
            self._op("PX", "ctl", CONTROL + codec.encode_text("G", dead, self.member))
            self._adopted[dead] = (now, only)
            self.routes.drop(dead)
            self._seen.pop(dead, None)
            self.figures["adopted"] += 1
            log.info("adopted dead node %s: %d sessions, %d wills, %d inbox entries, "
                     "%d shared backlogs", dead, len(adopted), len(wills), len(entries),
                     len(backlogs))
        finally:
            done.set()
            self._adopting.pop(dead, None)
            self._members_changed.set()
            self._members_changed = trio.Event()


def _retained(stored: StoredMessage, now: float) -> Message:
    """A retained message another node stored, for this node's retained store."""
    message = Message(stored.topic, stored.payload, stored.qos, stored.retain, stored.properties,
                      None if stored.expires_in is None else now + stored.expires_in)
    message.store_id = stored.message_id
    return message

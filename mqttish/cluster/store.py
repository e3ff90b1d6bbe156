"""RedisStore: sessions and retained messages of a cluster, in Redis.

Theory of operation. Every node of a cluster is a member with a name of its
own (its node id and a token for this run). The journal a node's core emits
(core/store.py) is turned into a flat list of operations and applied by one
Lua script (commit.lua), atomically, in one round trip; the cluster adds its
own operations to the same call (ownership of client ids, forwarded batches,
inbox acknowledgements, route table entries, broadcasts), so that a commit
is all or nothing for everything a node promised in one round.

The store follows the rules of every store (mqttish.persistence), with one
more: a session is written only by the member that owns its client id
(`owner` hash, with an `owned:<member>` index), so a node that lost a
session to another cannot overwrite it. With `fence`, a commit is refused
once the member's lease has expired: a node the others think dead cannot
write any more.

Messages are kept once (hash `msg`, by the id the core gave them: ids are
unique across the cluster, each member numbering from a base of its own),
with reference counts, like SqliteStore's rows.

Redis keys (all under the cluster's prefix `P`): `P:msg`, `P:ref`, `P:msgexp`
(expiry index), `P:nextmsg`, `P:retained` (topic -> message id), `P:owner`,
`P:owned:<member>`, and per client id `P:s:<id>` (expiry, will),
`P:sub:<id>`, `P:dq:<id>` (deliveries by sequence), `P:in:<id>` (QoS 2 ids).

`RedisStore` implements the `Store` interface for tools and tests, through
a portal to an event loop that owns the Redis client (`anyio`'s blocking
portal); a node uses the `*_async` methods on its own loop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import coredis
from anyio.from_thread import BlockingPortal
from coredis.exceptions import NoScriptError, RedisError

from mqttish.cluster import codec
from mqttish.core import store as journal
from mqttish.core.store import Change, StoredState, StoreError, StoreStats
from mqttish.persistence.clock import SESSION_EXPIRY_GRACE, Clock, deadline, remaining
from mqttish.protocol.flow import FlightState

Ops = list[str | bytes]
SCRIPT = resources.files("mqttish.cluster").joinpath("commit.lua").read_text()


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _float(value: bytes | None) -> float | None:
    return None if not value else float(value)


def journal_ops(changes: Sequence[Change], now: float) -> Ops:
    """The store's operations for `changes`, durations turned into times from `now`."""
    ops: Ops = []
    add = ops.extend
    for change in changes:
        match change:
            case journal.SessionSaved(client_id, expiry, connected, expires_in):
                lifetime, at = ((expires_in, None) if connected
                                else (None, deadline(now, expires_in)))
                add(("SS", client_id, str(expiry), "1" if connected else "0", _number(lifetime),
                     _number(at)))
            case journal.SessionDeleted(client_id):
                add(("SD", client_id))
            case journal.SubscriptionSaved(client_id, request, identifier):
                add(("BS", client_id, request.topic_filter,
                     codec.encode_subscription(request, identifier)))
            case journal.SubscriptionDeleted(client_id, topic_filter):
                add(("BD", client_id, topic_filter))
            case journal.MessageSaved():
                at = deadline(now, change.expires_in)
                add(("MS", str(change.message_id), codec.encode_message(change, at),
                     _number(at)))
            case journal.DeliverySaved(client_id, sequence, message_id, qos, retain, ids):
                value = f"{message_id}:0:{FlightState.QUEUED.value}:".encode()
                add(("DS", client_id, str(sequence), str(message_id),
                     value + codec.encode_delivery(qos, retain, ids)))
            case journal.DeliveryUpdated(client_id, sequence, packet_id, state):
                add(("DU", client_id, str(sequence), str(packet_id), str(state.value)))
            case journal.DeliveryDeleted(client_id, sequence):
                add(("DD", client_id, str(sequence)))
            case journal.IncomingHeld(client_id, packet_id):
                add(("IH", client_id, str(packet_id)))
            case journal.IncomingReleased(client_id, packet_id):
                add(("IR", client_id, str(packet_id)))
            case journal.RetainedSaved(topic, message_id):
                add(("RS", topic, str(message_id)))
            case journal.RetainedDeleted(topic):
                add(("RD", topic))
            case journal.WillSaved(client_id, will, delay):
                add(("WS", client_id, codec.encode_will(will), repr(now + delay)))
            case journal.WillDeleted(client_id):
                add(("WD", client_id))
            case _:  # raised before anything is sent: the batch applies all or nothing
                raise KeyError(f"not a store record: {change!r}")
    return ops


class RedisStore(journal.Store):
    """The store of one member of a cluster (see the module's docstring)."""

    def __init__(self, redis: coredis.Redis[bytes] | None, prefix: str, member: str, *,
                 clock: Clock = time.time, fence: bool = False,
                 portal: BlockingPortal | None = None) -> None:
        self.redis = redis  # set by `open` when it comes through the portal
        self.prefix = prefix
        self.member = member
        self.fence = fence
        self._clock = clock
        self._portal = portal
        self._sha = ""

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # ------------------------------------------------------------------ async: a node

    async def commit(self, changes: Sequence[Change], ops: Sequence[str | bytes] = (),
                     first: Sequence[str | bytes] = ()) -> list[str]:
        """Apply `first`, `changes` and then `ops` in one transaction (`first`: ownership
        that the changes need); the answers to claims."""
        args: Ops = [self.prefix, self.member, "1" if self.fence else "0", *first]
        args += journal_ops(changes, self._clock())
        args += ops
        redis = self._client()
        try:
            if not self._sha:
                self._sha = (await redis.script_load(SCRIPT)).decode()
            try:
                result = await redis.evalsha(self._sha, args=args)
            except NoScriptError:  # Redis restarted, or its script cache was flushed
                self._sha = (await redis.script_load(SCRIPT)).decode()
                result = await redis.evalsha(self._sha, args=args)
        except RedisError as exc:
            raise StoreError(f"Redis: {exc}") from exc
        return [item.decode() for item in result] if isinstance(result, list) else []

    async def load_state(self) -> StoredState:
        """Retained messages and the sessions this member owns (nobody is connected)."""
        redis = self._client()
        try:
            owned = sorted(member.decode() for member in
                           await redis.smembers(self.key("owned", self.member)))
            sessions = [session for cid in owned
                        if (session := await self.load_session(cid)) is not None]
            retained = await self.load_retained()
            next_id = int(await redis.get(self.key("nextmsg")) or 1)
        except RedisError as exc:
            raise StoreError(f"Redis: {exc}") from exc
        highest = max([m.message_id for m in retained]
                      + [d.message.message_id for s in sessions for d in s.deliveries],
                      default=0)
        return StoredState(retained, tuple(sessions), max(next_id, highest + 1))

    async def load_retained(self) -> tuple[journal.StoredMessage, ...]:
        """Every retained message, by topic."""
        retained = await self._client().hgetall(self.key("retained"))
        topics = sorted((topic.decode(), int(message_id))
                        for topic, message_id in retained.items())
        messages = await self._messages([message_id for _, message_id in topics],
                                        self._clock())
        return tuple(messages[message_id] for _, message_id in topics)

    async def load_session(self, client_id: str) -> journal.StoredSession | None:
        """One session, if the store has it; its client is taken as disconnected now."""
        redis = self._client()
        now = self._clock()
        key = self.key("s", client_id)
        fields = await redis.hgetall(key)
        if not fields:
            return None
        expires_at = _float(fields.get(b"x"))
        if fields.get(b"c") == b"1":  # its client was connected: the expiry starts now
            expires_at = deadline(now, _float(fields.get(b"l")))
            await redis.hset(key, {"c": "0", "l": "", "x": _number(expires_at)})
        subscriptions = await redis.hgetall(self.key("sub", client_id))
        queue = await redis.hgetall(self.key("dq", client_id))
        incoming = await redis.smembers(self.key("in", client_id))
        parsed: list[tuple[int, int, int, int, bytes]] = []
        for raw_sequence, value in queue.items():
            raw_id, raw_packet_id, raw_state, rest = value.split(b":", 3)
            parsed.append((int(raw_sequence), int(raw_id), int(raw_packet_id), int(raw_state),
                           rest))
        parsed.sort()
        messages = await self._messages([item[1] for item in parsed], now)
        deliveries = []
        for sequence, message_id, packet_id, state, rest in parsed:
            qos, retain, ids = codec.decode_delivery(rest)
            deliveries.append(journal.StoredDelivery(sequence, messages[message_id], qos, retain,
                                                     ids, packet_id, FlightState(state)))
        stored_subscriptions = []
        for topic_filter in sorted(subscriptions):
            request, identifier = codec.decode_subscription(topic_filter.decode(),
                                                            subscriptions[topic_filter])
            stored_subscriptions.append(journal.StoredSubscription(request, identifier))
        will = will_in = None
        if fields.get(b"w"):
            will = codec.decode_will(fields[b"w"])
            will_in = float(fields[b"wa"]) - now
        return journal.StoredSession(
            client_id, int(fields[b"e"]), remaining(now, expires_at), tuple(stored_subscriptions),
            tuple(deliveries), tuple(sorted(int(packet_id) for packet_id in incoming)), will,
            will_in)

    async def _messages(self, ids: list[int], now: float) -> dict[int, journal.StoredMessage]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        blobs = await self._client().hmget(self.key("msg"), [str(i) for i in wanted])
        return {message_id: codec.decode_message(message_id, blob, now)
                for message_id, blob in zip(wanted, blobs, strict=True) if blob is not None}

    async def housekeep(self) -> None:
        await self.commit((), ["HK", repr(self._clock()), repr(SESSION_EXPIRY_GRACE)])

    async def counts(self) -> StoreStats:
        redis = self._client()
        messages = await redis.hlen(self.key("msg"))
        owned = await redis.smembers(self.key("owned", self.member))
        sessions = 0
        for client_id in owned:
            sessions += await redis.exists([self.key("s", client_id.decode())])
        return StoreStats(0, messages, sessions)

    def _client(self) -> coredis.Redis[bytes]:
        if self.redis is None:
            raise StoreError("the Redis store is not open")
        return self.redis

    # ------------------------------------------------------------------ the Store interface

    def open(self, url: str) -> None:
        """Connect (through the portal) to the Redis at `url`."""
        portal = self._require_portal()
        self._exit = portal.wrap_async_context_manager(coredis.Redis.from_url(url))
        self.redis = self._exit.__enter__()

    def load(self) -> StoredState:
        state: StoredState = self._call(self.load_state)
        return state

    def apply(self, changes: Sequence[Change]) -> None:
        self._call(self.commit, changes)

    def housekeeping(self) -> None:
        self._call(self.housekeep)

    def stats(self) -> StoreStats:
        stats: StoreStats = self._call(self.counts)
        return stats

    def close(self) -> None:
        if self._portal is not None and self.redis is not None:
            self._exit.__exit__(None, None, None)
            self.redis = None

    def _require_portal(self) -> BlockingPortal:
        if self._portal is None:
            raise StoreError("this RedisStore belongs to a node's event loop: use its "
                             "async methods")
        return self._portal

    def _call(self, function: Any, *args: Any) -> Any:
        return self._require_portal().call(function, *args)

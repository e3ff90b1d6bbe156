"""The seam where authentication, authorisation and observers plug into the broker.

A `Hook` subclass overrides what it needs; the base methods are no-ops, and
their docstrings are the contract. Gates answer ALLOW, DENY or DEFER; the first
hook that does not defer decides. Observers are told what happened and answer
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from mqttish.core.message import Message
from mqttish.protocol.packets import Connect

# The `listener` of the broker's own in-process clients (a bridge's link): trusted, as
# Mosquitto trusts its bridges; the security hook lets them in and lets them read and write.
INTERNAL_LISTENER = -1


class Decision(Enum):
    ALLOW = "allow"
    DENY = "deny"
    DEFER = "defer"


class Access(Enum):
    PUBLISH = "publish"  # the client publishes to a topic
    SUBSCRIBE = "subscribe"  # the client subscribes with a filter
    READ = "read"  # a message on a topic is about to be delivered to the client

    # Members are singletons, so identity is the right hash, and this one is C's: Enum's
    # own hashes the name in Python, on the way of every ACL check (a dict key).
    __hash__ = object.__hash__


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who a connection belongs to, as hooks see it."""

    client_id: str
    username: str | None
    peer: str
    protocol_level: int
    listener: int = 0  # index in config.listeners: settings may differ per listener
    bridge: bool = False  # another broker's bridge (CONNECT's bridge bit, try_private)


class Hook:
    # True if check_acl's answers depend only on the client's identity and the topic,
    # until HookChain.rules_changed: a connection may then remember them (PublishGrants).
    stable_acl_answers = False

    def authenticate(self, client: ClientInfo, connect: Connect) -> Decision:
        """May this client connect with these credentials?"""
        return Decision.DEFER

    def authenticate_blocking(self, client: ClientInfo, connect: Connect) -> Decision:
        """Like `authenticate`, for checks that block (hashing a password, asking a
        server). The transport runs it in a worker thread before the broker sees the
        CONNECT, so it must not touch broker state; the broker then takes its answer
        unless it defers. `client.client_id` is as the client sent it (maybe empty)."""
        return Decision.DEFER

    def check_acl(self, client: ClientInfo, topic: str, access: Access) -> Decision:
        """May this client publish to, subscribe to, or receive this topic or filter?

        READ is asked for every delivery, so an answer should be cached."""
        return Decision.DEFER

    def on_connect(self, client: ClientInfo) -> None:
        """A client connected and was accepted."""

    def on_disconnect(self, client: ClientInfo, reason: str) -> None:
        """A client's connection ended (for any reason)."""

    def on_publish(self, client: ClientInfo | None, message: Message) -> None:
        """A message was accepted for delivery (client is None for wills and $SYS)."""

    def on_subscribe(self, client: ClientInfo, topic_filter: str, qos: int) -> None:
        """A subscription was added or replaced."""


class HookChain:
    """All installed hooks, asked in order."""

    def __init__(self, hooks: Sequence[Hook] = ()) -> None:
        self.hooks = list(hooks)
        # Bumped whenever cached ACL answers may be stale: a client connected (perhaps as
        # another user), or the rules were reloaded (`rules_changed`).
        self.generation = 0
        self.rules_generation = 0  # bumped only when the rules change (PublishGrants)
        self._sort()

    def rules_changed(self) -> None:
        """Hooks' ACL rules changed: answers cached from them must be asked again."""
        self.generation += 1
        self.rules_generation += 1

    def install(self, hook: Hook) -> None:
        """Add a hook after the broker was made (the server's security hook)."""
        self.hooks.append(hook)
        self._sort()
        self.rules_changed()

    def _sort(self) -> None:
        # The hooks that override the per-message methods: empty lists cost nothing.
        self.acl_hooks = [h for h in self.hooks if type(h).check_acl is not Hook.check_acl]
        self.stable_acl_answers = all(h.stable_acl_answers for h in self.acl_hooks)
        self.publish_observers = [
            h for h in self.hooks if type(h).on_publish is not Hook.on_publish]
        self.blocking_authenticators = [
            h for h in self.hooks
            if type(h).authenticate_blocking is not Hook.authenticate_blocking]

    def authenticate_blocking(self, client: ClientInfo, connect: Connect) -> Decision:
        """Run in a worker thread by the transport (see `Hook.authenticate_blocking`)."""
        return _first_answer(hook.authenticate_blocking(client, connect)
                             for hook in self.blocking_authenticators)

    def authenticate(self, client: ClientInfo, connect: Connect) -> Decision:
        return _first_answer(hook.authenticate(client, connect) for hook in self.hooks)

    def allowed(self, client: ClientInfo, topic: str, access: Access) -> bool:
        """True unless a hook denies; with no ACL hooks this costs one truth test."""
        return self.decide(client, topic, access) is not Decision.DENY

    def granted(self, client: ClientInfo, topic: str, access: Access) -> bool:
        """True only if a hook explicitly allows (for what is refused by default)."""
        return self.decide(client, topic, access) is Decision.ALLOW

    def decide(self, client: ClientInfo, topic: str, access: Access) -> Decision:
        # A plain loop, not `_first_answer`: this runs for every delivery (and every
        # PUBLISH a connection has not remembered), and the two generators cost more
        # than the cached check itself (fan-in QoS 0 with an ACL: 0.85x to 0.72x).
        for hook in self.acl_hooks:
            decision = hook.check_acl(client, topic, access)
            if decision is not Decision.DEFER:
                return decision
        return Decision.DEFER

    def on_connect(self, client: ClientInfo) -> None:
        for hook in self.hooks:
            hook.on_connect(client)

    def on_disconnect(self, client: ClientInfo, reason: str) -> None:
        for hook in self.hooks:
            hook.on_disconnect(client, reason)

    def on_publish(self, client: ClientInfo | None, message: Message) -> None:
        for hook in self.publish_observers:
            hook.on_publish(client, message)

    def on_subscribe(self, client: ClientInfo, topic_filter: str, qos: int) -> None:
        for hook in self.hooks:
            hook.on_subscribe(client, topic_filter, qos)


class PublishGrants:
    """One connection's answers to "may it publish to this topic?". A device publishes
    to a few topics over and over, and asking the hooks each time cost more than the
    rest of routing a small message (fan-in QoS 0 with an ACL: docs/performance.md).
    Only for hooks whose answers are stable; forgotten when the rules change, and
    bounded by the bytes of the topics it holds."""

    __slots__ = ("answers", "generation", "size")

    LIMIT = 4096  # bytes of topic names per connection

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.answers: dict[str, bool] = {}
        self.size = 0

    def remember(self, topic: str, allowed: bool) -> None:
        if len(topic) > self.LIMIT:
            return  # asked again every time, as without grants
        if self.size + len(topic) > self.LIMIT:
            self.answers.clear()
            self.size = 0
        self.answers[topic] = allowed
        self.size += len(topic)


def _first_answer(decisions: Iterable[Decision]) -> Decision:
    """The first decision that is not DEFER: hooks are asked in order, and no further
    once one has answered."""
    return next((decision for decision in decisions if decision is not Decision.DEFER),
                Decision.DEFER)

"""The seam where authentication, authorisation and observers plug into the broker.

A `Hook` subclass overrides what it needs; the base methods are no-ops, and
their docstrings are the contract. Gates answer ALLOW, DENY or DEFER; the first
hook that does not defer decides. Observers are told what happened and answer
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from mqttish.protocol.packets import Connect

if TYPE_CHECKING:
    from mqttish.core.message import Message


class Decision(Enum):
    ALLOW = "allow"
    DENY = "deny"
    DEFER = "defer"


class Access(Enum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who a connection belongs to, as hooks see it."""

    client_id: str
    username: str | None
    peer: str
    protocol_level: int


class Hook:
    def authenticate(self, client: ClientInfo, connect: Connect) -> Decision:
        """May this client connect with these credentials?"""
        return Decision.DEFER

    def check_acl(self, client: ClientInfo, topic: str, access: Access) -> Decision:
        """May this client publish to, or subscribe to, this topic or filter?"""
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
        # The hooks that override the per-message methods: empty lists cost nothing.
        self.acl_hooks = [h for h in self.hooks if type(h).check_acl is not Hook.check_acl]
        self.publish_observers = [
            h for h in self.hooks if type(h).on_publish is not Hook.on_publish]

    def authenticate(self, client: ClientInfo, connect: Connect) -> Decision:
        for hook in self.hooks:
            decision = hook.authenticate(client, connect)
            if decision is not Decision.DEFER:
                return decision
        return Decision.DEFER

    def allowed(self, client: ClientInfo, topic: str, access: Access) -> bool:
        """True unless a hook denies; with no ACL hooks this costs one truth test."""
        return self.decide(client, topic, access) is not Decision.DENY

    def granted(self, client: ClientInfo, topic: str, access: Access) -> bool:
        """True only if a hook explicitly allows (for what is refused by default)."""
        return self.decide(client, topic, access) is Decision.ALLOW

    def decide(self, client: ClientInfo, topic: str, access: Access) -> Decision:
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

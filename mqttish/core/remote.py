"""Subscribers elsewhere: the other nodes of a cluster, as the core sees them.

A broker that is one node of a cluster (mqttish/cluster) has a `Remote`. The
core tells it three things, synchronously, and knows nothing of how they
travel: a message was published here (the remote sends it to the nodes
whose subscribers want it, and says how many), a shared group could give a
message to a member on another node (the remote may take it), and a
client's session started, lost its connection or ended here (the remote
keeps the cluster's record of who owns which client id, and of the wills of
connected clients, which a surviving node publishes if this one dies).

Messages that come from other nodes enter through `Broker.publish_forwarded`
and `Broker.give_forwarded`, which deliver them here only and never call
the remote again, so a message crosses at most one hop.
"""

from __future__ import annotations

from typing import Protocol

from mqttish.core.message import Message
from mqttish.protocol.packets import Will


class Remote(Protocol):
    member: str  # this node's name in the cluster (unique to this run of it)

    def forward(self, message: Message, now: float) -> int:
        """Send `message` to the other nodes that have subscribers for its topic (and, for
        shared groups with no member here, to one node of each); return how many nodes."""

    def share_elsewhere(self, share_name: str, message: Message, dup: bool,
                        member_here: bool, now: float) -> bool:
        """A shared group with members here is to get `message`: True if the remote gave
        it to another node's members instead (their turn, or no member here can take it;
        a message another node gave to this group goes on at most once more)."""

    def session_started(self, client_id: str, will: Will | None) -> None:
        """A client connected here: its will is published by another node if this one dies."""

    def session_detached(self, client_id: str) -> None:
        """The client's connection ended here (its will, if any, was dealt with)."""

    def session_ended(self, client_id: str) -> None:
        """The session ended here: the client id is free in the cluster."""

"""The `Store` interface: what the broker saves, and what it loads at start.

The broker keeps its working state in memory and tells the store about
changes that must survive a restart: retained messages as they change,
sessions when their subscriptions change and, at shutdown, each persistent
session with its undelivered messages. Records are plain frozen data, free of
broker objects, so any backend can serialise them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from mqttish.protocol.packets import SubscriptionRequest
from mqttish.protocol.properties import NO_PROPERTIES, Properties


@dataclass(frozen=True, slots=True)
class StoredMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = NO_PROPERTIES
    expiry_interval: int | None = None  # seconds left when saved


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    message: StoredMessage
    qos: int
    retain: bool
    packet_id: int = 0  # 0 while queued
    state: str = "QUEUED"  # a DeliveryState name
    subscription_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    request: SubscriptionRequest
    identifier: int | None = None


@dataclass(frozen=True, slots=True)
class StoredSession:
    client_id: str
    expiry_interval: int
    subscriptions: tuple[StoredSubscription, ...] = ()
    deliveries: tuple[StoredDelivery, ...] = ()
    incoming_qos2: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredState:
    retained: tuple[StoredMessage, ...] = ()
    sessions: tuple[StoredSession, ...] = ()


class Store(ABC):
    @abstractmethod
    def load(self) -> StoredState:
        """Everything saved so far, to restore at start."""

    @abstractmethod
    def set_retained(self, topic: str, message: StoredMessage | None) -> None:
        """Record the retained message of `topic` (None: there is none any more)."""

    @abstractmethod
    def save_session(self, session: StoredSession) -> None:
        """Record a persistent session, replacing any earlier record of it."""

    @abstractmethod
    def delete_session(self, client_id: str) -> None:
        """Forget a session that ended."""

    def close(self) -> None:  # noqa: B027 - optional for backends with nothing to release
        """Release the backend's resources; the broker calls it at shutdown."""

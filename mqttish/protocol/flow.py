"""MQTT's delivery rules, shared by both ends of a connection: the broker and the client.

Theory of operation. Whoever sends a QoS 1 or 2 PUBLISH keeps it in flight,
under a packet identifier, until the peer has finished acknowledging it
(`Outgoing`): PUBACK ends a QoS 1 flight; PUBREC moves a QoS 2 flight on to
wait for PUBCOMP, and is answered with PUBREL (a PUBREC with an error code
ends the flight instead). When a session resumes on a new connection, every
flight is sent again in order: a PUBLISH with DUP if it was not yet received,
a PUBREL if it was [MQTT-4.4.0-1].

Whoever receives a QoS 2 PUBLISH holds its packet identifier (`IncomingQos2`)
from the PUBREC it answers until the PUBREL that releases it, and delivers a
copy that arrives meanwhile only once: this is what makes QoS 2 exactly once.

Topic aliases (MQTT 5) are per connection and per direction: `AliasesIn`
resolves the aliases the peer sets, `AliasesOut` chooses ours.

Nothing here does I/O or encodes: the callers hold the packets and decide what
to send, with the answers these classes give.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from enum import Enum
from typing import Generic, Protocol, TypeVar

from mqttish.errors import LocalProtocolError, RemoteProtocolError, protocol_error
from mqttish.protocol.packets import PubComp, PubRel
from mqttish.protocol.reason_codes import ReasonCode

MAX_PACKET_ID = 0xFFFF


class FlightState(Enum):
    """Where one QoS 1/2 PUBLISH stands on its way to the peer."""

    QUEUED = 0  # not sent yet (only a broker's session queue holds such)
    AWAITING_PUBACK = 1
    AWAITING_PUBREC = 2
    AWAITING_PUBCOMP = 3


_AWAITING_PUBACK = FlightState.AWAITING_PUBACK  # (module constants: enum lookups cost)
_AWAITING_PUBREC = FlightState.AWAITING_PUBREC


class Flight(Protocol):
    """What the sender keeps for each PUBLISH in flight: at least its state."""

    state: FlightState


F = TypeVar("F", bound=Flight)


class Outgoing(Generic[F]):
    """Our QoS 1/2 PUBLISHes that the peer has not finished acknowledging, by packet id.

    `flights` keeps sending order, which is the order to resend them in.
    """

    __slots__ = ("_next_id", "flights")

    def __init__(self) -> None:
        self.flights: dict[int, F] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self.flights)

    def start(self, flight: F, qos: int, reserved: Container[int] = (),
              preferred: int = 0) -> int:
        """Put a QoS 1/2 PUBLISH in flight under a free packet id, and return the id.

        `reserved` are ids in use for other packets (a client's SUBSCRIBE, say);
        `preferred`, the id to use if it is free (one that does not depend on what
        else was sent before, so that a message sent again after a crash of the
        sender gets the id it had, which the receiver may still hold).
        """
        flights = self.flights
        packet_id = preferred or self._next_id
        if packet_id in flights or packet_id in reserved:
            packet_id = self.allocate(reserved)
        else:  # (the common case, inline: this runs for every QoS 1/2 delivery)
            self._next_id = packet_id % MAX_PACKET_ID + 1
        flight.state = _AWAITING_PUBACK if qos == 1 else _AWAITING_PUBREC
        flights[packet_id] = flight
        return packet_id

    def put(self, packet_id: int, flight: F) -> None:
        """Keep a flight, in its state, under an id from `allocate` (or of an earlier
        connection, restored from a store)."""
        self.flights[packet_id] = flight

    def acknowledged(self, packet_id: int) -> F | None:
        """PUBACK: the QoS 1 flight is over. None if no such flight awaited it."""
        flights = self.flights
        flight = flights.get(packet_id)
        if flight is None or flight.state is not _AWAITING_PUBACK:
            return None
        del flights[packet_id]
        return flight

    def completed(self, packet_id: int) -> F | None:
        """PUBCOMP: the QoS 2 flight is over. None if no such flight awaited it."""
        return self._end(packet_id, FlightState.AWAITING_PUBCOMP)

    def pubrec(self, packet_id: int, reason_code: int) -> tuple[F | None, PubRel | None]:
        """PUBREC: (the flight it ended, the PUBREL to answer with).

        A success moves the flight on to wait for PUBCOMP and is answered with
        PUBREL (again, if it was a repeat); an error code ends the flight
        unanswered; an unknown id is answered with PUBREL 0x92.
        """
        flight = self.flights.get(packet_id)
        if flight is None or flight.state is FlightState.AWAITING_PUBACK:
            return None, PubRel(packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)
        if reason_code >= 0x80:
            return self._end(packet_id, FlightState.AWAITING_PUBREC), None
        flight.state = FlightState.AWAITING_PUBCOMP
        return None, PubRel(packet_id)

    def resend(self) -> Iterator[tuple[int, F, bool]]:
        """Every flight, in sending order, for a resumed session: (packet id, flight,
        True to send it again as a PUBLISH with DUP / False to send PUBREL)."""
        for packet_id, flight in self.flights.items():
            yield packet_id, flight, flight.state is not FlightState.AWAITING_PUBCOMP

    def take(self, packet_ids: list[int]) -> list[F]:
        """Take these flights back (their messages go elsewhere)."""
        return [self.flights.pop(packet_id) for packet_id in packet_ids]

    def clear(self) -> None:
        self.flights.clear()

    def allocate(self, reserved: Container[int] = ()) -> int:
        """A packet id no flight uses, nor any of `reserved` [MQTT-2.2.1-3]."""
        flights = self.flights
        packet_id = self._next_id
        if packet_id in flights or packet_id in reserved:
            for _ in range(MAX_PACKET_ID):
                packet_id = packet_id % MAX_PACKET_ID + 1
                if packet_id not in flights and packet_id not in reserved:
                    break
            else:
                raise LocalProtocolError(
                    "[MQTT-2.2.1-3] all 65535 packet identifiers are in use")
        self._next_id = packet_id % MAX_PACKET_ID + 1
        return packet_id

    def _end(self, packet_id: int, expected: FlightState) -> F | None:
        flight = self.flights.get(packet_id)
        if flight is None or flight.state is not expected:
            return None
        del self.flights[packet_id]
        return flight


class IncomingQos2:
    """Packet ids of QoS 2 messages received and not yet released by PUBREL."""

    __slots__ = ("ids",)

    def __init__(self, ids: set[int] | None = None) -> None:
        self.ids: set[int] | None = ids or None  # made on first use: most never need it

    def __len__(self) -> int:
        return len(self.ids) if self.ids else 0

    def __contains__(self, packet_id: object) -> bool:
        return bool(self.ids) and packet_id in self.ids  # type: ignore[operator]

    def hold(self, packet_id: int) -> bool:
        """A QoS 2 PUBLISH arrived: hold its id; False if it was held already (a copy,
        which is answered with PUBREC again but not delivered again)."""
        ids = self.ids
        if ids is None:
            ids = self.ids = set()
        elif packet_id in ids:
            return False
        ids.add(packet_id)
        return True

    def release(self, packet_id: int) -> PubComp:
        """PUBREL arrived: the PUBCOMP to answer with (0x92 if the id was not held)."""
        ids = self.ids
        if ids and packet_id in ids:
            ids.discard(packet_id)
            return PubComp(packet_id)
        return PubComp(packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)

    def clear(self) -> None:
        self.ids = None


class AliasesIn:
    """The topic aliases the peer sets on its PUBLISHes, up to the maximum we announced.

    `peer_rule` is the rule the peer breaks by exceeding it: 3.3.2-9 for a
    client, 3.3.2-11 for a server.
    """

    __slots__ = ("maximum", "peer_rule", "topics")

    def __init__(self, maximum: int, peer_rule: str) -> None:
        self.maximum = maximum
        self.peer_rule = peer_rule
        self.topics: dict[int, str] | None = None  # made on first use

    def resolve(self, topic: str, alias: int) -> str:
        """The topic of a PUBLISH with a Topic Alias: set it, or look it up."""
        if alias > self.maximum:
            raise RemoteProtocolError(
                f"[{self.peer_rule}] topic alias {alias} exceeds the maximum {self.maximum}",
                ReasonCode.TOPIC_ALIAS_INVALID)
        topics = self.topics
        if topics is None:
            topics = self.topics = {}
        if topic:
            topics[alias] = topic
            return topic
        known = topics.get(alias)
        if known is None:
            raise protocol_error(f"[MQTT-3.3.2.3.4] topic alias {alias} was never set")
        return known


class AliasesOut:
    """The topic aliases we set on PUBLISHes to the peer, up to the maximum it announced."""

    __slots__ = ("aliases", "maximum")

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.aliases: dict[str, int] | None = None  # made on first use

    def choose(self, topic: str) -> tuple[int | None, bool]:
        """(the alias to send `topic` with, True if it is new and must carry the topic).

        A new alias counts only once `remember`ed: the PUBLISH may not go out.
        """
        aliases = self.aliases
        if aliases is not None:
            alias = aliases.get(topic)
            if alias is not None:
                return alias, False
        count = len(aliases) if aliases is not None else 0
        if count < self.maximum:
            return count + 1, True
        return None, True

    def remember(self, topic: str, alias: int) -> None:
        if self.aliases is None:
            self.aliases = {}
        self.aliases[topic] = alias

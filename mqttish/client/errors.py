"""What can go wrong for a client, with the server's reason code when it gave one.

Misuse of the API (a wildcard in a topic name, QoS 3) raises the codec's
`LocalProtocolError`; a server that breaks the protocol is met with
`RemoteProtocolError` internally and ends the connection like any other loss.
"""

from __future__ import annotations

from mqttish.log_text import SENTENCE_LIMIT, clip
from mqttish.protocol.reason_codes import ReasonCode


def reason_name(code: int) -> str:
    """`NOT_AUTHORIZED (0x87)`, or just the number for a code the spec does not define."""
    try:
        return f"{ReasonCode(code).name} (0x{code:02X})"
    except ValueError:
        return f"0x{code:02X}"


class ClientError(Exception):
    """Base class of the errors the client raises."""


class ConnectError(ClientError):
    """The server answered CONNECT with a refusal."""

    # Refusals that say "not now" rather than "not you": worth retrying when reconnecting.
    TRANSIENT = frozenset({
        ReasonCode.SERVER_UNAVAILABLE, ReasonCode.SERVER_BUSY, ReasonCode.SERVER_SHUTTING_DOWN,
        ReasonCode.CONNECTION_RATE_EXCEEDED, ReasonCode.QUOTA_EXCEEDED,
    })

    def __init__(self, reason_code: int, reason_string: str | None = None) -> None:
        message = f"connection refused: {reason_name(reason_code)}"
        if reason_string:
            message += f": {clip(reason_string, SENTENCE_LIMIT)}"
        super().__init__(message)
        self.reason_code = reason_code

    @property
    def transient(self) -> bool:
        return self.reason_code in self.TRANSIENT


class ConnectionLostError(ClientError, ConnectionError):
    """The connection ended (and the client was not asked to reconnect).

    It is a ConnectionError too, so `except OSError` catches every network failure.
    """


class PublishError(ClientError):
    """An MQTT 5 server refused a QoS 1/2 message (PUBACK or PUBREC with a code >= 0x80)."""

    def __init__(self, topic: str, reason_code: int, reason_string: str | None = None) -> None:
        message = f"publish to {clip(topic)} refused: {reason_name(reason_code)}"
        if reason_string:
            message += f": {clip(reason_string, SENTENCE_LIMIT)}"
        super().__init__(message)
        self.topic = topic
        self.reason_code = reason_code


class SubscribeError(ClientError):
    """The server refused a subscription that `Client.subscription()` needed."""

    def __init__(self, topic_filter: str, reason_code: int) -> None:
        super().__init__(
            f"subscription to {clip(topic_filter)} refused: {reason_name(reason_code)}")
        self.topic_filter = topic_filter
        self.reason_code = reason_code

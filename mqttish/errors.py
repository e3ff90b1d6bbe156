"""Errors that say whose fault a problem is and which reason code answers it.

Like h11: RemoteProtocolError means the peer broke the protocol (we answer with
its reason code and close); LocalProtocolError means we were asked to send
something the protocol forbids (a bug on our side, or a misuse of the API).
"""

from mqttish.protocol.reason_codes import ReasonCode


class MQTTError(Exception):
    """A protocol failure carrying the reason code to send, if any is sent."""

    def __init__(self, message: str, reason_code: ReasonCode = ReasonCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class RemoteProtocolError(MQTTError):
    """The peer sent something malformed or forbidden."""


class LocalProtocolError(MQTTError):
    """We were asked to send something malformed or forbidden."""


def malformed(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, ReasonCode.MALFORMED_PACKET)


def protocol_error(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, ReasonCode.PROTOCOL_ERROR)

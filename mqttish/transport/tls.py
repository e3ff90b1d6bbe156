"""TLS for listeners: server contexts from the configuration, reloadable, and the
handshake with a deadline.

Contexts are built from `ssl.SSLContext(PROTOCOL_TLS_SERVER)` with nothing
trusted but the listener's `cafile`: a client certificate from any public CA
must not be able to name itself a user. A reload builds a new context and
swaps it in; connections already open keep theirs, new ones get the new
certificate. A failed handshake (plain MQTT on a TLS port, an unknown or
expired certificate, a client that stalls) costs one log line and that
connection, nothing else.
"""

from __future__ import annotations

import logging
import ssl

import trio

from mqttish.config import ListenerConfig
from mqttish.transport.listeners import StartupError, peer_name

log = logging.getLogger("mqttish.tls")

TLS_VERSIONS = {"tlsv1.2": ssl.TLSVersion.TLSv1_2, "tlsv1.3": ssl.TLSVersion.TLSv1_3}

# How RFC 2253 names the attributes of a certificate's subject (as Mosquitto prints them).
_SHORT_NAMES = {
    "commonName": "CN", "countryName": "C", "localityName": "L",
    "stateOrProvinceName": "ST", "organizationName": "O", "organizationalUnitName": "OU",
    "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID",
}


class TlsError(Exception):
    """A listener's certificate, key or CA file cannot be used."""


def server_context(listener: ListenerConfig) -> ssl.SSLContext:
    assert listener.certfile is not None and listener.keyfile is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[listener.tls_version]
    try:
        context.load_cert_chain(listener.certfile, listener.keyfile)
        if listener.cafile is not None:
            context.load_verify_locations(cafile=listener.cafile)
        if listener.ciphers is not None:
            context.set_ciphers(listener.ciphers)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f for f in (listener.certfile, listener.keyfile, listener.cafile) if f)
        raise TlsError(f"TLS setup failed ({files}): {exc}") from None
    if listener.require_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class TlsListener:
    """One listener's TLS: its current context, and the server side of handshakes."""

    def __init__(self, listener: ListenerConfig, name: str) -> None:
        self.listener = listener
        self.name = name
        try:
            self.context = server_context(listener)
        except TlsError as exc:
            raise StartupError(f"listener {name}: {exc}") from None

    def reload(self) -> None:
        """Read the certificate, key and CA again; TlsError keeps the current ones."""
        self.context = server_context(self.listener)

    async def handshake(self, stream: trio.abc.Stream) -> trio.SSLStream[trio.abc.Stream] | None:
        """The TLS stream once the handshake is done; None (logged) if it failed or took
        longer than the listener's `handshake_timeout`."""
        timeout = self.listener.handshake_timeout
        # A browser closes wss without close_notify; HTTP tolerates that, so we do there.
        tls = trio.SSLStream(stream, self.context, server_side=True,
                             https_compatible=self.listener.protocol == "websocket")
        problem = None
        with trio.move_on_after(timeout):
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                cause = exc.__cause__
                problem = str(cause) if cause is not None else "connection closed"
            else:
                return tls
        log.info("TLS handshake with %s on %s failed: %s", peer_name(stream), self.name,
                 problem or f"not done within {timeout:g} s")
        return None

    def username(self, tls: trio.SSLStream[trio.abc.Stream]) -> str | None:
        """The user name the client's certificate gives, if the listener asks for one."""
        if not self.listener.certificate_username:
            return None
        certificate = tls.getpeercert()
        if not certificate:
            return None
        subject = certificate.get("subject", ())
        if self.listener.use_identity_as_username:
            for rdn in subject:
                for key, value in rdn:
                    if key == "commonName":
                        return str(value)
            return None
        return subject_rfc2253(subject)


def subject_rfc2253(subject: tuple[tuple[tuple[str, str], ...], ...]) -> str:
    """`CN=device-7,O=Acme,C=NL`: the subject as RFC 2253 (and Mosquitto) write it."""
    return ",".join(
        "+".join(f"{_SHORT_NAMES.get(key, key)}={_escape(value)}" for key, value in rdn)
        for rdn in reversed(subject))


def _escape(value: str) -> str:
    escaped = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped

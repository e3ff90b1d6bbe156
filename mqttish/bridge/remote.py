"""The way to the remote broker: its addresses in order (failover), TLS, a local address.

`RemoteAddresses.open` is the bridge client's connector: it tries the
addresses in turn and returns the first stream that connects (TLS handshake
included). Without `round_robin` the first address is the main one: every
attempt starts there, and while connected elsewhere the bridge checks now and
then whether it is back (`main_is_back`). With `round_robin` all are equal: an
attempt starts after the address that failed last.
"""

from __future__ import annotations

import logging
import ssl

import trio

from mqttish.bridge.config import BridgeConfig, split_address

log = logging.getLogger("mqttish.bridge")

_FAILURES = (OSError, trio.BrokenResourceError, trio.TooSlowError)


class BridgeTlsError(ValueError):
    """A bridge's TLS files cannot be used; the message names the bridge and the file."""


def tls_context(config: BridgeConfig) -> ssl.SSLContext | None:
    """The context that checks the remote broker's certificate (and presents ours)."""
    if not config.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=config.cafile, capath=config.capath)
        if config.certfile is not None:
            context.load_cert_chain(config.certfile, config.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise BridgeTlsError(f"bridge {config.name!r}: cannot use its TLS files: {exc}"
                             ) from None
    context.minimum_version = (ssl.TLSVersion.TLSv1_3 if config.tls_version == "tlsv1.3"
                               else ssl.TLSVersion.TLSv1_2)
    if config.tls_insecure:
        context.check_hostname = False  # the certificate chain is still checked
    if config.alpn is not None:
        context.set_alpn_protocols([config.alpn])
    return context


class RemoteAddresses:
    """Where the bridge connects, and where it is connected now."""

    def __init__(self, config: BridgeConfig, connect_timeout: float = 10.0) -> None:
        self.config = config
        self.addresses = [split_address(address) for address in config.addresses]
        self.tls = tls_context(config)
        self.connect_timeout = connect_timeout
        self.current: int | None = None  # index of the address of the last connection
        self._stream: trio.abc.Stream | None = None

    @property
    def current_name(self) -> str:
        if self.current is None:
            return "-"
        host, port = self.addresses[self.current]
        return f"{host}:{port}"

    async def open(self) -> trio.abc.Stream:
        """A stream to the first address that answers; OSError naming each failure."""
        count = len(self.addresses)
        start = 0
        if self.config.round_robin and self.current is not None:
            start = (self.current + 1) % count  # the last one failed: the next one first
        failures = []
        for step in range(count):
            index = (start + step) % count
            try:
                stream = await self._open(index)
            except _FAILURES as exc:
                host, port = self.addresses[index]
                failures.append(f"{host}:{port}: {_reason(exc)}")
                continue
            self.current = index
            self._stream = stream
            return stream
        raise OSError("; ".join(failures))

    async def _open(self, index: int) -> trio.abc.Stream:
        host, port = self.addresses[index]
        with trio.fail_after(self.connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(
                host, port, local_address=self.config.bind_address)
            if self.tls is not None:
                secured = trio.SSLStream(stream, self.tls, server_hostname=host)
                try:
                    await secured.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
                stream = secured
        return stream

    async def main_is_back(self) -> bool:
        """While connected to another address: does the main one accept connections?"""
        try:
            probe = await self._open(0)
        except _FAILURES:
            return False
        await trio.aclose_forcefully(probe)
        return True

    async def drop_connection(self) -> None:
        """End the current connection: the bridge's client reconnects (to the main one)."""
        if self._stream is not None:
            await trio.aclose_forcefully(self._stream)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__  # a failed TLS handshake: the SSL error says why
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

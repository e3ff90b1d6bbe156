"""`mqttish pub` and `mqttish sub`: mosquitto_pub / mosquitto_sub habits on our own client.

The options are mosquitto's (`-h` is the host, so help is `--help`), and so
are the exit codes that scripts test: 0 on success, 1 when the connection or a
request fails, 2 for a usage error and 27 when `sub -W` times out. Errors are
one line on stderr; reconnect notices and debug output (`-d`) are logged there
too, while `sub` writes messages to stdout, flushed one by one so pipes work.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import ssl
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import trio

from mqttish.client.client import Client, ClientOptions
from mqttish.client.errors import ClientError, reason_name
from mqttish.client.protocol import Message
from mqttish.errors import MQTTError, RemoteProtocolError
from mqttish.protocol import properties as P
from mqttish.protocol.packets import MQTT_3_1_1, MQTT_5, Will
from mqttish.protocol.properties import (
    NO_PROPERTIES,
    SESSION_NEVER_EXPIRES,
    SPEC_BY_NAME,
    Properties,
    PropType,
)
from mqttish.protocol.topics import validate_subscription_filter, validate_topic_name

log = logging.getLogger("mqttish.client.cli")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 27  # mosquitto_sub's MOSQ_ERR_TIMEOUT, which scripts already test for

VERSIONS = {"311": MQTT_3_1_1, "mqttv311": MQTT_3_1_1, "5": MQTT_5, "mqttv5": MQTT_5}
# -D COMMAND: the packet whose properties it sets, as the property table names it.
PROPERTY_COMMANDS = {
    "CONNECT": P.CONNECT, "PUBLISH": P.PUBLISH, "SUBSCRIBE": P.SUBSCRIBE, "WILL": P.WILL,
}
# mosquitto's names for the repeatable properties; the others are ours with '-' for '_'.
PROPERTY_ALIASES = {
    "user-property": "user_properties", "subscription-identifier": "subscription_identifiers",
}


class UsageError(Exception):
    """A bad command line: exit 2 with one line on stderr."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class Settings:
    """A parsed command line: everything `pub` or `sub` needs, checked."""

    host: str
    port: int
    client_id: str
    version: int
    clean_start: bool
    keepalive: int
    username: str | None
    password: str | None
    will: Will | None
    debug: bool
    qos: int
    topics: tuple[str, ...]
    properties: dict[str, Properties] = field(default_factory=dict)  # by PROPERTY_COMMANDS
    # pub
    payload: bytes | None = None  # None: one message per line of stdin (-l)
    retain: bool = False
    # sub
    verbose: bool = False
    count: int = 0
    timeout: float | None = None
    skip_retained: bool = False
    end_of_line: bool = True
    tls: ssl.SSLContext | None = None

    def props(self, kind: str) -> Properties:
        return self.properties.get(kind, NO_PROPERTIES)

    def client(self) -> Client:
        return Client(
            self.host, self.port, client_id=self.client_id, version=self.version,
            clean_start=self.clean_start, keepalive=self.keepalive, will=self.will,
            username=self.username, password=self.password, properties=self.props(P.CONNECT),
            options=ClientOptions(tls=self.tls),
        )


def build_parser(command: str) -> argparse.ArgumentParser:
    if command == "pub":
        description = "Publish one message (or one per line of stdin) and exit."
    else:
        description = "Subscribe to topic filters and print the messages that arrive."
    parser = _Parser(prog=f"mqttish {command}", add_help=False, description=description)
    add = parser.add_argument
    add("--help", action="help", help="show this help and exit")
    add("-h", "--host", default="localhost", help="broker host (default: localhost)")
    add("-p", "--port", type=int, help="broker port (default: 1883, with TLS 8883)")
    if command == "pub":
        add("-t", "--topic", required=True, help="topic to publish to")
    else:
        add("-t", "--topic", action="append", required=True,
            help="topic filter to subscribe to; repeat for more")
    add("-q", "--qos", type=int, choices=(0, 1, 2), default=0, help="QoS (default: 0)")
    add("-i", "--id", help="client id (default: mqttish-pub-/mqttish-sub- and a random suffix)")
    add("-u", "--username", help="user name")
    add("-P", "--pw", help="password")
    add("-k", "--keepalive", type=int, default=60, help="keepalive in seconds (default: 60)")
    add("-V", "--protocol-version", default="311", metavar="VERSION",
        help="MQTT version: 311 or mqttv311 (default), 5 or mqttv5")
    add("-c", "--disable-clean-session", action="store_true",
        help="persistent session: keep subscriptions and queued messages (needs -i)")
    add("-x", "--session-expiry", type=int, metavar="SECONDS",
        help="MQTT 5 session expiry interval (default: never with -c, else 0)")
    add("-D", "--property", action="append", nargs="+", default=[],
        metavar="ARG", help="MQTT 5 property: COMMAND NAME VALUE, e.g. "
        "-D PUBLISH user-property KEY VALUE, -D PUBLISH content-type text/plain")
    add("-d", "--debug", action="store_true", help="log debug messages to stderr")
    add("--cafile", help="connect over TLS, trusting the CA certificates in this PEM file")
    add("--cert", help="client certificate (PEM) for mutual TLS; needs --key")
    add("--key", help="private key (PEM) of --cert")
    add("--insecure", action="store_true",
        help="TLS: do not check that the server's certificate names the host")
    add("--tls-use-os-certs", action="store_true",
        help="connect over TLS, trusting the system's CA certificates")
    add("--will-topic", help="topic of the will, published if we vanish without DISCONNECT")
    add("--will-payload", default="", help="payload of the will (default: empty)")
    add("--will-qos", type=int, choices=(0, 1, 2), default=0, help="QoS of the will")
    add("--will-retain", action="store_true", help="retain the will")
    if command == "pub":
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("-m", "--message", help="message payload")
        source.add_argument("-f", "--file", help="send the contents of FILE as the message")
        source.add_argument("-n", "--null-message", action="store_true",
                            help="send an empty message (with -r: clear the retained one)")
        source.add_argument("-l", "--stdin-line", action="store_true",
                            help="send each line of stdin as a message")
        source.add_argument("-s", "--stdin-file", action="store_true",
                            help="send all of stdin as one message")
        add("-r", "--retain", action="store_true", help="retain the message")
    else:
        add("-v", "--verbose", action="store_true", help="print 'topic payload'")
        add("-C", "--count", type=int, default=0, help="exit after COUNT messages")
        add("-W", "--timeout", type=float, metavar="SECONDS",
            help="exit (status 27) if still running after SECONDS")
        add("-R", "--no-retained", action="store_true",
            help="skip retained messages (stale values sent on subscribe)")
        add("-N", "--no-eol", action="store_true", help="no newline after each payload")
    return parser


def parse(command: str, argv: Sequence[str]) -> Settings:
    args = build_parser(command).parse_args(argv)
    version = VERSIONS.get(args.protocol_version.lower())
    if version is None:
        raise UsageError(f"unsupported protocol version {args.protocol_version!r} "
                         "(use 311, mqttv311, 5 or mqttv5)")
    topics = (args.topic,) if command == "pub" else tuple(args.topic)
    validate = validate_topic_name if command == "pub" else validate_subscription_filter
    for topic in topics:
        try:
            validate(topic)
        except RemoteProtocolError as exc:
            raise UsageError(f"invalid topic {topic!r}: {exc}") from None
    if args.disable_clean_session and not args.id:
        raise UsageError("-c needs a client id (-i): a persistent session is found by its id")
    if version != MQTT_5 and (args.property or args.session_expiry is not None):
        raise UsageError("-D and -x need MQTT 5 (-V 5)")
    properties = _properties(args.property)
    if version == MQTT_5:
        expiry = args.session_expiry
        if expiry is None and args.disable_clean_session:
            expiry = SESSION_NEVER_EXPIRES
        if expiry:
            connect = properties.get(P.CONNECT, NO_PROPERTIES)
            properties[P.CONNECT] = replace(connect, session_expiry_interval=expiry)
    will = None
    if args.will_topic is not None:
        will = Will(args.will_topic, os.fsencode(args.will_payload), args.will_qos,
                    args.will_retain, properties.get(P.WILL, NO_PROPERTIES))
    tls = _tls_context(args)
    port = args.port if args.port is not None else 8883 if tls is not None else 1883
    settings = Settings(
        host=args.host, port=port, tls=tls,
        client_id=args.id or f"mqttish-{command}-{secrets.token_hex(4)}",
        version=version, clean_start=not args.disable_clean_session, keepalive=args.keepalive,
        username=args.username, password=args.pw, will=will, debug=args.debug, qos=args.qos,
        topics=topics, properties=properties,
    )
    if command == "pub":
        return replace(settings, payload=_payload(args), retain=args.retain)
    if args.count < 0 or (args.timeout is not None and args.timeout <= 0):
        raise UsageError("-C and -W need positive numbers")
    return replace(settings, verbose=args.verbose, count=args.count, timeout=args.timeout,
                   skip_retained=args.no_retained, end_of_line=not args.no_eol)


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """mosquitto_pub's TLS options as a client context; None without --cafile or
    --tls-use-os-certs (plain TCP)."""
    if args.cafile is None and not args.tls_use_os_certs:
        if args.cert or args.key or args.insecure:
            raise UsageError("--cert, --key and --insecure need --cafile or --tls-use-os-certs")
        return None
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key go together")
    try:
        context = ssl.create_default_context(cafile=args.cafile)
        if args.cert is not None:
            context.load_cert_chain(args.cert, args.key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"TLS files: {exc}") from None
    if args.insecure:
        context.check_hostname = False
    return context


def _payload(args: argparse.Namespace) -> bytes | None:
    """The message to publish, read before connecting; None means stream stdin by lines."""
    if args.message is not None:
        return os.fsencode(args.message)  # the bytes given, even if not UTF-8
    if args.file is not None:
        try:
            with open(args.file, "rb") as file:
                return file.read()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    if args.stdin_file:
        return sys.stdin.buffer.read()
    if args.null_message:
        return b""
    return None


def _properties(definitions: list[list[str]]) -> dict[str, Properties]:
    """-D COMMAND NAME VALUE [VALUE] options, as Properties per packet kind."""
    values: dict[str, dict[str, Any]] = {}
    for definition in definitions:
        if len(definition) < 3:
            raise UsageError("-D needs COMMAND NAME VALUE")
        command, name, *rest = definition
        kind = PROPERTY_COMMANDS.get(command.upper())
        field_name = PROPERTY_ALIASES.get(name, name.replace("-", "_"))
        spec = SPEC_BY_NAME.get(field_name)
        if kind is None or spec is None or kind not in spec.packets:
            raise UsageError(f"-D {command} {name}: not a property {command} can carry")
        if len(rest) != (2 if spec.type is PropType.STRING_PAIR else 1):
            raise UsageError(f"-D {command} {name}: wrong number of values")
        value: Any
        if spec.type is PropType.STRING_PAIR:
            value = (rest[0], rest[1])
        elif spec.type is PropType.STRING:
            value = rest[0]
        elif spec.type is PropType.BINARY:
            value = rest[0].encode()
        else:
            try:
                value = int(rest[0])
            except ValueError:
                raise UsageError(f"-D {command} {name}: {rest[0]!r} is not a number") from None
        fields = values.setdefault(kind, {})
        if spec.repeatable:
            fields[field_name] = (*fields.get(field_name, ()), value)
        else:
            fields[field_name] = value
    return {kind: Properties(**fields) for kind, fields in values.items()}


# ------------------------------------------------------------------ running


async def publish(settings: Settings) -> int:
    async with _stop_on_signal() as stop, settings.client() as client:
        topic = settings.topics[0]

        async def send(payload: bytes) -> None:
            await client.publish(topic, payload, settings.qos, settings.retain,
                                 settings.props(P.PUBLISH))

        with stop:
            if settings.payload is None:
                await _each_stdin_line(send)
            else:
                await send(settings.payload)
    return 0


async def subscribe(settings: Settings) -> int:
    async with _stop_on_signal() as stop, settings.client() as client:
        codes = await client.subscribe(settings.topics, settings.qos,
                                       properties=settings.props(P.SUBSCRIBE))
        refused = []
        for topic, code in zip(settings.topics, codes, strict=False):
            if code >= 0x80:
                refused.append(topic)
                print(f"mqttish sub: subscription to {topic!r} refused: {reason_name(code)}",
                      file=sys.stderr)
            else:
                log.debug("subscribed to %r: granted QoS %d", topic, code)
        if len(refused) == len(settings.topics):
            return EXIT_ERROR
        timed_out = False
        with stop:
            with trio.move_on_after(settings.timeout or float("inf")) as deadline:
                await _print_messages(client, settings)
            timed_out = deadline.cancelled_caught
    if timed_out:
        print("Timed out", file=sys.stderr)
        return EXIT_TIMEOUT
    return 0


async def _print_messages(client: Client, settings: Settings) -> None:
    out = sys.stdout.buffer
    received = 0
    async for message in client.messages():
        if settings.skip_retained and message.retain:
            continue
        out.write(_format(message, settings))
        out.flush()
        received += 1
        if received == settings.count:
            return


def _format(message: Message, settings: Settings) -> bytes:
    line = message.payload
    if settings.verbose:
        line = message.topic.encode() + b" " + line
    return line + b"\n" if settings.end_of_line else line


async def _each_stdin_line(handle: Callable[[bytes], Awaitable[None]]) -> None:
    """Call `handle` for each line of stdin, as lines arrive (`tail -f | mqttish pub -l`)."""
    fd = sys.stdin.fileno()
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)):
        # A regular file (or /dev/null) cannot be polled, and reading it never blocks long.
        for line in sys.stdin.buffer:
            await handle(line.rstrip(b"\n"))
        return
    pending = b""
    async with trio.lowlevel.FdStream(os.dup(fd)) as stream:
        while chunk := await stream.receive_some():
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                await handle(line)
    if pending:
        await handle(pending)


@asynccontextmanager
async def _stop_on_signal() -> AsyncIterator[trio.CancelScope]:
    """A cancel scope that SIGINT or SIGTERM cancels, so the command ends with DISCONNECT."""
    stop = trio.CancelScope()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _ in signals:
                    stop.cancel()

            nursery.start_soon(watch)
            yield stop
            nursery.cancel_scope.cancel()


def _describe(exc: BaseException, settings: Settings) -> str:
    if isinstance(exc, ClientError | MQTTError):
        return str(exc)
    assert isinstance(exc, OSError)
    if isinstance(exc, socket.gaierror) or not exc.errno:
        reason = exc.strerror or str(exc)
    else:
        reason = os.strerror(exc.errno)
    return f"cannot connect to {settings.host}:{settings.port}: {reason}"


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def main(command: str, args: list[str]) -> int:
    """Run `mqttish pub|sub ARGS`; return the exit status."""
    try:
        settings = parse(command, args)
    except UsageError as exc:
        print(f"mqttish {command}: {exc} (see 'mqttish {command} --help')", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr,
    )
    status = EXIT_ERROR
    try:
        status = trio.run(publish if command == "pub" else subscribe, settings)
    except* BrokenPipeError:
        # The reader of our output left (`mqttish sub ... | head -1`): that is the end.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 0
    except* (ClientError, MQTTError, OSError) as group:
        print(f"mqttish {command}: {_describe(_first(group), settings)}", file=sys.stderr)
    return status

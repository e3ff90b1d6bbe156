"""Command line: `mqttish [serve] [-c FILE] [-p PORT] [-v]`, `mqttish pub`, `mqttish sub`,
`mqttish passwd`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from mqttish import __version__
from mqttish.config import Config, ConfigError, load_config
from mqttish.core.store import StoreError
from mqttish.persistence import open_store
from mqttish.server import Server
from mqttish.transport.listeners import StartupError

log = logging.getLogger("mqttish")

SUBCOMMANDS = ("serve", "pub", "sub", "passwd", "backup")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqttish", description="An MQTT 3.1.1 and 5.0 broker.",
        epilog="Subcommands: 'mqttish pub --help', 'mqttish sub --help', "
               "'mqttish passwd --help'. SIGHUP reloads password, ACL and certificate files.",
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="YAML configuration file")
    parser.add_argument("-p", "--port", type=int, help="port of the first listener")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument("--version", action="version", version=f"mqttish {__version__}")
    return parser


def apply_overrides(config: Config, port: int | None) -> Config:
    if port is None:
        return config
    first = dataclasses.replace(config.listeners[0], port=port)
    return dataclasses.replace(config, listeners=(first, *config.listeners[1:]))


def serve_main(argv: Sequence[str]) -> int:
    args = serve_parser().parse_args(argv)
    try:
        config = apply_overrides(load_config(args.config), args.port)
    except ConfigError as exc:
        print(f"mqttish: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging("debug" if args.verbose else config.log_level)
    try:
        store = open_store(config)
    except StoreError as exc:
        print(f"mqttish: {exc}", file=sys.stderr)
        return 1
    status = 0
    try:
        failure = trio.run(_serve_until_signalled, Server(config, store=store))
    except* StartupError as group:
        for error in group.exceptions:
            print(f"mqttish: {error}", file=sys.stderr)
        status = 1
    else:
        if failure is not None:
            print(f"mqttish: stopped: the store failed: {failure}", file=sys.stderr)
            status = 1
    return status


async def _serve_until_signalled(server: Server) -> StoreError | None:
    """Serve until SIGINT or SIGTERM (SIGHUP reloads), or until the server stops by
    itself (its store failed); return why it failed, if it did."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve, server, nursery.cancel_scope)
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                if signum == signal.SIGHUP:
                    await server.reload()
                    continue
                server.request_shutdown()
                break
    return server.failure


async def _serve(server: Server, signals: trio.CancelScope, *,
                 task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
    await server.run(task_status=task_status)
    signals.cancel()  # it stopped: nothing to wait for any more


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args and args[0] in SUBCOMMANDS else "serve"
    if args and args[0] in SUBCOMMANDS:
        args = args[1:]
    if command == "serve":
        return serve_main(args)
    if command == "passwd":
        from mqttish.auth import passwd_cli

        return passwd_cli.main(args)
    if command == "backup":
        from mqttish.persistence import backup

        return backup.main(args)
    from mqttish.client import cli as client_cli

    return client_cli.main(command, args)


if __name__ == "__main__":
    sys.exit(main())

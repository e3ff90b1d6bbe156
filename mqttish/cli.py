"""Command line: `mqttish [serve] [-c FILE] [-p PORT] [-v]`, `mqttish pub`, `mqttish sub`,
`mqttish passwd`, `mqttish convert mosquitto.conf`.

The broker's options are Mosquitto's: `-c` reads a YAML file or a mosquitto.conf,
`-p PORT` alone opens that one TCP listener on loopback (as Mosquitto 2 does),
`-v` logs every packet in and out. Exit status: 0 after a clean shutdown, 1 when
the broker cannot start (a port in use, a file it cannot read), 2 for a
configuration error; each is one line on stderr saying what to fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from mqttish import __version__, collector
from mqttish.config import ClusterConfig, Config, ConfigError, ListenerConfig
from mqttish.config_file import LoadedConfig, mosquitto_as_yaml, read_config_file
from mqttish.core.store import StoreError
from mqttish.persistence import open_store
from mqttish.server import Server
from mqttish.transport.listeners import StartupError

log = logging.getLogger("mqttish")

SUBCOMMANDS = ("serve", "pub", "sub", "passwd", "backup", "convert")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(config: Config) -> None:
    """Log where the configuration says (stderr by default; Mosquitto's log_dest)."""
    handlers: list[logging.Handler] = []
    for dest in config.log_dest:
        handlers.append(logging.StreamHandler(sys.stdout if dest == "stdout" else sys.stderr))
    if config.log_file is not None:
        try:
            handlers.append(logging.FileHandler(config.log_file, encoding="utf-8"))
        except OSError as exc:
            raise StartupError(f"cannot open log file {config.log_file}: {exc.strerror}"
                               ) from None
    if not handlers:
        handlers.append(logging.NullHandler())
    logging.basicConfig(level=getattr(logging, config.log_level.upper()), format=LOG_FORMAT,
                        handlers=handlers)


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqttish", description="An MQTT 3.1.1 and 5.0 broker.",
        epilog="Subcommands: 'mqttish pub --help', 'mqttish sub --help', "
               "'mqttish passwd --help', 'mqttish convert --help'. SIGHUP reloads password, "
               "ACL and certificate files.",
    )
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="configuration file: mqttish's YAML, or a Mosquitto mosquitto.conf")
    parser.add_argument("-p", "--port", type=int, action="append", metavar="PORT",
                        help="without -c: listen on this TCP port on loopback only (repeat for "
                             "more ports); with -c: the port of the first listener")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at debug level, with every packet in and out")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="run N processes sharing the ports, as one cluster (a private "
                        "redis-server unless cluster.redis is set); see docs/scaling.md")
    # Set by the --workers supervisor for each worker.
    parser.add_argument("--cluster-redis", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--node-id", help=argparse.SUPPRESS)
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"mqttish {__version__}")
    return parser


def load(config_path: str | None, ports: Sequence[int] | None) -> LoadedConfig:
    """The configuration the command line asks for; ConfigError says what is wrong."""
    ports = ports or []
    for port in ports:
        if not 0 <= port <= 65535:
            raise ConfigError(f"-p {port}: a port is between 0 and 65535")
    if config_path is None:
        if not ports:
            return LoadedConfig(Config())
        # As `mosquitto -p`: these TCP listeners on loopback, and nothing else.
        return LoadedConfig(Config(listeners=tuple(ListenerConfig(port=p) for p in ports)))
    loaded = read_config_file(config_path)
    if not ports:
        return loaded
    if len(ports) > 1:
        raise ConfigError("-p: with -c, one -p sets the port of the first listener")
    config = loaded.config
    first = dataclasses.replace(config.listeners[0], port=ports[0])
    return dataclasses.replace(loaded, config=dataclasses.replace(
        config, listeners=(first, *config.listeners[1:])))


def scale_overrides(config: Config, workers: int | None, cluster_redis: str | None,
                    node_id: str | None) -> Config:
    """--workers, and what the supervisor tells each worker (its cluster and name)."""
    if workers is not None:
        config = dataclasses.replace(config, workers=workers)
    if cluster_redis is not None:  # a worker: one node of the supervisor's cluster
        cluster = config.cluster or ClusterConfig(cluster_redis)
        config = dataclasses.replace(config, workers=1, cluster=dataclasses.replace(
            cluster, redis=cluster_redis, node_id=node_id))
    return config


def serve_main(argv: Sequence[str]) -> int:
    args = serve_parser().parse_args(argv)
    try:
        loaded = load(args.config, args.port)
        config = scale_overrides(loaded.config, args.workers, args.cluster_redis,
                                 args.node_id)
    except ConfigError as exc:
        print(f"mqttish: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        config = dataclasses.replace(config, log_level="debug", log_packets=True)
    try:
        setup_logging(config)
    except StartupError as exc:
        print(f"mqttish: {exc}", file=sys.stderr)
        return 1
    if loaded.mosquitto:
        log.info("read %s as a Mosquitto configuration", args.config)
    for notice in loaded.notices:
        log.log(logging.WARNING if notice.level == "warning" else logging.INFO, "%s", notice)
    if config.workers > 1:
        from mqttish.cluster.supervisor import supervise

        return supervise(config, _without_workers(argv))
    try:
        store = open_store(config)
    except StoreError as exc:
        print(f"mqttish: {exc}", file=sys.stderr)
        return 1
    status = 0
    collector.tune_for_serving()
    try:
        failure = trio.run(_serve_until_signalled,
                           Server(config, store=store, reuse_port=args.reuse_port))
    except* StartupError as group:
        for error in _leaves(group):  # (raised inside nurseries: nested groups)
            print(f"mqttish: {error}", file=sys.stderr)
        status = 1
    else:
        if failure is not None:
            print(f"mqttish: stopped: the store failed: {failure}", file=sys.stderr)
            status = 1
    return status


def _leaves(group: BaseExceptionGroup[StartupError]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found += _leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return found


def _without_workers(argv: Sequence[str]) -> list[str]:
    """The command line a worker gets: the supervisor's, less --workers."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return kept


def convert_main(argv: Sequence[str]) -> int:
    """`mqttish convert mosquitto.conf`: print the equivalent YAML configuration."""
    parser = argparse.ArgumentParser(
        prog="mqttish convert",
        description="Print a Mosquitto configuration file as mqttish's YAML.")
    parser.add_argument("file", help="the mosquitto.conf to convert")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(mosquitto_as_yaml(args.file))
    except ConfigError as exc:
        print(f"mqttish: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


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
    if command == "convert":
        return convert_main(args)
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

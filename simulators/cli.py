"""`python -m simulators COMMAND`: every simulator as a command, mqttish pub/sub style.

Options follow `mqttish pub` / `mqttish sub` (and mosquitto's): `-h` is the
broker host, `-p` its port, so help is `--help`. Every command connects with
reconnect and backoff: with the broker down it logs one line per attempt and
waits. Ctrl-C (or SIGTERM) ends a command gracefully: devices say `offline`
and disconnect; a second Ctrl-C ends it at once. Exit status: 0 done, 1 a
failure (refused connection, missing orders), 2 a bad command line or file.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, Protocol, TypeVar

import trio

from mqttish.client import ClientError
from simulators.actuator import Actuator, ActuatorConfig, Kind
from simulators.common import VERSIONS, BrokerSettings
from simulators.fleet import Fleet, FleetConfig
from simulators.jobs import JobsConfig, JobsError, JobsExample
from simulators.monitor import EVENT_TOPIC, Monitor, MonitorConfig, Thresholds
from simulators.orders import Coordinator, OrdersConfig, OrdersError, OrderWorker
from simulators.scenario import (
    ScenarioError,
    ScenarioRun,
    bundled_scenarios,
    load_scenario,
    scenario_path,
)
from simulators.sensor import READING_TOPIC, Climate, SensorConfig, TemperatureSensor

log = logging.getLogger("simulators")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as a shell reports a program ended by Ctrl-C
T = TypeVar("T")


class UsageError(Exception):
    """A bad command line: exit 2 with one line on stderr."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class Interrupted(Exception):
    """A second Ctrl-C: everything was cancelled without saying goodbye."""


class Stoppable(Protocol):
    def stop(self) -> None: ...


# ------------------------------------------------------------------ options


def _common(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--help", action="help", help="show this help and exit")
    add("-h", "--host", default="localhost", help="broker host (default: localhost)")
    add("-p", "--port", type=int, default=1883, help="broker port (default: 1883)")
    add("-V", "--protocol-version", default="5", metavar="VERSION",
        help="MQTT version: 5 or mqttv5 (default), 311 or mqttv311")
    add("-u", "--username", help="user name")
    add("-P", "--pw", help="password")
    add("-k", "--keepalive", type=int, default=60, help="keepalive in seconds (default: 60)")
    add("-d", "--debug", action="store_true", help="log debug messages (every reading)")


def _climate(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("temperature model")
    add = group.add_argument
    defaults = Climate()
    add("--setpoint", type=float, default=defaults.setpoint,
        help=f"°C the room tends towards (default: {defaults.setpoint:g})")
    add("--noise", type=float, default=defaults.noise,
        help=f"°C of measurement noise per reading (default: {defaults.noise:g})")
    add("--walk", type=float, default=defaults.walk,
        help=f"°C per √s of random walk (default: {defaults.walk:g})")
    add("--reversion", type=float, default=defaults.reversion,
        help=f"pull back to the set point, per second (default: {defaults.reversion:g})")
    add("--spikes-per-hour", type=float, default=defaults.spikes_per_hour,
        help=f"average random spikes per hour (default: {defaults.spikes_per_hour:g})")
    add("--spike-size", type=float, default=defaults.spike_size,
        help=f"°C a spike adds, ±25 %%; negative: cold (default: {defaults.spike_size:g})")
    add("--spike-half-life", type=float, default=defaults.spike_half_life,
        help=f"seconds for a spike to halve (default: {defaults.spike_half_life:g})")


def _seed_and_duration(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int,
                        help="seed of the random readings: the same seed repeats a run")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after SECONDS (default: run until Ctrl-C)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m simulators", add_help=False,
                     description="Simulated IoT devices and example systems for an MQTT broker "
                                 "(docs/simulators.md).")
    parser.add_argument("--help", action="help", help="show this help and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, add_help=False, help=summary, description=summary)
        _common(sub)
        return sub

    sensor = command("sensor", "one temperature sensor publishing JSON readings")
    sensor.add_argument("--site", default="home", help="site name (default: home)")
    sensor.add_argument("--room", default="living-room", help="room name (default: living-room)")
    sensor.add_argument("-i", "--id", help="client id (default: <site>-<room>-temperature)")
    sensor.add_argument("-t", "--topic", default=READING_TOPIC,
                        help=f"topic template: {{site}}, {{room}}, {{sensor}} "
                             f"(default: {READING_TOPIC})")
    sensor.add_argument("--interval", type=float, default=1.0,
                        help="seconds between readings (default: 1)")
    sensor.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=1,
                        help="QoS of the readings (default: 1)")
    sensor.add_argument("-r", "--retain", action="store_true", help="retain the readings")
    _seed_and_duration(sensor)
    _climate(sensor)

    monitor = command("monitor", "turn readings that cross a threshold into events")
    monitor.add_argument("--high", type=float, default=26.0,
                         help="°C at or above which a room is high (default: 26)")
    monitor.add_argument("--low", type=float,
                         help="°C at or below which a room is low (default: no low events)")
    monitor.add_argument("--hysteresis", type=float, default=0.5,
                         help="°C back past a threshold to end high / low (default: 0.5)")
    monitor.add_argument("--readings", default=READING_TOPIC,
                         help=f"readings' topic template, with {{site}} and {{room}} "
                              f"(default: {READING_TOPIC})")
    monitor.add_argument("--events", default=EVENT_TOPIC,
                         help=f"events' topic template (default: {EVENT_TOPIC})")
    monitor.add_argument("-i", "--id", default="temperature-monitor",
                         help="client id (default: temperature-monitor)")
    monitor.add_argument("--duration", type=float, metavar="SECONDS",
                         help="stop after SECONDS (default: run until Ctrl-C)")

    actuator = command("actuator", "a fan or heater that reacts to its room's events")
    actuator.add_argument("--site", default="home", help="site name (default: home)")
    actuator.add_argument("--room", default="living-room",
                          help="room name (default: living-room)")
    actuator.add_argument("--kind", choices=[kind.value for kind in Kind], default="fan",
                          help="fan (on when high) or heater (on when low); default: fan")
    actuator.add_argument("-i", "--id", help="client id (default: <site>-<room>-<kind>)")
    actuator.add_argument("--events", default=EVENT_TOPIC,
                          help=f"events' topic template (default: {EVENT_TOPIC})")
    actuator.add_argument("--duration", type=float, metavar="SECONDS",
                          help="stop after SECONDS (default: run until Ctrl-C)")

    fleet = command("fleet", "thousands of sensors in one process: a load generator")
    fleet.add_argument("-n", "--sensors", type=int, default=1000,
                       help="simulated sensors, one connection each (default: 1000)")
    fleet.add_argument("--rate", type=float, default=1000.0,
                       help="readings per second, all sensors together (default: 1000)")
    fleet.add_argument("--site", default="fleet",
                       help="site name, also the client id prefix (default: fleet)")
    fleet.add_argument("-t", "--topic", default=READING_TOPIC,
                       help=f"topic template (default: {READING_TOPIC})")
    fleet.add_argument("-q", "--qos", type=int, choices=(0, 1, 2), default=1,
                       help="QoS of the readings (default: 1)")
    fleet.add_argument("-r", "--retain", action="store_true", help="retain the readings")
    fleet.add_argument("--connect-concurrency", type=int, default=100,
                       help="connections being set up at once (default: 100)")
    fleet.add_argument("--report-every", type=float, default=10.0, metavar="SECONDS",
                       help="progress log interval when stderr is not a terminal (default: 10)")
    _seed_and_duration(fleet)
    _climate(fleet)

    scenario = command("scenario", "run a whole example system from a YAML file")
    scenario.add_argument("scenario", nargs="?", default="building",
                          help="a bundled scenario's name (default: building) or a file path")
    scenario.add_argument("--list", action="store_true", help="list the bundled scenarios")
    _seed_and_duration(scenario)

    jobs = command("jobs", "an uploader hands image jobs to a shared-subscription worker pool")
    jobs.add_argument("--jobs", type=int, default=100,
                      help="jobs to submit; 0: run workers only (default: 100)")
    jobs.add_argument("--workers", type=int, default=4,
                      help="workers in this process; 0: uploader only (default: 4)")
    jobs.add_argument("--rate", type=float, default=10.0,
                      help="jobs submitted per second (default: 10)")
    jobs.add_argument("--work-time", type=float, default=0.2,
                      help="seconds to process a 12-megapixel image (default: 0.2)")
    jobs.add_argument("--group", default="image-workers",
                      help="shared subscription group (default: image-workers)")
    jobs.add_argument("-i", "--id", default="images",
                      help="client id prefix: <ID>-uploader, <ID>-worker-1... (default: images); "
                           "give each process its own")
    jobs.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                      help="wait this long for the last result (default: 60)")
    jobs.add_argument("--seed", type=int, help="seed of the job sizes and work times")

    orders = command("orders", "a worker-process pool shares orders; one worker is killed")
    orders.add_argument("--orders", type=int, default=1000, help="orders to send (default: 1000)")
    orders.add_argument("--workers", type=int, default=4,
                        help="worker processes (default: 4)")
    orders.add_argument("--kill-after", type=int, default=300, metavar="RECEIPTS",
                        help="kill a worker after this many receipts; -1: nobody (default: 300)")
    orders.add_argument("--kill-worker", type=int, default=1, metavar="N",
                        help="which worker to kill (default: 1)")
    orders.add_argument("--rate", type=float, default=500.0,
                        help="orders published per second (default: 500)")
    orders.add_argument("--work-ms", type=float, default=10.0,
                        help="milliseconds a worker spends on an order (default: 10)")
    orders.add_argument("--patience", type=float, default=3.0,
                        help="seconds without a receipt before the orders still missing one "
                             "are given up (default: 3)")

    worker = command("order-worker", "one worker process of the orders example "
                                     "('orders' starts these)")
    worker.add_argument("-i", "--id", required=True, help="client id of the worker")
    worker.add_argument("--work-ms", type=float, default=10.0,
                        help="milliseconds spent on an order (default: 10)")
    return parser


def broker_settings(args: argparse.Namespace) -> BrokerSettings:
    version = VERSIONS.get(args.protocol_version.lower())
    if version is None:
        raise UsageError(f"unsupported protocol version {args.protocol_version!r} "
                         "(use 5, mqttv5, 311 or mqttv311)")
    return BrokerSettings(args.host, args.port, version, args.username, args.pw, args.keepalive)


def _climate_of(args: argparse.Namespace) -> Climate:
    return Climate(args.setpoint, args.reversion, args.walk, args.noise, args.spikes_per_hour,
                   args.spike_size, args.spike_half_life)


def _seed(args: argparse.Namespace) -> int:
    """The seed asked for, or a fresh one that the log shows, so any run can be repeated."""
    return args.seed if args.seed is not None else random.randrange(1_000_000)


# ------------------------------------------------------------------ running


async def run_stoppable(name: str, component: Stoppable, main: Callable[[], Awaitable[T]],
                        duration: float | None = None,
                        extra: Callable[[], Awaitable[None]] | None = None) -> T:
    """Run `main()`; SIGINT / SIGTERM or the end of `duration` call `component.stop()`.

    A second signal cancels everything at once (raising Interrupted). `extra`
    (a progress line) runs alongside and is cancelled when `main` returns.
    """
    interrupted = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                nonlocal interrupted
                stopping = False
                async for signum in signals:
                    if not stopping:
                        stopping = True
                        log.info("%s: %s, stopping (again to quit at once)", name,
                                 signal.Signals(signum).name)
                        component.stop()
                    else:
                        interrupted = True
                        nursery.cancel_scope.cancel()

            async def stop_after(seconds: float) -> None:
                await trio.sleep(seconds)
                component.stop()

            nursery.start_soon(watch_signals)
            if duration is not None:
                nursery.start_soon(stop_after, duration)
            if extra is not None:
                nursery.start_soon(extra)
            result = await main()
            nursery.cancel_scope.cancel()
    if interrupted:
        raise Interrupted
    return result


Main = Callable[[], Awaitable[int]]


def _sensor(args: argparse.Namespace, broker: BrokerSettings) -> Main:
    config = SensorConfig(site=args.site, room=args.room, sensor_id=args.id, topic=args.topic,
                          interval=args.interval, qos=args.qos, retain=args.retain,
                          climate=_climate_of(args))
    seed = _seed(args)
    sensor = TemperatureSensor(config, broker, random.Random(f"{seed}:{config.client_id}"))

    async def main() -> int:
        log.info("sensor %s: %s every %g s (seed %d)", sensor.client_id, sensor.topic,
                 config.interval, seed)
        await run_stoppable(sensor.client_id, sensor, sensor.run, args.duration)
        log.info("sensor %s: %d readings published", sensor.client_id, sensor.published)
        return 0

    return main


def _monitor(args: argparse.Namespace, broker: BrokerSettings) -> Main:
    config = MonitorConfig(Thresholds(args.high, args.low, args.hysteresis), args.readings,
                           args.events, args.id)
    monitor = Monitor(config, broker)

    async def main() -> int:
        await run_stoppable(config.client_id, monitor, monitor.run, args.duration)
        return 0

    return main


def _actuator(args: argparse.Namespace, broker: BrokerSettings) -> Main:
    config = ActuatorConfig(site=args.site, room=args.room, kind=Kind(args.kind),
                            events=args.events, client_id=args.id)
    actuator = Actuator(config, broker)

    async def main() -> int:
        await run_stoppable(actuator.actuator_id, actuator, actuator.run, args.duration)
        return 0

    return main


def _fleet(args: argparse.Namespace, broker: BrokerSettings) -> Main:
    config = FleetConfig(sensors=args.sensors, rate=args.rate, duration=args.duration,
                         site=args.site, topic=args.topic, qos=args.qos, retain=args.retain,
                         climate=_climate_of(args), connect_concurrency=args.connect_concurrency)
    config.sensor(1).reading_topic()  # a bad topic template is a usage error, said now
    seed = _seed(args)
    fleet = Fleet(config, broker, seed)

    async def main() -> int:
        log.info("fleet: connecting %d sensors of site %r to %s (seed %d)", config.sensors,
                 config.site, broker.address, seed)
        # Thousands of clients would each log a line when the broker goes: the fleet says it.
        if not args.debug:
            logging.getLogger("mqttish.client").setLevel(logging.WARNING)
        report = await run_stoppable(
            "fleet", fleet, fleet.run,
            extra=lambda: fleet.show_progress(sys.stderr, args.report_every))
        print("\n".join(report.lines()))
        return 0

    return main


def _scenario(args: argparse.Namespace, broker: BrokerSettings) -> Main:
    if args.list:
        names = bundled_scenarios()

        async def listing() -> int:
            for name, description in names:
                print(f"{name:<16} {description}")
            return 0

        return listing
    scenario = load_scenario(scenario_path(args.scenario))
    seed = args.seed if args.seed is not None else scenario.seed
    run = ScenarioRun(scenario, broker, seed if seed is not None else random.randrange(1_000_000))

    async def main() -> int:
        report = await run_stoppable(f"scenario {scenario.name!r}", run,
                                     lambda: run.run(args.duration))
        print("\n".join(report.lines()))
        return 0

    return main


def _jobs(args: argparse.Namespace, broker: BrokerSettings) -> Main:
    config = JobsConfig(jobs=args.jobs, workers=args.workers, rate=args.rate,
                        work_time=args.work_time, group=args.group, prefix=args.id,
                        timeout=args.timeout)
    example = JobsExample(config, broker, _seed(args))

    async def main() -> int:
        report = await run_stoppable("jobs", example, example.run)
        if report is None:
            return 0
        print("\n".join(report.lines()))
        return 0 if report.completed == report.submitted else EXIT_FAILURE

    return main


def _orders(args: argparse.Namespace, broker: BrokerSettings) -> Main:
    config = OrdersConfig(orders=args.orders, workers=args.workers,
                          kill_after=None if args.kill_after < 0 else args.kill_after,
                          kill_worker=args.kill_worker, rate=args.rate, work_ms=args.work_ms,
                          patience=args.patience)
    coordinator = Coordinator(config, broker)

    async def main() -> int:
        report = await run_stoppable("orders", coordinator, coordinator.run)
        print("\n".join(report.lines()))
        return EXIT_FAILURE if report.missing else 0

    return main


def _order_worker(args: argparse.Namespace, broker: BrokerSettings) -> Main:
    worker = OrderWorker(args.id, broker, args.work_ms / 1000)

    async def main() -> int:
        await run_stoppable(args.id, worker, worker.run)
        return 0

    return main


COMMANDS: dict[str, Callable[[argparse.Namespace, BrokerSettings], Main]] = {
    "sensor": _sensor, "monitor": _monitor, "actuator": _actuator, "fleet": _fleet,
    "scenario": _scenario, "jobs": _jobs, "orders": _orders, "order-worker": _order_worker,
}


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if arg in COMMANDS), "")
    name = f"simulators {command}".strip()
    try:
        args = build_parser().parse_args(argv)
        prepared = COMMANDS[args.command](args, broker_settings(args))
    except UsageError as exc:
        print(f"{name}: {exc} (see 'python -m {name} --help')", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, ScenarioError, JobsError) as exc:  # TemplateError is a ValueError
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)
    status = EXIT_FAILURE
    try:
        status = trio.run(prepared)
    except* Interrupted:
        print(f"{name}: interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    except* (ClientError, OrdersError, OSError) as group:
        print(f"{name}: {_first(group)}", file=sys.stderr)
    return status

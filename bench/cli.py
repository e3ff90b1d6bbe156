"""`python -m bench` (what `make bench` runs): every scenario on every broker, one table.

For each run of each scenario on each broker: a fresh broker on a free port,
pinned to the broker CPU; the load generator (`bench.loadgen`) in its own
process pinned to the other CPU; its JSON result collected; the broker
stopped (a broker that died during the run, or ignored SIGTERM, is reported).
Runs are interleaved (run 1 of every broker, then run 2, ...) so that drift
in the machine spreads over all brokers alike.

The table goes to stdout; all run results (JSON), broker and generator logs
and profiles go to bench/results/ (git-ignored). A full run (all scenarios,
all brokers, not --smoke) also rewrites the generated section of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import profile, report, restart, run_setup
from bench.auth_files import AuthFilesError
from bench.brokers import BROKERS, ROOT, BrokerError, BrokerKind, Mqttish, Pinning, free_port
from bench.scenarios import (
    DESCRIPTIONS,
    SCENARIOS,
    BrokerSettings,
    Params,
    params_for,
    runs_on,
    settings_for,
)

DOCS = ROOT / "docs" / "performance.md"
DEFAULT_RESULTS = ROOT / "bench" / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark mqttish side by side with Mosquitto, aedes and amqtt.",
        epilog="Scenarios: " + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()),
    )
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only this scenario (repeatable; default: all)")
    parser.add_argument("--broker", action="append", choices=list(BROKERS),
                        help="run only this broker (repeatable; default: all)")
    parser.add_argument("--runs", type=int, help="runs per scenario and broker (default 3; "
                        "1 with --smoke or --profile)")
    parser.add_argument("--smoke", action="store_true",
                        help="about a second per scenario, small client counts, mqttish only "
                        "unless --broker is given")
    parser.add_argument("--profile", action="store_true",
                        help="run mqttish under py-spy during each measured window; top "
                        "listing and flame graph go to the results directory")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a scenario size, e.g. --param inflight=300 (see "
                        "bench/scenarios.py); no docs are written then")
    parser.add_argument("--mqttish-config", type=Path, metavar="FILE",
                        help="run mqttish with this config instead of the one the harness "
                        "writes per scenario (limits and port as in docs/performance.md)")
    parser.add_argument("--mqttish-rev", metavar="REV",
                        help="benchmark mqttish as committed at REV (e.g. HEAD) instead of the "
                        "working tree, which others may be editing during a long run")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS,
                        help="where logs, JSON results and profiles go (default bench/results)")
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--write-docs", dest="docs", action="store_true", default=None,
                      help="rewrite the results section of docs/performance.md (default: "
                      "only for a full run of every scenario on every broker)")
    docs.add_argument("--no-docs", dest="docs", action="store_false")
    docs.add_argument("--docs-section", metavar="NAME",
                      help="write the table between the `bench:NAME` markers of "
                      "docs/performance.md instead (for the runs of a subset, e.g. `auth`)")
    args = parser.parse_args(argv)
    if args.broker is None:
        args.broker = ["mqttish"] if args.smoke else list(BROKERS)
    args.broker = [name for name in BROKERS if name in args.broker]
    args.scenario = [name for name in SCENARIOS if name in (args.scenario or SCENARIOS)]
    if args.runs is None:
        args.runs = 1 if args.smoke or args.profile else 3
    if args.docs_section:
        args.docs = False
    elif args.docs is None:
        args.docs = (not args.smoke and not args.profile and not args.param
                     and args.mqttish_config is None and len(args.scenario) == len(SCENARIOS)
                     and len(args.broker) == len(BROKERS))
    return args


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.params: Params = params_for(args.smoke, args.param)
        self.pinning = Pinning.detect()
        self.results_dir: Path = args.results_dir
        self.logs = self.results_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")

    def run_all(self) -> list[report.RunResult]:
        kinds = [BROKERS[name] for name in self.args.broker]
        for kind in kinds:
            kind.prepare()
        plan = [(run, scenario, kind) for run in range(1, self.args.runs + 1)
                for scenario in self.args.scenario for kind in kinds
                if runs_on(scenario, kind.name)
                and (kind.scenarios is None or scenario in kind.scenarios)]
        results = []
        for index, (run, scenario, kind) in enumerate(plan, 1):
            started = time.monotonic()
            outcome = self.run_one(kind, scenario, run)
            results.append(outcome)
            took = time.monotonic() - started
            print(f"[{index}/{len(plan)}] {scenario} on {kind.label}, run {run}: "
                  f"{_one_line(outcome)} ({took:.0f} s)", file=sys.stderr, flush=True)
        return results

    def run_one(self, kind: BrokerKind, scenario: str, run: int) -> report.RunResult:
        outcome: report.RunResult = {"broker": kind.name, "scenario": scenario, "run": run}
        port = free_port()
        settings = run_setup.prepare(scenario, kind.name, settings_for(scenario, self.params),
                                     self.params, self.results_dir, port)
        try:
            if scenario == "restart":  # the harness stops and starts the broker itself
                outcome.update(restart.run(kind, port, self.logs, self.pinning, settings,
                                           self.params))
            else:
                self._run_generator(outcome, kind, port, settings)
        finally:
            run_setup.finish(settings)
        return outcome

    def _run_generator(self, outcome: report.RunResult, kind: BrokerKind, port: int,
                       settings: BrokerSettings) -> None:
        """A fresh broker, the load generator against it, its result into `outcome`."""
        scenario, run = outcome["scenario"], outcome["run"]
        try:
            broker = kind.start(port, self.logs, self.pinning, settings)
        except BrokerError as exc:
            outcome["error"] = f"broker did not start: {exc}"
            return
        profiling = self.args.profile and kind.name == "mqttish"
        tag = f"{self.stamp}-{scenario}-{kind.name}-{run}"
        command = [*self.pinning.load_prefix(), sys.executable, "-m", "bench.loadgen",
                   "--scenario", scenario, "--port", str(port), "--broker-pid", str(broker.pid)]
        if self.pinning.broker_cpu is not None and kind.pinned:
            command += ["--broker-cpu", str(self.pinning.broker_cpu)]
        if kind.dropped_topic is not None and settings.sys_interval is not None:
            command += ["--dropped-topic", kind.dropped_topic,
                        "--sys-interval", str(kind.sys_interval(settings.sys_interval))]
        if settings.metrics_port is not None:
            command += ["--metrics-port", str(settings.metrics_port)]
        if self.args.smoke:
            command.append("--smoke")
        for item in self.args.param:
            command += ["--param", item]
        profiler: subprocess.Popen[bytes] | None = None
        raw_profile = self.results_dir / f"profile-{tag}.txt"
        gen_log = self.logs / f"loadgen-{tag}.log"
        p = self.params
        limit = p.warmup + p.duration + p.drain + 3 * p.timeout + 30
        with gen_log.open("wb") as stderr:
            generator = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr,
                                         stdin=subprocess.DEVNULL, cwd=ROOT)
        try:
            for record in _records(generator, limit, broker.process):
                if record.get("event") == "measuring" and profiling and profiler is None:
                    profiler = subprocess.Popen(
                        [*self.pinning.load_prefix(),
                         *profile.record_command(broker.pid, raw_profile, record["seconds"])],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                elif record.get("event") == "measured" and profiler is not None:
                    profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                elif "result" in record:
                    outcome["result"] = record["result"]
                elif "error" in record:
                    outcome["error"] = f"load generator: {record['error']}"
                elif "timeout" in record:
                    outcome["error"] = f"load generator still running after {limit:.0f} s"
        finally:
            if generator.poll() is None:
                generator.kill()
            generator.wait()
            if profiler is not None:
                _finish_profiler(profiler)
            stop = broker.stop()
        if stop.died_early:
            outcome.pop("result", None)
            outcome["error"] = (f"broker died during the run (exit code {stop.returncode}); "
                                f"log {broker.log_path}:\n{broker.log_tail()}")
        elif stop.killed:
            outcome["shutdown"] = f"ignored SIGTERM for 10 s and was killed ({broker.log_path})"
        if "result" not in outcome and "error" not in outcome:
            tail = "\n".join(gen_log.read_text(errors="replace").splitlines()[-10:])
            outcome["error"] = f"load generator exited {generator.returncode}:\n{tail}"
        if profiler is not None and raw_profile.exists():
            title = f"mqttish under {scenario} ({DESCRIPTIONS[scenario]})"
            top, svg = profile.summarise(raw_profile, title)
            outcome["profile"] = {"top": str(top), "flamegraph": str(svg)}
            print(f"profile: {top}\n         {svg}", file=sys.stderr)

    def header(self) -> list[str]:
        command = os.environ.get("BENCH_COMMAND") or "python -m bench " + " ".join(
            sys.argv[1:])
        p = self.params
        versions = [f"Python {platform.python_version()}",
                    f"trio {importlib.metadata.version('trio')}"]
        versions += [f"{BROKERS[name].label} {BROKERS[name].version()}"
                     for name in self.args.broker]
        return [
            f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            f"- Command: `{command.strip()}`",
            f"- Machine: {_cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}",
            f"- Versions: {', '.join(versions)}",
            f"- Pinning: {self.pinning.describe()}",
            f"- Each cell: median of {self.args.runs} run(s), (min{report.DASH}max); a fresh "
            "broker per "
            f"run; {p.duration:g} s measured after {p.warmup:g} s of warm-up"
            + (" (smoke mode: sizes reduced)" if self.args.smoke else ""),
            *([f"- Overrides: {', '.join(self.args.param)}"] if self.args.param else []),
            *([f"- mqttish config: {self.args.mqttish_config}"]
              if self.args.mqttish_config else []),
            "- CPU rows: share of one core used by the broker / by the load generator during "
            "the measured part, and (other) the share of the broker's CPU used by anything "
            "else, kernel network work not charged to a process included; ⚠ marks runs "
            "where the generator used more than 90% of its core and may itself have been "
            f"the limit, or where others took more than {report.BUSY_MACHINE:.0f}% of the "
            "broker's CPU",
        ]


def _records(process: subprocess.Popen[bytes], limit: float,
             broker: subprocess.Popen[bytes]) -> Any:
    """JSON lines from the generator's stdout, until it ends, `limit` passes or the broker dies."""
    assert process.stdout is not None
    deadline = time.monotonic() + limit
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            if time.monotonic() > deadline:
                yield {"timeout": True}
                return
            if broker.poll() is not None:
                time.sleep(0.5)  # let the generator notice and report what it saw
                if process.poll() is None:
                    return
            if selector.select(0.5):
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)


def _finish_profiler(profiler: subprocess.Popen[bytes]) -> None:
    try:
        profiler.wait(30)
    except subprocess.TimeoutExpired:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            profiler.wait(30)
        except subprocess.TimeoutExpired:
            profiler.kill()
            profiler.wait()


def _one_line(outcome: report.RunResult) -> str:
    if "error" in outcome:
        return "FAILED: " + outcome["error"].splitlines()[0]
    result = outcome["result"]
    scenario = outcome["scenario"]
    if scenario == "latency":
        text = f"p50 {result['p50_us']:,.0f} µs, p99 {result['p99_us']:,.0f} µs"
    elif scenario == "connections":
        text = (f"{result['connected']:,} connected in {result['connect_s']:.2f} s, "
                f"{result['kib_per_connection']:.1f} KiB each")
    elif scenario == "retained":
        text = (f"'#' {result['all_received']:,} in {result['all_s']:.2f} s, narrow "
                f"{result['narrow_received']} in {result['narrow_ms']:.1f} ms")
    elif scenario in ("overload-qos1", "overload-stalled"):
        dropped = result["broker_dropped"]
        text = (f"{result['rate']:,.0f}/s delivered, {result['acked_rate']:,.0f}/s acked, "
                f"lost {result['loss']:,} acked, broker dropped "
                f"{'n/a' if dropped is None else f'{dropped:,}'}, longest PUBACK wait "
                f"{result['max_wait_ms']:,.0f} ms")
    elif scenario == "overload-qos0":
        text = (f"{result['rate']:,.0f}/s delivered of {result['sent_rate']:,.0f}/s sent, "
                f"lost {result['loss_pct']:.0f}%, p50 {result['p50_ms']:,.1f} ms")
    elif scenario.startswith("login-storm"):
        text = (f"round trip p99 {result['alone_p99_ms']:,.2f} ms alone, "
                f"{result['storm_p99_ms']:,.2f} ms in a storm of {result['storm_s']:.1f} s, "
                f"{result['after_p99_ms']:,.2f} ms after; {result['refused']} refused, "
                f"{result['closed']} closed, {result['accepted']} accepted")
    elif scenario == "restart":
        text = (f"ready in {result['ready_s']:.2f} s (CONNACK {result['connack_s']:.2f} s), "
                f"all back in {result['all_sessions_s']:.2f} s, lost {result['loss']:,}")
    elif scenario == "fan-in-qos1-persistent":
        text = (f"{result['rate']:,.0f}/s, lost {result['loss']:,}, PUBACK p99 "
                f"{result['puback_p99_ms']:,.1f} ms, commit p99 "
                f"{result.get('commit_p99_ms', math.nan):,.1f} ms")
    else:
        text = f"{result['rate']:,.0f}/s, lost {result['loss']:,}"
    return (f"{text} (CPU broker {result['broker_cpu']:.0f}%, generator "
            f"{result['generator_cpu']:.0f}%{', SATURATED' if result['saturated'] else ''})")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _pin_self(pinning: Pinning) -> None:
    """The harness itself mostly sleeps; keep it off the broker's CPU all the same."""
    if pinning.load_cpu is not None:
        os.sched_setaffinity(0, {pinning.load_cpu})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params_for(args.smoke, args.param)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if args.mqttish_config is not None:
        BROKERS["mqttish"].config = args.mqttish_config.resolve()
    harness = Harness(args)
    if args.mqttish_rev:
        mqttish = BROKERS["mqttish"]
        assert isinstance(mqttish, Mqttish)
        try:
            mqttish.use_revision(args.mqttish_rev, harness.results_dir)
        except (BrokerError, subprocess.CalledProcessError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
    _pin_self(harness.pinning)
    # Stopped from outside (kill, or a job control that ignores SIGINT): unwind, so that
    # the running broker and load generator are stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        results = harness.run_all()
    except (BrokerError, AuthFilesError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    summary = report.Summary(results)
    section = report.render_section(summary, harness.params, harness.header())
    print(section)
    out = harness.results_dir / f"results-{harness.stamp}.json"
    out.write_text(json.dumps({"header": harness.header(), "runs": results}, indent=1))
    (harness.results_dir / "latest.md").write_text(section)
    print(f"bench: results in {out}", file=sys.stderr)
    if args.docs or args.docs_section:
        report.write_section(DOCS, section, *report.markers(args.docs_section or "results"))
        print(f"bench: updated {DOCS.relative_to(ROOT)}", file=sys.stderr)
    failed = [r for r in results if r["broker"] == "mqttish" and "error" in r]
    return 1 if failed else 0

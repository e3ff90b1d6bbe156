"""`python -m bench.compare`: mqttish at two commits, same machine, same sitting (issue #13).

    python -m bench.compare --before 4547f3e --after main [--runs 3] [--scenario NAME ...]

Runs the standard scenarios (or the ones named) on mqttish exported at each
commit (`--mqttish-rev`'s export), interleaved: for every run and scenario,
both commits back to back, the order swapped from one run to the next, so
that a machine getting busier or quieter weighs on both alike. Prints one
table: medians (min-max) per commit, the change, and whether the "after" is
more than 3% worse, and if so whether beyond the noise: the runs' ranges do
not overlap. The "other" CPU (what else ran on the broker's CPU) is shown per
scenario and commit. `--write-docs` puts the table in docs/performance.md
between the `bench:compare` markers.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence

from bench import report
from bench.brokers import BrokerError, Mqttish
from bench.cli import DOCS, Harness, parse_args
from bench.scenarios import STANDARD

WORSE = 3.0  # percent: what counts as slower
HIGHER_IS_BETTER = {"msg/s", "/s"}
LOWER_IS_BETTER = {"µs", "ms", "s"}  # times; memory and counts are shown, not judged


def _arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--before", required=True, metavar="REV")
    parser.add_argument("--after", required=True, metavar="REV")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenario", action="append", choices=STANDARD)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args(argv)
    harness_argv = ["--broker", "mqttish", "--no-docs", "--runs", str(args.runs)]
    for scenario in args.scenario or STANDARD:
        harness_argv += ["--scenario", scenario]
    if args.smoke:
        harness_argv.append("--smoke")
    if args.results_dir:
        harness_argv += ["--results-dir", args.results_dir]
    return args, parse_args(harness_argv)


def _change(metric: report.Metric, before: report.Cell, after: report.Cell) -> tuple[str, str]:
    """(after/before as a signed improvement, verdict) for one metric."""
    if before.median is None or after.median is None or not before.median:
        return report.DASH, ""
    ratio = after.median / before.median
    if metric.unit in HIGHER_IS_BETTER:
        better = (ratio - 1) * 100
        overlap = max(after.values) >= min(before.values)
    elif metric.unit in LOWER_IS_BETTER:
        better = (1 - ratio) * 100
        overlap = min(after.values) <= max(before.values)
    else:
        return f"{ratio:.2f}x", ""
    text = f"{better:+.1f}%"
    if better >= -WORSE:
        return text, "✅"
    if overlap:
        return text, f"⚠ {-better:.1f}% worse, within the noise (the runs' ranges overlap)"
    return text, f"❌ {-better:.1f}% worse, beyond the noise"


def _other_cpu(summary: report.Summary, scenario: str) -> str:
    others = [r["other_cpu"] for r in summary.results(scenario, "mqttish") if "other_cpu" in r]
    if not others:
        return report.DASH
    return (f"other {statistics.median(others):.0f}% "
            f"({min(others):.0f}{report.DASH}{max(others):.0f}%)")


def render(before: report.Summary, after: report.Summary, labels: tuple[str, str],
           params: dict[str, object]) -> str:
    rows = [["Scenario / metric", f"before ({labels[0]})", f"after ({labels[1]})",
             "change (+: better)", "verdict"], ["---"] * 5]
    for scenario in after.scenarios:
        for metric in (m for m in report.METRICS if m.scenario == scenario):
            label = metric.label.format(**params)
            first, second = before.cell(metric, "mqttish"), after.cell(metric, "mqttish")
            change, verdict = _change(metric, first, second)
            rows.append([f"{label} ({metric.unit})" if metric.unit else label,
                         report.cell_text(first, metric), report.cell_text(second, metric),
                         change, verdict])
        rows.append([f"{scenario}: CPU taken by others", _other_cpu(before, scenario),
                     _other_cpu(after, scenario), "", ""])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    args, harness_args = _arguments(argv)
    harness = Harness(harness_args)
    kinds = {"before": Mqttish(), "after": Mqttish()}
    try:
        for which, kind in kinds.items():
            kind.use_revision(getattr(args, which), harness.results_dir)
    except (BrokerError, subprocess.CalledProcessError) as exc:
        print(f"bench.compare: {exc}", file=sys.stderr)
        return 2
    results: dict[str, list[report.RunResult]] = {"before": [], "after": []}
    plan = [(run, scenario, order) for run in range(1, args.runs + 1)
            for scenario in harness_args.scenario
            for order in ((("before", "after"), ("after", "before"))[(run - 1) % 2],)]
    step = 0
    for run, scenario, order in plan:
        for which in order:
            step += 1
            outcome = harness.run_one(kinds[which], scenario, run)
            results[which].append(outcome)
            state = "FAILED" if "error" in outcome else "done"
            print(f"[{step}/{2 * len(plan)}] {scenario}, {which} "
                  f"({kinds[which].revision}), run {run}: {state}", file=sys.stderr, flush=True)
    labels = (kinds["before"].revision[:7], kinds["after"].revision[:7])
    command = " ".join(sys.argv[1:] if argv is None else argv)
    header = [line for line in harness.header()
              if not line.startswith(("- Command", "- Versions"))]
    header[1:1] = [f"- Command: `python -m bench.compare {command}`",
                   f"- mqttish before: {args.before} = commit {kinds['before'].revision}, "
                   f"after: {args.after} = commit {kinds['after'].revision} (exported with "
                   "git archive); interleaved, both back to back per scenario and run, the "
                   "order swapped every run"]
    params = dataclasses.asdict(harness.params)
    table = render(report.Summary(results["before"]), report.Summary(results["after"]),
                   labels, params)
    section = "\n".join([*header, "", table, ""])
    print(section)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = harness.results_dir / f"compare-{stamp}.json"
    out.write_text(json.dumps({"header": header, **results}, indent=1))
    print(f"bench.compare: results in {out}", file=sys.stderr)
    if args.write_docs:
        report.write_section(DOCS, section, *report.markers("compare", "python -m bench.compare"))
        print("bench.compare: updated docs/performance.md", file=sys.stderr)
    failed = sum(1 for runs in results.values() for run in runs if "error" in run)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

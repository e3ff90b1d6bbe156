"""Profiling mqttish under load with py-spy: record, then a top listing and a flame graph.

py-spy samples the broker from outside (no code change, little overhead with
`--nonblocking`) and writes collapsed stacks ("frame;frame;frame count").
From those this module writes two files next to them:

* `<name>-top.txt`: functions by own time (the leaf of each sample) and by
  total time (anywhere on the stack), as percentages of the active samples;
* `<name>.svg`: a flame graph (icicle layout: callers above callees), a plain
  SVG that any browser shows, with the full frame name in each box's tooltip.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

LINE_NUMBER = re.compile(r":\d+\)$")
SAMPLE_RATE = 200  # per second


def py_spy_path() -> str:
    """py-spy from the project venv, installed there on first use."""
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found:
        return found
    print("bench: installing py-spy into the project venv for --profile", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "py-spy"], check=True)
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not found:
        raise RuntimeError("py-spy installed but not found next to the Python interpreter")
    return found


def record_command(pid: int, output: Path, seconds: float) -> list[str]:
    command = [py_spy_path(), "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE),
               "--nonblocking", "--format", "raw", "--output", str(output)]
    if seconds > 0:
        command += ["--duration", str(max(1, round(seconds)))]
    return command


def read_collapsed(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = tuple(LINE_NUMBER.sub(")", frame) for frame in stack.split(";"))
            stacks[frames] += int(count)
    return stacks


def top_listing(stacks: Counter[tuple[str, ...]], limit: int = 25) -> str:
    total = sum(stacks.values())
    if not total:
        return "no samples (was the broker idle, or could py-spy not attach?)\n"
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks.items():
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} active samples ({SAMPLE_RATE}/s, idle excluded)", "",
             "By own time:", "  own%  total%  function"]
    for frame, count in own.most_common(limit):
        lines.append(f"{100 * count / total:6.1f} {100 * inclusive[frame] / total:7.1f}  {frame}")
    lines += ["", "By total time:", "total%  function"]
    for frame, count in inclusive.most_common(limit):
        lines.append(f"{100 * count / total:6.1f}  {frame}")
    return "\n".join(lines) + "\n"


@dataclass
class _Node:
    name: str
    count: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def flame_svg(stacks: Counter[tuple[str, ...]], title: str, width: int = 1200) -> str:
    root = _Node("all")
    for frames, count in stacks.items():
        node = root
        node.count += count
        for frame in frames:
            node = node.children.setdefault(frame, _Node(frame))
            node.count += count
    row = 17
    boxes: list[str] = []
    depth_seen = 0

    def draw(node: _Node, x: float, depth: int) -> None:
        nonlocal depth_seen
        w = width * node.count / root.count if root.count else 0
        if w < 0.5:
            return
        depth_seen = max(depth_seen, depth)
        y = 30 + depth * row
        hue = 20 + zlib.crc32(node.name.encode()) % 40
        label = node.name if w > 7 * len(node.name) else node.name[: max(0, int(w / 7) - 2)]
        percent = 100 * node.count / root.count
        boxes.append(
            f'<g><title>{html.escape(node.name)} ({node.count} samples, {percent:.1f}%)</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
            f'fill="hsl({hue},90%,60%)"/>'
            f'<text x="{x + 3:.1f}" y="{y + 12}">{html.escape(label)}</text></g>'
        )
        child_x = x
        for child in sorted(node.children.values(), key=lambda n: n.name):
            draw(child, child_x, depth + 1)
            child_x += width * child.count / root.count

    draw(root, 0, 0)
    height = 40 + (depth_seen + 1) * row
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">'
        f'<text x="4" y="18" font-size="14">{html.escape(title)}</text>'
        + "".join(boxes) + "</svg>\n"
    )


def summarise(raw: Path, title: str) -> tuple[Path, Path]:
    """Write `<raw stem>-top.txt` and `<raw stem>.svg` next to the collapsed stacks."""
    stacks = read_collapsed(raw)
    top = raw.with_name(raw.stem + "-top.txt")
    svg = raw.with_suffix(".svg")
    top.write_text(f"{title}\n\n{top_listing(stacks)}")
    svg.write_text(flame_svg(stacks, title))
    return top, svg

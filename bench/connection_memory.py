"""Where the memory of an idle connection goes: `python -m bench.connection_memory [-n N]`.

The `connections` scenario measures the broker's RSS per idle client; this
says what makes it up. mqttish runs in this process, under tracemalloc, on a
free port; a child process (`bench.loadgen.Connections`) connects N idle
clients and keeps them open. Between a snapshot before and one after (both
after a full garbage collection), it reports per connection:

* the Python objects that appeared, by type: count per connection and
  `sys.getsizeof` bytes (the object itself, not what it refers to);
* the bytes allocated, by the source line that allocated them (tracemalloc),
  grouped by package: trio, the standard library's socket/selectors, mqttish.

RSS per connection is larger than the tracemalloc total: pymalloc's arenas
and pools keep slack, and the C allocator keeps its own.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import trio

from bench.procstat import raise_fd_limit, rss_kib
from mqttish.config import Config, ListenerConfig
from mqttish.server import Server

CLIENT_SCRIPT = """
import sys
from bench.loadgen import Connections
from bench.procstat import raise_fd_limit
port, total = int(sys.argv[1]), int(sys.argv[2])
raise_fd_limit(total + 256)
clients = Connections(port, total, parallel=100, prefix="mem-")
clients.connect_all(120.0)
print(clients.connected, dict(clients.errors), flush=True)
sys.stdin.read()
clients.close()
"""
ROOT = Path(__file__).resolve().parent.parent


def type_census() -> tuple[Counter[str], Counter[str]]:
    """(count, getsizeof bytes) of every gc-tracked object, by qualified type name."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return counts, sizes


def package_of(filename: str) -> str:
    for marker in ("/trio/", "/mqttish/", "/outcome/", "/sniffio/"):
        if marker in filename:
            return marker.strip("/")
    return Path(filename).name  # the standard library: socket.py, selectors.py, ...


def report(clients: int, before: tracemalloc.Snapshot, after: tracemalloc.Snapshot,
           census: tuple[tuple[Counter[str], Counter[str]], tuple[Counter[str], Counter[str]]],
           rss_delta_kib: int, limit: int) -> str:
    (count0, size0), (count1, size1) = census
    lines = [f"{clients:,} idle connections; per connection:", "",
             f"RSS (with tracemalloc running): {rss_delta_kib / clients:.2f} KiB", ""]
    diffs = after.compare_to(before, "lineno")
    total = sum(d.size_diff for d in diffs)
    lines.append(f"tracemalloc: {total / clients / 1024:.2f} KiB allocated and still held")
    by_package: Counter[str] = Counter()
    for diff in diffs:
        by_package[package_of(diff.traceback[0].filename)] += diff.size_diff
    lines += ["", "By package (bytes):"]
    lines += [f"  {size / clients:8.0f}  {name}" for name, size in by_package.most_common()
              if abs(size) / clients >= 8]
    lines += ["", "By allocating line (bytes, blocks):"]
    for diff in sorted(diffs, key=lambda d: -d.size_diff)[:limit]:
        frame = diff.traceback[0]
        where = f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
        lines.append(f"  {diff.size_diff / clients:8.0f} {diff.count_diff / clients:6.1f}  "
                     f"{where}")
    lines += ["", "New gc-tracked objects by type (count, getsizeof bytes):"]
    grown = [(name, count1[name] - count0[name], size1[name] - size0[name]) for name in count1]
    grown.sort(key=lambda item: -item[2])
    for name, count, size in grown[:limit]:
        if count / clients >= 0.5:
            lines.append(f"  {count / clients:5.1f} {size / clients:8.0f}  {name}")
    return "\n".join(lines) + "\n"


async def measure(clients: int, limit: int) -> str:
    config = Config(listeners=(ListenerConfig(port=0),), log_level="warning", sys_interval=0)
    server = Server(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        port = server.ports[0]
        warm = await _connect(port, 1)  # one client first: code paths and caches warm
        gc.collect()
        census0 = type_census()
        before = tracemalloc.take_snapshot()
        rss0 = rss_kib(os.getpid())
        idle = await _connect(port, clients)
        await trio.sleep(0.5)  # let the last CONNACKs' writers finish
        gc.collect()
        after = tracemalloc.take_snapshot()
        census1 = type_census()
        text = report(clients, before, after, (census0, census1),
                      rss_kib(os.getpid()) - rss0, limit)
        for child in (idle, warm):
            assert child.stdin is not None
            await child.stdin.aclose()
            await child.wait()
        server.request_shutdown()
    return text


async def _connect(port: int, clients: int) -> trio.Process:
    """A child process holding `clients` idle connections until its stdin closes."""
    child = await trio.lowlevel.open_process(
        [sys.executable, "-c", CLIENT_SCRIPT, str(port), str(clients)], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await child.stdout.receive_some(256)
        if not chunk:
            raise RuntimeError("client process ended before connecting")
        line += chunk
    print(f"{clients} clients connected, errors: {line.decode().split(' ', 1)[1].strip()}",
          file=sys.stderr)
    return child


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.connection_memory")
    parser.add_argument("-n", "--clients", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=25, help="rows per listing")
    args = parser.parse_args(argv)
    raise_fd_limit(args.clients + 512)
    tracemalloc.start(1)
    print(trio.run(measure, args.clients, args.limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())

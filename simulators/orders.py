"""The orders demonstration: a pool of worker processes shares a stream of orders, one dies.

Theory of operation. The coordinator (`python -m simulators orders`) starts
`--workers` worker processes (`python -m simulators order-worker`). Each is
one MQTT client with a persistent session in the shared subscription
`$share/workers/orders/#` at QoS 1; it announces itself on the retained
`workers/<id>/status` topic (with a will saying `offline`), and for every
order it processes it publishes a receipt to `receipts/orders/<order id>`.
Receipts live outside `orders/` so that workers do not receive them as
orders.

A worker acknowledges an order (`manual_ack`) only once it is processed and
its receipt is with the broker. So whatever a worker has not finished, the
broker still counts as in flight to it: the order it is working on and
those waiting in its receive window.

The coordinator waits until every worker is online, publishes the orders
(`orders/<shop>/<order id>`, QoS 1), and once `--kill-after` receipts have
come back it kills one worker with SIGKILL: no DISCONNECT, so the broker
takes back the orders it had sent that worker and not had acknowledged, and
gives them to the others (with DUP). At the end it counts the receipts:
every order must have one. Some may have two: an order the dying worker
had processed but not yet acknowledged is processed again elsewhere, which
is what at-least-once delivery means.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from mqttish.client import Client, Message, Messages, Will
from simulators.common import (
    OFFLINE,
    ONLINE,
    STATUS_QOS,
    BrokerSettings,
    Stopper,
    serve_subscription,
)

log = logging.getLogger("simulators.orders")

ORDER_TOPIC = "orders/{shop}/{order}"
RECEIPT_TOPIC = "receipts/orders/{order}"
STATUS_TOPIC = "workers/{worker}/status"
SHARE = "$share/workers/orders/#"
SHOPS = ("north", "south", "east", "west")
GOODBYE_TIMEOUT = 5.0
ROOT = Path(__file__).resolve().parent.parent


class OrdersError(Exception):
    """The demonstration could not run (a worker did not start, say)."""


# ------------------------------------------------------------------ the worker process


class OrderWorker:
    """One worker: takes orders from the shared subscription, works, issues a receipt."""

    def __init__(self, worker_id: str, broker: BrokerSettings, work_seconds: float) -> None:
        self.worker_id = worker_id
        self.broker = broker
        self.work_seconds = work_seconds
        self.status_topic = STATUS_TOPIC.format(worker=worker_id)
        self.processed = 0
        self._stopper = Stopper()

    def stop(self) -> None:
        self._stopper.stop()

    async def run(self) -> None:
        will = Will(self.status_topic, OFFLINE, STATUS_QOS, retain=True)
        # A new worker process starts a new session: orders of an earlier run are not its
        # business (the broker gave them to the other members when it went away).
        with self._stopper.stoppable() as connecting:
            async with self.broker.client(self.worker_id, will=will, persistent=True,
                                          resume=False) as client:
                self._stopper.disarm(connecting)

                async def subscribed() -> None:
                    await client.publish(self.status_topic, ONLINE, STATUS_QOS, retain=True)
                    log.info("%s: online, sharing %s", self.worker_id, SHARE)

                async def handle(message: Message) -> None:
                    await self._process(client, message)

                await serve_subscription(client, SHARE, handle, self._stopper, subscribed,
                                         manual_ack=True)
                with trio.move_on_after(GOODBYE_TIMEOUT) as goodbye:
                    goodbye.shield = True
                    await client.publish(self.status_topic, OFFLINE, STATUS_QOS, retain=True)
        log.info("%s: stopped after %d orders", self.worker_id, self.processed)

    async def _process(self, client: Client, message: Message) -> None:
        """Work, publish the receipt and wait for the broker to have it, then acknowledge.

        Acknowledging last is what makes the work at least once: if the
        worker dies before, the broker gives the order to another worker.
        """
        order = json.loads(message.payload)
        await trio.sleep(self.work_seconds)
        receipt = json.dumps({"order": order["order"], "run": order.get("run"),
                              "worker": self.worker_id, "dup": message.dup})
        await client.publish(RECEIPT_TOPIC.format(order=order["order"]), receipt, qos=1)
        message.ack()
        self.processed += 1


# ------------------------------------------------------------------ the coordinator


@dataclass(frozen=True, slots=True)
class OrdersConfig:
    orders: int = 1000
    workers: int = 4
    kill_after: int | None = 300  # receipts before one worker is killed; None: nobody dies
    kill_worker: int = 1  # which worker dies
    rate: float = 500.0  # orders published per second
    work_ms: float = 10.0  # milliseconds a worker spends on an order
    patience: float = 3.0  # seconds without a new receipt before the missing orders are given up
    startup_timeout: float = 30.0  # seconds for the workers to come online

    def __post_init__(self) -> None:
        if self.orders < 1 or self.workers < 1:
            raise ValueError("--orders and --workers must be at least 1")
        if self.kill_after is not None and not 0 <= self.kill_after < self.orders:
            raise ValueError("--kill-after must be between 0 and the number of orders")
        if not 1 <= self.kill_worker <= self.workers:
            raise ValueError("--kill-worker must name one of the workers (1 to --workers)")
        if self.workers == 1 and self.kill_after is not None:
            raise ValueError("killing the only worker leaves nobody to finish: use --workers 2+")
        if self.rate <= 0 or self.work_ms < 0 or self.patience <= 0:
            raise ValueError("--rate and --patience must be positive, --work-ms not negative")


@dataclass(slots=True)
class OrdersReport:
    sent: int = 0  # orders published and acknowledged by the broker
    receipts: Counter[str] = field(default_factory=Counter)  # receipts per order id
    by_worker: Counter[str] = field(default_factory=Counter)
    redelivered: set[str] = field(default_factory=set)  # orders a receipt said came with DUP
    killed: str | None = None
    killed_at: int = 0  # receipts when the worker was killed
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def processed(self) -> int:
        return len(self.receipts)

    @property
    def duplicates(self) -> int:
        return sum(1 for count in self.receipts.values() if count > 1)

    def lines(self) -> list[str]:
        workers = ", ".join(f"{worker} {count}" + (" (killed)" if worker == self.killed else "")
                            for worker, count in sorted(self.by_worker.items()))
        killed = (f"{self.killed} with SIGKILL after {self.killed_at} receipts"
                  if self.killed else "nobody")
        return [
            "orders summary:",
            f"  sent                      {self.sent} (QoS 1, acknowledged by the broker)",
            f"  killed                    {killed}",
            f"  processed                 {self.processed} (orders with a receipt)",
            f"  redelivered               {len(self.redelivered)} (marked DUP: sent to a "
            "worker that did not acknowledge them)",
            f"  processed more than once  {self.duplicates}",
            f"  missing                   {len(self.missing)}"
            + (f": {', '.join(self.missing[:10])}" if self.missing else ""),
            f"  receipts per worker       {workers}",
            f"  time                      {self.seconds:.1f} s",
        ]


def order_id(number: int) -> str:
    return f"order-{number:05d}"


class Coordinator:
    """Starts the workers, publishes the orders, kills a worker, counts the receipts."""

    def __init__(self, config: OrdersConfig, broker: BrokerSettings,
                 client_id: str = "orders-coordinator") -> None:
        self.config = config
        self.broker = broker
        self.client_id = client_id
        self.run_id = secrets.token_hex(4)  # tells this run's receipts from an earlier run's
        self.report = OrdersReport()
        self.worker_ids = [f"orders-worker-{n}" for n in range(1, config.workers + 1)]
        self._processes: dict[str, trio.Process] = {}
        self._online: set[str] = set()
        self._all_online = trio.Event()
        self._progress = trio.Event()  # set on every new receipt
        self._kill_now = trio.Event()
        self._done = trio.Event()
        self._stop = trio.CancelScope()

    def stop(self) -> None:
        """Ctrl-C: end now; the workers are stopped, the report says what was done."""
        self._stop.cancel()

    async def run(self) -> OrdersReport:
        """Start the workers, publish, kill one, wait for every receipt; the report."""
        began = trio.current_time()
        with self._stop:
            await self._run()
        report = self.report
        report.missing = [order_id(n) for n in range(1, report.sent + 1)
                          if order_id(n) not in report.receipts]
        report.seconds = trio.current_time() - began
        return report

    async def _run(self) -> None:
        config = self.config
        report = self.report
        async with self.broker.client(self.client_id) as client, \
                client.subscription("receipts/orders/#", qos=1) as receipts, \
                client.subscription(STATUS_TOPIC.format(worker="+"), qos=1) as statuses, \
                trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_statuses, statuses)
            nursery.start_soon(self._collect, receipts)
            for worker_id in self.worker_ids:
                self._processes[worker_id] = await nursery.start(
                    partial(trio.run_process, self._worker_command(worker_id), check=False,
                            stdin=subprocess.DEVNULL, cwd=ROOT))
            with trio.move_on_after(config.startup_timeout):
                await self._all_online.wait()
            if not self._all_online.is_set():
                raise OrdersError(f"workers not online after {config.startup_timeout:g} s: "
                                  f"{sorted(set(self.worker_ids) - self._online)}")
            log.info("%d workers online; publishing %d orders at %g/s", config.workers,
                     config.orders, config.rate)
            if config.kill_after is not None:
                nursery.start_soon(self._kill_when_due)
            await self._publish(client)
            await self._wait_for_receipts()
            for worker_id, process in self._processes.items():
                if process.returncode is None and worker_id != report.killed:
                    process.send_signal(signal.SIGTERM)  # graceful: DISCONNECT, no will
            nursery.cancel_scope.deadline = trio.current_time() + 10
            await self._wait_for_workers()
            nursery.cancel_scope.cancel()

    def _worker_command(self, worker_id: str) -> list[str]:
        broker = self.broker
        command = [sys.executable, "-m", "simulators", "order-worker", "--id", worker_id,
                   "-h", broker.host, "-p", str(broker.port),
                   "--work-ms", str(self.config.work_ms)]
        if broker.username is not None:
            command += ["-u", broker.username]
        if broker.password is not None:
            command += ["-P", broker.password]
        return command

    async def _wait_for_workers(self) -> None:
        for process in self._processes.values():
            await process.wait()

    async def _watch_statuses(self, statuses: Messages) -> None:
        async for message in statuses:
            if message.retain:
                continue  # a status from an earlier run, not news
            worker = message.topic.split("/")[1]
            if message.payload == ONLINE and worker in self.worker_ids:
                self._online.add(worker)
                if len(self._online) == len(self.worker_ids):
                    self._all_online.set()
            elif message.payload == OFFLINE:
                log.info("%s is offline", worker)

    async def _collect(self, receipts: Messages) -> None:
        report = self.report
        async for message in receipts:
            receipt = json.loads(message.payload)
            if receipt.get("run") != self.run_id:
                continue
            order = receipt["order"]
            report.receipts[order] += 1
            report.by_worker[receipt["worker"]] += 1
            if receipt.get("dup"):
                report.redelivered.add(order)
            if report.receipts[order] > 1:
                log.info("%s processed again, by %s", order, receipt["worker"])
            if self.config.kill_after is not None and report.processed >= self.config.kill_after:
                self._kill_now.set()
            self._progress.set()
            if report.processed == self.config.orders:
                self._done.set()

    async def _kill_when_due(self) -> None:
        await self._kill_now.wait()
        victim = self.worker_ids[self.config.kill_worker - 1]
        self.report.killed = victim
        self.report.killed_at = self.report.processed
        log.info("killing %s (SIGKILL) after %d receipts", victim, self.report.killed_at)
        self._processes[victim].kill()

    async def _publish(self, client: Client) -> None:
        """Publish the orders at the configured rate, each acknowledged (QoS 1)."""
        start = trio.current_time()
        for number in range(1, self.config.orders + 1):
            await trio.sleep_until(start + (number - 1) / self.config.rate)
            order = order_id(number)
            payload = json.dumps({"order": order, "run": self.run_id,
                                  "shop": SHOPS[number % len(SHOPS)], "items": 1 + number % 5})
            topic = ORDER_TOPIC.format(shop=SHOPS[number % len(SHOPS)], order=order)
            await client.publish(topic, payload, qos=1)
            self.report.sent += 1

    async def _wait_for_receipts(self) -> None:
        """Until every order has a receipt, or none has come for `patience` seconds."""
        while not self._done.is_set():
            self._progress = trio.Event()
            with trio.move_on_after(self.config.patience):
                await self._progress.wait()
            if not self._progress.is_set():
                log.warning("no receipt for %g s; giving up on the orders still without one",
                            self.config.patience)
                return

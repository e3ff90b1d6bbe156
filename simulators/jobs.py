"""Asynchronous processing: an uploader hands image jobs to a pool of workers and awaits replies.

The uploader publishes each job (QoS 1) to `jobs/images/<uploader>/<job>`
with MQTT 5 request / response properties: a Response Topic
(`jobs/results/<uploader>`) and Correlation Data (the job id). The workers
share one subscription, `$share/image-workers/jobs/images/#`, so the broker
gives each job to exactly one of them and a busy or dead worker's jobs go to
the others. A worker "processes" the image (it waits a time proportional to
its size) and publishes the result to the job's response topic with the
same correlation data; it needs to know nothing about the uploader but what
the job itself says. Neither side knows how many of the other there are.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from collections import Counter
from dataclasses import dataclass

import trio

from mqttish.client import MQTT_5, Client, Message, Messages, Properties
from mqttish.log_text import clip
from simulators.common import BrokerSettings, Stopper, serve_subscription

log = logging.getLogger("simulators.jobs")

JOB_TOPIC = "jobs/images/{uploader}/{job}"
RESULT_TOPIC = "jobs/results/{uploader}"
GROUP = "image-workers"
WORKER_FILTER = "jobs/images/#"
OPERATIONS = ("thumbnail", "resize", "watermark", "face-blur")
CAMERAS = ((4032, 3024), (6000, 4000), (3840, 2160), (1920, 1080))


class JobsError(Exception):
    """The jobs example cannot run as asked (say, without MQTT 5)."""


@dataclass(frozen=True, slots=True)
class JobsConfig:
    jobs: int = 100  # 0: run workers only, until stopped
    workers: int = 4  # 0: run the uploader only (workers run elsewhere)
    rate: float = 10.0  # jobs submitted per second
    work_time: float = 0.2  # seconds a worker spends on a 12-megapixel image
    group: str = GROUP
    prefix: str = "images"  # client ids: <prefix>-uploader, <prefix>-worker-1, ...
    timeout: float = 60.0  # seconds to wait for the last result after the last job

    def __post_init__(self) -> None:
        if self.jobs < 0 or self.workers < 0 or self.jobs == self.workers == 0:
            raise ValueError("--jobs and --workers: not negative, and not both 0")
        if self.rate <= 0 or self.work_time < 0 or self.timeout <= 0:
            raise ValueError("--rate and --timeout must be positive, --work-time not negative")


@dataclass(frozen=True, slots=True)
class JobsReport:
    submitted: int
    completed: int
    by_worker: dict[str, int]
    latencies: list[float]  # seconds from publishing a job to receiving its result
    seconds: float

    def lines(self) -> list[str]:
        lines = ["jobs summary:",
                 f"  submitted   {self.submitted}",
                 f"  completed   {self.completed} in {self.seconds:.1f} s"]
        if self.latencies:
            ordered = sorted(self.latencies)
            p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            lines.append(f"  latency     median {statistics.median(ordered) * 1000:.0f} ms, "
                         f"95th percentile {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms")
        for worker, count in sorted(self.by_worker.items()):
            lines.append(f"  {worker:<11} {count} jobs")
        return lines


def make_job(number: int, rng: random.Random) -> dict[str, object]:
    width, height = rng.choice(CAMERAS)
    return {"job": f"job-{number:05d}", "image": f"IMG_{number:04d}.jpg", "width": width,
            "height": height, "bytes": int(width * height * rng.uniform(0.25, 0.45)),
            "operation": rng.choice(OPERATIONS)}


class Worker:
    """One member of the shared subscription: takes a job, works, replies where it is told."""

    def __init__(self, worker_id: str, config: JobsConfig, broker: BrokerSettings,
                 rng: random.Random) -> None:
        self.worker_id = worker_id
        self.config = config
        self.broker = broker
        self.done = 0
        self._random = rng
        self._stopper = Stopper()

    def stop(self) -> None:
        self._stopper.stop()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        share = f"$share/{self.config.group}/{WORKER_FILTER}"
        with self._stopper.stoppable() as connecting:
            async with self.broker.client(self.worker_id, persistent=True,
                                          resume=False) as client:
                self._stopper.disarm(connecting)

                async def subscribed() -> None:
                    task_status.started()

                async def handle(message: Message) -> None:
                    await self._process(client, message)

                await serve_subscription(client, share, handle, self._stopper, subscribed)

    async def _process(self, client: Client, message: Message) -> None:
        """Work on one job and publish its result where the job asked (QoS 1)."""
        reply_to = message.properties.response_topic
        if reply_to is None:
            log.warning("%s: job on %s has no response topic; dropped", self.worker_id,
                        clip(message.topic))
            return
        job = json.loads(message.payload)
        megapixels = job["width"] * job["height"] / 1e6
        seconds = self.config.work_time * megapixels / 12 * self._random.uniform(0.8, 1.2)
        await trio.sleep(seconds)
        result = {"job": job["job"], "worker": self.worker_id, "status": "done",
                  "operation": job["operation"],
                  "output": job["image"].replace(".jpg", f"-{job['operation']}.jpg"),
                  "seconds": round(seconds, 3)}
        properties = Properties(correlation_data=message.properties.correlation_data,
                                content_type="application/json")
        await client.publish(reply_to, json.dumps(result), qos=1, properties=properties)
        self.done += 1
        log.debug("%s: %s done in %.3f s", self.worker_id, job["job"], seconds)


class Uploader:
    """Submits `config.jobs` jobs at `config.rate` and collects one result for each."""

    def __init__(self, config: JobsConfig, broker: BrokerSettings, rng: random.Random) -> None:
        self.config = config
        self.broker = broker
        self._random = rng
        self.submitted = 0
        self._sent_at: dict[bytes, float] = {}  # correlation data -> when, until the result
        self._latencies: list[float] = []
        self._by_worker: Counter[str] = Counter()
        self._all_done = trio.Event()
        self._stopper = Stopper()

    def stop(self) -> None:
        self._stopper.stop()

    async def run(self) -> JobsReport:
        config = self.config
        uploader_id = f"{config.prefix}-uploader"
        results = RESULT_TOPIC.format(uploader=uploader_id)
        began = trio.current_time()
        with self._stopper.stoppable() as connecting:
            async with self.broker.client(uploader_id) as client, \
                    client.subscription(results, qos=1) as replies, \
                    trio.open_nursery() as nursery:
                self._stopper.disarm(connecting)
                nursery.start_soon(self._collect, replies)
                with self._stopper.stoppable():
                    await self._submit(client, results)
                    log.info("%d jobs submitted; waiting for their results", self.submitted)
                    with trio.move_on_after(config.timeout):
                        await self._all_done.wait()
                nursery.cancel_scope.cancel()
        return JobsReport(self.submitted, len(self._latencies),
                          dict(self._by_worker), self._latencies, trio.current_time() - began)

    async def _submit(self, client: Client, results: str) -> None:
        config = self.config
        start = trio.current_time()
        for number in range(1, config.jobs + 1):
            await trio.sleep_until(start + (number - 1) / config.rate)
            job = make_job(number, self._random)
            correlation = str(job["job"]).encode()
            properties = Properties(response_topic=results, correlation_data=correlation,
                                    content_type="application/json")
            topic = JOB_TOPIC.format(uploader=f"{config.prefix}-uploader", job=job["job"])
            self._sent_at[correlation] = trio.current_time()
            await client.publish(topic, json.dumps(job), qos=1, properties=properties)
            self.submitted += 1

    async def _collect(self, replies: Messages) -> None:
        async for message in replies:
            correlation = message.properties.correlation_data
            sent = self._sent_at.pop(correlation, None) if correlation is not None else None
            if sent is None:
                continue  # a duplicate, or a result of an earlier run
            self._latencies.append(trio.current_time() - sent)
            self._by_worker[json.loads(message.payload).get("worker", "?")] += 1
            if len(self._latencies) == self.config.jobs:
                self._all_done.set()


class JobsExample:
    """The workers and/or the uploader of one run, as the command line asks."""

    def __init__(self, config: JobsConfig, broker: BrokerSettings, seed: int | None) -> None:
        if broker.version != MQTT_5:
            raise JobsError("the jobs example needs MQTT 5 (response topic, correlation data)")
        self.config = config
        self.workers = [Worker(f"{config.prefix}-worker-{n}", config, broker,
                               random.Random(f"{seed}:worker-{n}"))
                        for n in range(1, config.workers + 1)]
        self.uploader = (Uploader(config, broker, random.Random(f"{seed}:uploader"))
                         if config.jobs else None)
        self._stopper = Stopper()

    def stop(self) -> None:
        self._stopper.stop()
        if self.uploader is not None:
            self.uploader.stop()

    async def run(self) -> JobsReport | None:
        """Start the workers, submit the jobs; the uploader's report (None: workers only)."""
        report = None
        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                await nursery.start(worker.run)
            if self.workers:
                log.info("%d workers share $share/%s/%s", len(self.workers), self.config.group,
                         WORKER_FILTER)
            if self.uploader is not None:
                report = await self.uploader.run()
            else:
                with self._stopper.stoppable():
                    await trio.sleep_forever()
            for worker in self.workers:
                worker.stop()
        return report

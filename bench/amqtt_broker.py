"""Run amqtt from a config file with logging at WARNING (runs in bench/.venv-amqtt).

amqtt's own `amqtt` command always logs at INFO, one line per connection and
more; the other brokers run with warnings only, so amqtt does too. Otherwise
this is what `amqtt -c FILE` does: start the broker, serve until SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from amqtt.broker import Broker  # type: ignore[import-not-found]
from amqtt.utils import read_yaml_config  # type: ignore[import-not-found]


async def serve(config_path: str) -> None:
    broker = Broker(read_yaml_config(config_path))
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await broker.shutdown()


def main() -> None:
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(sys.argv[1]))


if __name__ == "__main__":
    main()

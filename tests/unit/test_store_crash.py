"""kill -9: every batch whose `apply` returned is in the store, which opens cleanly.

A child process applies counting batches to a SQLite store (sync: normal) and
prints each batch number once `apply` returns. It is killed (SIGKILL) after a
random number of them, often in the middle of the next commit; the store must
then open (it is checked on opening) and hold every printed batch, all of the
batches before it, and at most the one it was writing.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

from mqttish.persistence.sqlite import SqliteStore
from tests.e2e.broker_process import ROOT
from tests.unit.store_journals import last_counted

ROUNDS = 6


def test_every_batch_applied_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "mqttish.db"
    seed = random.randrange(1 << 32)
    chance = random.Random(seed)
    last_printed = 0
    for round_ in range(ROUNDS):
        child = subprocess.Popen([sys.executable, "-m", "tests.unit.store_crash_writer", str(path)],
                                 cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        # The first round may die before its store exists: opening must cope with that too.
        for _ in range(chance.randint(0 if round_ == 0 else 1, 40)):
            last_printed = int(child.stdout.readline())
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        for line in child.stdout.read().split():  # printed before it died, not read yet
            last_printed = int(line)
        child.stdout.close()

        store = SqliteStore(path)
        found = last_counted(store.load())
        store.close()
        assert last_printed <= found <= last_printed + 1, f"round {round_}, seed {seed}"
        last_printed = found

"""`python -m tests.unit.store_crash_writer STORE`: a counting run that goes on until killed.

It continues from what the store holds, and prints the number of each batch
once `apply` has returned: from then on the batch must survive a crash.
"""

from __future__ import annotations

import sys

from mqttish.persistence.sqlite import SqliteStore
from tests.unit.store_journals import COUNTING_SESSIONS, counting_batch, last_counted


def main(path: str) -> None:
    store = SqliteStore(path)
    number = last_counted(store.load())
    if number == 0:
        store.apply(COUNTING_SESSIONS)
    while True:
        number += 1
        store.apply(counting_batch(number, filler=100))
        print(number, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

"""The orders demonstration as documented: worker processes, one killed with SIGKILL mid-stream."""

import re
import subprocess
import sys

from tests.conftest import BrokerThread
from tests.e2e.broker_process import ROOT


def test_a_killed_worker_loses_no_order(broker: BrokerThread) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulators", "orders", "-h", "127.0.0.1", "-p", str(broker.port),
         "--orders", "300", "--workers", "3", "--kill-after", "100", "--patience", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    summary = dict(re.findall(r"^  (\w[\w ]*?)\s{2,}(\S+)", result.stdout, re.MULTILINE))
    assert summary["sent"] == "300"
    assert summary["killed"] == "orders-worker-1"
    assert summary["processed"] == "300"
    assert summary["missing"] == "0"  # with no order published twice by the coordinator
    assert "Traceback" not in result.stderr
    # The broker took back what the dead worker had not acknowledged (it acknowledges an
    # order once processed) and gave it to the others, which saw the DUP flag.
    [group] = broker.call(broker.broker.subscriptions.groups)
    assert group.share_name == "$share/workers/orders/#"
    assert 0 < int(summary["redelivered"]) <= group.redelivered

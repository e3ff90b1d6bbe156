"""Interop with Mosquitto's command-line clients at QoS 0, 1 and 2, with retained messages."""

import shutil
import subprocess

import pytest

from tests.conftest import BrokerThread

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_pub") is None and not __import__("os").environ.get("CI"),
    reason="mosquitto-clients not installed (CI installs them)",
)


def mosquitto_sub(port: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["mosquitto_sub", "-p", str(port), "-v", *args],
                            stdout=subprocess.PIPE, text=True)


def mosquitto_pub(port: int, *args: str) -> None:
    subprocess.run(["mosquitto_pub", "-p", str(port), *args], check=True, timeout=10)


@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_mosquitto_pub_to_mosquitto_sub(broker: BrokerThread, qos: str) -> None:
    mosquitto_pub(broker.port, "-t", "sensors/ready", "-m", "go", "-r", "-q", "1")
    sub = mosquitto_sub(broker.port, "-t", "sensors/#", "-q", qos, "-C", "2", "-W", "10")
    assert sub.stdout is not None
    assert sub.stdout.readline() == "sensors/ready go\n"  # retained: the subscription is live
    mosquitto_pub(broker.port, "-t", "sensors/kitchen/temperature", "-m", "21.5", "-q", qos)
    assert sub.stdout.readline() == "sensors/kitchen/temperature 21.5\n"
    assert sub.wait(10) == 0


def test_retained_with_mosquitto_clients(broker: BrokerThread) -> None:
    mosquitto_pub(broker.port, "-t", "state/door", "-m", "open", "-r", "-q", "2")
    out = subprocess.run(
        ["mosquitto_sub", "-p", str(broker.port), "-t", "state/+", "-v", "-C", "1", "-W", "10",
         "-F", "%r %t %p"], capture_output=True, text=True, timeout=15, check=True)
    assert out.stdout == "1 state/door open\n"
    mosquitto_pub(broker.port, "-t", "state/door", "-n", "-r")
    mosquitto_pub(broker.port, "-t", "state/ready", "-m", "yes", "-r")
    sub = mosquitto_sub(broker.port, "-t", "state/#", "-C", "2", "-W", "10")
    assert sub.stdout is not None
    assert sub.stdout.readline() == "state/ready yes\n"  # the door's retained message is gone
    mosquitto_pub(broker.port, "-t", "state/window", "-m", "closed")
    assert sub.stdout.readline() == "state/window closed\n"
    assert sub.wait(10) == 0


@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_mqtt5_clients_with_user_properties(broker: BrokerThread, qos: str) -> None:
    mosquitto_pub(broker.port, "-V", "mqttv5", "-t", "v5/ready", "-m", "x", "-r", "-q", "1")
    sub = mosquitto_sub(broker.port, "-V", "mqttv5", "-t", "v5/#", "-q", qos, "-C", "2",
                        "-W", "10", "-F", "%t %p %P")
    assert sub.stdout is not None
    assert sub.stdout.readline() == "v5/ready x \n"  # retained: the subscription is live
    mosquitto_pub(broker.port, "-V", "mqttv5", "-t", "v5/live", "-m", "21.5", "-q", qos,
                  "-D", "publish", "user-property", "site", "kitchen")
    assert sub.stdout.readline() == "v5/live 21.5 site:kitchen\n"
    assert sub.wait(10) == 0

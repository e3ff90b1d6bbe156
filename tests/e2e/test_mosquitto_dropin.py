"""mqttish as a drop-in for Mosquitto: `mqttish -c mosquitto.conf` behaves as Mosquitto does
with the same file, as Mosquitto's own clients see it.

A realistic production mosquitto.conf (two listeners, one with TLS, a password file,
an ACL file, persistence, logging to a file, an include_dir holding a bridge to a
"cloud" broker) runs once under Mosquitto and once under mqttish, each with its own
cloud (a Mosquitto); the same probes with mosquitto_pub and mosquitto_sub must see
the same thing on both. Then mqttish restarts while the cloud is away, and no
acknowledged message is lost.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import missing
from tests.e2e.broker_process import BrokerProcess, Program, free_port
from tests.mosquitto import Mosquitto
from tests.wire.tls_certs import Certificates, make_certificates

DEBIAN_EXAMPLE = Path("/usr/share/doc/mosquitto/examples/mosquitto.conf")
WAIT = "10"  # seconds a probe's subscriber waits at most (it ends at its last message)

PRODUCTION = """\
# Acme site broker
per_listener_settings false
allow_anonymous false
password_file {dir}/passwd
acl_file {dir}/acl

listener {port} 127.0.0.1
max_connections 500

listener {tls_port} 127.0.0.1
cafile {ca}
certfile {cert}
keyfile {key}
tls_version tlsv1.2

persistence true
persistence_location {dir}/data/
autosave_interval 300

max_inflight_messages 40
max_queued_messages 5000
message_size_limit 65536
sys_interval 10
connection_messages true

log_dest stderr
log_dest file {dir}/broker.log
log_type error
log_type warning
log_type notice
log_type information

include_dir {dir}/conf.d
"""

BRIDGE = """\
connection cloud
address 127.0.0.1:{cloud_port}
remote_clientid site-1
cleansession false
restart_timeout 1 2
topic sensors/# out 1 "" site-1/
topic commands/# in 1 "" site-1/
"""

ACL = """\
user alice
topic readwrite sensors/#
topic read commands/#

user bob
topic read sensors/#
topic write commands/#
"""


class Site:
    """A site broker (Mosquitto or mqttish) running the production configuration."""

    def __init__(self, directory: Path, certs: Certificates, cloud_port: int,
                 mosquitto: bool) -> None:
        self.directory = directory
        self.port, self.tls_port = free_port(), free_port()
        (directory / "conf.d").mkdir(parents=True)
        (directory / "acl").write_text(ACL)
        for user, password in (("alice", "alice-pw"), ("bob", "bob-pw")):
            subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if user == "alice" else []),
                            str(directory / "passwd"), user, password], check=True)
        (directory / "conf.d" / "bridge.conf").write_text(BRIDGE.format(cloud_port=cloud_port))
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(PRODUCTION.format(
            dir=directory, port=self.port, tls_port=self.tls_port, ca=certs.ca,
            cert=certs.server_cert, key=certs.server_key))
        self.ca = certs.ca
        self.mosquitto = mosquitto
        self.process: Mosquitto | BrokerProcess | None = None

    def start(self) -> Site:
        if self.mosquitto:
            broker = Mosquitto(self.directory / "mosquitto", port=self.port,
                               conf=self.conf.read_text())
            self.process = broker.start()
        else:
            process = self.process = BrokerProcess("-c", str(self.conf))
            process.wait_for(f"listening on 127.0.0.1:{self.tls_port}")
        return self

    def stop(self) -> None:
        if isinstance(self.process, Mosquitto):
            self.process.stop()
        elif self.process is not None:
            self.process.process.send_signal(signal.SIGTERM)
            assert self.process.wait() == 0
            assert "Traceback" not in self.process.text()
        self.process = None

    def kill(self) -> None:
        if isinstance(self.process, BrokerProcess):
            self.process.kill()
        elif self.process is not None:
            self.process.stop()


def pub(port: int, *args: str, user: str | None = "alice", stdin: str | None = None,
        ok: bool = True) -> subprocess.CompletedProcess[str]:
    """mosquitto_pub to its end; unless `ok` is False, it must have succeeded."""
    credentials = ["-u", user, "-P", f"{user}-pw"] if user else []
    done = subprocess.run(["mosquitto_pub", "-p", str(port), *credentials, *args],
                          input=stdin, capture_output=True, text=True, timeout=20, check=False)
    assert not ok or done.returncode == 0, f"mosquitto_pub {args}: {done.stderr}"
    return done


class Sub:
    """mosquitto_sub, ready (its SUBACK received) when made; `lines()` waits for its end."""

    def __init__(self, port: int, *args: str, user: str | None = "bob", count: int = 1) -> None:
        credentials = ["-u", user, "-P", f"{user}-pw"] if user else []
        self.process = subprocess.Popen(  # stdbuf: its lines as they come, not at its end
            ["stdbuf", "-oL", "mosquitto_sub", "-p", str(port), *credentials, "-v", "-d",
             "-C", str(count),
             "-W", WAIT, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        self.output: list[str] = []
        for line in self.process.stdout:  # its debug lines say when it has subscribed
            self.output.append(line)
            if "received SUBACK" in line or "Connection Refused" in line:
                break

    def lines(self) -> list[str]:
        """The messages it printed (`topic payload`), once it has ended (by -C or -W)."""
        assert self.process.stdout is not None
        # Read on through the same file object: what it has buffered is ours too.
        rest = self.process.stdout.read()
        self.process.wait(20)
        text = "".join(self.output) + rest
        return [line for line in text.splitlines()
                if line and not line.startswith(("Client ", "Subscribed", " "))]


def probe(site: Site, cloud: Mosquitto) -> dict[str, object]:
    """What Mosquitto's clients see of the site broker, in a form both brokers can match."""
    seen: dict[str, object] = {}
    port = site.port
    anonymous = pub(port, "-t", "sensors/x", "-m", "1", user=None, ok=False)
    seen["anonymous refused"] = anonymous.returncode != 0 and "refused" in anonymous.stderr
    wrong = subprocess.run(["mosquitto_pub", "-p", str(port), "-u", "alice", "-P", "nope",
                            "-t", "sensors/x", "-m", "1"], capture_output=True, text=True,
                           timeout=20, check=False)
    seen["wrong password refused"] = wrong.returncode != 0 and "refused" in wrong.stderr

    bob = Sub(port, "-t", "sensors/#", "-q", "1")
    pub(port, "-t", "sensors/line-1/temperature", "-m", "21.5", "-q", "1")
    seen["alice to bob"] = bob.lines()

    alice = Sub(port, "-t", "sensors/#", "-q", "1", user="alice")
    pub(port, "-t", "sensors/from-bob", "-m", "not allowed", "-q", "1", user="bob")
    pub(port, "-t", "sensors/big", "-s", "-q", "1", stdin="x" * 70_000)  # message_size_limit
    pub(port, "-t", "sensors/marker", "-m", "end", "-q", "1")
    seen["only what the ACL and limits let through"] = alice.lines()

    pub(port, "-t", "sensors/state", "-m", "on", "-r", "-q", "1")
    seen["retained"] = Sub(port, "-t", "sensors/state").lines()

    over_tls = Sub(port, "-t", "sensors/tls", "-q", "1")
    tls = pub(site.tls_port, "--cafile", site.ca, "-h", "localhost", "-t", "sensors/tls",
              "-m", "secure", "-q", "1", ok=False)
    seen["TLS listener"] = (tls.returncode, over_tls.lines())
    plain = pub(site.tls_port, "-t", "sensors/x", "-m", "1", ok=False)
    seen["plain MQTT on the TLS listener fails"] = plain.returncode != 0

    seen["retained, bridged"] = Sub(cloud.port, "-t", "site-1/sensors/state", user=None).lines()
    at_cloud = Sub(cloud.port, "-t", "site-1/sensors/#", "-q", "1", "-R", user=None)
    pub(port, "-t", "sensors/line-2/pressure", "-m", "1.2", "-q", "1")
    seen["bridged out"] = at_cloud.lines()
    commands = Sub(port, "-t", "commands/#", "-q", "1", user="alice")
    subprocess.run(["mosquitto_pub", "-p", str(cloud.port), "-t", "site-1/commands/stop",
                    "-m", "now", "-q", "1"], check=True, timeout=20)
    seen["bridged in"] = commands.lines()
    return seen


def wait_until_bridged(cloud: Mosquitto) -> None:
    """The site's bridge told the cloud it is up (Mosquitto's notification, retained)."""
    for _ in range(50):
        state = subprocess.run(["mosquitto_sub", "-p", str(cloud.port), "-t",
                                "$SYS/broker/connection/site-1/state", "-C", "1", "-W", "2"],
                               capture_output=True, text=True, timeout=20, check=False)
        if state.stdout.strip() == "1":
            return
    raise AssertionError("the site's bridge never connected")


EXPECTED = {
    "anonymous refused": True,
    "wrong password refused": True,
    "alice to bob": ["sensors/line-1/temperature 21.5"],
    "only what the ACL and limits let through": ["sensors/marker end"],
    "retained": ["sensors/state on"],
    "TLS listener": (0, ["sensors/tls secure"]),
    "plain MQTT on the TLS listener fails": True,
    "retained, bridged": ["site-1/sensors/state on"],
    "bridged out": ["site-1/sensors/line-2/pressure 1.2"],
    "bridged in": ["commands/stop now"],
}


def test_production_config_behaves_as_under_mosquitto(
        tmp_path: Path, start_mosquitto: Callable[..., Mosquitto]) -> None:
    certs = make_certificates(tmp_path)
    results = {}
    for name, mosquitto in (("mosquitto", True), ("mqttish", False)):
        cloud = start_mosquitto(name=f"cloud-for-{name}")
        site = Site(tmp_path / name, certs, cloud.port, mosquitto).start()
        try:
            wait_until_bridged(cloud)
            results[name] = probe(site, cloud)
        finally:
            site.stop()
    assert results["mosquitto"] == EXPECTED  # the probes show what they claim...
    assert results["mqttish"] == results["mosquitto"]  # ...and mqttish does the same
    log = (tmp_path / "mqttish" / "broker.log").read_text()
    assert "read " in log and "as a Mosquitto configuration" in log
    assert "autosave_interval: accepted, not needed" in log
    assert (tmp_path / "mqttish" / "data" / "mqttish.db").exists()


def test_restart_while_the_remote_is_away_loses_nothing(
        tmp_path: Path, start_mosquitto: Callable[..., Mosquitto]) -> None:
    """Persistence on: 30 QoS 1 messages acknowledged by mqttish while the cloud is down,
    mqttish restarted, the cloud back: all 30 reach the cloud's subscriber."""
    certs = make_certificates(tmp_path)
    cloud = start_mosquitto("persistence true\n", name="cloud")
    site = Site(tmp_path / "site", certs, cloud.port, mosquitto=False).start()
    try:
        wait_until_bridged(cloud)
        session = ["-c", "-i", "cloud-app", "-q", "1", "-t", "site-1/sensors/q/#"]
        warm_up = Sub(cloud.port, *session, user=None)  # a persistent session at the cloud
        pub(site.port, "-t", "sensors/q/warm-up", "-m", "0", "-q", "1")
        assert warm_up.lines() == ["site-1/sensors/q/warm-up 0"]
        cloud.stop()
        lines = "".join(f"{n}\n" for n in range(1, 31))
        pub(site.port, "-t", "sensors/q/n", "-l", "-q", "1", stdin=lines)  # all acknowledged
        site.stop()
        site.start()
        cloud.start()
        arrived = Sub(cloud.port, *session, user=None, count=30).lines()
    finally:
        site.kill()
    numbers = [line.split()[1] for line in arrived if line.startswith("site-1/sensors/q/n ")]
    assert sorted(numbers, key=int) == [str(n) for n in range(1, 31)]


def test_mosquittos_example_configuration(tmp_path: Path) -> None:
    """Debian's example (every line a comment) under both: local only mode, on loopback,
    anonymous clients in; -p moves the port, as `mosquitto -c FILE -p PORT` does."""
    if not DEBIAN_EXAMPLE.exists():
        missing(f"{DEBIAN_EXAMPLE} is not installed (Debian's mosquitto package)")
    outcomes = []
    for command in (["/usr/sbin/mosquitto", "-c", str(DEBIAN_EXAMPLE)], None):
        port = free_port()
        if command is None:
            broker = BrokerProcess("-c", str(DEBIAN_EXAMPLE), "-p", str(port))
            broker.wait_for("listening on")
        else:
            broker = Program([*command, "-p", str(port)], cwd=tmp_path)
            broker.wait_for(" running")
        try:
            sub = Sub(port, "-t", "example/#", user=None)
            sent = pub(port, "-t", "example/topic", "-m", "hello", user=None, ok=False)
            outcomes.append((sent.returncode, sub.lines(), _listening(port)))
        finally:
            broker.process.send_signal(signal.SIGTERM)
            broker.wait()
    assert outcomes[0] == (0, ["example/topic hello"], {"127.0.0.1"})
    assert outcomes[1] == outcomes[0]


def _listening(port: int) -> set[str]:
    """The IPv4 addresses something listens on at `port` (from /proc/net/tcp)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            octets = [str(int(address[i:i + 2], 16)) for i in range(6, -2, -2)]
            addresses.add(".".join(octets))
    return addresses


"""Three gateway nodes as separate hosts behind HAProxy (issue #19), built from network namespaces.

Each node runs `manage.py rungateway` in its own namespace (`ip netns`), joined to a Linux bridge
in the root namespace by a veth pair, with its own address on a per-run /24 of 10.77.x.0. The
shared services listen on the bridge address, because the machine's own Mosquitto, Redis and
PostgreSQL listen only on 127.0.0.1: the suite starts a private Mosquitto, a private Redis and a
private PostgreSQL cluster (the nodes share one real database, as separate hosts would; no
per-node SQLite). HAProxy (TCP mode, /readyz health checks) runs in the root namespace from
`deploy/haproxy.cfg` rendered with the suite's addresses. Stations connect with
`OCPPGW_AUTH=none` (they appear on first connect), so no 300 users need creating.

Everything the suite makes (namespaces, veths, bridge, processes, directories) is removed at
teardown, also on failure; names carry a run id, so a crashed earlier run never blocks this one.
Without root or `ip`/`haproxy`, the suite skips saying why.
"""

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port, port_open, wait_until
from tests.gateway_process import RungatewayProcess
from tests.reliability.services import PG_BIN

REPO = Path(__file__).resolve().parents[2]
GW_PORT = 33033


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "cluster suite needs root (ip netns)"
    for tool in ("ip", "haproxy", "mosquitto", "redis-server"):
        if not shutil.which(tool):
            return f"cluster suite needs `{tool}` (.ci/run installs it)"
    if not (PG_BIN / "initdb").exists():
        return f"cluster suite needs PostgreSQL binaries in {PG_BIN}"
    return None


class Net:
    """A bridge in the root namespace and one namespace per node, on 10.77.<n>.0/24."""

    def __init__(self, run: str, nodes: int):
        self.run, self.subnet = run, random.randint(1, 254)
        self.bridge = f"ocb{run}"
        self.host_ip = f"10.77.{self.subnet}.1"
        self.ns = [f"ocppgw-{run}-{i}" for i in range(nodes)]
        self.ips = [f"10.77.{self.subnet}.{11 + i}" for i in range(nodes)]
        self.veths = [f"oc{run}h{i}" for i in range(nodes)]

    def up(self) -> None:
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        for ns, ip, veth in zip(self.ns, self.ips, self.veths, strict=True):
            peer = veth.replace("h", "n")
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
            _sh("ip", "link", "set", peer, "netns", ns)
            _sh("ip", "link", "set", veth, "master", self.bridge)
            _sh("ip", "link", "set", veth, "up")
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", peer)
            _sh("ip", "-n", ns, "link", "set", peer, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")

    def link(self, i: int, state: str) -> None:
        """Cut (`down`) or restore (`up`) node i's cable, at the bridge end."""
        _sh("ip", "link", "set", self.veths[i], state)

    def cut(self, i: int, ip: str, port: int) -> None:
        """Drop node i's traffic to and from ip:port, both ways, inside its namespace (a
        firewall between that host and the service; nothing is refused, packets just vanish)."""
        rules = (
            "table inet ocppgwcut {\n"
            f" chain out {{ type filter hook output priority 0; ip daddr {ip} tcp dport {port} drop; }}\n"
            f" chain in {{ type filter hook input priority 0; ip saddr {ip} tcp sport {port} drop; }}\n"
            "}\n"
        )
        subprocess.run(["ip", "netns", "exec", self.ns[i], "nft", "-f", "-"], input=rules,
                       check=True, capture_output=True, text=True, timeout=30)  # fmt: skip

    def uncut(self, i: int) -> None:
        if shutil.which("nft"):
            _sh("ip", "netns", "exec", self.ns[i], "nft", "delete", "table", "inet", "ocppgwcut",
                check=False)  # fmt: skip

    def down(self) -> None:
        for ns, veth in zip(self.ns, self.veths, strict=True):
            _sh("ip", "link", "del", veth, check=False)
            _sh("ip", "netns", "del", ns, check=False)
        _sh("ip", "link", "del", self.bridge, check=False)


class Services:
    """Private Mosquitto, Redis and PostgreSQL listening on the bridge address."""

    def __init__(self, workdir: Path, ip: str, cidr: str):
        self.dir, self.ip, self.cidr = workdir, ip, cidr
        self.mqtt_port, self.redis_port, self.pg_port = free_port(), free_port(), free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.pgdir = Path(tempfile.mkdtemp(prefix="ocppgw-cluster-pg-"))
        shutil.chown(self.pgdir, "postgres")

    def start_mosquitto(self) -> None:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.mqtt_port} {self.ip}\nallow_anonymous true\nuser root\n"
            f"persistence true\npersistence_location {self.dir}/\nmax_queued_messages 0\n"
            "max_inflight_messages 0\n"
        )
        self.procs["mosquitto"] = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: port_open(self.mqtt_port, self.ip), 10, "cluster mosquitto")

    def stop_mosquitto(self) -> None:
        proc = self.procs.pop("mosquitto")
        proc.terminate()
        proc.wait(10)

    def start(self) -> None:
        self.start_mosquitto()
        self.procs["redis"] = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", self.ip, "--save", "",
             "--protected-mode", "no",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        pg = ["runuser", "-u", "postgres", "--"]
        data = self.pgdir / "data"
        subprocess.run([*pg, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A",
                        "trust"], check=True, capture_output=True, timeout=60, cwd=self.pgdir)  # fmt: skip
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.cidr} trust\n")
        options = (
            f"-p {self.pg_port} -k {self.pgdir} -c listen_addresses={self.ip} -c fsync=off"
            " -c synchronous_commit=off -c max_connections=200"
        )
        subprocess.run([*pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                        str(self.pgdir / "pg.log"), "-w", "-t", "30", "start"],
                       check=True, capture_output=True, timeout=60, cwd=self.pgdir)  # fmt: skip
        wait_until(lambda: port_open(self.redis_port, self.ip), 10, "cluster redis")

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(5)
        self.procs.clear()
        pg = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*pg, str(PG_BIN / "pg_ctl"), "-D", str(self.pgdir / "data"), "-m",
                        "immediate", "-w", "stop"], capture_output=True, timeout=30, cwd=self.pgdir)  # fmt: skip
        shutil.rmtree(self.pgdir, ignore_errors=True)

    @property
    def env(self) -> dict:
        return {
            "DATABASE_URL": f"postgres://postgres@{self.ip}:{self.pg_port}/postgres",
            "REDIS_URL": f"redis://{self.ip}:{self.redis_port}/0",
            "MQTT_URL": f"mqtt://{self.ip}:{self.mqtt_port}",
        }


class Node(RungatewayProcess):
    """`rungateway` inside namespace `ns`, listening on its address."""

    def __init__(self, workdir: Path, ns: str, ip: str, name: str, env: dict):
        self.ns, self.node = ns, name
        super().__init__(workdir / f"{name}.log", env, ["--host", "0.0.0.0", "--port",
                                                        str(GW_PORT)], host=ip, port=GW_PORT)  # fmt: skip

    def launch(self, own_group: bool = False):
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "manage.py", "rungateway",
                 *self.args],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # `ip netns exec` execs, so this is the gateway
        self.proc.wait(10)


def render_haproxy(bind: str, servers: list[tuple[str, str]]) -> str:
    text = (REPO / "deploy" / "haproxy.cfg").read_text()
    lines = "\n".join(f"    server {name} {ip}:{GW_PORT}" for name, ip in servers)
    return text.replace("{{BIND}}", bind).replace("{{SERVERS}}", lines)


class Cluster:
    """The nodes, shared by every scenario: each scenario starts with `heal()`."""

    def __init__(self, workdir, net, services, nodes, lb_port):
        self.dir, self.net, self.services, self.nodes = workdir, net, services, nodes
        self.lb_url = f"ws://127.0.0.1:{lb_port}/ocpp/"

    def heal(self) -> None:
        """Every cable up, no firewall cut, every node running and ready (a scenario may have
        killed one: it restarts under the same node name, as a rebooted host would)."""
        for i, node in enumerate(self.nodes):
            self.net.link(i, "up")
            self.net.uncut(i)
            if node.proc.poll() is not None:
                node.launch()
        for node in self.nodes:
            node.wait_ready(60)
        # HAProxy marks a node up after two passed checks: until then every station would go to
        # the others and the scenario would not run on every node
        wait_until(lambda: self.balanced_nodes() == {n.node for n in self.nodes}, 30,
                   "HAProxy sends stations to every node")  # fmt: skip

    def balanced_nodes(self) -> set[str]:
        """The nodes HAProxy currently sends new stations to (status UP)."""
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.dir / "haproxy.sock"))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            rows = [
                line.split(",") for line in data.decode().splitlines() if line and line[0] != "#"
            ]
            servers = [r for r in rows if len(r) > 17 and r[0] == "gateways" and r[1] != "BACKEND"]
            return {r[1] for r in servers if r[17] == "UP"}
        return set()

    def cut_redis(self, i: int) -> None:
        self.net.cut(i, self.services.ip, self.services.redis_port)


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    run = uuid.uuid4().hex[:6]
    workdir = tmp_path_factory.mktemp("cluster")
    net = Net(run, 3)
    services = Services(workdir, net.host_ip, f"10.77.{net.subnet}.0/24")
    nodes: list[Node] = []
    haproxy = None
    try:
        net.up()
        services.start()
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OCPPGW_", "DJANGO_"))}
        env = {
            **clean, **services.env, "DEBUG": "true", "PYTHONUNBUFFERED": "1",
            "OCPPGW_AUTH": "none", "OCPPGW_CALL_TIMEOUT_S": "10", "OCPPGW_BROKER_GRACE_S": "10",
            # OCPPGW_CLUSTER_LOG_LEVEL=INFO keeps every node's decisions in its log (workdir)
            "OCPPGW_LOG_LEVEL": os.environ.get("OCPPGW_CLUSTER_LOG_LEVEL", "WARNING"),
        }  # fmt: skip
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=REPO,
                       env=env, check=True, capture_output=True, timeout=120)  # fmt: skip
        for i, (ns, ip) in enumerate(zip(net.ns, net.ips, strict=True)):
            name = f"cl{run}-{i}"
            nodes.append(Node(workdir, ns, ip, name, {**env, "OCPPGW_NODE": name}).launch())
        for node in nodes:
            node.wait_ready(60)
        lb_port = free_port()
        cfg = workdir / "haproxy.cfg"
        text = render_haproxy(f"127.0.0.1:{lb_port}", [(n.node, n.host) for n in nodes])
        # the suite asks HAProxy which nodes it sends stations to (Cluster.heal)
        text = text.replace("global\n", f"global\n    stats socket {workdir / 'haproxy.sock'}\n", 1)
        cfg.write_text(text)
        haproxy = subprocess.Popen(["haproxy", "-W", "-db", "-f", str(cfg)],
                                   stdout=open(workdir / "haproxy.log", "wb"),
                                   stderr=subprocess.STDOUT)  # fmt: skip
        wait_until(lambda: port_open(lb_port), 10, "haproxy")
        yield Cluster(workdir, net, services, nodes, lb_port)
    finally:
        if haproxy is not None:
            haproxy.kill()
            haproxy.wait(5)
        for node in nodes:
            with contextlib.suppress(Exception):
                if node.proc and node.proc.poll() is None:
                    node.proc.kill()
                    node.proc.wait(10)
        services.stop()
        net.down()

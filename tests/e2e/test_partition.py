"""Issue 14, a partition: three hosts as network namespaces (`ip netns`, veth pairs on one
bridge, 198.18.N.0/24), each with a real etcd member and a ferry node on the host's own
address, as `../shared/research/multihost.md` sets them up. The test reaches every host from
the root namespace through one more veth on the bridge (198.18.N.254).

Host 3 is cut off from hosts 1 and 2 with nftables in its own namespace (its etcd member
and its ferry lose the other two; the test still reaches it), for longer than a node's
store lease. Meanwhile host 3 keeps serving what it had (stale, and says so), accepts a
registration, and keeps its own instances listed although the others drop them when its
lease runs out; when healed, it catches up with what it missed and writes back what it
accepted and what it keeps.

Needs root, `ip` and `nft`; namespaces, links and processes are removed afterwards.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from etcd import etcd_binaries
from harness import ferry_binary, wait_until

LEASE_TTL = 6
HOSTS = (1, 2, 3)


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class Network:
    """The namespaces, the bridge and the veth pairs; `cut`/`heal` host 3 with nftables."""

    def __init__(self):
        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"):
            pytest.fail("the partition test needs root, ip (iproute2) and nft (nftables)", pytrace=False)
        self.tag = f"fp{os.getpid() % 10000}"
        self.subnet = f"198.18.{random.randrange(10, 250)}"
        self.switch = f"{self.tag}-sw"
        self.root_link = f"{self.tag}-root"
        sh("ip", "netns", "add", self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        for host in HOSTS:
            ns = self.ns(host)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"h{host}", "netns", self.switch)
            sh("ip", "-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.switch, "link", "set", f"h{host}", "master", "br0")
            sh("ip", "-n", self.switch, "link", "set", f"h{host}", "up")
        sh("ip", "link", "add", self.root_link, "type", "veth", "peer", "name", "root", "netns", self.switch)
        sh("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.root_link)
        sh("ip", "link", "set", self.root_link, "up")
        sh("ip", "-n", self.switch, "link", "set", "root", "master", "br0")
        sh("ip", "-n", self.switch, "link", "set", "root", "up")

    def ns(self, host: int) -> str:
        return f"{self.tag}-h{host}"

    def address(self, host: int) -> str:
        return f"{self.subnet}.{host}"

    def cut(self, host: int) -> None:
        """Drops everything between `host` and the other hosts, both ways (the test's
        address, .254, still gets through)."""
        ns = self.ns(host)
        others = "{ " + ", ".join(self.address(other) for other in HOSTS if other != host) + " }"
        sh("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "cut")
        sh("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "cut", "in",
           "{ type filter hook input priority 0; }")
        sh("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "cut", "out",
           "{ type filter hook output priority 0; }")
        sh("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "cut", "in", "ip", "saddr", others, "drop")
        sh("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "cut", "out", "ip", "daddr", others, "drop")

    def heal(self, host: int) -> None:
        sh("ip", "netns", "exec", self.ns(host), "nft", "delete", "table", "inet", "cut")

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.root_link], capture_output=True, timeout=30)
        for ns in [*(self.ns(host) for host in HOSTS), self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class Host:
    """One host: its etcd member and its ferry node, both on the host's address."""

    def __init__(self, network: Network, number: int, directory: Path):
        self.network = network
        self.number = number
        self.address = network.address(number)
        self.directory = directory / f"host{number}"
        self.directory.mkdir(parents=True)
        self.etcd: subprocess.Popen | None = None
        self.ferry: subprocess.Popen | None = None

    def exec(self, *command: str, log: str) -> subprocess.Popen:
        # `ip netns exec` execs the command: the Popen is the process itself.
        with open(self.directory / log, "wb") as out:
            return subprocess.Popen(["ip", "netns", "exec", self.network.ns(self.number), *command],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start_etcd(self, initial_cluster: str) -> None:
        etcd, _ = etcd_binaries()
        client, peer = f"http://{self.address}:2379", f"http://{self.address}:2380"
        self.etcd = self.exec(etcd, "--name", f"m{self.number}", "--data-dir", str(self.directory / "etcd"),
                              "--listen-client-urls", client, "--advertise-client-urls", client,
                              "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                              "--initial-cluster", initial_cluster, "--initial-cluster-token", "partition",
                              "--initial-cluster-state", "new", log="etcd.log")

    def start_ferry(self) -> None:
        # Its own member first: the one a host's node would use.
        members = [self.address, *(self.network.address(h) for h in HOSTS if h != self.number)]
        store = "etcd://" + ",".join(f"{member}:2379" for member in members)
        self.ferry = self.exec(
            str(ferry_binary()), "--store", store, "--node-name", f"host{self.number}",
            "--store-lease-ttl", str(LEASE_TTL), "--data-dir", str(self.directory / "ferry"),
            "--eureka-listen", f"{self.address}:8761", "--consul-listen", f"{self.address}:8500",
            "--config-listen", f"{self.address}:8888", "--admin-listen", f"{self.address}:15000",
            "--outbound-ports", "15001-15010", "--eureka-eviction-interval", "1",
            log="ferry.log")

    def url(self, port: int, path: str) -> str:
        return f"http://{self.address}:{port}{path}"

    def ready(self) -> bool:
        try:
            return httpx.get(self.url(15000, "/ready"), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def register(self, app: str, instance_id: str) -> int:
        """A Eureka registration with a lease longer than the test, so only node and
        partition behaviour, never a missing heartbeat, removes it."""
        body = {"instance": {
            "instanceId": instance_id, "hostName": self.address, "app": app, "ipAddr": self.address,
            "status": "UP", "port": {"$": 9000 + self.number, "@enabled": "true"},
            "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 600},
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}}}
        return httpx.post(self.url(8761, f"/eureka/apps/{app}"), json=body, timeout=10).status_code

    def ids(self, app: str) -> set[str]:
        response = httpx.get(self.url(8761, f"/eureka/apps/{app}"), headers={"Accept": "application/json"}, timeout=5)
        if response.status_code == 404:
            return set()
        assert response.status_code == 200, response.text
        return {instance["instanceId"] for instance in response.json()["application"]["instance"]}

    def known_leader(self) -> str:
        response = httpx.get(self.url(8500, "/v1/catalog/services"), timeout=5)
        assert response.status_code == 200, "reads keep answering"
        return response.headers["X-Consul-KnownLeader"]

    def stop(self) -> None:
        for process in (self.ferry, self.etcd):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- host{self.number} {name}:\n" + (self.directory / name).read_text(errors="replace")[-3000:]
                         for name in ("ferry.log", "etcd.log") if (self.directory / name).exists())


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    network = Network()
    started: list[Host] = []
    try:
        directory = tmp_path_factory.mktemp("partition")
        started = [Host(network, number, directory) for number in HOSTS]
        initial = ",".join(f"m{h.number}=http://{h.address}:2380" for h in started)
        for host in started:
            host.start_etcd(initial)
        for host in started:
            host.start_ferry()
        for host in started:
            wait_until(host.ready, 40, interval=0.2, what=f"host{host.number}'s ferry ready")
        yield started
    except BaseException:
        for host in started:
            print(host.logs())
        raise
    finally:
        for host in started:
            host.stop()
        network.remove()


def test_a_cut_off_host_serves_stale_then_catches_up_and_writes_back_when_healed(hosts):
    one, two, three = hosts
    network = one.network
    assert one.register("ORDERS", "orders-1") == 204
    assert three.register("PAY", "pay-3") == 204
    for host in hosts:
        wait_until(lambda host=host: host.ids("ORDERS") == {"orders-1"} and host.ids("PAY") == {"pay-3"}, 10,
                   what=f"host{host.number} to list both")
        assert host.known_leader() == "true"

    network.cut(3)
    cut_at = time.monotonic()
    # Host 3 keeps answering what it had, and says its copy is stale once etcd is silent.
    wait_until(lambda: three.known_leader() == "false", 20, interval=0.2, what="host 3 to report no known leader")
    assert three.ids("ORDERS") == {"orders-1"}
    # The majority goes on: a registration on host 1 reaches host 2, not host 3.
    assert one.register("ORDERS", "orders-2") == 204
    wait_until(lambda: two.ids("ORDERS") == {"orders-1", "orders-2"}, 10, what="host 2 to list orders-2")
    assert three.ids("ORDERS") == {"orders-1"}, "host 3 cannot have seen it"
    # Host 3 accepts a registration while cut off, at once (kept for etcd).
    started = time.monotonic()
    assert three.register("PAY", "pay-3b") == 204
    assert time.monotonic() - started < 6, "accepted locally, not after waiting out every etcd endpoint"
    assert three.ids("PAY") == {"pay-3", "pay-3b"}
    # Longer than host 3's lease: the majority drops what host 3 keeps; host 3 never does.
    wait_until(lambda: one.ids("PAY") == set(), LEASE_TTL + 20, interval=0.2,
               what="host 1 to drop host 3's instance when host 3's lease runs out")
    while time.monotonic() - cut_at < LEASE_TTL + 4:
        assert three.ids("PAY") == {"pay-3", "pay-3b"}, "host 3 keeps its own instances listed"
        time.sleep(0.5)

    network.heal(3)
    healed_at = time.monotonic()
    samples = []
    def caught_up():
        samples.append(three.ids("PAY"))
        return (three.ids("ORDERS") == {"orders-1", "orders-2"}
                and one.ids("PAY") == two.ids("PAY") == {"pay-3", "pay-3b"}
                and three.known_leader() == "true")
    wait_until(caught_up, 40, interval=0.2, what="host 3 to catch up and write back what it accepted and keeps")
    print(f"partition healed: caught up in {time.monotonic() - healed_at:.1f} s")
    assert all(sample == {"pay-3", "pay-3b"} for sample in samples), \
        f"host 3 never dropped its own instances while healing: {samples}"

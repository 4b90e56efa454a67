"""The sidecar mesh on several hosts that the sidecar tests share (tests/e2e/test_sidecar.py
with Python apps, tests/spring/test_sidecar.py with the Spring estate): hosts as network
namespaces with a real etcd member each (`netns.py`), and a ferry node per host. Host 1's
node signs (`--ca-issuer`, the folder `ferry ca init` made); the other hosts' nodes join with
tokens from `ferry ca token` and the pinned root. Each node's inbound listener (15006) and
admin listener (15000, with a token) are on the host's address; its Eureka and Consul APIs
and its outbound listeners are on the host's own 127.0.0.1, where its apps register and
listen, so the mesh is the only way from one host's app to another's.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import httpx

import netns
from harness import ferry_binary, wait_until

TOKEN = "sidecar-admin-token"
LEASE_TTL = 10


def ferry(*args: str) -> str:
    """`ferry ARGS` run here (`ca`, `ctl`); its standard output (a failure fails the test)."""
    result = subprocess.run([str(ferry_binary()), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"ferry {' '.join(args)}: {result.stderr}"
    return result.stdout


class Host(netns.Host):
    """A host of the mesh: its ferry node, read and steered through the node's admin API on
    the host's address (the test process reaches it over the bridge)."""

    def start_node(self, *identity: str, env: dict[str, str] | None = None) -> None:
        self.start_ferry(
            str(ferry_binary()), "--store-lease-ttl", str(LEASE_TTL), "--store-wait", "40",
            "--eureka-listen", "127.0.0.1:8761", "--consul-listen", "127.0.0.1:8500", "--config-listen", "off",
            "--admin-listen", f"{self.address}:15000", "--admin-token", TOKEN,
            "--inbound-listen", f"{self.address}:15006", "--outbound-ports", "15001-15010", *identity, env=env)

    def admin(self, path: str) -> httpx.Response:
        return httpx.get(f"http://{self.address}:15000{path}", timeout=5)

    def ready(self) -> bool:
        if self.ferry.poll() is not None:
            raise AssertionError(f"host{self.number}'s ferry exited with {self.ferry.returncode}:\n{self.logs()}")
        try:
            return self.admin("/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def ctl(self, *args: str) -> str:
        return ferry("ctl", "--admin", f"{self.address}:15000", "--token", TOKEN, *args)

    def identity(self) -> dict:
        return self.admin("/api/identity").json()

    def metric(self, name: str, labels: str = "") -> float:
        """One series of the admin /metrics (0 when absent)."""
        for line in self.admin("/metrics").text.splitlines():
            if line.startswith(f"{name}{labels} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def metric_total(self, name: str, fragment: str) -> float:
        """The sum of a metric's series whose labels contain `fragment`."""
        return sum(float(line.rsplit(" ", 1)[1]) for line in self.admin("/metrics").text.splitlines()
                   if line.startswith(name + "{") and fragment in line.split("}")[0])

    def outbound(self, service: str) -> int | None:
        """This node's outbound port for `service` once it is in the mesh, else None."""
        response = self.admin(f"/api/services/{service}")
        if response.status_code != 200:
            return None
        shown = response.json()
        return shown.get("port") if shown.get("mode") == "mesh" else None

    def instances(self, service: str) -> list[dict]:
        """The instances of `service` this node lists (every node's, through etcd)."""
        response = self.admin(f"/api/services/{service}")
        return response.json().get("instances", []) if response.status_code == 200 else []


@contextlib.contextmanager
def nodes(host_class: type[Host], directory: Path, prefix: str, subnets: range, cert_lifetime: str,
          hosts: tuple[int, ...] = (1, 2, 3), node_args: tuple[str, ...] = ()):
    """Namespaces (`prefix`, one of `subnets`), three etcd members, a signer on host 1 and
    joined nodes on hosts 2 and 3 (a host 4, when asked for, has a namespace only), each node
    with `node_args`; yields (the hosts, the CA folder, the root's fingerprint). Everything
    is removed on the way out, whatever happened."""
    with netns.etcd_hosts(host_class, directory, prefix, hosts, subnets, members=(1, 2, 3)) as started:
        one, two, three = started[:3]
        ca = directory / "ca"
        printed = ferry("ca", "init", "--trust-domain", "ferry.test", "--dir", str(ca))
        fingerprint = next(line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("root SHA-256: "))
        # Each node waits for etcd (--store-wait); the tokens need etcd up, so come after.
        one.start_node("--ca-issuer", str(ca), "--cert-lifetime", cert_lifetime, *node_args)
        wait_until(one.ready, 60, interval=0.2, what="host 1's ferry ready")
        for host in (two, three):
            token = ferry("ca", "token", "--node", f"host{host.number}", "--ttl", "10m", "--store", one.store).strip()
            host.start_node("--join-token", token, "--ca-root-sha256", fingerprint, *node_args)
        for host in (one, two, three):
            wait_until(host.ready, 60, interval=0.2, what=f"host{host.number}'s ferry ready")
            assert host.identity()["node"] == f"host{host.number}"
        yield started, ca, fingerprint

"""Several hosts on one machine for the many-hosts tests: network namespaces (`ip netns`)
joined by veth pairs on one bridge, as `../shared/research/multihost.md` sets them up, each
host running a real etcd member (and whatever else a test starts in it) on its own address.

The bridge lives in a namespace of its own; one more veth puts the test process on the
bridge as 198.18.N.254, so a test reaches every host's address. Each test module takes its
own tag (namespace names) and its own range of subnets, so two modules can run in one
pytest session, or at once, without meeting.

Needs root, `ip` (iproute2) and `nft` (nftables); `Network.remove()` and `Host.stop()`
remove what was made and started.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from pathlib import Path

from etcd import etcd_binaries


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def missing_tools() -> str | None:
    """Why the namespaces cannot be made here (not root, `ip` or `nft` missing), or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    missing = [tool for tool in ("ip", "nft") if not shutil.which(tool)]
    if missing:
        return f"needs {' and '.join(missing)} (apt: iproute2, nftables)"
    return None


class Network:
    """The namespaces, the bridge and the veth pairs; `cut`/`heal` a host with nftables."""

    def __init__(self, prefix: str, hosts: tuple[int, ...], subnets: range, members: tuple[int, ...] | None = None):
        """`members`: the hosts that run an etcd member (all by default)."""
        self.hosts = hosts
        self.members = members or hosts
        self.tag = f"{prefix}{os.getpid() % 10000}"
        self.subnet = f"198.18.{random.choice(subnets)}"
        self.switch = f"{self.tag}-sw"
        self.root_link = f"{self.tag}-root"
        try:
            self._build()
        except BaseException:
            self.remove()
            raise

    def _build(self) -> None:
        sh("ip", "netns", "add", self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts:
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
        others = "{ " + ", ".join(self.address(other) for other in self.hosts if other != host) + " }"
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
        for ns in [*(self.ns(host) for host in self.hosts), self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class Host:
    """One host: the processes a test starts in its namespace (its etcd member and its
    ferry node first), with their logs under the host's own directory."""

    def __init__(self, network: Network, number: int, directory: Path):
        self.network = network
        self.number = number
        self.ns = network.ns(number)
        self.address = network.address(number)
        self.directory = directory / f"host{number}"
        self.directory.mkdir(parents=True)
        self.etcd: subprocess.Popen | None = None
        self.ferry: subprocess.Popen | None = None
        self.others: list[subprocess.Popen] = []

    def exec(self, *command: str, log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Starts `command` in this host's namespace with `env` added to the environment,
        output to `log`. `ip netns exec` execs the command: the Popen is the process itself."""
        with open(self.directory / log, "ab") as out:
            return subprocess.Popen(["ip", "netns", "exec", self.ns, *command],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})})

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Runs `command` in this host's namespace to its end; its output as text."""
        return subprocess.run(["ip", "netns", "exec", self.ns, *command],
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *command: str, log: str, **options) -> subprocess.Popen:
        """`exec`, and the process is stopped with the host."""
        process = self.exec(*command, log=log, **options)
        self.others.append(process)
        return process

    def start_etcd(self, initial_cluster: str, cluster_token: str) -> None:
        etcd, _ = etcd_binaries()
        client, peer = f"http://{self.address}:2379", f"http://{self.address}:2380"
        self.etcd = self.exec(etcd, "--name", f"m{self.number}", "--data-dir", str(self.directory / "etcd"),
                              "--listen-client-urls", client, "--advertise-client-urls", client,
                              "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                              "--initial-cluster", initial_cluster, "--initial-cluster-token", cluster_token,
                              "--initial-cluster-state", "new", log="etcd.log")

    @property
    def store(self) -> str:
        """`--store` for a node of this host: its own member first, the one it would use."""
        members = sorted(self.network.members, key=lambda host: host != self.number)
        return "etcd://" + ",".join(f"{self.network.address(member)}:2379" for member in members)

    def start_ferry(self, binary: str, *args: str, env: dict[str, str] | None = None) -> None:
        """`binary` with this host's store, node name `host<N>`, data directory and `args`."""
        self.ferry = self.exec(binary, "--store", self.store, "--node-name", f"host{self.number}",
                               "--data-dir", str(self.directory / "ferry"), *args, log="ferry.log", env=env)

    def kill_ferry(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.ferry is not None and self.ferry.poll() is None:
            self.ferry.kill()
            self.ferry.wait(timeout=10)

    def stop(self) -> None:
        for process in (*reversed(self.others), self.ferry, self.etcd):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    def logs(self, *names: str) -> str:
        names = names or ("ferry.log", "etcd.log")
        return "\n".join(f"--- host{self.number} {name}:\n" + (self.directory / name).read_text(errors="replace")[-3000:]
                         for name in names if (self.directory / name).exists())


@contextlib.contextmanager
def etcd_hosts(host_class: type[Host], directory: Path, prefix: str, hosts: tuple[int, ...], subnets: range,
               members: tuple[int, ...] | None = None):
    """The network and its hosts (`host_class`), an etcd member started on each of
    `members` (every host by default); yields the hosts. On the way out, whatever
    happened, every process a host started is killed and the namespaces removed; on a
    failure the hosts' logs are printed first."""
    network = Network(prefix, hosts, subnets=subnets, members=members)
    started: list[Host] = []
    try:
        started = [host_class(network, number, directory) for number in hosts]
        on_etcd = [host for host in started if host.number in network.members]
        initial = ",".join(f"m{h.number}=http://{h.address}:2380" for h in on_etcd)
        for host in on_etcd:
            host.start_etcd(initial, f"{prefix}-cluster")
        yield started
    except BaseException:
        for host in started:
            print(host.logs())
        raise
    finally:
        for host in started:
            host.stop()
        network.remove()

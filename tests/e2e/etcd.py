"""A real three-member etcd cluster on loopback for the many-nodes tests, and `ferry` nodes
that share their registry through it (`--store etcd://...`).

The cluster is `scripts/etcd-cluster.sh`'s (the same one a person starts by hand), so the
flags the tests run etcd with are the ones the README shows. Keys and values are read and
written with the real `etcdctl`, never through Ferry, so a test can check what Ferry stored
and write what another tool might (garbage under Ferry's prefix).
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import socket
import subprocess
from pathlib import Path

from harness import ROOT, Ferry

CLUSTER_SCRIPT = ROOT / "scripts" / "etcd-cluster.sh"
PREFIX = "/ferry/v1/"
MEMBERS = (1, 2, 3)


def etcd_binaries() -> tuple[str, str]:
    """The `etcd` and `etcdctl` the cluster runs (FERRY_ETCD_BIN / FERRY_ETCDCTL, else PATH).
    Raises with what to install when either is missing: the many-nodes tests never skip."""
    etcd = os.environ.get("FERRY_ETCD_BIN", "etcd")
    etcdctl = os.environ.get("FERRY_ETCDCTL", "etcdctl")
    missing = [name for name in (etcd, etcdctl) if shutil.which(name) is None]
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not found: the many-nodes tests need a real etcd 3.4+ "
            "(apt-get install etcd-server etcd-client; scripts/test.sh installs them when run as root), "
            "or FERRY_ETCD_BIN / FERRY_ETCDCTL pointing at the binaries")
    return etcd, etcdctl


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_base() -> int:
    """A base port whose six cluster ports (BASE+1..3 for clients, BASE+11..13 for peers)
    are free, below the kernel's ephemeral range (32768+): `harness.free_port()` hands out
    ports from that range, so no ferry listener chosen later can land on a member's port,
    and a member restarted by a test finds its port still free."""
    for _ in range(50):
        base = random.randrange(20000, 32000, 20)
        if all(_bindable(base + offset) for offset in (1, 2, 3, 11, 12, 13)):
            return base
    raise RuntimeError("no free run of loopback ports for etcd between 20000 and 32000")


class EtcdCluster:
    """Three etcd members (m1, m2, m3) on loopback, data and logs under `directory`."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.etcd, self.etcdctl = etcd_binaries()
        self.env = {**os.environ, "FERRY_ETCD_BIN": self.etcd, "FERRY_ETCDCTL": self.etcdctl, "ETCDCTL_API": "3"}
        last_error = ""
        for _ in range(3):
            # A port taken between the probe and etcd's bind fails the start: try another base.
            self.base = _free_base()
            started = self._script("start", str(self.base), check=False)
            if started.returncode == 0:
                self.endpoints = started.stdout.strip().split(",")
                return
            last_error = started.stderr
            self._script("stop", check=False)
        raise RuntimeError(f"scripts/etcd-cluster.sh start failed: {last_error}")

    def _script(self, command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["bash", str(CLUSTER_SCRIPT), command, str(self.directory), *args],
                                capture_output=True, text=True, env=self.env, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"etcd-cluster.sh {command} {' '.join(args)} failed: {result.stderr}")
        return result

    @property
    def store_url(self) -> str:
        """What `ferry --store` takes: `etcd://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`."""
        return "etcd://" + ",".join(self.endpoints)

    def kill(self, member: int) -> None:
        """`kill -9` member 1, 2 or 3 (a crash; its data stays for `restart`)."""
        self._script("kill", str(member))

    def restart(self, member: int) -> None:
        """Starts member 1, 2 or 3 again on its data; returns once it answers (and sees a
        leader, when a quorum is running)."""
        self._script("restart", str(member))

    def running(self) -> list[int]:
        """The members whose process is alive."""
        alive = []
        for member in MEMBERS:
            pid_file = self.directory / f"m{member}.pid"
            try:
                os.kill(int(pid_file.read_text()), 0)
            except (OSError, ValueError):
                continue
            alive.append(member)
        return alive

    def leader(self) -> int:
        """The member (1, 2 or 3) that is the Raft leader now, as `endpoint status` reports it."""
        statuses = json.loads(self.etcdctl_run("endpoint", "status", "-w", "json"))
        for status in statuses:
            if status["Status"]["header"]["member_id"] == status["Status"]["leader"]:
                return self.endpoints.index(status["Endpoint"]) + 1
        raise AssertionError(f"no member is the leader: {statuses}")

    def ensure_all_running(self) -> None:
        """Restarts the members a test left dead, so the next test starts on three."""
        for member in MEMBERS:
            if member not in self.running():
                self.restart(member)

    def stop(self) -> None:
        """Stops every member and waits until they are gone."""
        self._script("stop")

    def log(self, member: int) -> str:
        try:
            return (self.directory / f"m{member}.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def etcdctl_run(self, *args: str, stdin: bytes | None = None, timeout: float = 15) -> bytes:
        """Runs `etcdctl --endpoints=<all three> ARGS`; its standard output (a failure raises)."""
        result = subprocess.run(
            [self.etcdctl, f"--endpoints={','.join(self.endpoints)}", "--dial-timeout=2s",
             "--command-timeout=5s", *args],
            input=stdin, capture_output=True, env=self.env, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def put(self, key: str, value: bytes | str) -> None:
        """Writes `value` (any bytes, which etcdctl reads from its standard input) at `key`."""
        value = value.encode() if isinstance(value, str) else value
        if value:
            self.etcdctl_run("put", key, stdin=value)
        else:
            self.etcdctl_run("put", key, "")  # etcdctl refuses an empty standard input

    def get_prefix(self, prefix: str = PREFIX) -> dict[str, bytes]:
        """Every key under `prefix` and its raw value (a linearizable read)."""
        document = json.loads(self.etcdctl_run("get", prefix, "--prefix", "-w", "json"))
        return {base64.b64decode(kv["key"]).decode(errors="replace"): base64.b64decode(kv.get("value", ""))
                for kv in document.get("kvs", [])}

    def get(self, key: str) -> bytes | None:
        """The raw value at `key`, or None when there is none."""
        document = json.loads(self.etcdctl_run("get", key, "-w", "json"))
        kvs = document.get("kvs", [])
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def delete_prefix(self, prefix: str = PREFIX) -> None:
        """Deletes every key under `prefix` (between tests: each starts on an empty registry)."""
        self.etcdctl_run("del", prefix, "--prefix")


def ferry_node(cluster: EtcdCluster, data_dir: Path, name: str, *args: str,
               env: dict[str, str] | None = None) -> Ferry:
    """A `ferry` (not yet started) on its own free ports and data directory, sharing the
    registry through `cluster` as node `name`."""
    return Ferry(data_dir, "--store", cluster.store_url, "--node-name", name, *args, env=env)

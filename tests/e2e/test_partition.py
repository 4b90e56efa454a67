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

The namespaces are `netns.py`'s. Needs root, `ip` and `nft` (it fails without them: a
machine that cannot run it must not pass it); namespaces, links and processes are removed
afterwards.
"""

from __future__ import annotations

import time

import httpx
import pytest

import netns
from harness import ferry_binary, wait_until

LEASE_TTL = 6
HOSTS = (1, 2, 3)


class Host(netns.Host):
    """One host: its etcd member and its ferry node, both on the host's address."""

    def start_node(self) -> None:
        self.start_ferry(
            str(ferry_binary()), "--store-lease-ttl", str(LEASE_TTL),
            "--eureka-listen", f"{self.address}:8761", "--consul-listen", f"{self.address}:8500",
            "--config-listen", f"{self.address}:8888", "--admin-listen", f"{self.address}:15000",
            "--outbound-ports", "15001-15010", "--eureka-eviction-interval", "1")

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


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    if (missing := netns.missing_tools()) is not None:
        pytest.fail(f"the partition test {missing}", pytrace=False)
    with netns.etcd_hosts(Host, tmp_path_factory.mktemp("partition"), "fp", HOSTS, range(10, 130)) as started:
        for host in started:
            host.start_node()
        for host in started:
            wait_until(host.ready, 40, interval=0.2, what=f"host{host.number}'s ferry ready")
        yield started


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

"""Issue 14, many nodes: the Java estate split across two Ferry nodes that share one registry
through a real three-member etcd (scripts/etcd-cluster.sh), each app pointed at one node, as
apps on two hosts would be:

    node a                                  node b
      orders   (boot3)                        orders   (boot2)
      checkout (boot2, calls orders)          checkout (boot3, calls orders)
      orders   (boot3, defaultZone a,b: fails over to b when a dies)
                                              inventory (boot3, Consul API)

Every app must find every other through its own node, whichever node the other registered
with; calls through RestTemplate and Feign reach instances registered on both nodes with no
failure. The last test kills node a with SIGKILL: its instances leave node b within its
store lease (`--store-lease-ttl 10`), the app whose client lists both nodes is adopted by b
without ever leaving, and b's callers keep working.
"""

from __future__ import annotations

import signal
import time

import pytest

import estate as e
from estate import consul_client_props, consul_health, eureka_instances, eureka_url_props, peer_ports, start_all
from etcd import EtcdCluster
from harness import wait_until

LEASE_TTL = 10
GENERATIONS = pytest.mark.parametrize("generation", e.GENERATIONS)


class Split:
    def __init__(self, a, b, orders, checkout, inventory, twin):
        self.a, self.b = a, b
        self.orders = orders
        self.checkout = checkout
        self.inventory = inventory
        self.twin = twin

    def all_orders(self):
        return [*self.orders.values(), self.twin]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        cluster = EtcdCluster(tmp_path_factory.mktemp("etcd-spring"))
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def split(cluster, ferries, apps) -> Split:
    args = ("--store", cluster.store_url, "--store-lease-ttl", str(LEASE_TTL), "--eureka-self-preservation", "false",
            "--eureka-eviction-interval", "1")
    a = ferries("node-a", *args, "--node-name", "node-a")
    b = ferries("node-b", *args, "--node-name", "node-b")
    lb = {"spring.cloud.loadbalancer.cache.ttl": "1s"}
    orders = {"boot3": apps.new("boot3", "orders", e.eureka_client_props(a)),
              "boot2": apps.new("boot2", "orders", e.eureka_client_props(b))}
    twin = apps.new("boot3", "orders", eureka_url_props(f"{a.eureka_url},{b.eureka_url}"), name="orders-twin")
    checkout = {"boot3": apps.new("boot3", "checkout", {**e.eureka_client_props(b), **lb}),
                "boot2": apps.new("boot2", "checkout", {**e.eureka_client_props(a), **lb})}
    inventory = apps.new("boot3", "inventory", consul_client_props(b))
    start_all([*orders.values(), twin, *checkout.values(), inventory])
    return Split(a, b, orders, checkout, inventory, twin)


def test_both_nodes_list_every_app_whichever_node_it_registered_with(split):
    expected = {app.instance_id for app in split.all_orders()}
    for node in (split.a, split.b):
        wait_until(lambda node=node: set(eureka_instances(node, "ORDERS")) == expected, 20,
                   what=f"{node.name} to list every orders instance")
        wait_until(lambda node=node: [entry["Service"]["Port"] for entry in consul_health(node, "inventory")]
                   == [split.inventory.port], 20, what=f"{node.name} to list inventory")
    def described(node):
        # Renewals stay on the node that receives them: the lease timestamps are each node's own.
        return {id: (i["status"], i["ipAddr"], i["port"]["$"], i.get("metadata"), i["lastDirtyTimestamp"])
                for id, i in eureka_instances(node, "ORDERS").items()}
    assert described(split.a) == described(split.b), "both nodes describe every instance the same way"


@GENERATIONS
@pytest.mark.parametrize("via", ["rest", "feign"])
def test_checkout_reaches_orders_registered_on_both_nodes(split, generation, via):
    checkout = split.checkout[generation]
    expected = {app.port for app in split.all_orders()}
    wait_until(lambda: peer_ports(checkout, "orders") == expected, 30, what="checkout to see every orders instance")
    report = checkout.json(f"/drive?via={via}&rate=20&seconds=3", timeout=60)
    assert report["failures"] == 0, report["failureSamples"]
    assert set(report["perInstance"]) == {app.instance_id for app in split.all_orders()}, report


@GENERATIONS
def test_checkout_finds_inventory_registered_through_the_other_nodes_consul_api(split, generation):
    wait_until(lambda: peer_ports(split.checkout[generation], "inventory") == {split.inventory.port}, 30,
               what="checkout to see inventory")


def test_a_dead_node_takes_its_instances_with_it_and_a_client_listing_both_nodes_is_adopted(split):
    """Last: it kills node a."""
    twin = split.twin.instance_id
    kept_by_a = split.orders["boot3"].instance_id
    split.a.process.send_signal(signal.SIGKILL)
    split.a.process.wait(timeout=10)
    killed = time.monotonic()
    wait_until(lambda: kept_by_a not in eureka_instances(split.b, "ORDERS"), LEASE_TTL + 10,
               what="node a's instance to leave node b with a's lease")
    gone_after = time.monotonic() - killed
    e.MEASUREMENTS.append(f"many nodes: node a's instance left node b {gone_after:.1f} s after a's SIGKILL "
                          f"(store lease {LEASE_TTL} s)")
    # The twin's client failed over to b and renews there; it never left.
    listed = set(eureka_instances(split.b, "ORDERS"))
    assert twin in listed, listed
    assert eureka_instances(split.b, "ORDERS")[twin]["status"] == "UP"
    deadline = time.monotonic() + 2 * LEASE_TTL
    while time.monotonic() < deadline:
        assert twin in eureka_instances(split.b, "ORDERS"), "the adopted instance must not leave"
        time.sleep(0.5)
    checkout = split.checkout["boot3"]
    expected = {split.orders["boot2"].port, split.twin.port}
    wait_until(lambda: peer_ports(checkout, "orders") == expected, 20, what="checkout on b to drop a's instance")
    report = checkout.json("/drive?via=feign&rate=20&seconds=3", timeout=60)
    assert report["failures"] == 0, report["failureSamples"]

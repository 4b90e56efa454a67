"""The event log (`/api/events`, `ferry ctl events`) against the real binary: a real
py-eureka-client registers and heartbeats, an operator's status override arrives as Spring
Boot Admin sends it, a service is cut over and rolled back with `ferry ctl`, and the log
tells that story in order, without a line for any heartbeat."""

import json

import httpx

from harness import ctl, free_port, wait_until
from test_eureka_clients import py_client


def events(ferry, **params) -> dict:
    response = httpx.get(f"{ferry.admin_url}/api/events", params=params, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def renewal_of(ferry, instance_id: str) -> int:
    """The instance's last heartbeat, from its own document (the full registry is served
    from a cache keyed by the change index, which a heartbeat does not move)."""
    response = ferry.get(f"apps/ORDERS/{instance_id}")
    assert response.status_code == 200, response.text
    return int(response.json()["instance"]["leaseInfo"]["lastRenewalTimestamp"])


def test_a_service_life_reads_in_order_and_heartbeats_add_nothing(ferry, clients):
    port = free_port()
    instance_id = f"127.0.0.1:orders:{port}"
    orders = clients(py_client(ferry, "orders", port, should_discover=False))
    wait_until(lambda: events(ferry, service="orders")["events"], 10, what="the registration's event")
    registered = events(ferry)
    assert [(e["kind"], e["service"], e["instance"], e["detail"]) for e in registered["events"]] == [
        ("registered", "ORDERS", instance_id, "UP")
    ]

    # The client's heartbeats (every second) move its lease, never the log.
    first = renewal_of(ferry, instance_id)
    wait_until(lambda: renewal_of(ferry, instance_id) > first, 10, what="a heartbeat")
    second = renewal_of(ferry, instance_id)
    wait_until(lambda: renewal_of(ferry, instance_id) > second, 10, what="another heartbeat")
    assert events(ferry) == registered

    # The override Spring Boot Admin sends, by hand as it sends it.
    override = httpx.put(f"{ferry.eureka_url}apps/ORDERS/{instance_id}/status",
                         params={"value": "OUT_OF_SERVICE"}, timeout=5)
    assert override.status_code == 200, override.text
    assert "is now mesh" in ctl(ferry, "cutover", "orders", "mesh")
    assert "is now legacy" in ctl(ferry, "cutover", "orders", "legacy")

    page = events(ferry)
    story = list(reversed(page["events"]))
    assert [e["kind"] for e in story] == ["registered", "status", "cutover", "rollback"], story
    seqs = [e["seq"] for e in story]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4, seqs
    assert page["latest"] == seqs[-1]
    status = story[1]
    assert (status["instance"], status["detail"]) == (instance_id, "UP → OUT_OF_SERVICE")
    assert story[2]["instance"] is None and story[2]["detail"].startswith("legacy → mesh at ")
    at_ms = [e["at_ms"] for e in story]
    assert at_ms == sorted(at_ms)
    assert all(e["at"].endswith("Z") and e["at"][10] == "T" for e in story)

    # What a poller sends: only what came after the last event it saw.
    newer = events(ferry, after=status["seq"])
    assert [e["kind"] for e in newer["events"]] == ["rollback", "cutover"]
    assert events(ferry, after=page["latest"])["events"] == []
    assert events(ferry, service="PAYMENTS")["events"] == []
    assert [e["kind"] for e in events(ferry, limit=1)["events"]] == ["rollback"]

    for bad in ({"after": "x"}, {"limit": "many"}):
        refused = httpx.get(f"{ferry.admin_url}/api/events", params=bad, timeout=5)
        assert refused.status_code == 400, refused.text
        assert next(iter(bad)) in refused.text

    table = ctl(ferry, "events").splitlines()
    assert table[0].split() == ["TIME", "KIND", "SERVICE", "INSTANCE", "DETAIL"]
    assert [line.split()[1] for line in table[1:]] == ["rollback", "cutover", "status", "registered"]
    assert instance_id in table[3] and table[3].endswith("UP → OUT_OF_SERVICE")
    assert len(ctl(ferry, "events", "--limit", "2", "--service", "orders").splitlines()) == 3
    assert json.loads(ctl(ferry, "--output", "json", "events")) == events(ferry)

    # The client's own stop: DOWN (the override still wins) then its cancel.
    orders.stop()
    wait_until(lambda: events(ferry, limit=1)["events"][0]["kind"] == "deregistered", 10,
               what="the cancel's event")
    cancelled = events(ferry, limit=1)["events"][0]
    assert (cancelled["instance"], cancelled["detail"]) == (instance_id, "cancelled")


def test_every_node_logs_what_happened_on_another(ferry_nodes, clients):
    """Two nodes on a real three-member etcd: a registration through node A and a cutover made
    on node A are events in node B's log (B applies them from etcd's watch and the cutover
    table), the registration naming the node that keeps the instance."""
    # Each node its own outbound port: both share this host.
    a, b = (ferry_nodes(name, args=("--outbound-ports", str(free_port())))[0] for name in "ab")
    port = free_port()
    instance_id = f"127.0.0.1:orders:{port}"
    clients(py_client(a, "orders", port, should_discover=False))

    def on_b(kind):
        return [e for e in events(b, service="orders")["events"] if e["kind"] == kind]

    wait_until(lambda: on_b("registered"), 15, what="node B to log the registration made on A")
    [registered] = on_b("registered")
    assert (registered["instance"], registered["detail"]) == (instance_id, "UP (on node-a)")
    assert [e["detail"] for e in events(a, service="orders")["events"]] == ["UP"], \
        "node A keeps it: no node to name"

    ctl(a, "cutover", "orders", "mesh")
    wait_until(lambda: on_b("cutover"), 15, what="node B to log the cutover made on A")
    assert on_b("cutover")[0]["seq"] > registered["seq"]


def test_instances_a_killed_node_kept_are_evictions_in_the_others_logs(ferry_nodes, clients):
    """`kill -9` node A (a short store lease): etcd drops A's instance with A's lease, and
    node B logs it as an eviction naming why, not as a deregistration; B's own instance is
    untouched."""
    lease = 4
    a, b = (ferry_nodes(name, args=("--store-lease-ttl", str(lease)))[0] for name in "ab")
    doomed_port, survivor_port = free_port(), free_port()
    doomed_id = f"127.0.0.1:doomed:{doomed_port}"
    doomed = clients(py_client(a, "doomed", doomed_port, should_discover=False))
    doomed.stop_may_fail = True  # its server is killed: its deregistration cannot reach it
    clients(py_client(b, "survivor", survivor_port, should_discover=False))
    wait_until(lambda: events(b, service="doomed")["events"], 15, what="node B to log A's registration")

    a.kill()
    wait_until(lambda: events(b, service="doomed", limit=1)["events"][0]["kind"] != "registered",
               lease + 15, what="node B to log the instance leaving with node A")
    gone = events(b, service="doomed", limit=1)["events"][0]
    assert (gone["kind"], gone["instance"]) == ("evicted", doomed_id), gone
    assert gone["detail"] == "its node left: the node's lease in the store ended"
    assert [e["kind"] for e in events(b, service="survivor")["events"]] == ["registered"]

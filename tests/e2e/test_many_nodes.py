"""Many ferry nodes, one registry: three `ferry --store etcd://...` nodes (A, B, C) on a real
three-member etcd cluster (scripts/etcd-cluster.sh), driven by the real clients.

Any node answers any client: py-eureka-client registers through node A and eureka-js-client
finds it through node C; py-consul registers through node B's agent API and node A lists it;
a Consul blocking read on node B wakes on a KV write made through node C, at the index every
node reports. A Eureka client whose heartbeats move to another node is adopted there without
a gap; a node killed with SIGKILL takes its instances with it within their lease and nothing
else; a Eureka client configured with two nodes keeps its registration when one dies. Losing
one etcd member of three loses no acknowledged write and fails no read; losing two turns
writes into 503 with `Retry-After` while reads answer, stale, and nothing acknowledged is
lost when the members come back. Garbage another tool writes under Ferry's prefix is counted
(`ferry_store_decode_errors_total`) and skipped.

Each test starts its own nodes (the `ferry_nodes` fixture) on the module's cluster, which the
fixture gives back with three members running and Ferry's prefix empty.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
from py_eureka_client import eureka_basic

from harness import JsEureka, PyEureka, ctl, free_port, metric_series, wait_until
from test_mesh import Service, addresses

# Eviction twice a second and no self-preservation: short leases expire promptly, and the
# tests that lose a whole app are not held back by Eureka's 85% rule.
FAST_EVICTION = ("--eureka-eviction-interval", "0.5", "--eureka-self-preservation", "false")
# A short Eureka lease (durationInSecs), renewed every second.
SHORT_LEASE = 3
# The Eureka lease of the instances a killed node takes with it, and the nodes' own lease in
# etcd (`--store-lease-ttl`, 90 s by default: the time a dead node's instances outlive it,
# README "Many hosts"), set to match, as an operator whose apps renew on 30 s leases would.
KILL_LEASE = 30
# How far past a lease the tests wait for its end: eviction runs, watch delivery, a lease
# expiry in etcd.
MARGIN = 15
DECODE_ERRORS = "ferry_store_decode_errors_total"


def py_client(server_url: str, app_name: str, port: int, **options) -> PyEureka:
    """py-eureka-client registering `app_name` at 127.0.0.1:`port`, renewing every second."""
    return PyEureka(server_url, app_name=app_name, instance_host="127.0.0.1", instance_ip="127.0.0.1",
                    instance_port=port, renewal_interval_in_secs=1, **options)


def eureka_instance(app: str, instance_id: str, port: int, lease: int) -> dict:
    """A Eureka instance document as py-eureka-client's `eureka_basic` sends it."""
    now = str(int(time.time() * 1000))
    return {
        "instanceId": instance_id, "hostName": "127.0.0.1", "app": app.upper(), "ipAddr": "127.0.0.1",
        "status": "UP", "overriddenstatus": "UNKNOWN",
        "port": {"$": port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 1, "durationInSecs": lease},
        "metadata": {"test": "many-nodes"}, "vipAddress": app.lower(), "secureVipAddress": app.lower(),
        "lastUpdatedTimestamp": now, "lastDirtyTimestamp": now,
    }


def register(node, instance: dict) -> None:
    """Registers through py-eureka-client's own call (raises on an answer other than 2xx)."""
    asyncio.run(eureka_basic._register(node.eureka_url, instance))


def renew(node, instance: dict) -> None:
    """One heartbeat through py-eureka-client's own call (raises on a 404 or any failure)."""
    asyncio.run(eureka_basic.send_heartbeat(node.eureka_url, instance["app"], instance["instanceId"],
                                            instance["lastDirtyTimestamp"]))


def status_of(node, instance_id: str) -> str | None:
    """The instance's status in the node's full registry, or None when it is not listed."""
    instance = node.instances().get(instance_id)
    return instance["status"] if instance else None


def comparable(instance: dict) -> dict:
    """An instance as every node must show it: the lease's timestamps are left out (renewals
    are answered by the node that receives them, so each node knows its own)."""
    lease = {key: value for key, value in instance.get("leaseInfo", {}).items() if "Timestamp" not in key}
    return {**{key: value for key, value in instance.items() if key not in ("leaseInfo", "lastUpdatedTimestamp")},
            "leaseInfo": lease}


def consul_index(node, path: str) -> str:
    response = httpx.get(node.consul_url + path, timeout=5)
    assert response.status_code in (200, 404), f"{path}: {response.status_code} {response.text}"
    return response.headers["X-Consul-Index"]


def passing_ids(node, service: str) -> list[str]:
    _, entries = node.consul().health.service(service, passing=True)
    return sorted(entry["Service"]["ID"] for entry in entries)


def catalog_ids(node, service: str) -> list[str]:
    _, entries = node.consul().catalog.service(service)
    return sorted(entry["ServiceID"] for entry in entries)


def kv_values(node, prefix: str) -> dict[str, bytes]:
    """Key -> value under `prefix` through py-consul on `node` (empty when there is none)."""
    _, entries = node.consul().kv.get(prefix, recurse=True)
    return {entry["Key"]: entry["Value"] for entry in entries or []}


def put_status(node, key: str, value: bytes) -> int | None:
    """The status of a raw Consul KV PUT through `node`, or None when it timed out."""
    try:
        return httpx.put(f"{node.consul_url}/v1/kv/{key}", content=value, timeout=10).status_code
    except httpx.TimeoutException:
        return None


def decode_errors(node) -> float:
    """The node's `ferry_store_decode_errors_total`, all series summed (0 when not exported)."""
    return sum(metric_series(node, DECODE_ERRORS).values())


def test_a_eureka_app_registered_on_a_is_found_on_b_and_c_and_managed_through_b(etcd_cluster, ferry_nodes,
                                                                                 clients):
    """py-eureka-client registers through node A; eureka-js-client on node C finds it, node B's
    registry holds the same instance with the same status; an operator's OUT_OF_SERVICE made
    through B hides it from C's client, its removal through B makes A answer the client's next
    heartbeat with 404 so that it registers UP again; its cancel through A leaves every node."""
    a, b, c = ferry_nodes("a", "b", "c")
    port = free_port()
    instance_id = f"127.0.0.1:orders:{port}"
    orders = clients(py_client(a.eureka_url, "orders", port))
    js = clients(JsEureka(c, use_delta=False))

    wait_until(lambda: js.ids("ORDERS") == [instance_id], 15,
               what="eureka-js-client on node C to find the app registered on node A")
    wait_until(lambda: status_of(b, instance_id) == "UP", 10, what="node B to list the instance UP")
    on_a, on_b = a.instances()[instance_id], b.instances()[instance_id]
    assert comparable(on_b) == comparable(on_a)
    assert js.latest()["ORDERS"][0]["port"] == port
    # It went through etcd, under Ferry's prefix (multihost.md: inst/<app>/<instance-id>).
    assert any(instance_id in key for key in etcd_cluster.get_prefix("/ferry/v1/inst/")), \
        etcd_cluster.get_prefix()

    override = httpx.put(f"{b.eureka_url}apps/ORDERS/{instance_id}/status?value=OUT_OF_SERVICE", timeout=5)
    assert override.status_code == 200, override.text
    for node in (a, b, c):
        wait_until(lambda: status_of(node, instance_id) == "OUT_OF_SERVICE", 10,
                   what=f"the override made through node B on {node.eureka_url}")
    wait_until(lambda: js.ids("ORDERS") == [], 10, what="C's client to drop the out-of-service instance")

    removed = httpx.delete(f"{b.eureka_url}apps/ORDERS/{instance_id}/status", timeout=5)
    assert removed.status_code == 200, removed.text
    wait_until(lambda: status_of(a, instance_id) == "UP" and status_of(c, instance_id) == "UP", 10,
               what="the client to register UP again on A once the override is gone")
    wait_until(lambda: js.ids("ORDERS") == [instance_id], 10, what="C's client to find it again")

    orders.stop()
    for node in (a, b, c):
        wait_until(lambda: instance_id not in node.instances(), 10, what=f"the cancel on {node.eureka_url}")
    wait_until(lambda: js.ids("ORDERS") == [], 10, what="C's client to drop the cancelled instance")


def test_a_consul_agent_registration_on_b_is_listed_by_a_and_leaves_it(ferry_nodes):
    """Services py-consul registers through node B's agent API (one without a check, one with a
    TTL check passed through B) are in node A's catalog and health, at the same
    `X-Consul-Index` on every node; deregistered through B, they leave A and C."""
    a, b, c = ferry_nodes("a", "b", "c")
    on_b = b.consul()
    plain_port, ttl_port = free_port(), free_port()
    assert on_b.agent.service.register("inventory", service_id="inventory-1", address="127.0.0.1",
                                       port=plain_port, tags=["blue"], meta={"team": "stock"})
    assert on_b.agent.service.register("inventory", service_id="inventory-2", address="127.0.0.1",
                                       port=ttl_port, check={"TTL": "30s"})

    wait_until(lambda: catalog_ids(a, "inventory") == ["inventory-1", "inventory-2"], 10,
               what="node A's catalog to list both services registered on node B")
    _, entries = a.consul().catalog.service("inventory")
    first = next(entry for entry in entries if entry["ServiceID"] == "inventory-1")
    assert (first["ServiceAddress"], first["ServicePort"], first["ServiceTags"]) == ("127.0.0.1", plain_port, ["blue"])
    assert first["ServiceMeta"].get("team") == "stock", first
    # A TTL check starts critical, as in Consul.
    wait_until(lambda: passing_ids(a, "inventory") == ["inventory-1"], 10, what="A's health: only the one without a check")
    assert on_b.agent.check.ttl_pass("service:inventory-2", notes="ready")
    for node in (a, c):
        wait_until(lambda: passing_ids(node, "inventory") == ["inventory-1", "inventory-2"], 10,
                   what=f"the TTL pass made on B to reach {node.consul_url}")

    path = "/v1/health/service/inventory"
    indexes = wait_until(lambda: (lambda seen: seen if len(set(seen)) == 1 else None)(
        [consul_index(node, path) for node in (a, b, c)]), 10, what=f"one X-Consul-Index for {path} on every node")
    assert int(indexes[0]) > 0

    assert on_b.agent.service.deregister("inventory-1")
    for node in (a, c):
        wait_until(lambda: catalog_ids(node, "inventory") == ["inventory-2"], 10,
                   what=f"the deregistration made on B to reach {node.consul_url}")
    assert on_b.agent.service.deregister("inventory-2")
    for node in (a, c):
        wait_until(lambda: node.consul().health.service("inventory")[1] == [], 10,
                   what=f"the last deregistration to reach {node.consul_url}")


def test_a_blocking_kv_read_on_b_wakes_on_a_write_on_c_at_one_index(etcd_cluster, ferry_nodes):
    """A py-consul blocking read of a key on node B returns promptly when the key is written
    through node C, with the new value and a higher index; every node then answers the same
    read with the same `X-Consul-Index` and the same entry."""
    a, b, c = ferry_nodes("a", "b", "c")
    on_b, on_c = b.consul(), c.consul()
    key = "config/many-nodes,dev/data"
    assert on_c.kv.put(key, "pool: 5") is True
    wait_until(lambda: (on_b.kv.get(key)[1] or {}).get("Value") == b"pool: 5", 10,
               what="node B to read the value written through node C")

    path = f"/v1/kv/{key}"
    wait_until(lambda: len({consul_index(node, path) for node in (a, b, c)}) == 1, 10,
               what=f"one X-Consul-Index for {path} on every node")
    index, entry = on_b.kv.get(key)
    entries = [node.consul().kv.get(key)[1] for node in (a, b, c)]
    assert all(other == entry for other in entries), entries
    # Stored in etcd under Ferry's prefix (multihost.md: kv/<key>).
    assert any(stored.endswith(key) for stored in etcd_cluster.get_prefix("/ferry/v1/kv/")), etcd_cluster.get_prefix()

    written = []
    writer = threading.Timer(0.5, lambda: written.append(on_c.kv.put(key, "pool: 6")))
    writer.start()
    started = time.monotonic()
    try:
        new_index, changed = on_b.kv.get(key, index=index, wait="20s")
    finally:
        writer.join(timeout=10)
    took = time.monotonic() - started
    assert written == [True]
    assert 0.4 < took < 5, f"the blocking read on B returned after {took:.2f}s"
    assert changed["Value"] == b"pool: 6" and int(new_index) > int(index), (index, new_index, changed)

    wait_until(lambda: {consul_index(node, path) for node in (a, b, c)} == {str(new_index)}, 10,
               what=f"every node to answer {path} at index {new_index}")
    assert all(node.consul().kv.get(key)[1] == changed for node in (a, c))


def test_a_cutover_made_on_a_reaches_callers_on_c(ferry_nodes, clients):
    """The sample service registers through node B; a py-eureka-client caller on node C calls
    it directly; `ferry ctl cutover orders mesh` on node A moves the caller to node C's own
    outbound listener, through which the service answers; the rollback on A gives the caller
    the real address again. (Each node gets its own outbound port: all three share a host.)"""
    outbound = {name: free_port() for name in "abc"}
    a, b, c = (ferry_nodes(name, args=("--outbound-ports", str(outbound[name])))[0] for name in "abc")
    service = clients(Service(b, "orders"))
    caller = clients(PyEureka(c.eureka_url, should_register=False, renewal_interval_in_secs=1))
    direct = [("127.0.0.1", service.port)]
    wait_until(lambda: addresses(caller, "ORDERS") == direct, 10, what="the caller on C to find the service on B")

    ctl(a, "cutover", "orders", "mesh")
    wait_until(lambda: addresses(caller, "ORDERS") == [("127.0.0.1", outbound["c"])], 15,
               what="the cutover made on A to give the caller on C node C's outbound listener")
    reply = httpx.get(f"http://127.0.0.1:{outbound['c']}/orders/42", timeout=5)
    assert reply.status_code == 200 and reply.json()["served_by"] == service.id, reply.text
    assert "mesh" in ctl(c, "service", "orders")

    ctl(a, "cutover", "orders", "legacy")
    wait_until(lambda: addresses(caller, "ORDERS") == direct, 15,
               what="the rollback made on A to give the caller on C the real address")


def test_ctl_nodes_lists_every_node(ferry_nodes):
    """`ferry ctl nodes` on any node lists the three nodes by name."""
    nodes = ferry_nodes("a", "b", "c")
    for node in nodes:
        listed = ctl(node, "nodes")
        for name in ("node-a", "node-b", "node-c"):
            assert name in listed, f"`ferry ctl nodes` on {node.admin_url} does not list {name}:\n{listed}"


def test_heartbeats_moved_to_another_node_keep_the_instance_without_a_gap(ferry_nodes):
    """An instance registered through node A with a 3 s lease, then renewed through node B
    only (its client failed over): every renewal B gets is answered 200 (adopted, not 404),
    and the instance stays UP on every node for more than three lease durations; when the
    renewals stop, it expires on every node within its lease."""
    a, b, c = ferry_nodes("a", "b", "c", args=FAST_EVICTION)
    instance = eureka_instance("failover", f"failover-{free_port()}", free_port(), SHORT_LEASE)
    instance_id = instance["instanceId"]
    register(a, instance)
    wait_until(lambda: all(status_of(node, instance_id) == "UP" for node in (a, b, c)), 10,
               what="the instance registered on A to be listed by every node")

    until = time.monotonic() + 3 * SHORT_LEASE + 2
    renewals = 0
    while time.monotonic() < until:
        renew(b, instance)
        renewals += 1
        for node in (a, b, c):
            assert status_of(node, instance_id) == "UP", \
                f"after {renewals} renewals through B the instance is gone from {node.eureka_url}"
        time.sleep(0.5)

    stopped = time.monotonic()
    for node in (a, b, c):
        wait_until(lambda: instance_id not in node.instances(), SHORT_LEASE + MARGIN,
                   what=f"the instance to expire on {node.eureka_url} once its renewals stop")
    assert time.monotonic() - stopped > SHORT_LEASE - 1, "it left before its lease ran out"


def test_a_killed_node_takes_its_instances_within_their_lease_and_nothing_else(ferry_nodes, clients):
    """`kill -9` node A: the instance registered (and renewed) through A leaves nodes B and C
    within its lease plus a margin; the instance registered through B stays listed UP on B and
    C the whole time."""
    a, b, c = ferry_nodes("a", "b", "c", args=(*FAST_EVICTION, "--store-lease-ttl", str(KILL_LEASE)))
    doomed_port, survivor_port = free_port(), free_port()
    doomed_id, survivor_id = f"127.0.0.1:doomed:{doomed_port}", f"127.0.0.1:survivor:{survivor_port}"
    doomed = clients(py_client(a.eureka_url, "doomed", doomed_port, duration_in_secs=KILL_LEASE,
                               should_discover=False))
    doomed.stop_may_fail = True  # its server is killed: its deregistration cannot reach it
    clients(py_client(b.eureka_url, "survivor", survivor_port, duration_in_secs=KILL_LEASE, should_discover=False))
    for node in (b, c):
        wait_until(lambda: status_of(node, doomed_id) == "UP" and status_of(node, survivor_id) == "UP", 10,
                   what=f"both instances on {node.eureka_url}")

    a.kill()
    killed = time.monotonic()
    deadline = killed + KILL_LEASE + MARGIN
    gone: dict[str, float] = {}
    while len(gone) < 2 and time.monotonic() < deadline:
        for node in (b, c):
            listed = node.instances()
            assert listed.get(survivor_id, {}).get("status") == "UP", \
                f"{time.monotonic() - killed:.1f}s after A's death {node.eureka_url} lost B's instance"
            if doomed_id not in listed:
                gone.setdefault(node.eureka_url, time.monotonic() - killed)
        time.sleep(0.5)
    assert len(gone) == 2, (f"A's instance (lease {KILL_LEASE}s) still listed {KILL_LEASE + MARGIN}s after "
                            f"A was killed, by {[n.eureka_url for n in (b, c) if n.eureka_url not in gone]}")
    print(f"A's instance left B and C {sorted(gone.values())} s after kill -9")
    for node in (b, c):
        assert status_of(node, survivor_id) == "UP"


class Heartbeats:
    """Records every heartbeat py-eureka-client's `EurekaClient` sends (when, to which server
    URL, answered 2xx or not) by wrapping the module function it calls for one; what the
    client does is unchanged. (Ferry's documents do not show renewals: `lastRenewalTimestamp`
    moves only with a change, single node or many.)"""

    def __init__(self, monkeypatch):
        import py_eureka_client.eureka_client as client_module

        original = client_module.send_heartbeat
        self.sent: list[tuple[float, str, bool]] = []

        async def recorded(url, *args, **kwargs):
            try:
                await original(url, *args, **kwargs)
            except Exception:
                self.sent.append((time.monotonic(), url, False))
                raise
            self.sent.append((time.monotonic(), url, True))

        monkeypatch.setattr(client_module, "send_heartbeat", recorded)

    def answered(self, url: str, since: float) -> int:
        return sum(1 for at, to, ok in self.sent if ok and at >= since and to.rstrip("/") == url.rstrip("/"))


def test_a_eureka_client_with_two_nodes_keeps_its_registration_when_one_dies(ferry_nodes, clients, monkeypatch):
    """py-eureka-client configured with nodes A and B (as a `defaultZone` list) registers
    through A with a 3 s lease; A is killed; the client's heartbeats fail over to B, which
    answers them, and the instance stays listed UP on B and C the whole time, past its lease
    many times and past 30 s; the client still finds itself."""
    a, b, c = ferry_nodes("a", "b", "c", args=FAST_EVICTION)
    heartbeats = Heartbeats(monkeypatch)
    port = free_port()
    instance_id = f"127.0.0.1:twoway:{port}"
    client = clients(py_client(f"{a.eureka_url},{b.eureka_url}", "twoway", port, duration_in_secs=SHORT_LEASE))
    for node in (a, b, c):
        wait_until(lambda: status_of(node, instance_id) == "UP", 10, what=f"the instance on {node.eureka_url}")

    a.kill()
    client.server_url = b.eureka_url  # its stop() deregisters through the node still alive
    killed = time.monotonic()
    watch_for = KILL_LEASE + MARGIN
    while time.monotonic() - killed < watch_for:
        for node in (b, c):
            assert status_of(node, instance_id) == "UP", \
                f"{time.monotonic() - killed:.1f}s after A's death the instance is gone from {node.eureka_url}"
        time.sleep(0.5)
    answered = heartbeats.answered(b.eureka_url, since=killed)
    assert answered >= watch_for / 2, (f"B answered {answered} heartbeats in {watch_for}s after A died: "
                                       f"{heartbeats.sent[-5:]}")
    wait_until(lambda: [entry[0] for entry in client.view().get("TWOWAY", [])] == [instance_id], 10,
               what="the client to find itself through B")


def write_ledger(nodes, count_kv: int, count_eureka: int, during=None, at: int = -1, pace: float = 0.02):
    """Writes `count_kv` KV keys (py-consul) and `count_eureka` Eureka registrations
    (py-eureka-client's call, a 10 min lease) round-robin through `nodes`, calling `during()`
    before write number `at`. Returns (acknowledged KV {key: value}, acknowledged instance ids,
    failures [(seconds since `during`, what)], the time `during` ran)."""
    kv: dict[str, bytes] = {}
    instances: set[str] = set()
    failures: list[tuple[float | None, str]] = []
    event_at = None
    every = max(1, count_kv // max(1, count_eureka))
    registered = 0
    for i in range(count_kv):
        if i == at and during is not None:
            during()
            event_at = time.monotonic()
        since = None if event_at is None else time.monotonic() - event_at
        node = nodes[i % len(nodes)]
        key, value = f"ledger/k{i:03}", f"value {i}"
        try:
            if node.consul().kv.put(key, value) is True:
                kv[key] = value.encode()
            else:
                failures.append((since, f"kv put {key} on {node.consul_url}: not acknowledged"))
        except Exception as error:  # noqa: BLE001 - a failed write is counted, not fatal
            failures.append((since, f"kv put {key} on {node.consul_url}: {error!r}"))
        if i % every == 0 and registered < count_eureka:
            instance = eureka_instance("ledger", f"ledger-{registered:03}", 20000 + registered, 600)
            registered += 1
            target = nodes[(i + 1) % len(nodes)]
            try:
                register(target, instance)
                instances.add(instance["instanceId"])
            except Exception as error:  # noqa: BLE001
                failures.append((since, f"register {instance['instanceId']} on {target.eureka_url}: {error!r}"))
        time.sleep(pace)
    return kv, instances, failures, event_at


class Reader:
    """Reads the ledger's KV prefix and the Eureka registry from every node in a loop (bounded:
    at most `limit` rounds) and records every read that did not answer 200."""

    def __init__(self, nodes, limit: int = 3000):
        self.nodes, self.limit = nodes, limit
        self.failures: list[str] = []
        self.reads = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for _ in range(self.limit):
            if self.done.is_set():
                return
            for node in self.nodes:
                for url in (f"{node.consul_url}/v1/kv/ledger/?recurse", f"{node.eureka_url}apps/"):
                    try:
                        response = httpx.get(url, headers={"Accept": "application/json"}, timeout=5)
                        if response.status_code not in (200, 404) or (
                                response.status_code == 404 and "/kv/" not in url):
                            self.failures.append(f"{url}: {response.status_code} {response.text[:200]}")
                    except httpx.HTTPError as error:
                        self.failures.append(f"{url}: {error!r}")
                    self.reads += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=30)


def assert_everywhere(nodes, kv: dict[str, bytes], instances: set[str], timeout: float = 20):
    """Waits (bounded) until every node holds every acknowledged KV write and registration;
    fails with the count lost on each node."""
    def missing():
        lost = {}
        for node in nodes:
            values = kv_values(node, "ledger/")
            listed = set(node.instances())
            lost_kv = [key for key, value in kv.items() if values.get(key) != value]
            lost_instances = sorted(instances - listed)
            if lost_kv or lost_instances:
                lost[node.consul_url] = (len(lost_kv), len(lost_instances), lost_kv[:5], lost_instances[:5])
        return lost

    try:
        wait_until(lambda: not missing(), timeout, interval=0.5, what="every acknowledged write on every node")
    except AssertionError:
        raise AssertionError(f"acknowledged writes lost (node: kv lost, registrations lost, examples): {missing()}")


def test_losing_one_etcd_member_of_three_loses_no_acknowledged_write(etcd_cluster, ferry_nodes):
    """200 KV puts through py-consul and 50 Eureka registrations, round-robin over the three
    nodes, while the etcd leader is killed after the first 50 puts: reads from every node never
    fail, every write made 3 s after the kill or later is acknowledged, and afterwards every
    acknowledged write is on every node (0 lost)."""
    nodes = ferry_nodes("a", "b", "c")
    reader = Reader(nodes)
    victim = etcd_cluster.leader()
    try:
        kv, instances, failures, killed_at = write_ledger(nodes, 200, 50, during=lambda: etcd_cluster.kill(victim),
                                                          at=50)
    finally:
        reader.stop()
    print(f"etcd leader m{victim} killed: {len(kv)} of 200 KV puts and {len(instances)} of 50 registrations "
          f"acknowledged; {reader.reads} reads, {len(reader.failures)} failed")
    assert reader.failures == [], f"{len(reader.failures)} of {reader.reads} reads failed: {reader.failures[:5]}"
    late = [what for since, what in failures if since is not None and since >= 3]
    assert late == [], f"writes refused 3 s or more after one member of three died: {late[:5]}"
    assert_everywhere(nodes, kv, instances)


def test_without_etcd_quorum_writes_get_503_reads_answer_stale_and_nothing_is_lost(etcd_cluster, ferry_nodes):
    """Two etcd members of three killed: a Consul KV write gets 503 with `Retry-After`, promptly;
    Consul and Eureka reads still answer 200 on every node, Consul's with
    `X-Consul-KnownLeader: false`; a Eureka registration is accepted and kept. The members
    restarted, writes are acknowledged again, every write acknowledged before the loss is on
    every node, and the registration made during it reached the other nodes."""
    a, b, c = nodes = ferry_nodes("a", "b", "c")
    kv, instances, failures, _ = write_ledger(nodes, 30, 6, pace=0)
    assert failures == [], failures
    for node in nodes:
        response = httpx.get(f"{node.consul_url}/v1/kv/ledger/k000", timeout=5)
        assert response.headers.get("X-Consul-KnownLeader") == "true", dict(response.headers)

    etcd_cluster.kill(1)
    etcd_cluster.kill(2)

    def refused():
        started = time.monotonic()
        try:
            response = httpx.put(f"{b.consul_url}/v1/kv/ledger/during-outage", content=b"x", timeout=10)
        except httpx.TimeoutException:
            return None
        return (response, time.monotonic() - started) if response.status_code == 503 else None

    response, took = wait_until(refused, 30, interval=0.5, what="a KV write without quorum to get 503")
    assert "Retry-After" in response.headers, dict(response.headers)
    assert int(response.headers["Retry-After"]) > 0
    assert took < 5, f"the 503 took {took:.1f}s"

    def stale_everywhere():
        for node in nodes:
            read = httpx.get(f"{node.consul_url}/v1/kv/ledger/?recurse", timeout=5)
            if read.status_code != 200 or read.headers.get("X-Consul-KnownLeader") != "false":
                return None
        return True

    wait_until(stale_everywhere, 20, interval=0.5, what="every node to answer reads with X-Consul-KnownLeader: false")
    for node in nodes:
        assert set(instances) <= set(node.instances()), f"{node.eureka_url} lost registrations without quorum"
        assert kv_values(node, "ledger/") == kv

    # A registration without etcd: accepted by B (py-eureka-client's register call raises on
    # anything but 2xx; its EurekaClient would only retry at its next heartbeat, which would
    # hide a refusal), listed by B at once, replayed to etcd once it is back (nothing renews
    # it meanwhile: a 10 min lease).
    late = eureka_instance("outage", "outage-1", free_port(), 600)
    late_id = late["instanceId"]
    register(b, late)
    assert status_of(b, late_id) == "UP"

    etcd_cluster.restart(1)
    etcd_cluster.restart(2)
    wait_until(lambda: put_status(b, "ledger/after-outage", b"y") == 200, 30, interval=0.5,
               what="KV writes to be acknowledged again once the quorum is back")
    kv["ledger/after-outage"] = b"y"
    assert_everywhere(nodes, kv, instances | {late_id}, timeout=30)
    for node in nodes:
        response = httpx.get(f"{node.consul_url}/v1/kv/ledger/k000", timeout=5)
        assert response.headers.get("X-Consul-KnownLeader") == "true", dict(response.headers)


def put_garbage(etcd_cluster, nodes, garbage: dict[str, bytes]) -> dict[int, float]:
    """Writes `garbage` with etcdctl; returns each node's `ferry_store_decode_errors_total`
    from before, by admin port, for `assert_counted`."""
    before = {node.admin_port: decode_errors(node) for node in nodes}
    for key, value in garbage.items():
        etcd_cluster.put(key, value)
    return before


def assert_counted(nodes, before: dict[int, float], garbage: dict[str, bytes]) -> None:
    """Waits (bounded) until every node has counted each value of `garbage` in
    `ferry_store_decode_errors_total`."""
    for node in nodes:
        try:
            wait_until(lambda: decode_errors(node) >= before[node.admin_port] + len(garbage), 10,
                       what=f"{node.admin_url} to count {len(garbage)} values it could not decode")
        except AssertionError as error:
            raise AssertionError(f"{error}; {DECODE_ERRORS} before {before[node.admin_port]}, now "
                                 f"{metric_series(node, DECODE_ERRORS)}") from None


def alive_and_ready(node) -> None:
    assert node.process.poll() is None, f"{node.admin_url} died: {node.log()}"
    assert httpx.get(f"{node.admin_url}/ready", timeout=5).status_code == 200


def restarted_with_garbage(node) -> None:
    """Stops `node` (it must exit 0) and starts it again, loading the prefix with the garbage in
    it: it comes up ready and counts what it could not decode."""
    assert node.stop() == 0, node.log()
    node.start()
    alive_and_ready(node)
    assert decode_errors(node) >= 1, metric_series(node, DECODE_ERRORS)


def test_garbage_registrations_under_the_prefix_are_counted_and_skipped(etcd_cluster, ferry_nodes, clients):
    """Values no Ferry wrote, put with etcdctl where registrations live (multihost.md:
    `inst/<app>/<id>`, an envelope around Ferry's JSON record): not bytes of JSON, truncated
    JSON, a valid envelope around a bad record, an empty value in a real app; and a node record
    no Ferry wrote. Every node stays up and ready, counts each registration value in
    `ferry_store_decode_errors_total`, lists nothing for them and keeps the real instance;
    registrations still flow between nodes; a node started with the garbage there loads the
    rest; the garbage is left as it was."""
    a, b, c = nodes = ferry_nodes("a", "b", "c")
    port = free_port()
    instance_id = f"127.0.0.1:orders:{port}"
    clients(py_client(a.eureka_url, "orders", port, should_discover=False))
    for node in nodes:
        wait_until(lambda: status_of(node, instance_id) == "UP", 10, what=f"the instance on {node.eureka_url}")

    garbage = {
        "/ferry/v1/inst/BADAPP/x": b"\xff\xfe\x00 not an instance",
        "/ferry/v1/inst/BADAPP/y": b'{"truncated": ',
        "/ferry/v1/inst/BADAPP/z": b'{"v":1,"owner":"node-a","record":{"v":1}}',
        "/ferry/v1/inst/ORDERS/bad-1": b"",
    }
    # Not counted here (what reads `nodes/` may not count it), but it must disturb nothing.
    etcd_cluster.put("/ferry/v1/nodes/garbage-node", b"\xff")
    before = put_garbage(etcd_cluster, nodes, garbage)

    # A registration written after the garbage: once every node lists it, each has been
    # through the garbage's events too.
    later = eureka_instance("orders", "orders-later", free_port(), 600)
    register(b, later)
    for node in nodes:
        wait_until(lambda: later["instanceId"] in node.instances(), 10,
                   what=f"a registration made after the garbage to reach {node.eureka_url}")
        alive_and_ready(node)
        assert set(node.instances()) == {instance_id, later["instanceId"]}, node.instances()
        assert "BADAPP" not in {app["name"] for app in node.apps_json()["applications"]["application"]}
    assert_counted(nodes, before, garbage)

    restarted_with_garbage(c)
    assert set(c.instances()) == {instance_id, later["instanceId"]}, c.instances()
    assert etcd_cluster.get("/ferry/v1/inst/BADAPP/x") == garbage["/ferry/v1/inst/BADAPP/x"], \
        "Ferry must skip another tool's keys, not rewrite them"


def test_garbage_kv_entries_under_the_prefix_are_counted_and_skipped(etcd_cluster, ferry_nodes):
    """Values no Ferry wrote where KV entries live (multihost.md: `kv/<key>`, a version byte,
    flags, the value): an unknown version byte and an empty value. Every node stays up and
    ready, counts them in `ferry_store_decode_errors_total`, serves neither key and keeps the
    real ones; KV writes still flow between nodes; a node started with the garbage there loads
    the rest."""
    a, b, c = nodes = ferry_nodes("a", "b", "c")
    assert c.consul().kv.put("good/key", "kept") is True
    for node in nodes:
        wait_until(lambda: kv_values(node, "good/") == {"good/key": b"kept"}, 10,
                   what=f"the KV entry written through C on {node.consul_url}")

    garbage = {"/ferry/v1/kv/garbage/unknown-version": b"\xff", "/ferry/v1/kv/garbage/empty": b""}
    before = put_garbage(etcd_cluster, nodes, garbage)

    # A KV write after the garbage: once every node serves it, each has been through the
    # garbage's events too.
    assert b.consul().kv.put("good/after", "yes") is True
    for node in nodes:
        wait_until(lambda: kv_values(node, "good/").get("good/after") == b"yes", 10,
                   what=f"a KV write made after the garbage to reach {node.consul_url}")
        alive_and_ready(node)
        assert kv_values(node, "good/") == {"good/key": b"kept", "good/after": b"yes"}
        assert kv_values(node, "garbage/") == {}
    assert_counted(nodes, before, garbage)

    restarted_with_garbage(c)
    wait_until(lambda: kv_values(c, "good/") == {"good/key": b"kept", "good/after": b"yes"}, 10,
               what="the restarted node to load the KV store")

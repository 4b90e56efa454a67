"""Issue 15 with the Spring estate: the real Spring apps (samples/, both generations) calling
each other across hosts through the sidecar mesh. Three hosts as network namespaces, each
with a real etcd member and a ferry node, made as tests/e2e/test_sidecar.py makes them
(`sidecar_mesh.nodes`: host 1's node signs, hosts 2 and 3 join with a token from `ferry ca
token` and the pinned root; inbound listener 15006 and admin 15000 on the host's address,
Eureka and the outbound listeners on the host's own 127.0.0.1). The JVMs run inside the
namespaces (`ip netns exec`), listen only on their host's loopback and register with their
own host's ferry at 127.0.0.1:8761:

    host 1                    host 2                 host 3
      checkout (boot3)          orders (boot2)         orders (boot3)
      checkout (boot2)

Once `orders` is cut over to the mesh (`ferry ctl cutover orders mesh`), host 1's ferry
lists every `orders` instance to checkout at its own outbound listener, so checkout's
RestTemplate and Feign calls (Spring Cloud LoadBalancer) reach the orders apps of hosts 2
and 3 only through that listener and the callee's inbound listener, over mutual TLS: nothing
else on host 1 can reach another host's loopback. Checked for both generations and both
clients: no failed call in a paced run, both hosts' orders answered, every call carried the
proxy's trace headers and was counted by the inbound listener of the host whose app served
it. Last, host 3's node is killed (SIGKILL) under load, and the calls move to host 2's orders
with a few failures at most.

Needs root, `ip` and `nft` (skipped without them, like the e2e module), etcd, and the
sample jars (scripts/build-samples.sh). The JVMs, the ferry nodes, etcd and the namespaces
are removed afterwards, whatever happened.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

import estate as e
from estate import Drive, SpringApp, eureka_url_props, peer_ports, start_all, wait_until

# tests/e2e's helpers, on the path since estate's import.
import netns
import sidecar_mesh

if (missing := netns.missing_tools()) is not None:
    pytest.skip(f"the Spring sidecar tests {missing}", allow_module_level=True)

EUREKA = "http://127.0.0.1:8761/eureka/"
# Each app's port on its own host's loopback. The orders ports differ so that their
# instance ids (orders:PORT) do: they share one registry.
ORDERS = {2: ("boot2", 8082), 3: ("boot3", 8083)}
CHECKOUT_PORTS = {"boot3": 8093, "boot2": 8092}
RATE, SECONDS = 20, 10

# One HTTP call from inside a namespace with the standard library only (cheap to start):
# prints the status on a line, then the body.
FETCH = """
import sys, urllib.error, urllib.request
method, url, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read()
sys.stdout.buffer.write(b"%d\\n" % status + body)
"""


class HostedApp(SpringApp):
    """A Spring app run inside a host's namespace, on that host's loopback, registered with
    that host's ferry. The test reaches it from inside the namespace too (a short Python
    process per call), as nothing outside the host can."""

    # Each probe starts a process: once a second, not four times.
    ready_interval = 1.0

    def __init__(self, host: sidecar_mesh.Host, generation: str, app: str, port: int, log_dir, **props):
        super().__init__(generation, app, log_dir, {**eureka_url_props(EUREKA), "server.port": str(port), **props},
                         name=f"host{host.number}-{generation}-{app}")
        self.host = host

    def command(self) -> list[str]:
        return ["ip", "netns", "exec", self.host.ns, *super().command()]

    def request(self, method: str, path: str, timeout: float) -> httpx.Response:
        result = subprocess.run(["ip", "netns", "exec", self.host.ns, sys.executable, "-c", FETCH, method,
                                 self.url + path, str(timeout)], capture_output=True, timeout=timeout + 15)
        if result.returncode != 0:
            raise httpx.TransportError(f"{method} {path} on host{self.host.number}: "
                                       f"{result.stderr.decode(errors='replace')[-400:]}")
        status, _, body = result.stdout.partition(b"\n")
        return httpx.Response(int(status), content=body)

    def get(self, path: str, timeout: float = 10, **kwargs) -> httpx.Response:
        assert not kwargs, "a call from inside the namespace takes a path and a timeout only"
        return self.request("GET", path, timeout)

    def post(self, path: str, timeout: float = 10, **kwargs) -> httpx.Response:
        assert not kwargs, "a call from inside the namespace takes a path and a timeout only"
        return self.request("POST", path, timeout)

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}")
        try:
            response = self.get("/actuator/health", timeout=2)
            return response.status_code == 200 and response.json().get("status") == "UP"
        except (httpx.HTTPError, ValueError):
            return False


class Mesh:
    """The hosts and the apps: orders on hosts 2 and 3 (by host number), checkout of both
    generations on host 1."""

    def __init__(self, hosts: list[sidecar_mesh.Host], orders: dict[int, HostedApp], checkout: dict[str, HostedApp],
                 port: int):
        self.hosts = hosts
        self.orders = orders
        self.checkout = checkout
        # Host 1's outbound listener for orders: the address checkout sees for every instance.
        self.port = port

    def instance_id(self, number: int) -> str:
        return self.orders[number].instance_id


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, apps, log_dir):
    """The three hosts and their apps, `orders` cut over to the mesh; round-robin, so that
    both orders instances take calls (peak-EWMA may send nearly all to one)."""
    directory = tmp_path_factory.mktemp("spring-sidecar")
    with sidecar_mesh.nodes(sidecar_mesh.Host, directory, "fsj", range(1, 10), "24h",
                            node_args=("--proxy-balancer", "round-robin")) as (hosts, _, _):
        one = hosts[0]
        e.SESSION["hosts"] = hosts
        orders = {number: apps.add(HostedApp(hosts[number - 1], generation, "orders", port, log_dir))
                  for number, (generation, port) in ORDERS.items()}
        checkout = {generation: apps.add(HostedApp(one, generation, "checkout", port, log_dir,
                                                   **{"spring.cloud.loadbalancer.cache.ttl": "1s"}))
                    for generation, port in CHECKOUT_PORTS.items()}
        try:
            started = time.monotonic()
            start_all([*orders.values(), *checkout.values()])
            e.MEASUREMENTS.append(f"sidecar: 4 JVMs started in 3 namespaces in {time.monotonic() - started:.0f} s")
            wait_until(lambda: {instance["id"] for instance in one.instances("ORDERS")}
                       == {app.instance_id for app in orders.values()}, 30,
                       what="host 1 to list the orders of hosts 2 and 3")
            one.ctl("cutover", "orders", "mesh")
            port = wait_until(lambda: one.outbound("ORDERS"), 20, what="host 1's outbound listener for orders")
            for app in checkout.values():
                wait_until(lambda app=app: peer_ports(app, "orders") == {port}, 30, interval=1,
                           what=f"{app.name} to see orders only at host 1's outbound listener")
            yield Mesh(hosts, orders, checkout, port)
        finally:
            for app in (*checkout.values(), *orders.values()):
                app.kill()
            e.SESSION["hosts"] = []


@pytest.mark.parametrize("generation", e.GENERATIONS)
@pytest.mark.parametrize("via", ["rest", "feign"])
def test_checkout_reaches_orders_on_two_hosts_only_through_both_sidecars(mesh, generation, via):
    _, two, three = mesh.hosts
    checkout = mesh.checkout[generation]
    # Each instance keeps its id, and its address is host 1's outbound listener.
    peers = checkout.json("/peers/orders")
    assert {(peer["instanceId"], peer["host"], peer["port"]) for peer in peers} == {
        (mesh.instance_id(number), "127.0.0.1", mesh.port) for number in (2, 3)}, \
        f"checkout knows orders only as host 1's outbound listener: {peers}"
    inbound_before = {host.number: host.metric("ferry_inbound_requests_total") for host in (two, three)}

    report = checkout.json(f"/drive?via={via}&rate={RATE}&seconds={SECONDS}", timeout=SECONDS + 60)

    inbound = {host.number: host.metric("ferry_inbound_requests_total") - inbound_before[host.number]
               for host in (two, three)}
    served = {number: report["perInstance"].get(mesh.instance_id(number), 0) for number in (2, 3)}
    print(f"{generation} checkout via {via}: {report['calls']} calls, {report['failures']} failed, "
          f"served {report['perInstance']}, inbound requests counted {inbound}")
    assert report["failures"] == 0, report["failureSamples"]
    assert report["successes"] == report["calls"] == RATE * SECONDS, report
    assert set(report["perInstance"]) == {mesh.instance_id(2), mesh.instance_id(3)}, \
        f"both hosts' orders answered: {report['perInstance']}"
    assert min(served.values()) >= RATE * SECONDS // 4, f"round-robin spreads the calls: {served}"
    assert report["traced"] == report["calls"], "every call went through a proxy (which adds trace headers)"
    assert inbound == served, "each call entered through the inbound listener of the host whose orders served it"
    for host in (two, three):
        assert host.metric("ferry_inbound_tls_handshakes_total") >= 1, f"host{host.number} shook hands"


# Last: host 3's node does not come back.
def test_calls_move_to_host_2_when_host_3s_node_is_killed(mesh):
    _, _, three = mesh.hosts
    checkout = mesh.checkout["boot3"]
    inbound_before = three.metric("ferry_inbound_requests_total")
    drive = Drive(checkout, "rest", RATE, 20)
    time.sleep(6)
    entered_three = three.metric("ferry_inbound_requests_total") - inbound_before
    killed_at = time.time()
    three.kill_ferry()
    report = drive.result()

    failed_at = [int(sample.split(" ", 1)[0]) / 1000 - killed_at for sample in report["failureSamples"]]
    e.MEASUREMENTS.append(f"sidecar: host 3's node killed under {RATE} calls/s from checkout: {report['calls']} calls, "
                          f"{report['failures']} failed, at {[f'{at:+.2f}' for at in failed_at]} s from the kill; "
                          f"served {report['perInstance']}")
    print(e.MEASUREMENTS[-1])
    assert report["calls"] == RATE * 20, report
    assert all(at >= 0 for at in failed_at), f"calls failed before the kill: {report['failureSamples']}"
    assert report["failures"] <= 20, f"more than a second of calls failed: {report['failureSamples']}"
    assert all(at <= 5 for at in failed_at), f"calls still failed 5 s after the kill: {report['failureSamples']}"
    three_served = report["perInstance"].get(mesh.instance_id(3), 0)
    assert three_served >= 30, f"host 3 took calls until the kill: {report['perInstance']}"
    # Host 3's orders app still runs; only its node is gone, and with it the only way in.
    assert three_served <= entered_three + 3, "no call reached host 3's app after its node was killed"
    assert report["perInstance"].get(mesh.instance_id(2), 0) >= report["calls"] - 6 * RATE - report["failures"], \
        f"the calls after the kill went to host 2: {report['perInstance']}"

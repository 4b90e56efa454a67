"""What the README claims of the Consul agent API and no other test exercises, through the
real clients (py-consul, the `consul` npm package): the agent's self and members, checks
registered and deregistered on their own, TTL warn, TCP checks, TTL checks that run out, the
catalog's service/nodes/datacenters, status peers, the `?tag=` filter, and blocking reads on
health and catalog woken by what they read and by nothing else."""

import socket
import threading
import time

import consul

from harness import JsConsul, wait_until


class Blocking:
    """A blocking read started on its own thread; `done` is set when it returns."""

    def __init__(self, read):
        self.done = threading.Event()
        self.result = None
        self.error = None
        self.returned_at = None

        def run():
            try:
                self.result = read()
            except Exception as error:  # noqa: BLE001 - reported by the test through `value`
                self.error = error
            finally:
                self.returned_at = time.monotonic()
                self.done.set()

        threading.Thread(target=run, daemon=True).start()

    def value(self, timeout: float):
        assert self.done.wait(timeout), f"the blocking read did not return within {timeout}s"
        if self.error is not None:
            raise self.error
        return self.result


def assert_woken_by(blocking: Blocking, change, what: str):
    """The read is still blocked before `change` (which the test shows is not before it),
    and returns soon after it: well inside its own 60 s wait, however busy the machine."""
    assert not blocking.done.wait(1.0), f"the read returned before {what}: {blocking.result}"
    changed_at = time.monotonic()
    change()
    result = blocking.value(20)
    assert blocking.returned_at >= changed_at
    return result


def test_agent_self_members_catalog_and_status(start_ferry, clients):
    ferry = start_ferry("--node-name", "ferry-7", "--datacenter", "eu-west")
    py = ferry.consul()
    me = py.agent.self()
    assert (me["Config"]["NodeName"], me["Config"]["Datacenter"]) == ("ferry-7", "eu-west")
    assert me["Config"]["Version"].startswith("1.")
    assert [member["Name"] for member in py.agent.members()] == ["ferry-7"]
    assert py.catalog.datacenters() == ["eu-west"]
    _, nodes = py.catalog.nodes()
    assert [node["Node"] for node in nodes] == ["ferry-7"]
    leader = py.status.leader()
    assert leader and py.status.peers() == [leader]

    js = clients(JsConsul(ferry))
    assert js.call("agent.self")["Config"]["NodeName"] == "ferry-7"
    assert [member["Name"] for member in js.call("agent.members")] == ["ferry-7"]
    assert js.call("catalog.datacenters") == ["eu-west"]
    assert js.call("status.peers") == [leader]

    py.agent.service.register("orders", service_id="orders-1", address="127.0.0.1", port=9001, tags=["blue"])
    py.agent.service.register("orders", service_id="orders-2", address="127.0.0.1", port=9002, tags=["green"])
    _, entries = py.catalog.service("orders")
    assert sorted((e["ServiceID"], e["ServicePort"], e["Node"]) for e in entries) == [
        ("orders-1", 9001, "ferry-7"), ("orders-2", 9002, "ferry-7")]
    # ?tag= filters the catalog and health reads alike.
    assert [e["ServiceID"] for e in py.catalog.service("orders", tag="blue")[1]] == ["orders-1"]
    assert [e["Service"]["ID"] for e in py.health.service("orders", tag="green")[1]] == ["orders-2"]
    assert py.health.service("orders", tag="red")[1] == []
    assert [e["ServiceID"] for e in js.call("catalog.service.nodes", {"service": "orders", "tag": "green"})] \
        == ["orders-2"]


def test_checks_registered_alone_ttl_warn_and_a_ttl_that_runs_out(ferry):
    py = ferry.consul()
    py.agent.service.register("stock", service_id="stock-1", address="127.0.0.1", port=9101)
    # A check registered on its own, bound to the service.
    assert py.agent.check.register("disk", check=consul.Check.ttl("30s"), check_id="stock-disk",
                                   service_id="stock-1")
    assert py.agent.checks()["stock-disk"]["ServiceID"] == "stock-1"
    assert py.agent.check.ttl_pass("stock-disk")
    assert [e["Service"]["ID"] for e in py.health.service("stock", passing=True)[1]] == ["stock-1"]

    # warn: the check shows warning; Consul's ?passing leaves it out, Eureka still says UP.
    assert py.agent.check.ttl_warn("stock-disk", notes="80% full")
    check = py.agent.checks()["stock-disk"]
    assert (check["Status"], check["Output"]) == ("warning", "80% full")
    assert py.health.service("stock", passing=True)[1] == []
    assert ferry.instances()["stock-1"]["status"] == "UP"

    # Deregistering the check leaves the service, with no check to fail it.
    assert py.agent.check.deregister("stock-disk")
    assert "stock-disk" not in py.agent.checks()
    assert [e["Service"]["ID"] for e in py.health.service("stock", passing=True)[1]] == ["stock-1"]

    # A TTL check not renewed turns critical on its own.
    assert py.agent.check.register("heartbeat", check=consul.Check.ttl("1s"), check_id="stock-beat",
                                   service_id="stock-1")
    assert py.agent.check.ttl_pass("stock-beat")
    wait_until(lambda: py.agent.checks()["stock-beat"]["Status"] == "critical", 15,
               what="the TTL check to run out")
    assert py.health.service("stock", passing=True)[1] == []
    assert ferry.instances()["stock-1"]["status"] == "DOWN"


class Listener:
    """A TCP port that accepts connections until closed."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.open:
            try:
                connection, _ = self.socket.accept()
                connection.close()
            except OSError:
                return

    def close(self):
        self.open = False
        self.socket.close()


def test_a_tcp_check_follows_the_port(ferry):
    py = ferry.consul()
    listener = Listener()
    py.agent.service.register("cache", service_id="cache-1", address="127.0.0.1", port=listener.port,
                              check=consul.Check.tcp("127.0.0.1", listener.port, "1s", timeout="1s"))
    wait_until(lambda: py.agent.checks()["service:cache-1"]["Status"] == "passing", 15,
               what="the TCP check to pass")
    listener.close()
    wait_until(lambda: py.agent.checks()["service:cache-1"]["Status"] == "critical", 15,
               what="the TCP check to fail once the port is closed")
    assert py.health.service("cache", passing=True)[1] == []


def test_blocking_health_and_catalog_reads_wake_on_what_they_read_only(ferry):
    py = ferry.consul()
    py.agent.service.register("orders", service_id="orders-1", address="127.0.0.1", port=9001,
                              check={"TTL": "60s", "Status": "passing"})

    # health: woken by a check change of the service, not by a KV write or another service.
    index, _ = py.health.service("orders", passing=True)
    health = Blocking(lambda: py.health.service("orders", passing=True, index=index, wait="60s"))
    assert py.kv.put("config/unrelated", "x")
    py.agent.service.register("billing", service_id="billing-1", port=9002)
    new_index, entries = assert_woken_by(
        health, lambda: py.agent.check.ttl_fail("service:orders-1", notes="down"), "the check failed")
    assert int(new_index) > int(index) and entries == []

    # catalog: woken by a new instance of the service.
    index, _ = py.catalog.service("orders")
    catalog = Blocking(lambda: py.catalog.service("orders", index=index, wait="60s"))
    assert py.kv.put("config/unrelated", "y")
    new_index, entries = assert_woken_by(
        catalog, lambda: py.agent.service.register("orders", service_id="orders-2", port=9003),
        "a second instance registered")
    assert int(new_index) > int(index)
    assert sorted(e["ServiceID"] for e in entries) == ["orders-1", "orders-2"]

    # The catalog's service list wakes on a new service.
    index, _ = py.catalog.services()
    services = Blocking(lambda: py.catalog.services(index=index, wait="60s"))
    _, names = assert_woken_by(
        services, lambda: py.agent.service.register("payments", service_id="payments-1", port=9004),
        "a new service")
    assert "payments" in names


def test_a_new_address_or_port_on_re_registration_wakes_catalog_and_health_watchers(ferry):
    # Spring Cloud Consul's catalog watch refreshes its load balancer when the service
    # list's index moves; a re-registration at a new port must move it.
    py = ferry.consul()
    py.agent.service.register("orders", service_id="orders-1", address="127.0.0.1", port=9001)
    index, _ = py.catalog.services()
    py.agent.service.register("orders", service_id="orders-1", address="127.0.0.1", port=9001)
    assert py.catalog.services()[0] == index, "the same registration leaves the service list alone"
    port = 9005
    for read in (lambda **kw: py.catalog.services(**kw),
                 lambda **kw: py.health.service("orders", **kw)):
        index, _ = read()
        port += 1
        watcher = Blocking(lambda: read(index=index, wait="60s"))
        new_index, _ = assert_woken_by(
            watcher,
            lambda: py.agent.service.register("orders", service_id="orders-1", address="127.0.0.2",
                                              port=port),
            "the re-registration at a new address and port")
        assert int(new_index) > int(index)
    _, entries = py.health.service("orders")
    assert (entries[0]["Service"]["Address"], entries[0]["Service"]["Port"]) == ("127.0.0.2", 9007)

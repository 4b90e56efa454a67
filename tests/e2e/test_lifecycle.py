"""One service's life across the views: a TTL check not renewed and a TCP check whose port
closes both turn the instance DOWN in the Eureka delta and drop it from Consul's `?passing`;
a Consul caller blocked on `health/service?passing` receives the mesh address when the
service is cut over; Ferry restarts still in mesh mode with the same port and route; a
rollback gives the real addresses back."""

import threading

import consul
import httpx

from harness import free_port, wait_until
from test_consul_api import Blocking, assert_woken_by
from test_mesh import Named


def delta_status(ferry, instance_id):
    delta = ferry.apps_json("apps/delta")["applications"]
    found = [i for a in delta["application"] for i in a["instance"] if i["instanceId"] == instance_id]
    return found[-1]["status"] if found else None


def passing(py, service="orders"):
    return sorted((e["Service"]["ID"], e["Service"]["Address"], e["Service"]["Port"])
                  for e in py.health.service(service, passing=True)[1])


def test_checks_cutover_restart_and_rollback_across_the_views(start_ferry):
    ferry = start_ferry()
    py = ferry.consul()
    ttl_port, tcp_port = free_port(), free_port()
    ttl_server, tcp_server = Named(ttl_port, "orders-ttl"), Named(tcp_port, "orders-tcp")
    try:
        py.agent.service.register("orders", service_id="orders-ttl", address="127.0.0.1", port=ttl_port,
                                  check=consul.Check.ttl("2s"))
        py.agent.service.register("orders", service_id="orders-tcp", address="127.0.0.1", port=tcp_port,
                                  check=consul.Check.tcp("127.0.0.1", tcp_port, "1s", timeout="1s"))
        assert py.agent.check.ttl_pass("service:orders-ttl")
        real = [("orders-tcp", "127.0.0.1", tcp_port), ("orders-ttl", "127.0.0.1", ttl_port)]
        wait_until(lambda: passing(py) == real, 15, what="both checks to pass")

        # A TTL not renewed: critical, DOWN in the Eureka delta, out of ?passing.
        wait_until(lambda: delta_status(ferry, "orders-ttl") == "DOWN", 15, what="the TTL to run out")
        assert [i for i, _, _ in passing(py)] == ["orders-tcp"]
        # Renewed from now on.
        renewing = threading.Event()

        def renew():
            while not renewing.wait(0.5):
                try:
                    py.agent.check.ttl_pass("service:orders-ttl")
                except Exception:  # noqa: BLE001 - Ferry restarts during the test
                    pass

        threading.Thread(target=renew, daemon=True).start()
        wait_until(lambda: delta_status(ferry, "orders-ttl") == "UP", 15, what="the renewed TTL")

        # A TCP port that closes: the same.
        tcp_server.stop()
        wait_until(lambda: delta_status(ferry, "orders-tcp") == "DOWN", 15, what="the TCP check to fail")
        assert [i for i, _, _ in passing(py)] == ["orders-ttl"]
        tcp_server = Named(tcp_port, "orders-tcp")
        wait_until(lambda: passing(py) == real, 15, what="the TCP check to pass again")

        # A Consul caller blocked on ?passing is handed the mesh address by the cutover.
        index, _ = py.health.service("orders", passing=True)
        watch = Blocking(lambda: py.health.service("orders", passing=True, index=index, wait="60s"))

        def cut_over():
            reply = httpx.put(f"{ferry.admin_url}/api/services/orders", json={"mode": "mesh"}, timeout=10)
            assert reply.status_code == 200, reply.text

        _, entries = assert_woken_by(watch, cut_over, "the cutover")
        port = httpx.get(f"{ferry.admin_url}/api/services/orders", timeout=5).json()["port"]
        assert sorted((e["Service"]["Address"], e["Service"]["Port"]) for e in entries) == [("127.0.0.1", port)] * 2
        # Every call is served by a real instance; the balancer (P2C over peak EWMA) may
        # favour the faster one, so which one is not fixed, but both are its endpoints.
        served = {httpx.get(f"http://127.0.0.1:{port}/", timeout=10).json()["served_by"] for _ in range(10)}
        assert served and served <= {"orders-ttl", "orders-tcp"}, served
        shown = httpx.get(f"{ferry.admin_url}/api/services/orders", timeout=5).json()
        assert sorted(i["id"] for i in shown["instances"] if not i["ejected"]) == ["orders-tcp", "orders-ttl"]

        # A restart keeps the mode, the port and the route.
        assert ferry.stop() == 0
        ferry.start()
        assert httpx.get(f"{ferry.admin_url}/api/services/orders", timeout=5).json()["mode"] == "mesh"
        assert httpx.get(f"{ferry.admin_url}/api/services/orders", timeout=5).json()["port"] == port
        wait_until(lambda: passing(py) == [("orders-tcp", "127.0.0.1", port), ("orders-ttl", "127.0.0.1", port)],
                   15, what="both instances passing at the mesh address after the restart")
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200

        # Rollback: the real addresses, in both views.
        reply = httpx.put(f"{ferry.admin_url}/api/services/orders", json={"mode": "legacy"}, timeout=10)
        assert reply.status_code == 200, reply.text
        assert passing(py) == real
        assert sorted((i["ipAddr"], i["port"]["$"]) for i in ferry.instances().values()) == \
            sorted([("127.0.0.1", ttl_port), ("127.0.0.1", tcp_port)])
        renewing.set()
    finally:
        ttl_server.stop()
        tcp_server.stop()

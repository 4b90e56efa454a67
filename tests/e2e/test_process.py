"""Process-level claims of the README against the real binary: SIGTERM turns `/ready` to 503
while in-flight requests finish, the `FERRY_*` environment twins of the flags, and
`--advertise-host` as the address the views publish for a service in the mesh."""

import signal
import threading
import time

import httpx

from harness import wait_until


def test_sigterm_answers_not_ready_and_lets_in_flight_requests_finish(start_ferry):
    ferry = start_ferry()
    py = ferry.consul()
    assert py.kv.put("config/flag", "on")
    index, _ = py.kv.get("config/flag")
    outcome = {}

    def blocking_read():
        try:
            outcome["reply"] = httpx.get(f"{ferry.consul_url}/v1/kv/config/flag?index={index}&wait=3s", timeout=30)
        except httpx.HTTPError as error:
            outcome["reply"] = error

    reader = threading.Thread(target=blocking_read)
    reader.start()
    time.sleep(0.5)  # the read is in flight (it blocks for 3 s)
    ferry.process.send_signal(signal.SIGTERM)

    def not_ready():
        try:
            return httpx.get(f"{ferry.admin_url}/ready", timeout=2).status_code == 503
        except httpx.HTTPError:
            return False

    wait_until(not_ready, 5, interval=0.02, what="/ready to answer 503 while the read drains")
    reader.join(timeout=20)
    reply = outcome["reply"]
    assert isinstance(reply, httpx.Response) and reply.status_code == 200, f"the in-flight read finished: {reply!r}"
    assert reply.headers["X-Consul-Index"] == str(index)
    assert ferry.process.wait(timeout=15) == 0


def test_environment_twins_set_what_the_flags_set(start_ferry):
    ferry = start_ferry(env={
        "FERRY_NODE_NAME": "env-node",
        "FERRY_DATACENTER": "env-dc",
        "FERRY_MAX_BODY_BYTES": "1024",
        "FERRY_CONSUL_TOKEN": "from-env",
        "FERRY_ADVERTISE_HOST": "10.11.12.13",
        # The command line wins: the harness passes its own --eureka-listen.
        "FERRY_EUREKA_LISTEN": "127.0.0.1:1",
    })
    headers = {"X-Consul-Token": "from-env"}
    assert httpx.get(f"{ferry.consul_url}/v1/agent/self", timeout=5).status_code == 403
    me = httpx.get(f"{ferry.consul_url}/v1/agent/self", headers=headers, timeout=5).json()
    assert (me["Config"]["NodeName"], me["Config"]["Datacenter"]) == ("env-node", "env-dc")
    assert me["Member"]["Addr"] == "10.11.12.13"
    big = httpx.put(f"{ferry.consul_url}/v1/agent/service/register", headers=headers, timeout=5,
                    content=b'{"Name":"x","Meta":{"pad":"' + b"p" * 2000 + b'"}}')
    assert big.status_code == 413
    assert ferry.get("apps/").status_code == 200, "the flag beat FERRY_EUREKA_LISTEN"


def test_advertise_host_is_the_published_mesh_address(start_ferry):
    ferry = start_ferry("--advertise-host", "10.20.30.40")
    py = ferry.consul()
    py.agent.service.register("orders", service_id="orders-1", address="127.0.0.1", port=9001)
    reply = httpx.put(f"{ferry.admin_url}/api/services/orders", json={"mode": "mesh"}, timeout=10)
    assert reply.status_code == 200, reply.text
    port = httpx.get(f"{ferry.admin_url}/api/services/orders", timeout=5).json()["port"]
    wait_until(lambda: [(e["Service"]["Address"], e["Service"]["Port"]) for e in py.health.service("orders")[1]]
               == [("10.20.30.40", port)], 10, what="the Consul view to publish the advertised host")
    instance = ferry.instances()["orders-1"]
    assert (instance["ipAddr"], instance["port"]["$"]) == ("10.20.30.40", port)
    assert py.agent.self()["Member"]["Addr"] == "10.20.30.40"

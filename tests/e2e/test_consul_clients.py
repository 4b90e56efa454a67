"""Real Consul clients against the real binary: py-consul (in-process, and inside the sample
service) and the `consul` npm package register services with TTL and HTTP checks, use the KV
store and its blocking reads, and see the same registry as the Eureka clients."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import consul
import httpx
import pytest

from harness import JsConsul, JsConsulError, PyEureka, SampleService, app_instances, wait_until


def passing_ids(client, service):
    _, entries = client.health.service(service, passing=True)
    return sorted(entry["Service"]["ID"] for entry in entries)


def test_ttl_and_http_checks_decide_who_is_passing(ferry, clients):
    py = ferry.consul()
    # The sample service registers itself through py-consul with an HTTP check every 1s.
    web = clients(SampleService(ferry, "orders"))
    py.agent.service.register("orders", service_id="orders-ttl", address="127.0.0.1", port=9001,
                              check={"TTL": "10s"})
    wait_until(lambda: passing_ids(py, "orders") == [web.id], 10, what="the HTTP check to pass")
    assert py.agent.check.ttl_pass("service:orders-ttl", notes="ready")
    assert passing_ids(py, "orders") == sorted([web.id, "orders-ttl"])

    web.set_healthy(False)
    wait_until(lambda: passing_ids(py, "orders") == ["orders-ttl"], 10, what="the failing HTTP check")
    _, checks = py.health.checks("orders")
    failing = next(check for check in checks if check["ServiceID"] == web.id)
    assert failing["Status"] == "critical" and "503" in failing["Output"]
    web.set_healthy(True)
    wait_until(lambda: web.id in passing_ids(py, "orders"), 10, what="recovery")

    assert py.agent.service.deregister("orders-ttl")
    _, entries = py.health.service("orders")
    assert [entry["Service"]["ID"] for entry in entries] == [web.id]
    assert web.stop() == 0
    wait_until(lambda: py.health.service("orders")[1] == [], 5, what="the sample's deregistration")


def test_npm_consul_registers_and_uses_kv_with_blocking_reads(ferry, clients):
    js = clients(JsConsul(ferry))
    py = ferry.consul()
    js.call("agent.service.register", {"name": "billing", "id": "billing-1", "address": "127.0.0.1",
                                       "port": 9100, "tags": ["blue"], "check": {"ttl": "15s"}})
    js.call("agent.check.pass", {"id": "service:billing-1", "note": "ok"})
    healthy = js.call("health.service", {"service": "billing", "passing": True})
    assert [entry["Service"]["ID"] for entry in healthy] == ["billing-1"]
    assert js.call("catalog.service.list")["billing"] == ["blue"]

    assert js.call("kv.set", "config/billing,dev/data", "pool: 5") is True
    assert js.call("kv.set", "config/billing,dev/retries", "3") is True
    entries = js.call("kv.get", {"key": "config/billing,dev/", "recurse": True})
    assert [(entry["Key"], entry["Value"]) for entry in entries] == [
        ("config/billing,dev/data", "pool: 5"), ("config/billing,dev/retries", "3")]
    assert js.call("kv.keys", {"key": "config/", "separator": "/"}) == ["config/billing,dev/"]

    # cas: py-consul reports the boolean Consul answers; the value is unchanged on failure.
    index = py.kv.get("config/billing,dev/data")[1]["ModifyIndex"]
    assert py.kv.put("config/billing,dev/data", "pool: 6", cas=index + 1000) is False
    assert py.kv.put("config/billing,dev/data", "pool: 6", cas=index) is True
    # The npm client's cas with the now stale index: refused, value unchanged. (The client
    # hands Consul's `false` back as undefined, which the harness reports as None; success is
    # `true`.)
    assert js.call("kv.set", {"key": "config/billing,dev/data", "value": "pool: 7", "cas": index}) is None
    assert py.kv.get("config/billing,dev/data")[1]["Value"] == b"pool: 6"

    # A blocking read returns promptly on a change under its prefix...
    prefix_index, _ = py.kv.get("config/billing,dev/", recurse=True)
    threading.Timer(0.5, lambda: py.kv.put("config/billing,dev/retries", "4")).start()
    started = time.monotonic()
    changed = js.call("kv.get", {"key": "config/billing,dev/", "recurse": True, "index": prefix_index, "wait": "20s"})
    assert 0.4 < time.monotonic() - started < 5
    assert {entry["Key"]: entry["Value"] for entry in changed}["config/billing,dev/retries"] == "4"
    # ...and waits out its wait when only another prefix changes.
    prefix_index, _ = py.kv.get("config/billing,dev/", recurse=True)
    threading.Timer(0.3, lambda: py.kv.put("config/other/data", "x")).start()
    started = time.monotonic()
    new_index, _ = py.kv.get("config/billing,dev/", recurse=True, index=prefix_index, wait="2s")
    assert time.monotonic() - started >= 1.9
    assert new_index == prefix_index

    assert py.kv.delete("config/billing,dev/", recurse=True)
    # The npm client turns Consul's 404 for a missing key into an empty result.
    assert js.call("kv.get", "config/billing,dev/data") is None
    raw = httpx.get(f"{ferry.consul_url}/v1/kv/config/billing,dev/data")
    assert raw.status_code == 404 and raw.headers["X-Consul-Index"] != "0"
    js.call("agent.service.deregister", "billing-1")
    assert py.health.service("billing")[1] == []
    with pytest.raises(JsConsulError) as unknown:
        js.call("agent.check.pass", {"id": "service:billing-1"})
    assert unknown.value.status == 404


def test_sessions_and_locks_through_npm_consul(ferry, clients):
    js = clients(JsConsul(ferry))
    first = js.call("session.create", {"name": "leader", "ttl": "15s"})["ID"]
    second = js.call("session.create", {"name": "standby"})["ID"]
    assert js.call("kv.set", {"key": "service/leader", "value": "a", "acquire": first}) is True
    held = js.call("kv.get", "service/leader")
    assert held["Session"] == first and held["LockIndex"] == 1
    # Refused: Consul's `false`, which the npm client hands back as undefined (None here).
    assert js.call("kv.set", {"key": "service/leader", "value": "b", "acquire": second}) is None
    held = js.call("kv.get", "service/leader")
    assert (held["Session"], held["Value"]) == (first, "a"), "the holder keeps it, and its value"
    assert js.call("kv.set", {"key": "service/leader", "value": "a", "release": first}) is True
    assert "Session" not in js.call("kv.get", "service/leader")
    js.call("session.destroy", first)
    assert [session["ID"] for session in js.call("session.list")] == [second]


def test_a_lock_survives_a_restart_of_ferry(start_ferry):
    """A lock holder still holds its lock after Ferry is killed and started again, and a
    rival cannot take it; the session's TTL runs again from the restart."""
    ferry = start_ferry()
    py = ferry.consul()
    holder = py.session.create(name="leader", ttl=30, behavior="release")
    rival = py.session.create(name="standby")
    assert py.kv.put("service/leader", "me", acquire=holder) is True
    ferry.kill()
    ferry.start()
    py = ferry.consul()
    _, restored = py.session.info(holder)
    assert restored is not None and restored["TTL"] == "30s"
    assert py.kv.get("service/leader")[1]["Session"] == holder
    assert py.kv.put("service/leader", "rival", acquire=rival) is False
    assert py.kv.get("service/leader")[1]["Value"] == b"me"
    # The holder can still release it, and then the rival takes it.
    assert py.kv.put("service/leader", "me", release=holder) is True
    assert py.kv.put("service/leader", "rival", acquire=rival) is True


def test_eureka_and_consul_see_one_registry(ferry, clients):
    py = ferry.consul()
    clients(PyEureka(ferry.eureka_url, app_name="orders", instance_host="127.0.0.1", instance_ip="127.0.0.1",
                     instance_port=9201, renewal_interval_in_secs=1))
    wait_until(lambda: passing_ids(py, "orders") == ["127.0.0.1:orders:9201"], 10,
               what="a py-eureka-client instance in py-consul's health view")
    _, entries = py.health.service("orders", passing=True)
    assert entries[0]["Service"]["Port"] == 9201
    assert "orders" in py.catalog.services()[1]

    watcher = clients(PyEureka(ferry.eureka_url, should_register=False, renewal_interval_in_secs=1))
    py.agent.service.register("billing", service_id="billing-1", address="127.0.0.1", port=9202,
                              check={"TTL": "30s", "Status": "passing"})
    wait_until(lambda: watcher.view().get("BILLING") == [("billing-1", "UP", 9202)], 10,
               what="a Consul registration in py-eureka-client's view")
    py.agent.check.ttl_fail("service:billing-1", notes="database down")
    wait_until(lambda: watcher.view().get("BILLING") == [("billing-1", "DOWN", 9202)], 10,
               what="the failed Consul check as DOWN in py-eureka-client's delta")
    delta = ferry.apps_json("apps/delta")["applications"]
    billing = [i for a in delta["application"] for i in a["instance"] if i["instanceId"] == "billing-1"]
    assert billing[0]["actionType"] == "MODIFIED" and billing[0]["status"] == "DOWN"


def test_acknowledged_kv_writes_survive_kill_9(start_ferry):
    ferry = start_ferry()
    py = ferry.consul()
    written = {}
    for n in range(200):
        key, value = f"config/app{n % 7}/key{n}", f"value-{n}".encode()
        assert py.kv.put(key, value) is True
        written[key] = value
    py.kv.delete("config/app0/key0")
    del written["config/app0/key0"]
    index_before, _ = py.kv.get("config/", recurse=True)
    ferry.kill()
    ferry.start()
    index_after, entries = ferry.consul().kv.get("config/", recurse=True)
    assert {entry["Key"]: entry["Value"] for entry in entries} == written
    # py-consul hands back X-Consul-Index as the header's text.
    assert int(index_after) >= int(index_before), "the index never goes backwards"
    assert ferry.consul().kv.put("config/after", "x")
    assert ferry.consul().kv.get("config/after")[1]["ModifyIndex"] > int(index_before)


class HealthEndpoint:
    """A tiny local HTTP server for HTTP checks: 200 with `body` to requests that carry the
    header `X-Probe: ferry`, 400 to any other."""

    def __init__(self):
        self.body = "up"
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                status = 200 if self.headers.get("X-Probe") == "ferry" else 400
                data = endpoint.body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_agent_registrations_survive_kill_9(start_ferry, clients):
    """Spring Cloud Consul registers once at start-up: a restart of its agent must keep the
    registration, its checks and their state, as a Consul agent does."""
    ferry = start_ferry()
    py = ferry.consul()
    web = clients(HealthEndpoint())
    py.agent.service.register("billing", service_id="billing-ttl", address="127.0.0.1", port=9400,
                              tags=["blue"], meta={"version": "2"}, check=consul.Check.ttl("6s"))
    py.agent.service.register("billing", service_id="billing-http", address="127.0.0.1", port=web.port,
                              check=consul.Check.http(web.url, "1s", header={"X-Probe": ["ferry"]}))
    assert py.agent.check.ttl_pass("service:billing-ttl", notes="ready")
    passed_at = time.monotonic()
    wait_until(lambda: passing_ids(py, "billing") == ["billing-http", "billing-ttl"], 10,
               what="both checks to pass")
    time.sleep(max(0.0, passed_at + 3 - time.monotonic()))

    ferry.kill()
    web.body = "probed after the restart"
    ferry.start()
    py = ferry.consul()
    services = py.agent.services()
    assert sorted(services) == ["billing-http", "billing-ttl"]
    assert services["billing-ttl"]["Tags"] == ["blue"] and services["billing-ttl"]["Meta"] == {"version": "2"}
    assert sorted(node["ServiceID"] for node in py.catalog.service("billing")[1]) == ["billing-http", "billing-ttl"]
    ttl_check = py.agent.checks()["service:billing-ttl"]
    assert (ttl_check["Status"], ttl_check["Output"]) == ("passing", "ready")
    # The HTTP check is probed again (the server's new body shows in its output), with the
    # header it was registered with.
    wait_until(lambda: "probed after the restart" in py.agent.checks()["service:billing-http"]["Output"],
               10, what="the HTTP check to be probed again")
    # More than the TTL has passed since the last pass, but its timer started again at the
    # restart: still passing, until the TTL runs out after the restart.
    time.sleep(max(0.0, passed_at + 7 - time.monotonic()))
    assert passing_ids(py, "billing") == ["billing-http", "billing-ttl"]
    wait_until(lambda: passing_ids(py, "billing") == ["billing-http"], 10, what="the TTL to run out")
    assert py.agent.checks()["service:billing-ttl"]["Status"] == "critical"

    assert py.agent.service.deregister("billing-ttl")
    assert py.agent.service.deregister("billing-http")
    assert py.health.service("billing")[1] == []
    ferry.kill()
    ferry.start()
    assert ferry.consul().agent.services() == {}, "a deregistration is kept too"


def test_an_instance_critical_too_long_is_deregistered(start_ferry):
    ferry = start_ferry("--consul-min-deregister-after", "0.5")
    py = ferry.consul()
    py.agent.service.register("flaky", service_id="flaky-1", port=9300,
                              check={"TTL": "30s", "DeregisterCriticalServiceAfter": "1s"})
    assert py.health.service("flaky")[1] != []
    wait_until(lambda: py.health.service("flaky")[1] == [], 10, what="the reaper")


def test_bad_input_is_answered_as_consul_does_and_changes_nothing(start_ferry):
    ferry = start_ferry("--consul-token", "s3cret")
    url = ferry.consul_url
    headers = {"X-Consul-Token": "s3cret"}
    assert httpx.put(f"{url}/v1/kv/k", content=b"v").status_code == 403
    py = ferry.consul(token="s3cret")
    assert py.kv.put("k", "v")
    index, _ = py.kv.get("k")
    replies = [
        httpx.put(f"{url}/v1/agent/service/register", content=b"{not json", headers=headers),
        httpx.put(f"{url}/v1/agent/check/pass/nope", headers=headers),
        httpx.put(f"{url}/v1/kv/k?cas=abc", content=b"w", headers=headers),
        httpx.put(f"{url}/v1/kv/k", content=b"x" * (512 * 1024 + 1), headers=headers),
        httpx.get(f"{url}/v1/kv/k?index=1&wait=forever", headers=headers),
    ]
    assert [reply.status_code for reply in replies] == [400, 404, 400, 413, 400]
    assert "Request decode failed" in replies[0].text
    assert "too large, max size: 524288 bytes" in replies[3].text
    assert py.kv.get("k") == (index, py.kv.get("k")[1]) and py.kv.get("k")[1]["Value"] == b"v"
    # A huge wait is capped, not refused: the read blocks and a write still wakes it.
    threading.Timer(0.5, lambda: py.kv.put("k", "w")).start()
    started = time.monotonic()
    reply = httpx.get(f"{url}/v1/kv/k?index={index}&wait=100h", headers=headers, timeout=20)
    assert reply.status_code == 200 and time.monotonic() - started < 5
    assert httpx.get(f"{url}/v1/status/leader").status_code == 200, "status stays open without a token"


def test_reads_without_a_token_are_filtered_as_under_default_deny(start_ferry):
    # Spring Cloud Consul's health indicator, getAllInstances and actuator endpoint read
    # without the token; Consul with default-deny ACLs answers those with empty lists
    # (so the app stays UP), and refuses writes and reads of one named thing.
    ferry = start_ferry("--consul-token", "s3cret")
    trusted = ferry.consul(token="s3cret")
    trusted.agent.service.register("inventory", service_id="inventory-1", port=9400, check={"TTL": "30s"})
    assert trusted.agent.check.ttl_pass("service:inventory-1")
    assert trusted.kv.put("config/inventory/data", "x: 1")

    anonymous = ferry.consul()
    index, services = anonymous.catalog.services()
    assert services == {} and int(index) >= 1
    assert anonymous.health.service("inventory")[1] == []
    assert anonymous.catalog.service("inventory")[1] == []
    assert anonymous.agent.services() == {}
    assert anonymous.kv.get("config/", recurse=True)[1] is None
    assert anonymous.status.leader() != ""
    with pytest.raises(consul.ACLPermissionDenied):
        anonymous.kv.get("config/inventory/data")
    with pytest.raises(consul.ACLPermissionDenied):
        anonymous.agent.self()
    with pytest.raises(consul.ACLPermissionDenied):
        anonymous.agent.service.register("intruder", service_id="intruder-1", port=1)
    with pytest.raises(consul.ACLPermissionDenied):
        anonymous.agent.service.maintenance("inventory-1", "true")
    # The token still sees everything, and nothing above changed it.
    assert passing_ids(trusted, "inventory") == ["inventory-1"]
    assert set(trusted.catalog.services()[1]) == {"consul", "inventory"}
    with pytest.raises(consul.ACLPermissionDenied):
        ferry.consul(token="guess").catalog.services()


def test_a_consul_service_keeps_its_case_and_eureka_sees_it_upper_case(ferry, clients):
    py = ferry.consul()
    py.agent.service.register("Inventory", service_id="inventory-1", address="127.0.0.1", port=9500)
    assert "Inventory" in py.catalog.services()[1]
    for spelling in ("Inventory", "inventory"):
        _, entries = py.health.service(spelling)
        assert [entry["Service"]["Service"] for entry in entries] == ["Inventory"], spelling
    watcher = clients(PyEureka(ferry.eureka_url, should_register=False, renewal_interval_in_secs=1))
    wait_until(lambda: watcher.view().get("INVENTORY") == [("inventory-1", "UP", 9500)], 10,
               what="py-eureka-client to see INVENTORY")


def test_ferrys_config_server_is_listed_for_discovery_first_clients(start_ferry, clients):
    # spring.cloud.config.discovery.enabled=true: the client looks up `configserver` and
    # calls http://<host>:<port>/ (+ the `configPath` metadata, none here).
    ferry = start_ferry("--config-service-name", "configserver")
    py = ferry.consul()
    assert "configserver" in py.catalog.services()[1]
    _, entries = py.health.service("configserver", passing=True)
    assert len(entries) == 1
    service = entries[0]["Service"]
    assert (service["Address"], service["Port"]) == ("127.0.0.1", ferry.config_port)
    assert service["Meta"].get("secure", "false") == "false" and "configPath" not in service["Meta"]
    health = httpx.get(f"http://{service['Address']}:{service['Port']}/actuator/health", timeout=5)
    assert health.status_code == 200

    watcher = clients(PyEureka(ferry.eureka_url, should_register=False, renewal_interval_in_secs=1))
    wait_until(lambda: watcher.view().get("CONFIGSERVER") == [
        ("ferry-config-server:" + py.agent.self()["Config"]["NodeName"], "UP", ferry.config_port)], 10,
        what="py-eureka-client to see CONFIGSERVER")
    instance = next(iter(app_instances(ferry, "CONFIGSERVER")))
    assert instance["status"] == "UP" and instance["port"]["$"] == ferry.config_port
    for url in (instance["homePageUrl"], instance["statusPageUrl"]):
        assert url.startswith(f"http://127.0.0.1:{ferry.config_port}/")
    assert httpx.get(instance["statusPageUrl"], timeout=5).status_code == 200
    # A Config Server request at the URL a discovery-first client builds.
    environment = httpx.get(instance["homePageUrl"] + "pricing/default", timeout=5)
    assert environment.status_code == 200 and environment.json()["name"] == "pricing"


def test_the_config_server_listing_follows_the_settings_across_restarts(start_ferry):
    ferry = start_ferry("--config-service-name", "config")
    assert "config" in ferry.consul().catalog.services()[1]
    assert ferry.stop() == 0
    # The same data directory, the listing turned off: the kept registration goes.
    ferry.args += ["--config-service-name", "off"]
    ferry.start()
    services = ferry.consul().catalog.services()[1]
    assert "config" not in services and "configserver" not in services


def test_the_api_answers_under_a_path_prefix(start_ferry, clients):
    # spring.cloud.consul.path=/consul/ joins as http://host:port/consul/v1/...
    ferry = start_ferry("--consul-path-prefix", "/consul/")
    prefixed = clients(JsConsul(ferry, base_url=f"{ferry.consul_url}/consul/v1"))
    prefixed.call("agent.service.register", {"name": "inventory", "id": "inventory-1", "port": 9600})
    prefixed.call("kv.set", "config/inventory/data", "x: 1")
    assert [entry["Service"]["ID"] for entry in prefixed.call("health.service", "inventory")] == ["inventory-1"]
    assert prefixed.call("kv.get", "config/inventory/data")["Value"] == "x: 1"
    # The same registry at the root, and nothing under another prefix.
    assert "inventory" in ferry.consul().catalog.services()[1]
    assert httpx.get(f"{ferry.consul_url}/other/v1/catalog/services").status_code == 404

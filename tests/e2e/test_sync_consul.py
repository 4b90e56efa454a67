"""Ferry syncing with a REAL Consul (HashiCorp Consul v1.16.1, a dev agent on loopback
ports; scripts/install-consul.sh builds it into ~/.cache/ferry-tools/bin) as the legacy
side: a service py-consul registers there is read from Ferry's Consul API by the `consul`
npm client, a service registered with Ferry through py-eureka-client appears in the legacy
agent's health with `ferry-owner: ferry`, deregistrations flow both ways, the legacy check
states decide what Ferry lists as passing, and a KV prefix is copied into Ferry's store."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import consul
import httpx
import pytest

from harness import JsConsul, PyEureka, SampleService, free_port, sync_sources, wait_until

CONSUL = Path(os.environ.get("FERRY_CONSUL_BIN", Path.home() / ".cache" / "ferry-tools" / "bin" / "consul"))

pytestmark = pytest.mark.skipif(
    not os.access(CONSUL, os.X_OK),
    reason=f"needs the real Consul binary at {CONSUL} (scripts/install-consul.sh builds it)",
)

INTERVAL = 1.0
SYNC_ARGS = ("--sync-interval", str(INTERVAL), "--sync-grace", "2", "--sync-timeout", "2")


class LegacyConsul:
    """`consul agent -dev` on free loopback ports: a single server that is its own leader,
    everything in memory, no DNS nor gRPC."""

    def __init__(self, log_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.log_path = log_dir / f"consul-{self.port}.log"
        self.process = subprocess.Popen(
            [str(CONSUL), "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1", f"-http-port={self.port}",
             "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", f"-serf-lan-port={free_port()}",
             f"-serf-wan-port={free_port()}", f"-server-port={free_port()}", "-node=legacy", "-log-level=warn"],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            wait_until(self._leader, 30, interval=0.2, what=f"the legacy Consul's leader: {self.log()}")
        except BaseException:
            self.stop()
            raise

    def _leader(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"consul exited with {self.process.returncode}: {self.log()}")
        try:
            return httpx.get(f"{self.url}/v1/status/leader", timeout=1).json() not in ("", None)
        except (httpx.HTTPError, ValueError):
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> consul.Consul:
        """A real py-consul client for this agent."""
        return consul.Consul(host="127.0.0.1", port=self.port)

    def health(self, service: str, passing: bool = False) -> list[dict]:
        """The agent's own /v1/health/service/{service}."""
        response = httpx.get(f"{self.url}/v1/health/service/{service}", params={"passing": "1"} if passing else {},
                             timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    agent = LegacyConsul(tmp_path_factory.mktemp("legacy-consul"))
    yield agent
    agent.stop()


def by_id(entries: list[dict]) -> dict[str, dict]:
    return {entry["Service"]["ID"]: entry["Service"] for entry in entries}


def test_services_flow_both_ways_with_their_owner(legacy, start_ferry, clients):
    """A service py-consul registers with the legacy agent is read from Ferry's Consul API
    by the `consul` npm client (its meta kept, `ferry-owner: legacy-consul` added); one
    registered with Ferry by py-eureka-client appears, passing, in the legacy agent's
    `/v1/health/service/NAME` with `ferry-owner: ferry`; neither is copied back; an
    OUT_OF_SERVICE override on Ferry stops the legacy copy passing until it is removed;
    each deregistration reaches the other side."""
    ferry = start_ferry("--sync-consul", f"127.0.0.1:{legacy.port}", *SYNC_ARGS)
    py_consul = legacy.client()
    legacy_port, ferry_port = free_port(), free_port()
    assert py_consul.agent.service.register("legacy-inventory", service_id="legacy-inventory-1",
                                            address="127.0.0.1", port=legacy_port, tags=["blue"],
                                            meta={"team": "stock"})
    js = clients(JsConsul(ferry))

    def in_ferry():
        return by_id(js.call("health.service", {"service": "legacy-inventory"}))

    seen = wait_until(lambda: in_ferry().get("legacy-inventory-1"), 10 * INTERVAL, interval=0.2,
                      what="the npm consul client on Ferry to read the legacy service")
    assert (seen["Address"], seen["Port"], seen["Tags"]) == ("127.0.0.1", legacy_port, ["blue"]), seen
    assert seen["Meta"].get("team") == "stock" and seen["Meta"].get("ferry-owner") == "legacy-consul", seen
    assert "legacy-inventory" in js.call("catalog.service.list")

    py = clients(PyEureka(ferry.eureka_url, app_name="ferry-payments", instance_host="127.0.0.1",
                          instance_ip="127.0.0.1", instance_port=ferry_port, renewal_interval_in_secs=1,
                          metadata={"tier": "gold"}))
    py_id = f"127.0.0.1:ferry-payments:{ferry_port}"
    exported = wait_until(lambda: legacy.health("ferry-payments", passing=True), 10 * INTERVAL, interval=0.2,
                          what="the instance registered with Ferry to pass in the legacy agent's health")
    assert len(exported) == 1, exported
    service = exported[0]["Service"]
    assert (service["Address"], service["Port"]) == ("127.0.0.1", ferry_port), service
    assert service["Meta"].get("ferry-owner") == "ferry" and service["Meta"].get("tier") == "gold", service
    assert py_id in service["ID"], f"the exported copy's ID does not name the instance: {service}"

    # Nothing echoes: each side keeps one instance of each service, its owner's.
    for _ in range(3):
        time.sleep(INTERVAL)
        assert list(by_id(legacy.health("legacy-inventory"))) == ["legacy-inventory-1"]
        assert "ferry-owner" not in by_id(legacy.health("legacy-inventory"))["legacy-inventory-1"]["Meta"]
        assert len(legacy.health("ferry-payments")) == 1
        ours = [instance for instance in ferry.instances().values() if instance["app"] == "FERRY-PAYMENTS"]
        assert [(i["instanceId"], (i.get("metadata") or {}).get("ferry-owner")) for i in ours] == [(py_id, None)], ours
    source = sync_sources(ferry)["legacy-consul"]
    assert (source["kind"], source["reachable"], source["exported"]) == ("consul", True, 1), source
    assert source["imported"] >= 1, source

    # An operator's OUT_OF_SERVICE on Ferry takes the legacy copy out of the passing set.
    status_url = f"{ferry.eureka_url}apps/FERRY-PAYMENTS/{py_id}/status"
    assert httpx.put(status_url, params={"value": "OUT_OF_SERVICE"}, timeout=5).status_code == 200
    wait_until(lambda: legacy.health("ferry-payments", passing=True) == [], 10 * INTERVAL, interval=0.2,
               what="OUT_OF_SERVICE on Ferry to stop the legacy copy passing")
    assert len(legacy.health("ferry-payments")) == 1, "out of service, still listed"
    assert httpx.delete(status_url, params={"value": "UP"}, timeout=5).status_code == 200
    wait_until(lambda: len(legacy.health("ferry-payments", passing=True)) == 1, 10 * INTERVAL, interval=0.2,
               what="the override's removal to make the legacy copy pass again")

    # Deregistration on the legacy side leaves Ferry; on Ferry's side, leaves the legacy agent.
    assert py_consul.agent.service.deregister("legacy-inventory-1")
    wait_until(lambda: "legacy-inventory-1" not in in_ferry(), 5 * INTERVAL + 3, interval=0.2,
               what="Ferry to drop the service deregistered from the legacy agent")
    py.stop()
    wait_until(lambda: legacy.health("ferry-payments") == [], 5 * INTERVAL + 3, interval=0.2,
               what="the legacy agent to drop the instance cancelled on Ferry")
    assert sync_sources(ferry)["legacy-consul"]["exported"] == 0


def test_legacy_health_and_the_kv_prefix_reach_ferry(legacy, start_ferry, clients):
    """A legacy service's check state decides whether Ferry lists it as passing (in the
    Consul view, read by the npm client) and UP (in the Eureka view); the KV keys under
    `--sync-consul-kv-prefix` are copied into Ferry's KV store and follow changes, the keys
    outside it are not."""
    ferry = start_ferry("--sync-consul", f"127.0.0.1:{legacy.port}", "--sync-consul-kv-prefix", "config/",
                        *SYNC_ARGS)
    py_consul = legacy.client()
    assert py_consul.kv.put("config/legacy-ledger/data", "pool: 5")
    assert py_consul.kv.put("private/legacy-ledger/secret", "hunter2")
    assert py_consul.agent.service.register("legacy-ledger", service_id="legacy-ledger-1", address="127.0.0.1",
                                            port=free_port(), check={"TTL": "30s"})
    assert py_consul.agent.check.ttl_pass("service:legacy-ledger-1")
    js = clients(JsConsul(ferry))

    def passing():
        return sorted(by_id(js.call("health.service", {"service": "legacy-ledger", "passing": True})))

    wait_until(lambda: passing() == ["legacy-ledger-1"], 10 * INTERVAL, interval=0.2,
               what="the legacy service passing in Ferry")
    copy = ferry.instances()["legacy-ledger-1"]
    assert (copy["status"], copy["metadata"].get("ferry-owner")) == ("UP", "legacy-consul"), copy

    assert py_consul.agent.check.ttl_fail("service:legacy-ledger-1", notes="disk full")
    wait_until(lambda: passing() == [], 10 * INTERVAL, interval=0.2, what="the failing check to reach Ferry")
    assert "legacy-ledger-1" in by_id(js.call("health.service", {"service": "legacy-ledger"})), "listed, not passing"
    wait_until(lambda: ferry.instances()["legacy-ledger-1"]["status"] != "UP", 5,
               what="the Eureka view to stop listing it UP")

    def value(key):
        entry = js.call("kv.get", key)
        return entry and entry["Value"]

    wait_until(lambda: value("config/legacy-ledger/data") == "pool: 5", 10 * INTERVAL, interval=0.2,
               what="the KV key under the prefix copied into Ferry")
    assert py_consul.kv.put("config/legacy-ledger/data", "pool: 6")
    wait_until(lambda: value("config/legacy-ledger/data") == "pool: 6", 10 * INTERVAL, interval=0.2,
               what="the KV change copied")
    assert value("private/legacy-ledger/secret") is None, "a key outside the prefix was copied"
    assert py_consul.agent.service.deregister("legacy-ledger-1")


def test_a_failing_check_on_ferry_reaches_the_legacy_agent(legacy, start_ferry, clients):
    """The sample service registers itself with Ferry's Consul API through py-consul, with
    an HTTP check Ferry runs: its copy on the legacy agent passes while that check passes,
    stops passing when the service reports itself unhealthy, passes again on recovery, and
    goes when the service deregisters from Ferry."""
    ferry = start_ferry("--sync-consul", f"127.0.0.1:{legacy.port}", *SYNC_ARGS)
    web = clients(SampleService(ferry, "ferry-web", interval="1s"))

    def passing_on_legacy():
        return sorted(by_id(legacy.health("ferry-web", passing=True)))

    wait_until(lambda: len(passing_on_legacy()) == 1, 10 * INTERVAL, interval=0.2,
               what="the sample service passing on the legacy agent")
    exported = by_id(legacy.health("ferry-web"))
    assert len(exported) == 1 and next(iter(exported.values()))["Meta"].get("ferry-owner") == "ferry", exported
    assert web.id in next(iter(exported)), f"the exported copy's ID does not name the instance: {exported}"

    web.set_healthy(False)
    wait_until(lambda: passing_on_legacy() == [], 10 * INTERVAL, interval=0.2,
               what="Ferry's failing check to stop the legacy copy passing")
    web.set_healthy(True)
    wait_until(lambda: len(passing_on_legacy()) == 1, 10 * INTERVAL, interval=0.2, what="recovery on the legacy agent")
    assert web.stop() == 0
    wait_until(lambda: legacy.health("ferry-web") == [], 10 * INTERVAL, interval=0.2,
               what="the deregistration from Ferry to reach the legacy agent")


def test_a_legacy_agent_restarted_empty_gets_ferrys_services_back_and_loses_nothing(tmp_path, start_ferry, clients):
    """The legacy agent is killed (SIGKILL) and a new, empty one starts on its port: Ferry
    keeps serving the imported service meanwhile (stale), registers its own instance with
    the new agent again, passing, and the legacy app's re-registration meets the copy Ferry
    kept: the npm client on Ferry never sees the legacy service go."""
    agent = LegacyConsul(tmp_path)
    restarted = None
    try:
        ferry = start_ferry("--sync-consul", f"127.0.0.1:{agent.port}", "--sync-interval", str(INTERVAL),
                            "--sync-grace", "10", "--sync-timeout", "2")
        legacy_port, ferry_port = free_port(), free_port()

        def register_legacy_app(on: LegacyConsul):
            assert on.client().agent.service.register("legacy-search", service_id="legacy-search-1",
                                                      address="127.0.0.1", port=legacy_port)

        register_legacy_app(agent)
        js = clients(JsConsul(ferry))
        clients(PyEureka(ferry.eureka_url, app_name="ferry-index", instance_host="127.0.0.1", instance_ip="127.0.0.1",
                         instance_port=ferry_port, renewal_interval_in_secs=1))

        def still_served():
            listed = by_id(js.call("health.service", {"service": "legacy-search", "passing": True}))
            assert "legacy-search-1" in listed, f"Ferry stopped serving the legacy service: {sync_sources(ferry)}"
            return True

        wait_until(lambda: "legacy-search-1" in by_id(js.call("health.service", {"service": "legacy-search"})),
                   10 * INTERVAL, interval=0.2, what="the legacy service imported")
        wait_until(lambda: agent.health("ferry-index", passing=True), 10 * INTERVAL, interval=0.2,
                   what="Ferry's instance passing on the legacy agent")

        agent.process.kill()
        agent.process.wait(timeout=10)
        wait_until(lambda: still_served() and sync_sources(ferry)["legacy-consul"]["reachable"] is False, 10,
                   interval=0.2, what="the legacy agent reported unreachable")
        wait_until(lambda: still_served() and sync_sources(ferry)["legacy-consul"]["stale"] >= 1, 5, interval=0.2,
                   what="the imported copy counted stale")
        for _ in range(3):
            time.sleep(INTERVAL)
            still_served()

        restarted = LegacyConsul(tmp_path, port=agent.port)
        register_legacy_app(restarted)  # the app registers again with its (new, empty) agent
        wait_until(lambda: still_served() and restarted.health("ferry-index", passing=True), 10 * INTERVAL,
                   interval=0.2, what="Ferry's instance registered again, passing, with the restarted agent")
        for _ in range(3):
            time.sleep(INTERVAL)
            still_served()
        source = sync_sources(ferry)["legacy-consul"]
        assert (source["reachable"], source["stale"], source["exported"]) == (True, 0, 1), source
        assert len(restarted.health("legacy-search")) == 1, "the legacy service was registered back to its agent"
    finally:
        for legacy_agent in (restarted, agent):
            if legacy_agent is not None:
                legacy_agent.stop()

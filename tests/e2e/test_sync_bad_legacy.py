"""Ferry syncing with a legacy "Eureka" that misbehaves: a small hand-written server (no
real Eureka server produces these answers) serves `/eureka/apps/` and `/eureka/apps/delta`
from a script: a valid registry, then malformed JSON, an instance without identity, an
instance without a port, HTTP 500, a connection that never answers, a truncated body. Each
is logged and counted, leaves what was imported as it was, never stops Ferry answering,
and the sync proceeds once the server is good again. Several legacy URLs fail over in
order, as the Eureka Java client's `defaultZone` list does."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from harness import Ferry, free_port, metric_series, owned_by, sync_sources, wait_until

INTERVAL = "0.5"
GRACE = "2"
TIMEOUT = "1"
OWNER = "legacy-eureka"


def legacy_instance(app: str, instance_id: str, port: int | None, metadata: dict | None = None) -> dict:
    """An instance as a Eureka server lists it in JSON (`port` None: no port at all)."""
    now = str(int(time.time() * 1000))
    instance = {
        "instanceId": instance_id,
        "hostName": "127.0.0.1",
        "app": app.upper(),
        "ipAddr": "127.0.0.1",
        "status": "UP",
        "overriddenStatus": "UNKNOWN",
        "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90, "registrationTimestamp": int(now),
                      "lastRenewalTimestamp": int(now), "evictionTimestamp": 0, "serviceUpTimestamp": int(now)},
        "metadata": metadata or {},
        "vipAddress": app.lower(),
        "secureVipAddress": app.lower(),
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": now,
        "lastDirtyTimestamp": now,
        "actionType": "ADDED",
    }
    if port is not None:
        instance["port"] = {"$": port, "@enabled": "true"}
        instance["homePageUrl"] = f"http://127.0.0.1:{port}/"
        instance["statusPageUrl"] = f"http://127.0.0.1:{port}/actuator/info"
        instance["healthCheckUrl"] = f"http://127.0.0.1:{port}/actuator/health"
    return instance


def applications(instances: list[dict], hashcode_of: list[dict] | None = None, version: int = 1) -> dict:
    """A Eureka `applications` document listing `instances`, its `apps__hashcode` computed
    as the Java server does (STATUS_count_ per status, in status order) over `hashcode_of`
    (by default the instances themselves: a delta carries the whole registry's)."""
    by_app: dict[str, list[dict]] = {}
    for instance in instances:
        by_app.setdefault(instance.get("app", "BROKEN"), []).append(instance)
    counts: dict[str, int] = {}
    for instance in instances if hashcode_of is None else hashcode_of:
        counts[instance["status"]] = counts.get(instance["status"], 0) + 1
    return {"applications": {
        "versions__delta": str(version),
        "apps__hashcode": "".join(f"{status}_{count}_" for status, count in sorted(counts.items())),
        "application": [{"name": app, "instance": listed} for app, listed in sorted(by_app.items())],
    }}


class LegacyEureka:
    """A scripted legacy Eureka server on a loopback port. `instances` is its registry;
    `mode` says how it answers the registry reads (full and delta alike):

    - "good": the registry (a delta: every change since start, with the registry's hashcode);
    - "malformed": a JSON document cut off in the middle of a token, with status 200;
    - "no-identity": the registry plus an instance with no app, instanceId nor hostName
      ("no-app", "no-host": with only its app, only its hostName missing; an instance with
      only its instanceId missing is valid Eureka, known by its hostName);
    - "no-port": the registry plus an instance with no port;
    - "http-500": status 500;
    - "hang": reads the request and never answers (until the mode changes or it stops);
    - "truncated": the registry with a Content-Length larger than the bytes sent, then closes.

    Registrations, heartbeats and cancels are accepted and kept in `registered`."""

    MISSING = {"no-identity": ("app", "instanceId", "hostName"), "no-app": ("app",), "no-host": ("hostName",)}
    MODES = ("good", "malformed", *MISSING, "no-port", "http-500", "hang", "truncated")

    def __init__(self, port: int | None = None, instances: list[dict] | None = None):
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.instances = {instance["instanceId"]: instance for instance in instances or []}
        self.changes: list[dict] = [dict(instance, actionType="ADDED") for instance in self.instances.values()]
        self.version = 1
        self.mode = "good"
        self.reads = 0
        self.registered: dict[tuple[str, str], dict] = {}
        self.release = threading.Event()
        self.connections: set[socket.socket] = set()
        legacy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with legacy.lock:
                    legacy.connections.add(self.connection)

            def finish(self):
                with legacy.lock:
                    legacy.connections.discard(self.connection)
                super().finish()

            def do_GET(self):
                path = self.path.split("?", 1)[0].rstrip("/")
                if path.endswith("/eureka/apps") or path.endswith("/eureka/apps/delta"):
                    legacy.answer_read(self, delta=path.endswith("/delta"))
                else:
                    self.reply(404, b"")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                try:
                    instance = json.loads(body)["instance"]
                    with legacy.lock:
                        legacy.registered[(parts[-1].upper(), instance["instanceId"])] = instance
                except (ValueError, KeyError):
                    pass
                self.reply(204, b"")

            def do_PUT(self):
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                known = len(parts) >= 2 and (parts[-2].upper(), parts[-1]) in legacy.registered
                self.reply(200 if known else 404, b"")

            def do_DELETE(self):
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                with legacy.lock:
                    gone = legacy.registered.pop((parts[-2].upper(), parts[-1]), None) if len(parts) >= 2 else None
                self.reply(200 if gone else 404, b"")

            def reply(self, status: int, body: bytes, length: int | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/eureka/"

    def set_mode(self, mode: str) -> None:
        assert mode in self.MODES, mode
        with self.lock:
            self.mode = mode
            if mode == "hang":
                self.release.clear()
            else:
                self.release.set()

    def add(self, instance: dict) -> None:
        with self.lock:
            self.instances[instance["instanceId"]] = instance
            self.changes.append(dict(instance, actionType="ADDED"))
            self.version += 1

    def answer_read(self, handler: BaseHTTPRequestHandler, delta: bool) -> None:
        with self.lock:
            self.reads += 1
            mode = self.mode
            registry = list(self.instances.values())
            listed = list(self.changes) if delta else registry
            version = self.version
        if mode == "hang":
            self.release.wait(60)
            handler.close_connection = True
            return
        if mode == "http-500":
            handler.reply(500, b'{"error": "Internal Server Error"}')
            return
        if mode == "malformed":
            handler.reply(200, b'{"applications": {"versions__delta": "1", "application": [{"name": "ORD')
            return
        if mode in self.MISSING:
            broken = legacy_instance("broken", "broken-1", 9999)
            for field in self.MISSING[mode]:
                del broken[field]
            listed = listed + [broken]
        if mode == "no-port":
            listed = listed + [legacy_instance("noport", "noport-1", None)]
        body = json.dumps(applications(listed, hashcode_of=registry, version=version)).encode()
        if mode == "truncated":
            handler.reply(200, body[: len(body) // 2], length=len(body))
            handler.close_connection = True
            return
        handler.reply(200, body)

    def stop(self) -> None:
        """Stops listening and drops every open connection (a client's kept-alive one
        included), as a server process that dies does."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()


@pytest.fixture
def legacy_servers():
    """Starts scripted legacy servers; every one is stopped after the test."""
    started: list[LegacyEureka] = []

    def start(port: int | None = None, instances: list[dict] | None = None) -> LegacyEureka:
        server = LegacyEureka(port, instances)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def imported_state(ferry) -> dict[str, tuple]:
    """What Ferry's Eureka view publishes of each imported copy: the fields a caller uses."""
    return {key: (instance["app"], instance["status"], instance["hostName"], instance["ipAddr"],
                  instance.get("port", {}).get("$"), instance.get("metadata"))
            for key, instance in owned_by(ferry.instances(), OWNER).items()}


def consul_state(ferry, service: str) -> list[tuple]:
    """Ferry's Consul view of one service: (ID, Address, Port, Meta) per instance."""
    response = httpx.get(f"{ferry.consul_url}/v1/health/service/{service}", timeout=5)
    assert response.status_code == 200, response.text
    return sorted((entry["Service"]["ID"], entry["Service"]["Address"], entry["Service"]["Port"],
                   json.dumps(entry["Service"]["Meta"], sort_keys=True)) for entry in response.json())


def errors_seen(ferry) -> tuple[int, float]:
    """(`errors` of the source in /api/sync, `ferry_sync_errors_total` summed over series)."""
    return sync_sources(ferry)[OWNER]["errors"], sum(metric_series(ferry, "ferry_sync_errors_total").values())


def assert_serving(ferry) -> None:
    """The process is alive and every API still answers."""
    assert ferry.process.poll() is None, f"ferry exited with {ferry.process.returncode}: {ferry.log()}"
    assert httpx.get(f"{ferry.admin_url}/ready", timeout=5).status_code == 200
    assert ferry.get("apps/").status_code == 200
    assert httpx.get(f"{ferry.consul_url}/v1/catalog/services", timeout=5).status_code == 200


def test_bad_answers_are_counted_and_change_nothing_imported(start_ferry, legacy_servers):
    """A valid legacy registry is imported into both views with `ferry-owner:
    legacy-eureka`; then each bad answer in turn (malformed JSON, an instance without
    app, instanceId and hostName, one without app, one without hostName, HTTP 500, no
    answer within the timeout, a truncated body) raises the error count in /api/sync and /metrics, is logged, leaves
    every imported copy as it was in both views while Ferry keeps serving, and the next
    good answer is imported again."""
    legacy = legacy_servers(instances=[
        legacy_instance("orders", "orders-1", 8081, {"zone": "eu-1", "version": "1.4"}),
        legacy_instance("orders", "orders-2", 8082, {"zone": "eu-2"}),
        legacy_instance("billing", "billing-1", 8091),
    ])
    ferry = start_ferry("--sync-eureka", legacy.url, "--sync-interval", INTERVAL, "--sync-grace", GRACE,
                        "--sync-timeout", TIMEOUT)

    wait_until(lambda: len(imported_state(ferry)) == 3, 10, what="the three legacy instances in Ferry's Eureka view")
    imported = ferry.instances()
    assert imported["orders-1"]["metadata"] == {"zone": "eu-1", "version": "1.4", "ferry-owner": OWNER}
    assert imported["orders-1"]["port"]["$"] == 8081 and imported["orders-1"]["status"] == "UP"
    orders = consul_state(ferry, "orders")
    assert [(service_id, port) for service_id, _, port, _ in orders] == [("orders-1", 8081), ("orders-2", 8082)]
    assert json.loads(orders[0][3]) == {"zone": "eu-1", "version": "1.4", "ferry-owner": OWNER}
    source = wait_until(lambda: (s := sync_sources(ferry)[OWNER])["initial_import_done"] and s, 10,
                        what="initial_import_done")
    assert (source["kind"], source["reachable"], source["imported"]) == ("eureka", True, 3), source
    reachable = metric_series(ferry, "ferry_sync_reachable")
    assert any(OWNER in labels and value == 1 for labels, value in reachable.items()), reachable
    assert metric_series(ferry, "ferry_sync_imported_instances"), "ferry_sync_imported_instances is exported"

    modes = ["malformed", "no-identity", "no-app", "no-host", "http-500", "hang", "truncated"]
    for step, mode in enumerate(modes):
        before_state = imported_state(ferry)
        before_consul = consul_state(ferry, "orders")
        before_errors = errors_seen(ferry)
        log_before = len(ferry.log_path.read_text(errors="replace"))
        legacy.set_mode(mode)
        # A hang is an error once Ferry's request timeout (--sync-timeout) runs out.
        wait_until(lambda: all(now > then for now, then in zip(errors_seen(ferry), before_errors)),
                   10, interval=0.2,
                   what=f"{mode}: errors to rise in /api/sync and ferry_sync_errors_total (before {before_errors})")
        # A few more intervals of the bad answer: nothing imported moves, every API answers.
        for _ in range(4):
            time.sleep(float(INTERVAL))
            assert_serving(ferry)
            assert imported_state(ferry) == before_state, f"{mode}: imported copies changed"
            assert consul_state(ferry, "orders") == before_consul, f"{mode}: the Consul view changed"
        names = {instance["app"] for instance in ferry.instances().values()}
        assert not names & {"BROKEN", "NOPORT"}, f"{mode}: a malformed instance was imported: {names}"
        source = sync_sources(ferry)[OWNER]
        assert source["last_error"], f"{mode}: no last_error in {source}"
        logged = ferry.log_path.read_text(errors="replace")[log_before:].lower()
        assert "sync" in logged or "legacy" in logged, f"{mode}: nothing logged: {logged[-2000:]!r}"

        # Good again, with one more instance: the sync proceeds.
        legacy.add(legacy_instance("orders", f"orders-late-{step}", 8100 + step))
        legacy.set_mode("good")
        wait_until(lambda: f"orders-late-{step}" in imported_state(ferry), 15,
                   what=f"after {mode}: the next good answer to be imported")
        assert {key: value for key, value in imported_state(ferry).items() if key in before_state} == before_state
        wait_until(lambda: sync_sources(ferry)[OWNER]["reachable"], 5, what=f"after {mode}: reachable again")

    assert len(imported_state(ferry)) == 3 + len(modes)
    assert sync_sources(ferry)[OWNER]["imported"] == 3 + len(modes)


def test_an_instance_without_a_port_is_refused_and_counted(start_ferry, legacy_servers):
    """A legacy instance with no port at all is refused and counted, not published at an
    address nobody announced; the instances beside it are unchanged."""
    legacy = legacy_servers(instances=[legacy_instance("orders", "orders-1", 8081, {"zone": "eu-1"})])
    ferry = start_ferry("--sync-eureka", legacy.url, "--sync-interval", INTERVAL, "--sync-grace", GRACE,
                        "--sync-timeout", TIMEOUT)
    wait_until(lambda: "orders-1" in imported_state(ferry), 10, what="the legacy instance imported")
    before_state, before_errors = imported_state(ferry), errors_seen(ferry)
    legacy.set_mode("no-port")
    time.sleep(4 * float(INTERVAL))
    assert_serving(ferry)
    assert imported_state(ferry) == before_state, \
        f"the instance without a port was imported: {imported_state(ferry).get('noport-1')}"
    assert all(now > then for now, then in zip(errors_seen(ferry), before_errors)), "no error counted"


def test_several_urls_fail_over_in_order_and_back(start_ferry, legacy_servers):
    """With two legacy URLs of which the first is a closed port, Ferry imports from the
    second and reports it as `current_endpoint`; when the second dies and the first comes
    up, it fails over back to the first: what only the first lists is imported, and what
    only the second listed goes (at the latest once the grace period has run)."""
    first_port = free_port()  # nothing listens here yet: connections are refused
    shared = legacy_instance("orders", "orders-shared", 8201, {"zone": "eu-1"})
    second = legacy_servers(instances=[shared, legacy_instance("orders", "orders-second", 8202)])
    first_url = f"http://127.0.0.1:{first_port}/eureka/"
    ferry = start_ferry("--sync-eureka", f"{first_url},{second.url}",
                        "--sync-interval", INTERVAL, "--sync-grace", GRACE, "--sync-timeout", TIMEOUT)

    wait_until(lambda: set(imported_state(ferry)) == {"orders-shared", "orders-second"}, 15,
               what="the second server's instances imported")
    source = sync_sources(ferry)[OWNER]
    assert [endpoint.rstrip("/") for endpoint in source["endpoints"]] == [first_url.rstrip("/"), second.url.rstrip("/")]
    assert source["current_endpoint"].rstrip("/") == second.url.rstrip("/"), source
    assert source["reachable"] is True

    second.stop()
    legacy_servers(port=first_port, instances=[shared, legacy_instance("orders", "orders-first", 8203)])
    wait_until(lambda: (sync_sources(ferry)[OWNER]["current_endpoint"] or "").rstrip("/") == first_url.rstrip("/"),
               15, what="current_endpoint to move back to the first URL")
    wait_until(lambda: "orders-first" in imported_state(ferry), 10, what="the first server's own instance")
    wait_until(lambda: set(imported_state(ferry)) == {"orders-shared", "orders-first"}, float(GRACE) + 10,
               what="the instance only the second server listed to go")
    assert imported_state(ferry)["orders-shared"][5] == {"zone": "eu-1", "ferry-owner": OWNER}
    assert sync_sources(ferry)[OWNER]["reachable"] is True
    assert_serving(ferry)


def test_an_unreachable_legacy_side_leaves_copies_stale_and_an_empty_return_waits_the_grace(
        start_ferry, legacy_servers):
    """While the legacy server is down every imported copy stays, counted as stale in
    /api/sync and `ferry_sync_stale_instances`; when it comes back empty (a restarted
    server its apps have not re-registered with yet) the copies are pending removals for
    `--sync-grace` and only then go; a later registration there is imported again."""
    grace = 3.0
    legacy = legacy_servers(instances=[legacy_instance("orders", f"orders-{n}", 8300 + n) for n in range(3)])
    ferry = start_ferry("--sync-eureka", legacy.url, "--sync-interval", INTERVAL, "--sync-grace", str(grace),
                        "--sync-timeout", TIMEOUT)
    wait_until(lambda: len(imported_state(ferry)) == 3, 10, what="the three legacy instances imported")
    time.sleep(grace + 1)  # past the grace period that follows Ferry's start
    before = imported_state(ferry)

    legacy.stop()
    wait_until(lambda: sync_sources(ferry)[OWNER]["reachable"] is False, 10, interval=0.2,
               what="the source reported unreachable")
    wait_until(lambda: sync_sources(ferry)[OWNER]["stale"] == 3, 5, interval=0.2, what="three stale copies")
    stale = metric_series(ferry, "ferry_sync_stale_instances")
    assert stale.get(f'{{source="{OWNER}"}}') == 3, stale
    assert metric_series(ferry, "ferry_sync_reachable").get(f'{{source="{OWNER}"}}') == 0
    for _ in range(4):
        time.sleep(float(INTERVAL))
        assert imported_state(ferry) == before, "a copy changed while the legacy side was unreachable"
        assert_serving(ferry)

    back = legacy_servers(port=legacy.port)  # restarted, empty
    wait_until(lambda: sync_sources(ferry)[OWNER]["reachable"], 10, interval=0.1, what="reachable again")
    came_back = time.monotonic()
    assert imported_state(ferry) == before, "copies removed as soon as an empty server came back"
    wait_until(lambda: sync_sources(ferry)[OWNER]["pending_removals"] == 3, 2, interval=0.1,
               what="three pending removals")
    wait_until(lambda: imported_state(ferry) == {}, grace + 5, interval=0.1,
               what="the copies the server no longer lists to go once the grace period ran")
    held = time.monotonic() - came_back
    assert held >= grace - 1, f"removed {held:.1f}s after the server came back, before the {grace}s grace"
    source = sync_sources(ferry)[OWNER]
    assert (source["stale"], source["pending_removals"], source["imported"]) == (0, 0, 0), source

    back.add(legacy_instance("orders", "orders-again", 8310))
    wait_until(lambda: list(imported_state(ferry)) == ["orders-again"], 10, what="a new registration imported")


def test_a_ferry_restarted_while_the_legacy_side_is_down_still_lists_its_copies(start_ferry, legacy_servers):
    """Imported copies are kept in the data directory: a Ferry restarted while the legacy
    server is down answers at once with them (stale, the source unreachable), and keeps
    them once the server is back; a Ferry started on that data directory without
    `--sync-eureka` (the end of a migration) lists none of them."""
    instances = [legacy_instance("orders", "orders-1", 8401, {"zone": "eu-1"}),
                 legacy_instance("billing", "billing-1", 8402)]
    legacy = legacy_servers(instances=instances)
    ferry = start_ferry("--sync-eureka", legacy.url, "--sync-interval", INTERVAL, "--sync-grace", GRACE,
                        "--sync-timeout", TIMEOUT)
    wait_until(lambda: len(imported_state(ferry)) == 2, 10, what="the two legacy instances imported")
    time.sleep(2 * float(INTERVAL))  # the copies are written to disk once per import cycle
    before = imported_state(ferry)

    assert ferry.stop() == 0
    legacy.stop()
    ferry.start()
    assert imported_state(ferry) == before, "the restarted Ferry answered without the copies it had imported"
    source = sync_sources(ferry)[OWNER]
    assert source["reachable"] is False, source
    wait_until(lambda: sync_sources(ferry)[OWNER]["stale"] == 2, 5, interval=0.2, what="two stale copies")
    assert consul_state(ferry, "orders")[0][:3] == ("orders-1", "127.0.0.1", 8401)

    legacy_servers(port=legacy.port, instances=instances)
    wait_until(lambda: sync_sources(ferry)[OWNER]["reachable"], 10, interval=0.2, what="reachable again")
    time.sleep(float(GRACE) + 1)
    assert imported_state(ferry) == before
    assert ferry.stop() == 0

    without_sync = Ferry(ferry.data_dir)
    try:
        without_sync.start()
        assert imported_state(without_sync) == {}, "copies from a source no longer synced were listed"
        assert without_sync.instances() == {}
        assert sync_sources(without_sync) == {}
    finally:
        assert without_sync.stop() == 0

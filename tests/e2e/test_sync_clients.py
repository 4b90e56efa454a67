"""Ferry syncing with the REAL Spring Cloud Netflix Eureka Server (samples/boot3/eureka-server,
built by scripts/build-samples.sh) as the legacy cluster: py-eureka-client registered with
the legacy server and eureka-js-client registered with Ferry find each other, metadata
included, nothing is copied back to where it came from, cancels flow both ways, and
`ferry ctl sync` reports the source with counts that match."""

from __future__ import annotations

import re
import shutil
import sys
import time

import httpx
import pytest

from harness import (ROOT, JsEureka, PyEureka, ctl, free_port, js_instance, metric_series, sync_sources,
                     wait_until)

JAR = ROOT / "samples" / "boot3" / "eureka-server" / "target" / "eureka-server.jar"

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or not JAR.exists(),
    reason=f"needs java and the real Eureka Server jar ({JAR.relative_to(ROOT)}): "
           "install Java 17 and run scripts/build-samples.sh (scripts/test.sh does both)",
)

sys.path.insert(0, str(ROOT / "tests" / "spring"))
from servers import Jvm, eureka_server_props  # noqa: E402

INTERVAL = 1.0
SYNC_ARGS = ("--sync-interval", str(INTERVAL), "--sync-grace", "2", "--sync-timeout", "2")


@pytest.fixture(scope="module")
def legacy_server(tmp_path_factory):
    """One real Eureka Server for the module: standalone, self-preservation off, its
    response cache refreshed every second."""
    server = Jvm("boot3", "eureka-server", tmp_path_factory.mktemp("legacy-eureka"), eureka_server_props())
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    server.eureka_url = f"{server.url}/eureka/"
    yield server
    server.stop()


@pytest.fixture
def legacy(legacy_server):
    """The module's legacy server, emptied after each test (once the test's clients and
    ferry have stopped): a copy a stopped ferry left there would be taken over by the next
    test's ferry as its own, as a restarted ferry takes over what it exported (README,
    "Ferry restarted")."""
    yield legacy_server
    for instance in legacy_registry(legacy_server):
        httpx.delete(f"{legacy_server.eureka_url}apps/{instance['app']}/{instance['instanceId']}", timeout=5)
    # Its response cache answers reads for up to a second more.
    left: list[dict] = []

    def emptied() -> bool:
        left[:] = legacy_registry(legacy_server)
        return not left

    try:
        wait_until(emptied, 10, interval=0.2, what="the legacy server emptied")
    except AssertionError as error:
        raise AssertionError(f"{error}; left: {[(i['instanceId'], i.get('metadata')) for i in left]}") from None


def legacy_instances(server, app: str) -> dict[str, dict]:
    """instanceId -> instance of one app, as the real Eureka Server lists it."""
    response = httpx.get(f"{server.eureka_url}apps/{app.upper()}", headers={"Accept": "application/json"},
                         timeout=5)
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, response.text
    return {instance["instanceId"]: instance for instance in response.json()["application"]["instance"]}


def legacy_registry(server) -> list[dict]:
    """Every instance the real Eureka Server lists."""
    response = httpx.get(f"{server.eureka_url}apps/", headers={"Accept": "application/json"}, timeout=5)
    assert response.status_code == 200, response.text
    return [instance for app in response.json()["applications"]["application"] for instance in app["instance"]]


def py_on_legacy(server, app: str, port: int, metadata: dict | None = None) -> PyEureka:
    """py-eureka-client registered with the legacy server, renewing and fetching every second."""
    return PyEureka(server.eureka_url, app_name=app, instance_host="127.0.0.1", instance_ip="127.0.0.1",
                    instance_port=port, renewal_interval_in_secs=1, metadata=metadata or {})


def py_metadata(py: PyEureka, app: str, instance_id: str) -> dict | None:
    """The metadata py-eureka-client holds for one instance (None when it holds none)."""
    for application in py.client.applications.applications:
        if application.name == app:
            for instance in application.instances:
                if instance.instanceId == instance_id:
                    return dict(instance.metadata)
    return None


def test_clients_on_either_side_discover_each_other_with_metadata(legacy, start_ferry, clients):
    """py-eureka-client on the legacy server is discovered by eureka-js-client on Ferry,
    and the js instance by py through the legacy server; each carries its metadata and the
    `ferry-owner` of its copy (`legacy-eureka` in Ferry, `ferry` on the legacy server);
    neither is copied back to its own side; `ferry ctl sync` names the source, reachable,
    with the imported and exported counts /api/sync and both registries agree on."""
    ferry = start_ferry("--sync-eureka", legacy.eureka_url, *SYNC_ARGS)
    py_port, js_port = free_port(), free_port()
    py = clients(py_on_legacy(legacy, "legacy-orders", py_port, {"zone": "eu-1", "version": "2.0"}))
    py_id = f"127.0.0.1:legacy-orders:{py_port}"
    js = clients(JsEureka(ferry, instance=js_instance("ferry-billing", "ferry-billing-1", js_port,
                                                      metadata={"team": "payments"})))

    # Legacy -> Ferry -> eureka-js-client.
    wait_until(lambda: js.ids("LEGACY-ORDERS") == [py_id], 20, interval=0.2,
               what="eureka-js-client on Ferry to see the instance registered with the legacy server")
    seen_by_js = js.latest()["LEGACY-ORDERS"][0]
    assert seen_by_js["port"] == py_port
    assert seen_by_js["metadata"].get("zone") == "eu-1" and seen_by_js["metadata"].get("version") == "2.0", seen_by_js
    assert seen_by_js["metadata"].get("ferry-owner") == "legacy-eureka", seen_by_js
    # Ferry -> legacy -> py-eureka-client.
    wait_until(lambda: py.view().get("FERRY-BILLING") == [("ferry-billing-1", "UP", js_port)], 20, interval=0.2,
               what="py-eureka-client on the legacy server to see the instance registered with Ferry")
    metadata = wait_until(lambda: py_metadata(py, "FERRY-BILLING", "ferry-billing-1"), 5, what="py's metadata")
    assert metadata.get("team") == "payments" and metadata.get("ferry-owner") == "ferry", metadata
    exported = legacy_instances(legacy, "ferry-billing")["ferry-billing-1"]
    assert exported["metadata"].get("ferry-owner") == "ferry", exported
    assert (exported["port"]["$"], exported["status"]) == (js_port, "UP")

    # Nothing echoes, over several intervals: one copy each side, the owners' records untouched.
    for _ in range(3):
        time.sleep(INTERVAL)
        in_ferry = [i for i in ferry.instances().values() if i["app"] in ("LEGACY-ORDERS", "FERRY-BILLING")]
        assert sorted((i["instanceId"], (i.get("metadata") or {}).get("ferry-owner")) for i in in_ferry) == sorted([
            ("ferry-billing-1", None), (py_id, "legacy-eureka")]), in_ferry
        own = legacy_instances(legacy, "legacy-orders")
        assert list(own) == [py_id], own
        assert "ferry-owner" not in own[py_id]["metadata"], f"Ferry wrote over the legacy owner's record: {own}"
        assert list(legacy_instances(legacy, "ferry-billing")) == ["ferry-billing-1"]

    # ferry ctl sync, /api/sync and the two registries agree.
    source = sync_sources(ferry)["legacy-eureka"]
    legacy_owned = [i for i in legacy_registry(legacy) if (i.get("metadata") or {}).get("ferry-owner") != "ferry"]
    assert (source["reachable"], source["imported"], source["exported"]) == (True, len(legacy_owned), 1), source
    output = ctl(ferry, "sync")
    line = next((line for line in output.splitlines() if line.startswith("legacy-eureka")), None)
    assert line, f"`ferry ctl sync` does not name the source:\n{output}"
    match = re.match(r"legacy-eureka\s+(\S+)\s+(?:\d+s ago|never)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)",
                     line)
    assert match, f"unexpected `ferry ctl sync` line: {line!r}"
    reachable, imported, _stale, _pending, exported_count, _errors, endpoint = match.groups()
    assert reachable == "yes", line
    assert (int(imported), int(exported_count)) == (len(legacy_owned), 1), line
    assert endpoint.rstrip("/") == legacy.eureka_url.rstrip("/"), line
    label = '{source="legacy-eureka"}'
    assert metric_series(ferry, "ferry_sync_imported_instances").get(label) == len(legacy_owned)
    assert metric_series(ferry, "ferry_sync_exported_instances").get(label) == 1
    assert metric_series(ferry, "ferry_sync_reachable").get(label) == 1


def test_cancels_flow_both_ways(legacy, start_ferry, clients):
    """An eureka-js-client instance that deregisters from Ferry is cancelled on the legacy
    server within a few sync intervals, and a py-eureka-client instance that deregisters
    from the legacy server leaves Ferry's views."""
    ferry = start_ferry("--sync-eureka", legacy.eureka_url, *SYNC_ARGS)
    py_port, js_port = free_port(), free_port()
    py = clients(py_on_legacy(legacy, "legacy-stock", py_port))
    py_id = f"127.0.0.1:legacy-stock:{py_port}"
    js = clients(JsEureka(ferry, instance=js_instance("ferry-cart", "ferry-cart-1", js_port)))
    wait_until(lambda: "ferry-cart-1" in legacy_instances(legacy, "ferry-cart"), 20, interval=0.2,
               what="the js instance exported to the legacy server")
    wait_until(lambda: py_id in ferry.instances(), 20, interval=0.2, what="the py instance imported into Ferry")

    assert js.stop() == 0, "eureka-js-client deregisters on stop"
    assert "ferry-cart-1" not in ferry.instances()
    started = time.monotonic()
    wait_until(lambda: legacy_instances(legacy, "ferry-cart") == {}, 5 * INTERVAL + 3, interval=0.2,
               what="the legacy server to drop the instance cancelled on Ferry")
    cancelled_after = time.monotonic() - started

    py.stop()
    wait_until(lambda: legacy_instances(legacy, "legacy-stock") == {}, 5, what="py's cancel on the legacy server")
    wait_until(lambda: py_id not in ferry.instances(), 5 * INTERVAL + 3, interval=0.2,
               what="Ferry to drop the instance cancelled on the legacy server")
    wait_until(lambda: httpx.get(f"{ferry.consul_url}/v1/health/service/legacy-stock", timeout=5).json() == [], 5,
               what="Ferry's Consul view to drop it too")
    assert sync_sources(ferry)["legacy-eureka"]["exported"] == 0
    print(f"cancel on Ferry reached the legacy server in {cancelled_after:.1f}s")


def test_metadata_and_status_changes_follow_the_owner(legacy, start_ferry, clients):
    """A metadata change made on the owner's side (the Eureka REST call Spring's
    `ApplicationInfoManager` makes) reaches the copy on the other side, and an operator's
    OUT_OF_SERVICE on Ferry reaches the legacy server, hiding the instance from
    py-eureka-client there."""
    ferry = start_ferry("--sync-eureka", legacy.eureka_url, *SYNC_ARGS)
    py_port, js_port = free_port(), free_port()
    py = clients(py_on_legacy(legacy, "legacy-ledger", py_port, {"zone": "eu-1"}))
    py_id = f"127.0.0.1:legacy-ledger:{py_port}"
    clients(JsEureka(ferry, instance=js_instance("ferry-risk", "ferry-risk-1", js_port, metadata={"team": "risk"})))
    wait_until(lambda: py_id in ferry.instances(), 20, interval=0.2, what="the py instance imported")
    wait_until(lambda: "ferry-risk-1" in legacy_instances(legacy, "ferry-risk"), 20, interval=0.2,
               what="the js instance exported")

    reply = httpx.put(f"{legacy.eureka_url}apps/LEGACY-LEDGER/{py_id}/metadata", params={"zone": "eu-2"}, timeout=5)
    assert reply.status_code == 200, reply.text
    wait_until(lambda: ferry.instances()[py_id]["metadata"].get("zone") == "eu-2", 10 * INTERVAL, interval=0.2,
               what="the legacy side's metadata change in Ferry's copy")
    assert ferry.instances()[py_id]["metadata"]["ferry-owner"] == "legacy-eureka"

    reply = httpx.put(f"{ferry.eureka_url}apps/FERRY-RISK/ferry-risk-1/metadata", params={"team": "fraud"}, timeout=5)
    assert reply.status_code == 200, reply.text
    wait_until(lambda: legacy_instances(legacy, "ferry-risk")["ferry-risk-1"]["metadata"].get("team") == "fraud",
               10 * INTERVAL, interval=0.2, what="Ferry's metadata change in the legacy copy")
    assert legacy_instances(legacy, "ferry-risk")["ferry-risk-1"]["metadata"]["ferry-owner"] == "ferry"

    reply = httpx.put(f"{ferry.eureka_url}apps/FERRY-RISK/ferry-risk-1/status", params={"value": "OUT_OF_SERVICE"},
                      timeout=5)
    assert reply.status_code == 200, reply.text
    wait_until(lambda: legacy_instances(legacy, "ferry-risk")["ferry-risk-1"]["status"] == "OUT_OF_SERVICE",
               10 * INTERVAL, interval=0.2, what="OUT_OF_SERVICE on the legacy copy")
    wait_until(lambda: py.view().get("FERRY-RISK", [(None, "UP", None)])[0][1] == "OUT_OF_SERVICE", 10, interval=0.2,
               what="py-eureka-client on the legacy server to see the instance out of service")


def test_a_restarted_ferry_answers_with_legacy_instances_and_keeps_its_exports(legacy, start_ferry, clients):
    """A restarted Ferry's first answers already list the legacy server's instances (it
    waits for its first import before serving) and its own instance, taken back from its
    legacy copy; that copy stays registered on the legacy server throughout, and the
    app's heartbeats to the new process keep it (and its export) alive."""
    ferry = start_ferry("--sync-eureka", legacy.eureka_url, *SYNC_ARGS)
    py_port, js_port = free_port(), free_port()
    clients(py_on_legacy(legacy, "legacy-audit", py_port))
    py_id = f"127.0.0.1:legacy-audit:{py_port}"
    clients(JsEureka(ferry, instance=js_instance("ferry-notify", "ferry-notify-1", js_port)))
    wait_until(lambda: py_id in ferry.instances(), 20, interval=0.2, what="the py instance imported")
    wait_until(lambda: "ferry-notify-1" in legacy_instances(legacy, "ferry-notify"), 20, interval=0.2,
               what="the js instance exported")
    # The full registry read the restarted Ferry makes comes from the server's response
    # cache, refreshed every second: the copy must be in it, or there is nothing to restore.
    wait_until(lambda: "ferry-notify-1" in {i["instanceId"] for i in legacy_registry(legacy)}, 5, interval=0.2,
               what="the js instance in the legacy server's full registry")
    time.sleep(1.5)

    assert ferry.stop() == 0
    ferry.start()
    first_answer = ferry.instances()
    assert py_id in first_answer, f"the restarted Ferry answered without the legacy instance: {list(first_answer)}"
    assert first_answer[py_id]["metadata"].get("ferry-owner") == "legacy-eureka"
    assert "ferry-notify-1" in first_answer, \
        f"the restarted Ferry answered without its own instance, restored from its legacy copy: {list(first_answer)}"
    assert "ferry-owner" not in (first_answer["ferry-notify-1"].get("metadata") or {}), first_answer["ferry-notify-1"]

    watched_until = time.monotonic() + 3 * INTERVAL + 2  # past --sync-grace and a few renewals
    while time.monotonic() < watched_until:
        assert "ferry-notify-1" in legacy_instances(legacy, "ferry-notify"), \
            "the legacy copy of Ferry's instance went while the app re-registered with the restarted Ferry"
        time.sleep(0.2)
    assert "ferry-notify-1" in ferry.instances(), "the app's heartbeats keep its instance on the restarted Ferry"
    wait_until(lambda: sync_sources(ferry)["legacy-eureka"]["exported"] == 1, 5, what="exported again")


def test_a_legacy_server_that_crashes_and_restarts_empty_loses_nothing(tmp_path, start_ferry, clients):
    """The real Eureka Server is killed (SIGKILL) and started again on its port, empty:
    meanwhile Ferry keeps the imported copy (stale, still served to eureka-js-client), and
    once the server is back Ferry registers its own instance there again and the legacy
    app's own re-registration meets the copy Ferry kept: no client ever sees either
    instance go."""
    port = free_port()
    props = {**eureka_server_props(), "server.port": str(port)}
    server = Jvm("boot3", "eureka-server", tmp_path, props).start()
    server.eureka_url = f"{server.url}/eureka/"
    restarted = None
    try:
        # A grace period the restarted server's apps re-register within, on a busy machine too
        # (py-eureka-client re-registers at its next heartbeat, which a JVM that is still
        # starting may hold up for seconds).
        ferry = start_ferry("--sync-eureka", server.eureka_url, "--sync-interval", str(INTERVAL),
                            "--sync-grace", "30", "--sync-timeout", "2")
        py_port, js_port = free_port(), free_port()
        py = clients(py_on_legacy(server, "legacy-geo", py_port))
        py.stop_may_fail = True
        py_id = f"127.0.0.1:legacy-geo:{py_port}"
        js = clients(JsEureka(ferry, instance=js_instance("ferry-maps", "ferry-maps-1", js_port)))
        wait_until(lambda: js.ids("LEGACY-GEO") == [py_id], 20, interval=0.2, what="js to see the legacy instance")
        wait_until(lambda: "ferry-maps-1" in legacy_instances(server, "ferry-maps"), 20, interval=0.2,
                   what="the js instance exported")

        server.kill()
        killed_at = time.monotonic()
        wait_until(lambda: sync_sources(ferry)["legacy-eureka"]["reachable"] is False, 10, interval=0.2,
                   what="the legacy server reported unreachable")
        wait_until(lambda: sync_sources(ferry)["legacy-eureka"]["stale"] == 1, 5, interval=0.2,
                   what="the imported copy counted stale")
        restarted = Jvm("boot3", "eureka-server", tmp_path, props, name=f"restarted-{port}").launch()
        restarted.eureka_url = f"{restarted.url}/eureka/"

        timeline: list[tuple] = []  # (seconds since the kill, source figures), on every change

        def still_served():
            source = sync_sources(ferry)["legacy-eureka"]
            figures = tuple(source[key] for key in ("reachable", "stale", "pending_removals", "imported"))
            if not timeline or timeline[-1][1] != figures:
                timeline.append((round(time.monotonic() - killed_at, 1), figures))
            assert py_id in ferry.instances(), f"Ferry dropped the imported copy; (reachable, stale, pending, " \
                                               f"imported) since the kill: {timeline}"
            assert js.ids("LEGACY-GEO") == [py_id], "eureka-js-client on Ferry lost the legacy instance"
            return True

        def restarted_up():
            try:
                return httpx.get(f"{restarted.url}/actuator/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(lambda: still_served() and restarted_up(), 180, interval=0.3,
                   what="the restarted legacy server up, Ferry serving the legacy instance all along")

        def settled():
            return (still_served() and "ferry-maps-1" in legacy_instances(restarted, "ferry-maps")
                    and py_id in legacy_instances(restarted, "legacy-geo"))

        wait_until(settled, 20, interval=0.2, what="both instances registered again with the restarted server")
        # A few more intervals: everything still in place, the source reachable again.
        watched_until = time.monotonic() + 3 * INTERVAL
        while time.monotonic() < watched_until:
            assert settled(), "an instance went from the restarted legacy server"
            time.sleep(0.3)
        source = sync_sources(ferry)["legacy-eureka"]
        assert (source["reachable"], source["stale"], source["exported"]) == (True, 0, 1), source
    finally:
        for jvm in (restarted, server):
            if jvm is not None:
                jvm.stop()


def test_an_app_that_died_while_ferry_was_down_expires_after_its_own_lease(legacy, start_ferry, clients):
    """An app registered with Ferry with a 3 s lease dies while Ferry is down: the
    restarted Ferry takes its instance back from the legacy copy, and evicts it once the
    app's own lease has run out with no heartbeat."""
    ferry = start_ferry("--sync-eureka", legacy.eureka_url, *SYNC_ARGS,
                        "--eureka-self-preservation", "false", "--eureka-eviction-interval", "0.5")
    app = clients(JsEureka(ferry, instance={**js_instance("ferry-brief", "ferry-brief-1", free_port()),
                                            "leaseInfo": {"renewalIntervalInSecs": 1, "durationInSecs": 3}}))
    wait_until(lambda: "ferry-brief-1" in {i["instanceId"] for i in legacy_registry(legacy)}, 20, interval=0.2,
               what="the instance in the legacy server's full registry")
    time.sleep(1.5)  # the server's response cache, which the restarted Ferry reads
    assert ferry.stop() == 0
    app.process.kill()  # no cancel: the app is simply gone
    app.process.wait()
    ferry.start()
    restored = ferry.instances().get("ferry-brief-1")
    assert restored, "the instance was not taken back from its legacy copy"
    wait_until(lambda: "ferry-brief-1" not in ferry.instances(), 3 + 5, interval=0.2,
               what=f"eviction after the app's 3 s lease (restored leaseInfo: {restored['leaseInfo']})")

"""Real Eureka clients against the real binary: py-eureka-client and eureka-js-client register
with Ferry, discover each other through full fetches and deltas, keep their leases with
heartbeats, and see status changes and deregistrations."""

import time

import httpx

from harness import JsEureka, PyEureka, js_instance, wait_until


def py_client(ferry, app_name, port, **options):
    return PyEureka(
        ferry.eureka_url,
        app_name=app_name,
        instance_host="127.0.0.1",
        instance_ip="127.0.0.1",
        instance_port=port,
        renewal_interval_in_secs=1,
        **options,
    )


def test_py_registration_is_seen_by_js_through_full_fetch_and_delta(ferry, clients):
    orders = clients(py_client(ferry, "orders", 9101))
    by_full_fetch = clients(JsEureka(ferry, use_delta=False))
    by_delta = clients(JsEureka(ferry, use_delta=True, service_path="/eureka/apps/"))

    expected = ["127.0.0.1:orders:9101"]
    for js in (by_full_fetch, by_delta):
        wait_until(lambda: js.ids("ORDERS") == expected, 10, what="js to see ORDERS")
    assert by_full_fetch.latest()["ORDERS"][0]["port"] == 9101

    # A second instance appears in the delta-only client without a full fetch.
    second = clients(py_client(ferry, "orders", 9102))
    both = sorted(expected + ["127.0.0.1:orders:9102"])
    wait_until(lambda: by_delta.ids("ORDERS") == both, 10, what="delta to add the second instance")

    # The client reports DOWN by re-registering (as a Spring app does at shutdown); the
    # full-fetch client keeps only UP instances. A re-registration is an ADDED delta entry,
    # which eureka-js-client ignores for an instance it already holds (as against Netflix
    # Eureka), so only the full-fetch client can see this one.
    orders.run(orders.client.register(status="DOWN"))
    wait_until(lambda: by_full_fetch.ids("ORDERS") == ["127.0.0.1:orders:9102"], 10,
               what="DOWN to hide the instance")
    assert ferry.instances()["127.0.0.1:orders:9101"]["status"] == "DOWN"

    # Deregistration: py-eureka-client's stop() re-registers DOWN, then cancels; the DELETED
    # delta entries reach the delta client.
    second.stop()
    orders.stop()
    wait_until(lambda: ferry.instances() == {}, 5, what="both cancels")
    for js in (by_full_fetch, by_delta):
        wait_until(lambda: js.ids("ORDERS") == [], 10, what="js to drop the cancelled instances")


def test_js_registration_is_seen_by_py_and_its_delta_merge(ferry, clients):
    billing = clients(JsEureka(ferry, instance=js_instance("billing", "billing-1", 9201)))
    watcher = clients(PyEureka(ferry.eureka_url, should_register=False, renewal_interval_in_secs=1))

    wait_until(lambda: watcher.view().get("BILLING") == [("billing-1", "UP", 9201)], 10,
               what="py to see BILLING")
    late = clients(JsEureka(ferry, instance=js_instance("billing", "billing-2", 9202)))
    wait_until(lambda: [i[0] for i in watcher.view().get("BILLING", [])] == ["billing-1", "billing-2"], 10,
               what="py's delta merge to add billing-2")

    # An operator takes billing-2 out of service (the actuator's call): py sees it through
    # its delta merge (a MODIFIED entry), with a hashcode that matches, so no full fetch.
    override = httpx.put(ferry.eureka_url + "apps/BILLING/billing-2/status?value=OUT_OF_SERVICE")
    assert override.status_code == 200
    wait_until(lambda: ("billing-2", "OUT_OF_SERVICE", 9202) in watcher.view().get("BILLING", []), 10,
               what="py's delta merge to apply the status change")

    assert late.stop() == 0, "eureka-js-client deregisters on stop and expects 200"
    wait_until(lambda: [i[0] for i in watcher.view().get("BILLING", [])] == ["billing-1"], 10,
               what="py's delta merge to remove billing-2")
    delta = ferry.apps_json("apps/delta")["applications"]
    actions = {i["instanceId"]: i["actionType"] for a in delta["application"] for i in a["instance"]}
    assert actions["billing-2"] == "DELETED"
    assert billing.ids("BILLING") == ["billing-1"]


def test_heartbeats_keep_short_leases_alive_and_silence_lets_them_expire(start_ferry, clients):
    ferry = start_ferry("--eureka-self-preservation", "false", "--eureka-eviction-interval", "0.5")
    alive = clients(py_client(ferry, "pulse", 9301, duration_in_secs=3))
    silent = clients(JsEureka(ferry, instance={**js_instance("quiet", "quiet-1", 9302),
                                               "leaseInfo": {"renewalIntervalInSecs": 1, "durationInSecs": 2}}))
    wait_until(lambda: {"127.0.0.1:pulse:9301", "quiet-1"} <= set(ferry.instances()), 5, what="both registered")
    # Kill the JS process hard: no cancel, no more heartbeats.
    silent.process.kill()
    silent.process.wait()
    wait_until(lambda: "quiet-1" not in ferry.instances(), 10, what="the silent lease to be evicted")
    time.sleep(4)  # longer than the py instance's whole lease
    assert "127.0.0.1:pulse:9301" in ferry.instances(), "heartbeats keep the lease"
    assert alive.view()["PULSE"][0][1] == "UP"


def test_status_override_and_its_removal_round_trip_through_real_clients(ferry, clients):
    orders = clients(py_client(ferry, "orders", 9401))
    # The full-fetch mode: eureka-js-client applies a MODIFIED delta entry without its UP
    # filter, so only full fetches hide an out-of-service instance from it.
    js = clients(JsEureka(ferry, use_delta=False))
    wait_until(lambda: js.ids("ORDERS") == ["127.0.0.1:orders:9401"], 10, what="js to see ORDERS")

    # py-eureka-client's own call for the actuator-style override.
    orders.run(orders.client.status_update("OUT_OF_SERVICE"))
    instance = ferry.instances()["127.0.0.1:orders:9401"]
    assert (instance["status"], instance["overriddenStatus"]) == ("OUT_OF_SERVICE", "OUT_OF_SERVICE")
    wait_until(lambda: js.ids("ORDERS") == [], 10, what="js to drop the out-of-service instance")
    # Heartbeats reporting UP do not undo the override.
    time.sleep(2.5)
    assert ferry.instances()["127.0.0.1:orders:9401"]["status"] == "OUT_OF_SERVICE"

    # Removing the override makes the next heartbeat answer 404; the client re-registers UP.
    orders.run(orders.client.delete_status_override())
    wait_until(lambda: ferry.instances().get("127.0.0.1:orders:9401", {}).get("status") == "UP", 10,
               what="the client to re-register UP")
    wait_until(lambda: js.ids("ORDERS") == ["127.0.0.1:orders:9401"], 10, what="js to see it again")


def test_fetch_counters_show_a_py_client_keeping_to_deltas(ferry, clients):
    # A registered app that fetches nothing, so every fetch counted is the watcher's.
    clients(py_client(ferry, "orders", 9501, should_discover=False))
    wait_until(lambda: "127.0.0.1:orders:9501" in ferry.instances(), 5, what="orders registered")
    before = ferry.eureka_fetches()
    watcher = clients(PyEureka(ferry.eureka_url, should_register=False, renewal_interval_in_secs=1))
    wait_until(lambda: "ORDERS" in watcher.view(), 10, what="the watcher to see ORDERS")
    # A change reaches the watcher through its delta merge, hashcode matching.
    clients(py_client(ferry, "orders", 9502, should_discover=False))
    wait_until(lambda: len(watcher.view().get("ORDERS", [])) == 2, 10, what="the delta to add 9502")
    wait_until(lambda: ferry.eureka_fetches()["delta"] - before["delta"] >= 3, 10,
               what="three delta fetches")
    after = ferry.eureka_fetches()
    assert after["full"] - before["full"] == 1, (before, after)

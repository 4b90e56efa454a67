"""The Spring estate against the real ferry: registration and discovery across the Eureka and
Consul views, health checks, deregistration of a stopped app, and cutover to the mesh and
back under load, with the real Spring Cloud clients of both generations."""

from __future__ import annotations

import time

import pytest

import estate as e
from conftest import checkout_props
from estate import (ORDERS_PROXIED as PROXIED, Drive, assert_cutover_drive, consul_client_props, consul_health, ctl,
                    driving_through_cutover, eureka_instances, metric, peer_ports, wait_for_direct, wait_for_proxied,
                    wait_until)

GENERATIONS = pytest.mark.parametrize("generation", e.GENERATIONS)

# === registration and discovery ===

@GENERATIONS
def test_eureka_apps_register_up(estate, generation):
    registered = {**eureka_instances(estate.ferry, "orders"), **eureka_instances(estate.ferry, "checkout")}
    for app in [*estate.orders[generation], estate.checkout[generation]]:
        wait_until(lambda: app.instance_id in eureka_instances(estate.ferry, app.app), 15,
                   what=f"{app.name} registered")
        registered = eureka_instances(estate.ferry, app.app)
        instance = registered[app.instance_id]
        assert instance["status"] == "UP"
        assert instance["port"]["$"] == app.port
        assert instance["ipAddr"] == "127.0.0.1"


def test_inventory_registers_through_consul_and_its_http_check_passes(estate):
    def passing():
        entries = consul_health(estate.ferry, "inventory")
        return [entry for entry in entries if entry["Service"]["Port"] == estate.inventory.port
                and entry["Checks"] and all(check["Status"] == "passing" for check in entry["Checks"])]

    entry = wait_until(passing, 20, what="inventory's checks passing in Ferry's Consul health")[0]
    service_checks = [check for check in entry["Checks"] if check["ServiceID"]]
    assert service_checks, f"the app's own HTTP check is listed: {entry['Checks']}"
    assert entry["Service"]["ID"] == f"inventory-{estate.inventory.port}"
    # The same instance through the Eureka view, UP because its checks pass.
    instance = wait_until(lambda: eureka_instances(estate.ferry, "inventory").get(f"inventory-{estate.inventory.port}"),
                          10, what="inventory in the Eureka view")
    assert instance["status"] == "UP"


@GENERATIONS
def test_checkout_finds_inventory_registered_through_consul(estate, generation):
    checkout = estate.checkout[generation]
    wait_until(lambda: peer_ports(checkout, "inventory") == {estate.inventory.port}, 20,
               what="checkout's DiscoveryClient to list inventory")


def test_inventory_sees_orders_registered_through_eureka(estate):
    expected = {app.port for app in estate.all_orders()}
    wait_until(lambda: peer_ports(estate.inventory, "orders") == expected, 20,
               what="inventory's DiscoveryClient to list every orders instance")


@GENERATIONS
@pytest.mark.parametrize("via", ["rest", "feign"])
def test_checkout_reaches_every_orders_instance(estate, generation, via):
    checkout = estate.checkout[generation]
    expected = {app.port for app in estate.all_orders()}
    wait_until(lambda: peer_ports(checkout, "orders") == expected, 20, what="checkout to see every orders instance")
    report = checkout.json(f"/drive?via={via}&rate=20&seconds=4", timeout=60)
    assert report["failures"] == 0, report["failureSamples"]
    assert report["successes"] == report["calls"] == 80
    # Spring's LoadBalancer is round robin: 80 calls over 4 instances reach every one.
    assert set(report["perInstance"]) == {app.instance_id for app in estate.all_orders()}, report
    assert report["traced"] == 0, "legacy mode: the calls go app to app, not through a proxy"


# === health and deregistration ===

@GENERATIONS
def test_stopped_eureka_app_is_cancelled_and_callers_stop_using_it(estate, apps, generation):
    checkout = estate.checkout[generation]
    extra = apps.new(generation, "orders", e.eureka_client_props(estate.ferry)).start()
    try:
        wait_until(lambda: extra.port in peer_ports(checkout, "orders"), 20, what="checkout to see the new instance")
        served = checkout.json("/drive?via=rest&rate=20&seconds=3", timeout=60)["perInstance"]
        assert extra.instance_id in served, served
        drive = Drive(checkout, "rest", 20, 30)
        time.sleep(1)
        assert extra.stop() in (0, 143), "SIGTERM ends the app"
        stopped_ms = time.time() * 1000
        assert extra.instance_id not in eureka_instances(estate.ferry, "orders"), \
            "the graceful shutdown cancelled the lease before the process ended"
        wait_until(lambda: extra.port not in peer_ports(checkout, "orders"), 10,
                   what="checkout's registry to drop the instance")
        time.sleep(4)
        during = drive.stop()
    finally:
        extra.kill()
    # Calls that raced the shutdown may fail (the caller holds the instance until its next
    # fetch, 1 s, plus LoadBalancer's 1 s cache); none after that.
    assert during["failures"] == len(during["failureSamples"]), during["failureSamples"]
    late = [sample for sample in during["failureSamples"] if int(sample.split()[0]) > stopped_ms + 3000]
    assert late == [], f"calls failed after the caller's caches refreshed: {late}"
    after = checkout.json("/drive?via=feign&rate=20&seconds=4", timeout=60)
    assert after["failures"] == 0, after["failureSamples"]
    assert set(after["perInstance"]) == {app.instance_id for app in estate.all_orders()}


def test_stopped_consul_app_is_deregistered_and_callers_stop_using_it(estate, apps):
    extra = apps.new("boot3", "inventory", consul_client_props(estate.ferry)).start()
    try:
        wait_until(lambda: any(entry["Service"]["Port"] == extra.port for entry in consul_health(estate.ferry, "inventory")),
                   15, what="the second inventory registered")
        for checkout in estate.checkout.values():
            wait_until(lambda: extra.port in peer_ports(checkout, "inventory"), 20, what="checkout to see it")
        assert extra.stop() in (0, 143)
    finally:
        extra.kill()
    ports = [entry["Service"]["Port"] for entry in consul_health(estate.ferry, "inventory")]
    assert ports == [estate.inventory.port], "Spring Cloud Consul deregistered at shutdown"
    for checkout in estate.checkout.values():
        wait_until(lambda: peer_ports(checkout, "inventory") == {estate.inventory.port}, 10,
                   what="checkout's DiscoveryClient to drop it")


# === cutover under load ===

@GENERATIONS
def test_cutover_and_rollback_twice_under_load_fail_no_call(estate, generation):
    """checkout sends 25 calls a second to orders through its @LoadBalanced RestTemplate
    while orders moves to the mesh and back twice. No call fails; every call Ferry's proxy
    counts is one checkout saw traced (the proxy adds trace headers), and calls in legacy
    mode are direct."""
    ferry = estate.ferry
    checkout = estate.checkout[generation]
    wait_until(lambda: peer_ports(checkout, "orders") == {app.port for app in estate.all_orders()}, 20,
               what="checkout to see every orders instance")
    before = metric(ferry, PROXIED)
    timings = []
    with driving_through_cutover(ferry, checkout, "rest", 25, 120) as drive:
        time.sleep(2)
        for _ in range(2):
            output = ctl(ferry, "cutover", "orders", "mesh")
            assert "mesh" in output, output
            timings.append(("mesh", wait_for_proxied(ferry, metric(ferry, PROXIED), 20)))
            target = metric(ferry, PROXIED) + 50
            wait_until(lambda: metric(ferry, PROXIED) >= target, 20, what="50 more proxied calls")
            ctl(ferry, "cutover", "orders", "legacy")
            timings.append(("legacy", wait_for_direct(ferry, quiet=3, timeout=20)))
        time.sleep(2)
        report = drive.stop()
    proxied = metric(ferry, PROXIED) - before
    assert_cutover_drive(report, proxied, calls=250, each_mode=100)
    assert set(report["perInstance"]) == {app.instance_id for app in estate.all_orders()}
    e.MEASUREMENTS.append(
        f"{generation} cutover, 1 s fetch + 1 s LoadBalancer cache: "
        + ", ".join(f"{mode} {seconds:.1f}s" for mode, seconds in timings))


def test_cutover_takes_one_refresh_with_spring_defaults(estate, apps):
    """With Spring's defaults (registry fetch every 30 s, LoadBalancer cache 35 s) the time
    from the command to the first proxied call is at most one fetch plus one cache period."""
    ferry = estate.ferry
    defaults = apps.new("boot3", "checkout", e.eureka_client_props(ferry, fetch_seconds=None),
                        name="boot3-checkout-defaults").start()
    try:
        wait_until(lambda: len(peer_ports(defaults, "orders")) == 4, 40, what="the defaults checkout to see orders")
        with driving_through_cutover(ferry, defaults, "rest", 10, 160) as drive:
            time.sleep(1)
            ctl(ferry, "cutover", "orders", "mesh")
            to_mesh = wait_for_proxied(ferry, metric(ferry, PROXIED), 30 + 35 + 10)
            ctl(ferry, "cutover", "orders", "legacy")
            to_legacy = wait_for_direct(ferry, quiet=5, timeout=30 + 35 + 15)
            report = drive.stop()
    finally:
        defaults.stop()
    assert report["failures"] == 0, report["failureSamples"]
    assert report["traced"] > 0
    e.MEASUREMENTS.append(f"boot3 cutover with Spring's defaults (30 s fetch, 35 s cache): "
                          f"mesh {to_mesh:.1f}s, legacy {to_legacy:.1f}s")

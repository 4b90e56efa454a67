"""The Java Eureka clients' own consistency logic against Ferry, per generation: under
registry churn they apply deltas and their apps hashcode matches Ferry's, so they do not fall
back to full fetches; and a client whose ferry is killed and restarted with a fresh data dir
registers again by itself and loses no instance.

Each generation gets its own ferry (so Ferry's fetch counters are that generation's alone)
with one `orders` and one `checkout`, both fetching every second."""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pytest

import estate as e
from estate import eureka_client_props, metric, start_all, wait_until

GENERATIONS = pytest.mark.parametrize("generation", e.GENERATIONS)
OBSERVE_SECONDS = float(os.environ.get("FERRY_SPRING_CHURN_SECONDS", "120"))
# Each Java client does one full fetch when it starts (its local registry is empty) and
# then only deltas while its hashcode matches; two clients per ferry. One more per client
# is allowed for a start-up race (a delta fetched before the first full fetch completed).
FULL_FETCH_BOUND = 2 * 2


class Pair:
    def __init__(self, ferry, orders, checkout):
        self.ferry, self.orders, self.checkout = ferry, orders, checkout
        self.churn: dict | None = None


@pytest.fixture(scope="module")
def pairs(ferries, apps) -> dict[str, Pair]:
    made = {}
    for generation in e.GENERATIONS:
        ferry = ferries(f"consistency-{generation}")
        made[generation] = Pair(ferry, apps.new(generation, "orders", eureka_client_props(ferry)),
                                apps.new(generation, "checkout", eureka_client_props(ferry)))
    start_all([app for pair in made.values() for app in (pair.orders, pair.checkout)])
    return made


def registration(app: str, instance_id: str, port: int) -> dict:
    now = str(int(time.time() * 1000))
    return {"instance": {
        "instanceId": instance_id, "hostName": "127.0.0.1", "app": app, "ipAddr": "127.0.0.1",
        "status": "UP", "overriddenStatus": "UNKNOWN", "port": {"$": port, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 300},
        "vipAddress": app.lower(), "secureVipAddress": app.lower(),
        "lastUpdatedTimestamp": now, "lastDirtyTimestamp": now,
    }}


class Churn:
    """Registers and cancels instances through Ferry's Eureka API every `period` seconds:
    a steady app whose instances come and go, and each step a new app with two instances,
    one cancelled at once (so a client meets the app and its cancellation in one delta)."""

    def __init__(self, ferry, period: float = 1.5):
        self.base = ferry.eureka_url
        self.period = period
        self.live: dict[str, set[int]] = {}
        self.steps = 0
        self.stop_event = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run)

    def _register(self, http, app, port):
        instance_id = f"{app.lower()}:{port}"
        response = http.post(f"{self.base}apps/{app}", content=json.dumps(registration(app, instance_id, port)),
                             headers={"Content-Type": "application/json"})
        assert response.status_code == 204, response.text
        self.live.setdefault(app.lower(), set()).add(port)

    def _cancel(self, http, app, port):
        response = http.delete(f"{self.base}apps/{app}/{app.lower()}:{port}")
        assert response.status_code == 200, response.text
        self.live[app.lower()].discard(port)

    def _run(self):
        try:
            with httpx.Client(timeout=5) as http:
                port = 40000
                while not self.stop_event.wait(self.period):
                    self.steps += 1
                    port += 1
                    self._register(http, "CHURN-STEADY", port)
                    if len(self.live["churn-steady"]) > 3:
                        self._cancel(http, "CHURN-STEADY", min(self.live["churn-steady"]))
                    # Either order of the two registrations: whichever order a server
                    # lists an app's entries in, one of them puts the removal first.
                    fresh = f"CHURN-{self.steps}"
                    first, second = (41000, 41001) if self.steps % 2 else (41001, 41000)
                    self._register(http, fresh, first)
                    self._register(http, fresh, second)
                    self._cancel(http, fresh, 41000)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            self.error = error

    def run_for(self, seconds: float):
        self.thread.start()
        time.sleep(seconds)
        self.stop_event.set()
        self.thread.join()
        if self.error is not None:
            raise self.error


@pytest.fixture(scope="module")
def churned(pairs) -> dict[str, dict]:
    """Runs the churn against both generations' ferries at once for OBSERVE_SECONDS and
    returns, per generation, Ferry's fetch counters over the run and what checkout saw."""
    before = {g: {kind: fetches(pair.ferry, kind) for kind in ("full", "delta")} for g, pair in pairs.items()}
    churns = {g: Churn(pair.ferry) for g, pair in pairs.items()}
    threads = [threading.Thread(target=churn.run_for, args=(OBSERVE_SECONDS,)) for churn in churns.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(3)  # two more fetches: the clients catch up with the last step
    results = {}
    for g, pair in pairs.items():
        churn = churns[g]
        assert churn.error is None, churn.error
        results[g] = {
            "full": fetches(pair.ferry, "full") - before[g]["full"],
            "delta": fetches(pair.ferry, "delta") - before[g]["delta"],
            "steps": churn.steps,
            "expected": {app: ports for app, ports in churn.live.items()},
            "seen": {app: {peer["port"] for peer in pair.checkout.json(f"/peers/{app}")} for app in churn.live},
        }
        e.MEASUREMENTS.append(f"{g} Eureka fetches over {OBSERVE_SECONDS:.0f}s of churn ({churn.steps} steps, "
                              f"2 clients, 1 s interval): full {results[g]['full']:.0f}, delta {results[g]['delta']:.0f}")
    return results


def fetches(ferry, kind: str) -> float:
    return metric(ferry, f'ferry_eureka_fetches_total{{kind="{kind}"}}')


@GENERATIONS
def test_java_clients_follow_churn_with_deltas(churned, generation):
    result = churned[generation]
    assert result["steps"] >= OBSERVE_SECONDS / 2, result
    # What checkout's DiscoveryClient holds is what Ferry holds, app by app.
    assert result["seen"] == result["expected"]


@GENERATIONS
def test_java_clients_do_not_fall_back_to_full_fetches(churned, generation):
    result = churned[generation]
    assert result["delta"] >= 2 * OBSERVE_SECONDS * 0.6, f"both clients fetched deltas about every second: {result}"
    assert result["full"] <= FULL_FETCH_BOUND, f"no full fetch after the first ones: {result}"


@GENERATIONS
def test_a_client_whose_ferry_restarts_empty_registers_again(pairs, generation):
    """Ferry killed (SIGKILL) and started again on the same ports with a fresh data dir:
    the registrations are gone, each Java client's next renew gets 404 and it registers
    again by itself; checkout's calls to orders, direct from its cached registry, go on
    without a failure through the outage."""
    pair = pairs[generation]
    ferry = pair.ferry
    expected = {pair.orders.instance_id, pair.checkout.instance_id}

    def registered() -> set[str]:
        found = set()
        for app in ("orders", "checkout"):
            found |= set(e.eureka_instances(ferry, app))
        return found

    wait_until(lambda: registered() == expected, 15, what="both apps registered")
    drive = threading.Thread(target=lambda: results.append(
        pair.checkout.json("/drive?via=feign&rate=20&seconds=20", timeout=80)))
    results: list[dict] = []
    drive.start()
    time.sleep(2)
    ferry.kill()
    time.sleep(3)  # a few renewals and fetches fail meanwhile
    data_dir = ferry.data_dir.parent / f"data-restarted-{generation}"
    ferry.args[ferry.args.index("--data-dir") + 1] = str(data_dir)
    ferry.data_dir = data_dir
    ferry.start()
    restarted = time.monotonic()
    wait_until(lambda: registered() == expected, 20, what="both Java clients to register again")
    recovered = time.monotonic() - restarted
    for instance_id, instance in {**e.eureka_instances(ferry, "orders"), **e.eureka_instances(ferry, "checkout")}.items():
        assert instance["status"] == "UP", instance
    drive.join()
    report = results[0]
    assert report["failures"] == 0, report["failureSamples"]
    assert report["successes"] == report["calls"] == 400
    # After the restart the caller still finds orders through the new registry.
    wait_until(lambda: [p["port"] for p in pair.checkout.json("/peers/orders")] == [pair.orders.port], 10,
               what="checkout's registry to list orders again")
    assert pair.checkout.json("/call?via=rest")["instanceId"] == pair.orders.instance_id
    e.MEASUREMENTS.append(f"{generation} re-registration after a ferry restart: {recovered:.1f}s")

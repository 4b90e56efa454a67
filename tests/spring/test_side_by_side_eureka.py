"""Ferry's Eureka API beside the real Spring Cloud Netflix Eureka Server (samples/<generation>/
eureka-server: standalone, self-preservation off, a 1 s response cache), driven through the
same scripted scenario with the Java apps of both generations:

    registered       two `orders` instances register (Spring's Eureka client)
    heartbeat        a few 1 s renewals later
    out-of-service   PUT /eureka/apps/ORDERS/{id}/status?value=OUT_OF_SERVICE on the first
    override-removed DELETE of that override (the server sets UNKNOWN, the client's next
                     renewal gets 404 and registers again: UP)
    metadata         PUT /eureka/apps/ORDERS/{id}/metadata?zone=eu-1&release=2 on the second
    cancelled        the second instance is stopped (Spring cancels its lease)

`checkout` watches with a 1 s registry fetch. After each step what checkout's Eureka client
holds (its /eureka-view: every field it decoded, all instances, the apps hashcode) and what its
DiscoveryClient gives Spring Cloud LoadBalancer (/peers) must be the same from both servers
once timestamps are normalized. Both runs use the same ports, so instance ids, ports and URLs
compare as they are.

The raw `/eureka/apps`, `/eureka/apps/ORDERS` and `/eureka/apps/delta` documents (JSON and XML)
are compared too; the deliberate differences are normalized (README, "Differences from the
real servers") and each difference Ferry should fix has a strict xfail test.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from servers import Processes, eureka_client_props, eureka_server_props, free_port, settle

GENERATIONS = ("boot3", "boot2")
STEPS = ("registered", "heartbeat", "out-of-service", "override-removed", "metadata", "cancelled")
DOCUMENTS = {
    "apps.json": ("apps/", "application/json"),
    "apps.xml": ("apps/", "application/xml"),
    "app.json": ("apps/ORDERS", "application/json"),
    "app.xml": ("apps/ORDERS", "application/xml"),
    "delta.json": ("apps/delta", "application/json"),
    "delta.xml": ("apps/delta", "application/xml"),
}


# === the scenario ===


def view(checkout) -> dict:
    return checkout.get("/eureka-view/orders").json()


def peers(checkout) -> list:
    return sorted(checkout.get("/peers/orders").json(), key=lambda peer: peer["instanceId"])


def instance(checkout, instance_id: str) -> dict | None:
    return next((i for i in view(checkout)["instances"] if i["instanceId"] == instance_id), None)


def run_scenario(kind: str, generation: str, ports: dict, log_dir) -> dict:
    """Runs the scenario against `kind` ("real" or "ferry"); returns step -> what was seen."""
    processes = Processes(log_dir)
    seen: dict = {}
    try:
        if kind == "real":
            server = processes.jvm(generation, "eureka-server", eureka_server_props())
            eureka = f"{server.url}/eureka/"
        else:
            eureka = processes.ferry().eureka_url
        orders_props = [{**eureka_client_props(eureka), "server.port": str(port),
                         "eureka.client.fetch-registry": "false"} for port in ports["orders"]]
        checkout_props = {**eureka_client_props(eureka), "server.port": str(ports["checkout"]),
                          "eureka.client.register-with-eureka": "false"}
        checkout, first, second = processes.jvms(
            (generation, "checkout", checkout_props),
            *((generation, "orders", props) for props in orders_props))
        ids = [f"orders:{port}" for port in ports["orders"]]

        def record(step: str) -> None:
            # The real server's read cache refreshes every second; both get the same pause.
            time.sleep(1.5)
            seen[step] = {"view": view(checkout), "peers": peers(checkout), "documents": {
                name: httpx.get(eureka + path, headers={"Accept": accept}, timeout=10).text
                for name, (path, accept) in DOCUMENTS.items()}}

        settle(lambda: [i["status"] for i in view(checkout)["instances"]] == ["UP", "UP"],
               timeout=60, what="both orders instances UP in checkout's view")
        record("registered")

        # Renewals are not changes: no delta carries them, so they are watched on the server.
        def renewed_at() -> int:
            answer = httpx.get(f"{eureka}apps/ORDERS/{ids[0]}", headers={"Accept": "application/json"}, timeout=10)
            return int(answer.json()["instance"]["leaseInfo"]["lastRenewalTimestamp"])

        first_renewal = renewed_at()
        settle(lambda: renewed_at() > first_renewal + 2000, what="renewals")
        record("heartbeat")

        answer = httpx.put(f"{eureka}apps/ORDERS/{ids[0]}/status", params={"value": "OUT_OF_SERVICE"}, timeout=10)
        assert answer.status_code == 200, answer.text
        settle(lambda: instance(checkout, ids[0])["status"] == "OUT_OF_SERVICE", what="OUT_OF_SERVICE")
        record("out-of-service")

        answer = httpx.delete(f"{eureka}apps/ORDERS/{ids[0]}/status", timeout=10)
        assert answer.status_code == 200, answer.text
        settle(lambda: instance(checkout, ids[0])["status"] == "UP"
               and instance(checkout, ids[0])["overriddenStatus"] == "UNKNOWN", what="UP again")
        record("override-removed")

        answer = httpx.put(f"{eureka}apps/ORDERS/{ids[1]}/metadata", params={"zone": "eu-1", "release": "2"}, timeout=10)
        assert answer.status_code == 200, answer.text
        settle(lambda: instance(checkout, ids[1])["metadata"].get("zone") == "eu-1", what="metadata")
        record("metadata")

        second.stop()
        settle(lambda: instance(checkout, ids[1]) is None, what="the cancelled instance gone")
        record("cancelled")

        seen["new-app-cancelled"] = new_app_with_a_cancel(eureka, checkout)
        (log_dir / f"seen-{kind}.json").write_text(json.dumps(seen, indent=1))
        return seen
    except BaseException:
        print(processes.report())
        raise
    finally:
        processes.close()


def new_app_with_a_cancel(eureka: str, checkout) -> dict:
    """An app new to checkout gets two instances and loses one within one fetch cycle
    (three requests in a few milliseconds). Returns every PAYMENTS instance set ("id status")
    checkout's Eureka client held over the next 6 s, and its final view."""
    for number in (1, 2):
        answer = httpx.post(f"{eureka}apps/PAYMENTS", json=registration(f"payments:{number}", 18000 + number), timeout=10)
        assert answer.status_code == 204, answer.text
    answer = httpx.delete(f"{eureka}apps/PAYMENTS/payments:2", timeout=10)
    assert answer.status_code == 200, answer.text
    held = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        ids = sorted(f"{i['instanceId']} {i['status']}" for i in checkout.get("/eureka-view/payments").json()["instances"])
        if not held or held[-1] != ids:
            held.append(ids)
        time.sleep(0.1)
    return {"held": held, "final": normalized_view(checkout.get("/eureka-view/payments").json())}


@pytest.fixture(scope="module", params=GENERATIONS)
def scenario(request, tmp_path_factory):
    generation = request.param
    ports = {"orders": sorted([free_port(), free_port()]), "checkout": free_port()}
    log_dir = tmp_path_factory.mktemp(f"eureka-{generation}")
    return {"generation": generation,
            "real": run_scenario("real", generation, ports, log_dir),
            "ferry": run_scenario("ferry", generation, ports, log_dir)}


# === normalizing ===

TIMESTAMP_FIELDS = ("registrationTimestamp", "lastRenewalTimestamp", "serviceUpTimestamp",
                    "lastUpdatedTimestamp", "lastDirtyTimestamp", "evictionTimestamp")


def normalized_view(seen: dict) -> dict:
    """Timestamps become "<time>" (0 stays 0: "never" must match)."""
    document = json.loads(json.dumps(seen))
    for item in document["instances"]:
        for field in TIMESTAMP_FIELDS:
            if item.get(field):
                item[field] = "<time>"
    return document


def normalized_json(text: str, delta: bool) -> dict:
    """Timestamps become "<time>" (0 stays 0), instances are put in id order (a full
    document lists them in the real server's hash-map order; for deltas the order is pending,
    see test_delta_lists_changes_oldest_first) and a delta's version becomes "<version>"
    (deliberate: the real server's counts its delta-cache rebuilds, per format, Ferry's is its
    change index; the Java client keeps it without reading it). Key order is not compared."""
    document = json.loads(text)

    def walk(node):
        if isinstance(node, dict):
            for key, value in list(node.items()):
                if key in TIMESTAMP_FIELDS and value not in (0, "0"):
                    node[key] = "<time>"
                else:
                    walk(value)
            for key in ("instance", "application"):
                if isinstance(node.get(key), list):
                    node[key].sort(key=lambda item: item.get("instanceId") or item.get("name"))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    if delta:
        document["applications"]["versions__delta"] = "<version>"
    return document


def normalized_xml(text: str, delta: bool) -> str:
    """As normalized_json, and the metadata entries in name order (deliberate: the real
    server keeps metadata in a hash map; its order carries nothing)."""
    text = re.sub(r"<(%s)>[1-9]\d*</\1>" % "|".join(TIMESTAMP_FIELDS), r"<\1><time></\1>", text)
    text = re.sub(r">\s+<", "><", text.strip())
    if delta:
        text = re.sub(r"<versions__delta>\d+</versions__delta>", "<versions__delta><version></versions__delta>", text)
    text = re.sub(r"<metadata>(.*?)</metadata>", lambda match: "<metadata>" + "".join(
        sorted(re.findall(r"<[^>/]+>[^<]*</[^>]+>|<[^>]+/>", match.group(1)))) + "</metadata>", text)

    def sort_instances(match):
        body = match.group(0)
        instances = re.findall(r"<instance>.*?</instance>", body)
        if not instances:
            return body
        return body[:body.index("<instance>")] + "".join(sorted(instances)) + "</application>"

    return re.sub(r"<application>.*?</application>", sort_instances, text)


def delta_order(document: str) -> list[str]:
    """The instance ids of a JSON delta in the order listed."""
    applications = json.loads(document)["applications"].get("application", [])
    return [item["instanceId"] for application in applications for item in application["instance"]]


# === what the Java client sees ===


@pytest.mark.parametrize("step", STEPS)
def test_checkout_sees_the_same_orders(scenario, step):
    real = normalized_view(scenario["real"][step]["view"])
    ferry = normalized_view(scenario["ferry"][step]["view"])
    assert ferry == real


@pytest.mark.parametrize("step", STEPS)
def test_load_balancer_gets_the_same_instances(scenario, step):
    assert scenario["ferry"][step]["peers"] == scenario["real"][step]["peers"]


# === the raw documents ===


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("step", STEPS)
def test_raw_documents_are_the_same(scenario, step, document):
    real = scenario["real"][step]["documents"][document]
    ferry = scenario["ferry"][step]["documents"][document]
    delta = document.startswith("delta")
    if document.endswith(".json"):
        assert normalized_json(ferry, delta) == normalized_json(real, delta)
    else:
        assert normalized_xml(ferry, delta) == normalized_xml(real, delta)


# === differences Ferry should fix (strict xfail: they flip when the fix lands) ===


def test_delta_lists_changes_oldest_first(scenario):
    for step in STEPS:
        real = delta_order(scenario["real"][step]["documents"]["delta.json"])
        ferry = delta_order(scenario["ferry"][step]["documents"]["delta.json"])
        assert ferry == real, step


# === the operations' answers, request by request ===


def registration(instance_id: str, port: int) -> dict:
    """What Spring's Eureka client sends to register (its JSON, trimmed to the usual fields)."""
    return {"instance": {
        "instanceId": instance_id, "hostName": "127.0.0.1", "app": "PAYMENTS", "ipAddr": "127.0.0.1",
        "status": "UP", "overriddenstatus": "UNKNOWN",
        "port": {"$": port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1, "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": {"management.port": str(port)},
        "homePageUrl": f"http://127.0.0.1:{port}/", "statusPageUrl": f"http://127.0.0.1:{port}/actuator/info",
        "healthCheckUrl": f"http://127.0.0.1:{port}/actuator/health",
        "vipAddress": "payments", "secureVipAddress": "payments",
        "isCoordinatingDiscoveryServer": "false", "lastUpdatedTimestamp": "1767225600000",
        "lastDirtyTimestamp": "1767225600000"}}


def exchange(eureka: str) -> list[tuple]:
    """A fixed series of requests as the Java clients make them; returns, per request, the
    status, the media type, whether the body was gzipped and the body."""
    client = httpx.Client(base_url=eureka, timeout=10)
    json_headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
    requests = [
        ("POST", "apps/PAYMENTS", {"json": registration("payments:1", 18001)}),
        ("POST", "apps/PAYMENTS", {"json": registration("payments:2", 18002)}),
        ("PUT", "apps/PAYMENTS/payments:1?status=UP&lastDirtyTimestamp=1767225600000", {}),
        ("PUT", "apps/PAYMENTS/nosuch?status=UP&lastDirtyTimestamp=1767225600000", {}),
        ("PUT", "apps/NOSUCH/payments:1?status=UP", {}),
        ("GET", "apps/", {}),
        ("GET", "apps/PAYMENTS", {}),
        ("GET", "apps/NOSUCH", {}),
        ("GET", "apps/PAYMENTS/payments:1", {}),
        ("GET", "apps/PAYMENTS/nosuch", {}),
        ("GET", "instances/payments:1", {}),
        ("GET", "instances/nosuch", {}),
        ("GET", "vips/payments", {}),
        ("GET", "vips/nosuch", {}),
        ("GET", "svips/payments", {}),
        ("PUT", "apps/PAYMENTS/payments:1/status?value=OUT_OF_SERVICE", {}),
        ("PUT", "apps/PAYMENTS/nosuch/status?value=OUT_OF_SERVICE", {}),
        ("PUT", "apps/PAYMENTS/payments:1/status?value=NOT_A_STATUS", {}),
        ("DELETE", "apps/PAYMENTS/payments:1/status?value=UP", {}),
        ("DELETE", "apps/PAYMENTS/nosuch/status", {}),
        ("PUT", "apps/PAYMENTS/payments:2/metadata?zone=eu-1", {}),
        ("PUT", "apps/PAYMENTS/nosuch/metadata?zone=eu-1", {}),
        ("GET", "apps/delta", {}),
        ("DELETE", "apps/PAYMENTS/payments:2", {}),
        ("DELETE", "apps/PAYMENTS/payments:2", {}),
        ("GET", "apps/PAYMENTS", {}),
    ]
    answers = []
    previous = None
    for method, path, extra in requests:
        if method == "GET" and previous != "GET":
            # The real server answers reads from a cache refreshed every second (deliberate
            # difference: Ferry's answers are never stale); both get the same pause.
            time.sleep(1.2)
        previous = method
        for accept in ("application/json", "application/xml"):
            if method != "GET" and accept == "application/xml":
                continue
            headers = {**json_headers, "Accept": accept}
            answer = client.request(method, path, headers=headers, **extra)
            media = answer.headers.get("content-type", "").split(";")[0] if answer.content else ""
            answers.append((method, path, accept, answer.status_code, media,
                            answer.headers.get("content-encoding", ""), answer.text))
    client.close()
    return answers


@pytest.fixture(scope="module")
def operations(tmp_path_factory):
    processes = Processes(tmp_path_factory.mktemp("eureka-operations"))
    try:
        server = processes.jvm("boot3", "eureka-server", eureka_server_props())
        real = exchange(f"{server.url}/eureka/")
        ferry = exchange(processes.ferry().eureka_url)
        return real, ferry
    except BaseException:
        print(processes.report())
        raise
    finally:
        processes.close()


# Deliberate: an unknown status value is a bad argument (Ferry 400); the real server's
# InstanceStatus.valueOf throws (500).
BAD_STATUS = "apps/PAYMENTS/payments:1/status?value=NOT_A_STATUS"


def test_operations_answer_with_the_same_status_and_media_type(operations):
    """Error bodies are not compared (deliberate: the real server's 404s carry Spring Boot's
    error JSON, Ferry's are empty, as Netflix's own resources answer; clients read the
    status only)."""
    real, ferry = operations
    differences = [f"{r[0]} {r[1]} ({r[2]}): real {r[3:]}, ferry {f[3:]}"
                   for r, f in zip(real, ferry) if r[1] != BAD_STATUS
                   and (r[3] != f[3] or (r[3] < 300 and r[4] != f[4]))]
    assert not differences, "\n".join(differences)
    assert [(r[3], f[3]) for r, f in zip(real, ferry) if r[1] == BAD_STATUS] == [(500, 400)]


def test_gzip_is_used_alike(operations):
    real, ferry = operations
    differences = [f"{r[0]} {r[1]} ({r[2]}): real {r[5]!r}, ferry {f[5]!r}"
                   for r, f in zip(real, ferry) if r[5] != f[5]]
    assert not differences, "\n".join(differences)


def test_reads_answer_the_same_documents(operations):
    """Every successful read of the series (apps, one app, one instance by app and by id,
    vips, svips, delta) in JSON and XML, normalized as the scenario's documents."""
    real, ferry = operations
    differences = []
    for r, f in zip(real, ferry):
        if r[0] != "GET" or r[3] != 200:
            continue
        delta = r[1] == "apps/delta"
        if r[2] == "application/json":
            same = normalized_json(r[6], delta) == normalized_json(f[6], delta)
        else:
            same = normalized_xml(r[6], delta) == normalized_xml(f[6], delta)
        if not same:
            differences.append(f"GET {r[1]} ({r[2]}):\n  real:  {r[6]}\n  ferry: {f[6]}")
    assert not differences, "\n".join(differences)


def test_an_instance_cancelled_within_one_fetch_cycle_ends_alike(scenario):
    """The client ends with payments:1 alone from both servers, and with the same apps
    hashcode. Whether it held payments:2 on the way is recorded, not asserted: it can, from
    either server, when the three requests straddle a fetch (or the real server's 1 s
    response-cache refresh), so it does not tell the delta order apart reliably; the order
    itself is test_delta_lists_changes_oldest_first."""
    for kind in ("real", "ferry"):
        held = scenario[kind]["new-app-cancelled"]["held"]
        assert held[-1] == ["payments:1 UP"], f"{kind} held {held}"
        print(f"{scenario['generation']} {kind}: checkout held {held}")
    assert scenario["ferry"]["new-app-cancelled"]["final"] == scenario["real"]["new-app-cancelled"]["final"]

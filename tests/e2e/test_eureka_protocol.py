"""The real binary over plain HTTP, for what no client exercises: both prefixes and XML on the
wire, delta contents, bad input over a real socket (oversized, slow, malformed), eviction and
self-preservation with real timers, and process-level behaviour (shutdown, data-dir lock)."""

import gzip
import json
import subprocess
import time

import httpx

from harness import Ferry, ferry_binary, raw_exchange, wait_until

REGISTRATION = {
    "instance": {
        "instanceId": "10.9.8.7:orders:8080", "hostName": "10.9.8.7", "app": "ORDERS",
        "ipAddr": "10.9.8.7", "status": "UP", "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 1, "durationInSecs": 2},
        "vipAddress": "orders", "lastDirtyTimestamp": "1700000000000",
    }
}


def register(ferry, body=REGISTRATION, prefix="eureka/", app="ORDERS"):
    return httpx.post(f"http://127.0.0.1:{ferry.eureka_port}/{prefix}apps/{app}", json=body, timeout=5)


def test_both_prefixes_xml_and_gzip_on_the_wire(ferry):
    assert register(ferry, prefix="eureka/v2/").status_code == 204
    xml = ferry.get("apps/", accept="*/*")
    assert xml.headers["content-type"].startswith("application/xml")
    assert "<overriddenstatus>UNKNOWN</overriddenstatus>" in xml.text
    assert '<port enabled="true">8080</port>' in xml.text
    raw = httpx.get(ferry.eureka_url + "apps/delta",
                    headers={"Accept": "application/json", "Accept-Encoding": "gzip"}, timeout=5)
    assert raw.headers["content-encoding"] == "gzip"
    delta = raw.json()["applications"]  # httpx inflates it
    assert delta["apps__hashcode"] == "UP_1_"
    assert delta["application"][0]["instance"][0]["actionType"] == "ADDED"
    assert ferry.get("v2/apps/ORDERS/10.9.8.7:orders:8080").status_code == 200
    assert ferry.get("apps/ORDERS/10.9.8.7%3Aorders%3A8080").status_code == 200


def test_an_oversized_body_gets_413_over_a_real_socket_and_changes_nothing(ferry):
    index_before = metric(ferry, "ferry_registry_change_index")
    big = b'{"instance":' + b" " * (2 << 20) + b"}"
    head = (f"POST /eureka/apps/ORDERS HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(big)}\r\n\r\n").encode()
    reply = raw_exchange(ferry.eureka_port, head + big)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # The same with a chunked body, whose size is only known while reading.
    chunked = head.replace(f"Content-Length: {len(big)}".encode(), b"Transfer-Encoding: chunked")
    chunk = b" " * 65536
    body = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 40 + b"0\r\n\r\n"
    reply = raw_exchange(ferry.eureka_port, chunked + body)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert metric(ferry, "ferry_registry_change_index") == index_before
    assert ferry.instances() == {}


def test_slow_bodies_get_408_and_stalled_headers_are_cut(start_ferry):
    ferry = start_ferry("--body-timeout", "0.5", "--idle-timeout", "1")
    started = time.monotonic()
    reply = raw_exchange(ferry.eureka_port,
                         b"POST /eureka/apps/ORDERS HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"instance\":")
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - started < 5
    started = time.monotonic()
    reply = raw_exchange(ferry.eureka_port, b"GET /eureka/apps HTTP/1.1\r\nHost: x\r\n")
    assert time.monotonic() - started < 5, "a connection that never finishes its headers is closed"
    assert ferry.instances() == {}


def test_malformed_http_and_bad_documents_get_4xx_and_ferry_keeps_serving(ferry):
    reply = raw_exchange(ferry.eureka_port, b"GARBAGE\r\n\r\n", read_timeout=3)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:100]
    url = ferry.eureka_url + "apps/ORDERS"
    assert httpx.post(url, content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    assert httpx.post(url, content=b"<instance>", headers={"Content-Type": "application/xml"}).status_code == 400
    assert httpx.post(url, content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
    assert httpx.post(url, content=b"{}").status_code == 415
    assert httpx.put(ferry.eureka_url + "apps/ORDERS/nobody").status_code == 404
    assert httpx.delete(ferry.eureka_url + "apps").status_code == 405
    assert ferry.instances() == {}
    assert register(ferry).status_code == 204


def test_expired_leases_are_evicted_only_without_self_preservation(start_ferry):
    preserving = start_ferry("--eureka-eviction-interval", "0.3")
    evicting = start_ferry("--eureka-self-preservation", "false", "--eureka-eviction-interval", "0.3")
    for ferry in (preserving, evicting):
        assert register(ferry).status_code == 204
    wait_until(lambda: evicting.instances() == {}, 10, what="eviction of the expired lease")
    delta = evicting.apps_json("apps/delta")["applications"]
    evicted = delta["application"][0]["instance"][0]
    assert evicted["actionType"] == "DELETED"
    assert evicted["leaseInfo"]["evictionTimestamp"] > 0
    assert "10.9.8.7:orders:8080" in preserving.instances(), "self-preservation keeps it"


def test_renewals_extend_a_lease_and_unknown_renewals_ask_for_registration(start_ferry):
    ferry = start_ferry("--eureka-self-preservation", "false", "--eureka-eviction-interval", "0.3")
    assert register(ferry).status_code == 204
    renew = ferry.eureka_url + "apps/ORDERS/10.9.8.7:orders:8080?status=UP&lastDirtyTimestamp=1700000000000"
    for _ in range(8):
        assert httpx.put(renew).status_code == 200
        time.sleep(0.5)
    assert "10.9.8.7:orders:8080" in ferry.instances()
    assert httpx.put(renew.replace("1700000000000", "1700000000001")).status_code == 404


def test_sigterm_finishes_cleanly_and_the_data_dir_is_exclusive(tmp_path):
    ferry = Ferry(tmp_path / "data").start()
    second = subprocess.run(
        [str(ferry_binary()), "--eureka-listen", "127.0.0.1:0", "--admin-listen", "off",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=10,
    )
    assert second.returncode != 0
    assert "in use by another ferry process" in second.stderr
    bad = subprocess.run([str(ferry_binary()), "--eureka-listen", "nowhere"], capture_output=True, text=True)
    assert bad.returncode == 2 and "neither HOST:PORT" in bad.stderr
    assert ferry.stop() == 0


def test_metrics_count_requests_by_api_and_status(ferry):
    register(ferry)
    ferry.get("apps/")
    text = httpx.get(ferry.admin_url + "/metrics").text
    assert 'ferry_http_requests_total{api="eureka",method="POST",status="204"} 1' in text
    assert 'ferry_http_requests_total{api="eureka",method="GET",status="200"}' in text
    assert metric(ferry, 'ferry_registry_instances{status="UP"}') == 1
    assert metric(ferry, 'ferry_registry_instances{status="DOWN"}') == 0, "every status is exported"
    assert httpx.get(ferry.admin_url + "/live").status_code == 200


def metric(ferry, name: str) -> float:
    for line in httpx.get(ferry.admin_url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_gzip_request_bodies_are_accepted(ferry):
    body = gzip.compress(json.dumps(REGISTRATION).encode())
    reply = httpx.post(ferry.eureka_url + "apps/ORDERS", content=body,
                       headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert reply.status_code == 204
    assert "10.9.8.7:orders:8080" in ferry.instances()


def test_override_metadata_and_hashcode_over_the_wire(ferry):
    assert register(ferry).status_code == 204
    second = json.loads(json.dumps(REGISTRATION))
    second["instance"].update(instanceId="10.9.8.6:orders:8080", hostName="10.9.8.6", ipAddr="10.9.8.6")
    assert register(ferry, second).status_code == 204
    base = ferry.eureka_url + "apps/ORDERS/10.9.8.7:orders:8080"
    assert httpx.put(base + "/status?value=OUT_OF_SERVICE&lastDirtyTimestamp=1700000000000").status_code == 200
    assert httpx.put(base + "/metadata?zone=eu-1&owner=payments").status_code == 200
    full = ferry.apps_json()["applications"]
    assert full["apps__hashcode"] == "OUT_OF_SERVICE_1_UP_1_"
    instance = ferry.instances()["10.9.8.7:orders:8080"]
    assert instance["metadata"] == {"zone": "eu-1", "owner": "payments"}
    assert instance["overriddenStatus"] == "OUT_OF_SERVICE"
    assert ferry.get("vips/orders").json()["applications"]["apps__hashcode"] == "OUT_OF_SERVICE_1_UP_1_"
    assert httpx.delete(base + "/status?value=UP").status_code == 200
    assert ferry.apps_json("apps/delta")["applications"]["apps__hashcode"] == "UP_2_"
    assert httpx.put(ferry.eureka_url + "apps/ORDERS/nobody/metadata?a=b").status_code == 404

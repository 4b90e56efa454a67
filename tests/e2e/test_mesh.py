"""The mesh data plane through real clients: services register with py-eureka-client (in the
sample service), a caller discovers them with py-eureka-client and calls what it gets; a
service is cut over with `ferry ctl` and rolled back, under load, and the proxy hides failing
instances, prefers the faster one, times out, and answers bad input with the right codes."""

import json
import subprocess
import sys
import threading
import time

import httpx

from harness import ROOT, PyEureka, app_instances, ctl, ferry_binary, free_port, raw_exchange, wait_until

SAMPLE = ROOT / "samples" / "python-eureka-service" / "service.py"


class Service:
    """samples/python-eureka-service, registered through py-eureka-client."""

    def __init__(self, ferry, app, *flags):
        self.port = free_port()
        self.id = f"{app}-{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, str(SAMPLE), "--app", app, "--port", str(self.port), "--eureka", ferry.eureka_url, *flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert json.loads(self.process.stdout.readline())["event"] == "registered"

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def addresses(watcher, app):
    """What a py-eureka-client caller would call: (host, port) of the UP instances it holds."""
    for application in watcher.client.applications.applications:
        if application.name == app:
            return sorted({(i.ipAddr, i.port.port) for i in application.instances if i.status == "UP"})
    return []


def test_cutover_and_rollback_change_what_a_real_client_calls(ferry, clients):
    first = clients(Service(ferry, "orders"))
    second = clients(Service(ferry, "orders"))
    caller = clients(PyEureka(ferry.eureka_url, should_register=False, renewal_interval_in_secs=1))
    direct = sorted([("127.0.0.1", first.port), ("127.0.0.1", second.port)])
    wait_until(lambda: addresses(caller, "ORDERS") == direct, 10, what="the caller to see both instances")

    output = ctl(ferry, "cutover", "orders", "mesh")
    port = int(output.strip().rsplit("port ", 1)[1].rstrip(")"))
    wait_until(lambda: addresses(caller, "ORDERS") == [("127.0.0.1", port)], 10,
               what="the caller's next delta to carry Ferry's outbound port")
    served = set()
    # P2C over peak EWMA favours the faster instance for a while; the other's estimate
    # decays until it is chosen too, so a bounded run of calls reaches both.
    for _ in range(300):
        if served == {first.id, second.id}:
            break
        host, mesh_port = addresses(caller, "ORDERS")[0]
        reply = httpx.get(f"http://{host}:{mesh_port}/orders/42", timeout=5)
        assert reply.status_code == 200
        body = reply.json()
        assert body["traceparent"] and body["b3_trace"], "the proxy adds trace headers"
        served.add(body["served_by"])
    assert served == {first.id, second.id}, "both instances answer through the proxy"
    assert "mesh" in ctl(ferry, "services")

    ctl(ferry, "cutover", "orders", "legacy")
    wait_until(lambda: addresses(caller, "ORDERS") == direct, 10, what="rollback to the real addresses")
    # A caller that still holds the mesh address is served until it refreshes.
    assert httpx.get(f"http://127.0.0.1:{port}/late", timeout=5).status_code == 200
    # The port is stable: cutting over again reuses it.
    assert f"port {port}" in ctl(ferry, "cutover", "orders", "mesh")


def test_no_request_fails_while_a_service_moves_in_and_out(ferry, clients):
    services = [clients(Service(ferry, "billing")), clients(Service(ferry, "billing"))]
    direct_ports = {service.port for service in services}
    caller = clients(PyEureka(ferry.eureka_url, should_register=False, renewal_interval_in_secs=1))
    wait_until(lambda: len(addresses(caller, "BILLING")) == 2, 10, what="both billing instances")
    outcomes = {"direct": 0, "proxied": 0, "failed": [], "error": None}
    stop = threading.Event()

    def steady_caller():
        try:
            with httpx.Client(timeout=5) as http:
                while not stop.is_set():
                    host, port = addresses(caller, "BILLING")[0]
                    try:
                        status = http.get(f"http://{host}:{port}/pay").status_code
                    except httpx.HTTPError as error:
                        status = repr(error)
                    if status == 200:
                        outcomes["direct" if port in direct_ports else "proxied"] += 1
                    else:
                        outcomes["failed"].append(status)
                    time.sleep(0.005)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread below
            outcomes["error"] = error

    def served_after(kind, more):
        """Waits until the caller has been served `more` further requests of `kind`."""
        target = outcomes[kind] + more
        wait_until(lambda: outcomes[kind] >= target or outcomes["error"], 30,
                   what=f"{more} more {kind} requests")

    worker = threading.Thread(target=steady_caller)
    worker.start()
    try:
        for mode in ["mesh", "legacy", "mesh", "legacy"]:
            output = ctl(ferry, "cutover", "billing", mode)
            if mode == "mesh":
                port = int(output.strip().rsplit("port ", 1)[1].rstrip(")"))
                wait_until(lambda: addresses(caller, "BILLING") == [("127.0.0.1", port)], 30,
                           what="the caller to hold the mesh address")
                served_after("proxied", 50)
            else:
                wait_until(lambda: {p for _, p in addresses(caller, "BILLING")} == direct_ports, 30,
                           what="the caller to hold the real addresses")
                served_after("direct", 50)
    finally:
        stop.set()
        worker.join()
    if outcomes["error"] is not None:
        raise outcomes["error"]
    assert outcomes["failed"] == [], outcomes["failed"][:5]
    assert outcomes["proxied"] >= 100 and outcomes["direct"] >= 100, outcomes
    assert metric_value(ferry, 'ferry_proxy_requests_total{service="BILLING"}') == outcomes["proxied"], \
        "every request the caller sent to the mesh port went through the proxy, once"


def metric_value(ferry, series):
    """The value of one series on /metrics, None when it is not exported."""
    for line in httpx.get(f"{ferry.admin_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return None


def test_failing_instances_are_hidden_by_retries_and_ejection(ferry, clients):
    clients(Service(ferry, "stock"))
    clients(Service(ferry, "stock", "--fail-with", "503"))
    # An instance that is registered but refuses connections.
    closed_port = free_port()
    registration = {"instance": {"instanceId": "stock-dead", "hostName": "127.0.0.1", "app": "STOCK",
                                 "ipAddr": "127.0.0.1", "port": {"$": closed_port, "@enabled": "true"},
                                 "dataCenterInfo": {"name": "MyOwn"}}}
    assert httpx.post(ferry.eureka_url + "apps/STOCK", json=registration).status_code == 204
    wait_until(lambda: len(app_instances(ferry, "STOCK")) == 3, 10, what="three stock instances")
    port = int(ctl(ferry, "cutover", "stock", "mesh").strip().rsplit("port ", 1)[1].rstrip(")"))
    statuses = [httpx.get(f"http://127.0.0.1:{port}/items", timeout=5).status_code for _ in range(60)]
    assert statuses == [200] * 60
    assert metric_value(ferry, 'ferry_proxy_retries_total{service="STOCK"}') > 0, "failures were retried"
    assert metric_value(ferry, 'ferry_proxy_ejections_total{service="STOCK",endpoint="stock-dead"}') >= 1
    figures = ctl(ferry, "service", "stock")
    assert "requests 60," in figures, figures
    dead = next(line for line in figures.splitlines() if line.startswith("stock-dead "))
    assert int(dead.split()[-1]) >= 1, f"the refused instance shows as ejected: {figures}"



def test_a_5xx_is_retried_only_for_idempotent_methods(ferry, clients):
    clients(Service(ferry, "ledger", "--fail-with", "503"))
    wait_until(lambda: len(app_instances(ferry, "LEDGER")) == 1, 10, what="the ledger instance")
    port = int(ctl(ferry, "cutover", "ledger", "mesh").strip().rsplit("port ", 1)[1].rstrip(")"))

    def retries():
        return metric_value(ferry, 'ferry_proxy_retries_total{service="LEDGER"}') or 0.0

    assert httpx.post(f"http://127.0.0.1:{port}/entries", content=b"{}", timeout=5).status_code == 503
    assert retries() == 0, "a POST reached the service: its 503 is passed on, never replayed"
    assert httpx.get(f"http://127.0.0.1:{port}/entries", timeout=5).status_code == 503
    assert retries() >= 1, "a GET is retried before the 503 is passed on"


def test_the_faster_instance_gets_most_of_the_traffic(ferry, clients):
    fast = clients(Service(ferry, "quotes"))
    # 150 ms apart: more than a busy machine adds to the fast one's answers.
    clients(Service(ferry, "quotes", "--delay-ms", "150"))
    wait_until(lambda: len(app_instances(ferry, "QUOTES")) == 2, 10, what="two quote instances")
    port = int(ctl(ferry, "cutover", "quotes", "mesh").strip().rsplit("port ", 1)[1].rstrip(")"))
    served = []
    lock = threading.Lock()

    def calls():
        with httpx.Client(timeout=5) as http:
            for _ in range(40):
                body = http.get(f"http://127.0.0.1:{port}/quote").json()
                with lock:
                    served.append(body["served_by"])

    threads = [threading.Thread(target=calls) for _ in range(6)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    share = served.count(fast.id) / len(served)
    # Round robin would give each half; peak EWMA gives the fast one most of it.
    assert share > 0.65, f"the fast instance served {share:.0%}"


def test_timeouts_missing_endpoints_and_bad_http(start_ferry, clients):
    ferry = start_ferry("--proxy-request-timeout", "0.5", "--max-header-bytes", "8192")
    # The instance answers after 20 s: a 504 well before that is the proxy's timeout.
    clients(Service(ferry, "slow", "--delay-ms", "20000"))
    wait_until(lambda: len(app_instances(ferry, "SLOW")) == 1, 10, what="the slow instance")
    slow_port = int(ctl(ferry, "cutover", "slow", "mesh").strip().rsplit("port ", 1)[1].rstrip(")"))
    started = time.monotonic()
    reply = httpx.get(f"http://127.0.0.1:{slow_port}/", timeout=15)
    assert reply.status_code == 504 and reply.headers["x-ferry-error"] == "timeout"
    assert time.monotonic() - started < 8, "the 0.5 s timeout, not the instance's answer"

    empty_port = int(ctl(ferry, "cutover", "ghost", "mesh").strip().rsplit("port ", 1)[1].rstrip(")"))
    reply = httpx.get(f"http://127.0.0.1:{empty_port}/", timeout=5)
    assert reply.status_code == 503 and reply.headers["x-ferry-error"] == "no-endpoints"

    assert raw_exchange(empty_port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400")
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert raw_exchange(empty_port, huge).startswith(b"HTTP/1.1 431")
    assert httpx.get(f"http://127.0.0.1:{empty_port}/", timeout=5).status_code == 503, "still serving"


def test_the_admin_api_refuses_bad_modes(ferry):
    reply = httpx.put(f"{ferry.admin_url}/api/services/orders", json={"mode": "sideways"})
    assert reply.status_code == 400
    result = subprocess.run([str(ferry_binary()), "ctl", "--admin", f"127.0.0.1:{ferry.admin_port}",
                             "cutover", "orders", "sideways"], capture_output=True, text=True)
    assert result.returncode == 2 and "mesh" in result.stderr, "a usage error, before any request"
    assert httpx.get(f"{ferry.admin_url}/api/services/orders").status_code == 404, \
        "orders, never registered nor cut over, is still unknown"


def test_open_connections_are_counted(ferry, clients):
    clients(Service(ferry, "counter"))
    wait_until(lambda: len(app_instances(ferry, "COUNTER")) == 1, 10, what="the counter instance")
    port = int(ctl(ferry, "cutover", "counter", "mesh").strip().rsplit("port ", 1)[1].rstrip(")"))

    def open_connections():
        for line in httpx.get(f"{ferry.admin_url}/metrics").text.splitlines():
            if line.startswith('ferry_proxy_open_connections{service="COUNTER"}'):
                return float(line.split()[1])
        return None

    with httpx.Client(timeout=5) as keep_alive:
        for _ in range(5):
            assert keep_alive.get(f"http://127.0.0.1:{port}/").status_code == 200
        assert open_connections() == 1, "one keep-alive connection, however many requests"
    wait_until(lambda: open_connections() == 0, 5, what="the closed connection to be counted out")


def test_a_config_file_pins_services_and_sets_per_service_timeouts(start_ferry, clients, tmp_path):
    config = tmp_path / "ferry.toml"
    config.write_text(
        '# The command line wins: the harness passes its own admin address.\n'
        'admin-listen = "127.0.0.1:1"\n'
        'proxy-request-timeout = 10\n'
        '[services.pinned]\nmode = "mesh"\n'
        '[services.slowpoke]\nrequest-timeout = 0.3\n')
    ferry = start_ferry("--config", str(config))
    assert httpx.get(f"{ferry.admin_url}/api/services/pinned").json()["mode"] == "mesh"
    clients(Service(ferry, "slowpoke", "--delay-ms", "20000"))
    clients(Service(ferry, "patient", "--delay-ms", "1500"))
    wait_until(lambda: len(app_instances(ferry, "SLOWPOKE")) == 1 and len(app_instances(ferry, "PATIENT")) == 1,
               10, what="both instances")
    slowpoke = int(ctl(ferry, "cutover", "slowpoke", "mesh").strip().rsplit("port ", 1)[1].rstrip(")"))
    patient = int(ctl(ferry, "cutover", "patient", "mesh").strip().rsplit("port ", 1)[1].rstrip(")"))
    started = time.monotonic()
    assert httpx.get(f"http://127.0.0.1:{slowpoke}/", timeout=15).status_code == 504
    assert time.monotonic() - started < 8, "the per-service 0.3 s timeout, not the default 10 s"
    assert httpx.get(f"http://127.0.0.1:{patient}/", timeout=5).status_code == 200

    bad = tmp_path / "bad.toml"
    bad.write_text('no-such-setting = 1\n')
    result = subprocess.run([str(ferry_binary()), "--config", str(bad)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 2 and "not a ferry setting" in result.stderr


def cut_over(ferry, name):
    return int(ctl(ferry, "cutover", name, "mesh").strip().rsplit("port ", 1)[1].rstrip(")"))


def test_balancer_and_max_attempts_come_from_the_config_file(start_ferry, clients, tmp_path):
    config = tmp_path / "ferry.toml"
    config.write_text('[services.turns]\nbalancer = "round-robin"\n'
                      '[services.once]\nmax-attempts = 1\n')
    ferry = start_ferry("--config", str(config))
    fast = clients(Service(ferry, "turns"))
    slow = clients(Service(ferry, "turns", "--delay-ms", "150"))
    clients(Service(ferry, "once", "--fail-with", "503"))
    clients(Service(ferry, "twice", "--fail-with", "503"))
    wait_until(lambda: all(len(app_instances(ferry, app)) == n for app, n in
                           [("TURNS", 2), ("ONCE", 1), ("TWICE", 1)]), 10, what="the instances")

    # Round robin takes turns whatever the latency (peak EWMA would favour the fast one).
    turns = cut_over(ferry, "turns")
    with httpx.Client(timeout=10) as http:
        served = [http.get(f"http://127.0.0.1:{turns}/").json()["served_by"] for _ in range(12)]
    assert sorted(set(served)) == sorted({fast.id, slow.id})
    assert all(a != b for a, b in zip(served, served[1:])), f"strict turns: {served}"

    # max-attempts = 1: a GET's 503 is passed on untried elsewhere; the default retries it.
    once, twice = cut_over(ferry, "once"), cut_over(ferry, "twice")
    assert httpx.get(f"http://127.0.0.1:{once}/", timeout=10).status_code == 503
    assert httpx.get(f"http://127.0.0.1:{twice}/", timeout=10).status_code == 503
    assert metric_value(ferry, 'ferry_proxy_requests_total{service="ONCE"}') == 1
    assert (metric_value(ferry, 'ferry_proxy_retries_total{service="ONCE"}') or 0) == 0
    assert metric_value(ferry, 'ferry_proxy_retries_total{service="TWICE"}') >= 1


def register_raw(ferry, app, instance_id, port):
    registration = {"instance": {"instanceId": instance_id, "hostName": "127.0.0.1", "app": app,
                                 "ipAddr": "127.0.0.1", "port": {"$": port, "@enabled": "true"},
                                 "dataCenterInfo": {"name": "MyOwn"}}}
    assert httpx.post(ferry.eureka_url + f"apps/{app}", json=registration, timeout=5).status_code == 204


class Named:
    """A local HTTP server answering 200 with `{"served_by": name}`."""

    def __init__(self, port, name):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = json.dumps({"served_by": name}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_failed_connect_is_502_and_an_ejected_instance_is_probed_back(ferry, clients):
    dead_port = free_port()
    register_raw(ferry, "PARTS", "parts-dead", dead_port)
    port = cut_over(ferry, "parts")
    reply = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert reply.status_code == 502 and reply.headers["x-ferry-error"] == "connection-failed"

    live = clients(Service(ferry, "parts"))
    wait_until(lambda: len(app_instances(ferry, "PARTS")) == 2, 10, what="the live instance")
    ejections = 'ferry_proxy_ejections_total{service="PARTS",endpoint="parts-dead"}'

    def served_once():
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        return metric_value(ferry, ejections)

    wait_until(served_once, 30, interval=0, what="the dead instance to be ejected")
    # The instance comes back on its port: a probe after the backoff finds it and it serves again.
    clients(Named(dead_port, "revived"))

    def revived_serves():
        body = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).json()
        assert body["served_by"] in ("revived", live.id)
        return body["served_by"] == "revived"

    wait_until(revived_serves, 60, interval=0.1, what="the ejected instance to be probed back")

"""The training run of the release build's profile (scripts/build-release.sh): an instrumented
`ferry` on loopback, driven through what a node does all day — Eureka registrations, renewals
and fetches, Consul registrations, health and KV reads with blocking queries, Spring Cloud
Config fetches, admin reads, and a cut-over service's traffic through the proxy, HTTP/1.1
with keep-alive — then stopped with SIGTERM so that it writes its profile.

LLVM then lays the functions this run never executed out of the way (`.text.unlikely`, which
the linker groups), so the pages a running node touches sit together: the kernel maps a
binary's code in 64 KB windows around each page touched, and start-up and error paths
scattered among hot code kept most of the binary resident. The counts do not need to be
realistic, only to cover what runs on every node; a path not trained still works, it is
only laid out as cold code. Two sidecar nodes on a one-member etcd (mutual TLS between
them, one signing, one joined with a token) train the sidecar's paths too, unless
FERRY_PGO_SIDECAR=0; with FERRY_PGO_ROLES=DIR each role's profile is written apart
(DIR/single-*, DIR/sidecar-*, DIR/tool-* for `ferry ca`), for scripts/code_order.py.

With FERRY_PGO_TRACE_DIR=DIR the same run, a twentieth of its requests, goes through
valgrind's callgrind instead: each node's list of every function it executed lands in
DIR/ROLE-PID.callgrind. The profile sees only code compiled with its instrumentation, not
Rust's precompiled standard library, glibc or ring's C and assembly; the build orders those
by this list (scripts/code_order.py).

Usage: pgo_train.py BINARY WORK_DIR (needs only Python's standard library; etcd for the
sidecar nodes, valgrind for FERRY_PGO_TRACE_DIR)."""

import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Under callgrind a node runs some fifty times slower: fewer requests, longer waits.
TRACE_DIR = os.environ.get("FERRY_PGO_TRACE_DIR")
SCALE = 20 if TRACE_DIR else 1
PATIENCE = 10 if TRACE_DIR else 1

STATUSES: dict[int, int] = {}
STATUS_LOCK = threading.Lock()


class Client:
    """One keep-alive connection; a request's status and body (statuses are counted)."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * PATIENCE)

    def call(self, method: str, path: str, body=None, headers=None) -> tuple[int, bytes]:
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        body = response.read()
        with STATUS_LOCK:
            STATUSES[response.status] = STATUSES.get(response.status, 0) + 1
        return response.status, body


def instance(app: str, number: int, port: int) -> dict:
    return {"instance": {
        "instanceId": f"{app.lower()}-{number}", "hostName": "127.0.0.1", "app": app,
        "ipAddr": "127.0.0.1", "status": "UP", "port": {"$": port, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"}, "vipAddress": app.lower(),
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": {"zone": "a", "version": str(number)},
    }}


def eureka_traffic(port: int, rounds: int):
    client = Client(port)
    for app in ("ORDERS", "CHECKOUT", "STOCK", "USERS"):
        for number in range(5):
            client.call("POST", f"/eureka/apps/{app}", instance(app, number, 8000 + number))
    for round_ in range(rounds):
        for app in ("ORDERS", "CHECKOUT", "STOCK", "USERS"):
            for number in range(5):
                client.call("PUT", f"/eureka/apps/{app}/{app.lower()}-{number}?status=UP&lastDirtyTimestamp=1")
        client.call("GET", "/eureka/apps/", headers={"Accept": "application/json", "Accept-Encoding": "gzip"})
        client.call("GET", "/eureka/apps/delta", headers={"Accept": "application/json"})
        if round_ % 5 == 0:
            client.call("GET", "/eureka/apps/", headers={"Accept": "application/xml"})
            client.call("GET", "/eureka/apps/ORDERS", headers={"Accept": "application/json"})
            client.call("GET", "/eureka/vips/orders", headers={"Accept": "application/json"})
            client.call("PUT", "/eureka/apps/USERS/users-4/status?value=OUT_OF_SERVICE")
            client.call("DELETE", "/eureka/apps/USERS/users-4/status?value=UP")
    client.call("DELETE", "/eureka/apps/USERS/users-3")


def consul_traffic(port: int, rounds: int):
    client = Client(port)
    for number in range(5):
        client.call("PUT", "/v1/agent/service/register", {
            "ID": f"billing-{number}", "Name": "billing", "Address": "127.0.0.1", "Port": 9000 + number,
            "Tags": ["v1"], "Meta": {"zone": "a"}, "Check": {"TTL": "30s"}})
    index = "0"
    for round_ in range(rounds):
        for number in range(5):
            client.call("PUT", f"/v1/agent/check/pass/service:billing-{number}")
        status, _ = client.call("GET", f"/v1/health/service/billing?passing=true&index={index}&wait=10ms")
        client.call("GET", "/v1/catalog/services")
        client.call("GET", "/v1/catalog/service/orders")
        client.call("PUT", f"/v1/kv/config/billing/data?cas=0", body=f"round {round_}")
        client.call("PUT", f"/v1/kv/config/billing/round", body=str(round_))
        client.call("GET", "/v1/kv/config/?recurse=true")
        client.call("GET", "/v1/kv/config/billing/round?raw")
        if round_ % 10 == 0:
            status, body = client.call("PUT", "/v1/session/create", {"TTL": "30s"})
            if status == 200:
                session = json.loads(body)["ID"]
                client.call("PUT", f"/v1/kv/locks/billing?acquire={session}", body="me")
                client.call("PUT", f"/v1/kv/locks/billing?release={session}", body="me")
                client.call("PUT", f"/v1/session/destroy/{session}")
    client.call("DELETE", "/v1/kv/config/billing/data")


def config_traffic(port: int, rounds: int):
    client = Client(port)
    for _ in range(rounds):
        client.call("GET", "/billing/default")
        client.call("GET", "/billing/dev/main")
        client.call("GET", "/billing-dev.yml")
        client.call("GET", "/billing-dev.properties")


def proxy_traffic(port: int, requests: int):
    client = Client(port)
    for number in range(requests):
        path = "/eureka/apps/TRAINED" if number % 50 else "/eureka/apps/NOT-THERE"
        client.call("GET", path, headers={"Accept": "application/json"})
        if number % 200 == 0:
            client.call("POST", "/eureka/apps/TRAINED", body="not json",
                        headers={"Content-Type": "application/json"})


class PlainApp(http.server.BaseHTTPRequestHandler):
    """An app answering as nginx or Tomcat do (HTTP/1.1 keep-alive, `Connection: keep-alive`,
    a text body), which closes a connection idle for a second as servers do, so that the
    proxy's pool sees its connections go."""
    protocol_version = "HTTP/1.1"
    timeout = 1

    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "keep-alive")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

    def log_error(self, *args):
        pass


def plain_app() -> int:
    """A PlainApp serving on a free loopback port, for the rest of the run; its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PlainApp)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def plain_traffic(port: int, requests: int):
    client = Client(port)
    for _ in range(requests):
        client.call("GET", "/plain")


def role_env(role: str) -> dict | None:
    """The environment of a process of `role` ("single", "sidecar", "tool"): with
    FERRY_PGO_ROLES=DIR, its profile goes to DIR/ROLE-*.profraw, so that the build can tell
    which code each role runs (scripts/code_order.py) as well as merge them all. A traced
    run's profile is not the training's (its counts are a twentieth): it stays in the trace
    folder."""
    roles = TRACE_DIR or os.environ.get("FERRY_PGO_ROLES")
    if not roles:
        return None
    return {**os.environ, "LLVM_PROFILE_FILE": f"{roles}/{role}-%p.profraw"}


def node_command(binary: str, role: str) -> list[str]:
    """How a node of `role` is started: the binary itself, or under callgrind when tracing
    (mangled names, as the linker's order wants them; no per-instruction data)."""
    if not TRACE_DIR:
        return [binary]
    return ["valgrind", "-q", "--tool=callgrind", "--demangle=no", "--dump-instr=no", "--compress-strings=no",
            f"--callgrind-out-file={TRACE_DIR}/{role}-%p.callgrind", binary]


def start_node(binary: str, work: Path, name: str, threads: int, *extra: str,
               role: str = "single") -> tuple[subprocess.Popen, dict]:
    """A node on free loopback ports, ready; its process and ports. One worker thread runs
    tokio's current-thread scheduler, more its multi-thread one: the runs train both."""
    ports = {key: free_port() for key in ("eureka", "consul", "config", "admin", "outbound", "inbound")}
    node = subprocess.Popen([
        *node_command(binary, role), "--log", "warn", "--worker-threads", str(threads), "--node-name", name,
        "--eureka-listen", f"127.0.0.1:{ports['eureka']}", "--consul-listen", f"127.0.0.1:{ports['consul']}",
        "--config-listen", f"127.0.0.1:{ports['config']}", "--admin-listen", f"127.0.0.1:{ports['admin']}",
        "--outbound-ports", f"{ports['outbound']}-{ports['outbound'] + 20}",
        "--inbound-listen", f"127.0.0.1:{ports['inbound']}",
        "--config-repo", str(work / "config"), "--data-dir", str(work / f"data-{name}"), *extra], env=role_env(role))
    deadline = time.monotonic() + 60 * PATIENCE
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise SystemExit(f"pgo_train.py: node {name} exited with {node.returncode}")
        try:
            if Client(ports["admin"]).call("GET", "/ready")[0] == 200:
                return node, ports
        except OSError:
            pass
        time.sleep(0.1)
    node.kill()
    raise SystemExit(f"pgo_train.py: node {name} was not ready within {60 * PATIENCE} s")


def stop(*processes: subprocess.Popen):
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            # A traced node writes its callgrind file as it exits: it must not be killed.
            process.wait(timeout=30 * PATIENCE)
        except subprocess.TimeoutExpired:
            process.kill()


def cut_over(admin_port: int, eureka_port: int, service: str, instance_port: int) -> int:
    """`service` registered at `instance_port` through `eureka_port`, cut over; its outbound port."""
    Client(eureka_port).call("POST", f"/eureka/apps/{service}", instance(service, 1, instance_port))
    status, body = Client(admin_port).call("POST", f"/api/services/{service}", {"mode": "mesh"})
    port = json.loads(body).get("port") if status == 200 else None
    if not port:
        raise SystemExit(f"pgo_train.py: the cutover of {service} failed ({status} {body!r})")
    return port


def run_threads(workers: list[threading.Thread], admin_port: int):
    for worker in workers:
        worker.start()
    admin = Client(admin_port)
    for _ in range(20):
        admin.call("GET", "/metrics")
        admin.call("GET", "/api/services")
        time.sleep(0.05)
    for worker in workers:
        worker.join()


def let_timers_run():
    """Twelve quiet seconds with the nodes up: their timers run at least once (the etcd
    lease's keep-alive and the node's refresh every 5 s, the traffic history's 10 s
    interval, an idle blocking thread ending after 10 s), code every long-lived node runs
    that a burst of requests never reaches."""
    time.sleep(12)


def single_node(binary: str, work: Path):
    """The embedded default: every view and the proxy on one node."""
    node, ports = start_node(binary, work, "single", 1)
    try:
        # The service the proxy carries: this node's own Eureka listener, as TRAINED.
        outbound = cut_over(ports["admin"], ports["eureka"], "TRAINED", ports["eureka"])
        plain = cut_over(ports["admin"], ports["eureka"], "PLAIN", plain_app())
        run_threads([
            threading.Thread(target=plain_traffic, args=(plain, 2000 // SCALE)),
            threading.Thread(target=eureka_traffic, args=(ports["eureka"], 60 // SCALE + 1)),
            threading.Thread(target=consul_traffic, args=(ports["consul"], 60 // SCALE + 1)),
            threading.Thread(target=config_traffic, args=(ports["config"], 30 // SCALE + 1)),
            *[threading.Thread(target=proxy_traffic, args=(outbound, 3000 // SCALE)) for _ in range(3)],
        ], ports["admin"])
        let_timers_run()
        for service in ("TRAINED", "PLAIN"):
            Client(ports["admin"]).call("POST", f"/api/services/{service}", {"mode": "legacy"})
    finally:
        stop(node)


def through_mesh(admin_port: int, service: str, path: str) -> int:
    """The caller's outbound port for `service` once a call to `path` crosses the hop."""
    admin = Client(admin_port)
    deadline = time.monotonic() + 30 * PATIENCE
    while time.monotonic() < deadline:
        status, body = admin.call("GET", f"/api/services/{service}")
        port = json.loads(body).get("port") if status == 200 else None
        try:
            if port and Client(port).call("GET", path)[0] == 200:
                return port
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"pgo_train.py: calls to {service} through the sidecar hop did not succeed within "
                     f"{30 * PATIENCE} s")


def many_hosts(binary: str, work: Path, etcd: str):
    """Two nodes on a one-member etcd, in sidecar mode with mutual TLS between them."""
    client, peer = free_port(), free_port()
    member = subprocess.Popen([
        etcd, "--name", "train", "--data-dir", str(work / "etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"train=http://127.0.0.1:{peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes: list[subprocess.Popen] = []
    try:
        store = f"etcd://127.0.0.1:{client}"
        initialised = subprocess.run([binary, "ca", "init", "--trust-domain", "train.local", "--dir",
                                      str(work / "ca")], capture_output=True, text=True, check=True,
                                     env=role_env("tool"))
        fingerprint = next(line.split(": ", 1)[1] for line in initialised.stdout.splitlines()
                           if line.startswith("root SHA-256: "))
        # A short lease, so that its keep-alive (every third of it) runs within the run.
        lease = ("--store-lease-ttl", "15")
        keeper, keeper_ports = start_node(binary, work, "node-b", 1, "--store", store, "--ca-issuer", str(work / "ca"),
                                          *lease, role="sidecar")
        nodes.append(keeper)
        token = subprocess.run([binary, "ca", "token", "--node", "node-a", "--ttl", "10m", "--store", store],
                               capture_output=True, text=True, check=True,
                               env=role_env("tool")).stdout.strip().splitlines()[-1]
        caller, caller_ports = start_node(binary, work, "node-a", 2, "--store", store, "--join-token", token,
                                          "--ca-root-sha256", fingerprint, *lease, role="sidecar")
        nodes.append(caller)
        # B keeps the instances (its own Eureka listener, a plain app); A's calls cross the
        # TLS hop.
        cut_over(caller_ports["admin"], keeper_ports["eureka"], "TRAINED", keeper_ports["eureka"])
        cut_over(caller_ports["admin"], keeper_ports["eureka"], "PLAIN", plain_app())
        two_hops = through_mesh(caller_ports["admin"], "TRAINED", "/eureka/apps/TRAINED")
        plain = through_mesh(caller_ports["admin"], "PLAIN", "/plain")
        run_threads([
            threading.Thread(target=plain_traffic, args=(plain, 1000 // SCALE)),
            threading.Thread(target=eureka_traffic, args=(caller_ports["eureka"], 20 // SCALE + 1)),
            threading.Thread(target=consul_traffic, args=(keeper_ports["consul"], 20 // SCALE + 1)),
            *[threading.Thread(target=proxy_traffic, args=(two_hops, 2000 // SCALE)) for _ in range(3)],
        ], caller_ports["admin"])
        let_timers_run()
        _, metrics = Client(keeper_ports["admin"]).call("GET", "/metrics")
        inbound = [line for line in metrics.decode().splitlines() if line.startswith("ferry_inbound_requests")]
        if not inbound or float(inbound[0].split()[-1]) < 1000 // SCALE:
            raise SystemExit(f"pgo_train.py: the calls did not cross node B's inbound listener ({inbound})")
    finally:
        stop(*reversed(nodes))
        stop(member)


def main():
    binary, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    repo = work / "config"
    repo.mkdir(exist_ok=True)
    (repo / "billing.yml").write_text("greeting: hello\nlimits:\n  orders: 10\n")
    (repo / "billing-dev.yml").write_text("greeting: hello dev\n")
    single_node(binary, work)
    if os.environ.get("FERRY_PGO_SIDECAR", "1") != "0":
        etcd = shutil.which(os.environ.get("FERRY_ETCD_BIN", "etcd"))
        if not etcd:
            raise SystemExit("pgo_train.py: FERRY_PGO_SIDECAR needs etcd (scripts/install-etcd.sh)")
        many_hosts(binary, work, etcd)
    print(f"pgo_train.py: answers by status {dict(sorted(STATUSES.items()))}", file=sys.stderr)
    if sum(count for status, count in STATUSES.items() if status < 300) < 10_000 // SCALE:
        raise SystemExit("pgo_train.py: too few requests succeeded to train on")


if __name__ == "__main__":
    main()

"""Many Ferry nodes on one etcd (issue 14), side by side with the embedded default, in one
run on this machine.

Run with `bench/etcd.sh` (it builds the release binary and bench/loadgen). Starts a
three-member etcd 3.4 on loopback (fsync on, data in the run's temporary folder), three
Ferry nodes on it (`--store etcd://...`, A, B and C) and one embedded-default Ferry (E),
all release builds with their default settings (one worker thread per core), then:

1. Registration to visibility: `--registrations` Eureka registrations, one at a time,
   through A, each timed from its POST being sent until a Consul health blocking query on
   B (sent before the POST) answers with it, and until B's `/eureka/apps/APP/ID` answers
   200 (polled once that query answered); the same through A read on A, and on E alone
   (bench/loadgen `visibility`).
2. `--watchers` Consul health blocking queries on B woken by a Eureka registration made
   through C, `--rounds` times; the same with watchers and writer on E (bench/loadgen
   `service-watchers`). Latency from the registration's POST being sent to each answer.
3. `--instances` instances (bench/register.py's documents, an hour's lease, 20 to an app)
   registered across A, B and C (a third each, one client per node, all at once) and
   `--instances` on E: RSS of every process; then a fourth etcd node D is started: time from
   its process start to `/ready` 200, and to its `/eureka/apps` listing every instance
   and its own Config Server (`CONFIGSERVER` at its config port), polled every 20 ms
   (`/ready`) and 50 ms (the listing, a 9 MB document whose fetch and count take tens of ms).
4. Eureka renewals per second per node: wrk `-t1 -c--connections -d--seconds` with
   bench/renew.lua over the instances each node registered, one node at a time (A, B, C,
   then E); etcd's revision is read before and after each etcd node's run (renewals never
   reach etcd: it must not move).

Prints a Markdown section; `--record` appends it to bench/RESULTS.md. Every process it
starts writes its pid to `--work`/NAME.pid (bench/etcd.sh's trap kills them if this script
cannot) and is stopped at the end.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.estate import cpu_seconds, publish, status_kb  # noqa: E402
from bench.register import instance  # noqa: E402

DEFAULTS = {"registrations": 300, "watchers": 1000, "rounds": 5, "instances": 10000,
            "seconds": 10, "connections": 16, "etcd_port": 42379}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Nothing listens on PORT (connections of an earlier run waiting in TIME_WAIT do not
    matter: etcd binds with SO_REUSEADDR too)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def get(port: int, path: str, timeout: float = 10, headers: dict | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until(predicate, timeout: float, interval: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Processes:
    """Every process this run starts; each one's pid also in WORK/NAME.pid."""

    def __init__(self, work: Path):
        self.work = work
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        out = open(self.work / f"{name}.log", "ab")
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        (self.work / f"{name}.pid").write_text(str(process.pid))
        self.started.append((name, process))
        return process

    def close(self) -> None:
        for _, process in self.started:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for _, process in self.started:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Ferry:
    def __init__(self, processes: Processes, binary: str, name: str, store: str | None):
        self.name = name
        self.eureka, self.consul, self.config, self.admin = (free_port() for _ in range(4))
        args = [binary, "--eureka-listen", f"127.0.0.1:{self.eureka}", "--consul-listen", f"127.0.0.1:{self.consul}",
                "--config-listen", f"127.0.0.1:{self.config}", "--admin-listen", f"127.0.0.1:{self.admin}",
                "--data-dir", str(processes.work / f"{name}-data"), "--node-name", name, "--log", "warn"]
        if store:
            args += ["--store", store]
        self.started = time.monotonic()
        self.process = processes.start(name, args)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
        try:
            return get(self.admin, "/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(self.ready, timeout, 0.05, f"{self.name} /ready")

    def rss_mb(self, key: str = "VmRSS") -> float:
        return status_kb(self.process.pid, key) / 1024


def start_etcd(processes: Processes, base: int) -> tuple[str, list[subprocess.Popen]]:
    """Three members: client ports BASE+1..3, peer ports BASE+11..13, data on disk (fsync on)."""
    ports = [(base + i, base + 10 + i) for i in (1, 2, 3)]
    busy = [port for pair in ports for port in pair if not port_free(port)]
    if busy:
        raise SystemExit(f"ports {busy} are taken: set ETCD_PORT to another base (now {base})")
    cluster = ",".join(f"e{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports, 1))
    members = []
    for i, (client, peer) in enumerate(ports, 1):
        members.append(processes.start(f"etcd-{i}", [
            "etcd", "--name", f"e{i}", "--data-dir", str(processes.work / f"etcd-{i}"),
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", cluster, "--initial-cluster-token", f"ferry-bench-{os.getpid()}",
            "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn"]))
    endpoints = ",".join(f"127.0.0.1:{client}" for client, _ in ports)

    def healthy() -> bool:
        return subprocess.run(["etcdctl", f"--endpoints={endpoints}", "endpoint", "health"],
                              capture_output=True, timeout=10).returncode == 0
    wait_until(healthy, 60, 0.5, "etcd's three members healthy")
    return endpoints, members


def etcd_status(endpoints: str) -> dict:
    """The first member's revision and the largest database size, from `endpoint status`."""
    out = subprocess.run(["etcdctl", f"--endpoints={endpoints}", "endpoint", "status", "-w", "json"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    members = json.loads(out)
    return {"revision": members[0]["Status"]["header"]["revision"],
            "db_mb": max(member["Status"]["dbSize"] for member in members) / 1e6}


def changed_since(endpoints: str, revision: int) -> dict[str, int]:
    """How many of Ferry's keys in etcd were written after REVISION, by the kind of key
    (`inst`: registrations, `nodes`: the nodes' own keys, refreshed every 5 s with the
    revision each has applied, ...)."""
    out = subprocess.run(["etcdctl", f"--endpoints={endpoints}", "get", "/ferry/v1/", "--prefix", "--keys-only",
                          "-w", "json"], capture_output=True, text=True, check=True, timeout=30).stdout
    kinds: dict[str, int] = {}
    for kv in json.loads(out).get("kvs", []):
        if kv["mod_revision"] > revision:
            kind = base64.b64decode(kv["key"]).decode().removeprefix("/ferry/v1/").split("/")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def loadgen(binary: str, *args) -> dict:
    result = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"loadgen {args[0]} failed: {result.stdout}{result.stderr}")
    line = result.stdout.strip().splitlines()[-1]
    log(f"loadgen {args[0]}: {line}")
    return dict(pair.split("=", 1) for pair in line.split())


def register_range(port: int, first: int, count: int, total: int, ids_path: Path) -> float:
    """Instances FIRST..FIRST+COUNT of bench/register.py's layout for TOTAL instances (20 to an
    app, apps shared by every node), with an hour's lease, over one keep-alive connection.
    Writes their renewal paths to IDS_PATH; returns the seconds it took."""
    apps = max(1, total // 20)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    now = str(int(time.time() * 1000))
    ids = []
    began = time.monotonic()
    for n in range(first, first + count):
        app = f"SERVICE-{n % apps:04d}"
        ip = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
        instance_id = f"{ip}:{app.lower()}:8080"
        connection.request("POST", f"/eureka/apps/{app}", json.dumps(instance(app, instance_id, ip, now, lease_seconds=3600)),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 204:
            raise RuntimeError(f"registration {n} on port {port} answered {response.status}")
        ids.append(f"/eureka/apps/{app}/{instance_id}?status=UP&lastDirtyTimestamp={now}")
    connection.close()
    ids_path.write_text("\n".join(ids) + "\n")
    return time.monotonic() - began


def listing(ferry: Ferry) -> tuple[int, bool]:
    """How many instances but Config Servers `/eureka/apps` lists on FERRY, and whether its own
    Config Server (CONFIGSERVER at its config port) is among them."""
    status, body = get(ferry.eureka, "/eureka/apps", timeout=30, headers={"Accept": "application/json"})
    if status != 200:
        return 0, False
    total = body.count(b'"instanceId"')
    status, config = get(ferry.eureka, "/eureka/apps/CONFIGSERVER", headers={"Accept": "application/json"})
    servers = config.count(b'"instanceId"') if status == 200 else 0
    own = status == 200 and re.search(rb'"port"\s*:\s*\{\s*"\$"\s*:\s*"?%d\b' % ferry.config, config) is not None
    return total - servers, own


def fourth_node(processes: Processes, binary: str, store: str | None, name: str, expected: int) -> dict:
    """Starts a node and times it from its process start to /ready and to a full listing."""
    ferry = Ferry(processes, binary, name, store)
    result: dict = {}
    deadline = ferry.started + 300
    while "ready" not in result and time.monotonic() < deadline:
        if ferry.ready():
            result["ready"] = time.monotonic() - ferry.started
        else:
            time.sleep(0.02)
    while "listed" not in result and time.monotonic() < deadline:
        count, own = listing(ferry)
        if count >= expected and own:
            result["listed"] = time.monotonic() - ferry.started
        else:
            time.sleep(0.05)
    if "listed" not in result:
        raise TimeoutError(f"{name} never listed {expected} instances and its Config Server")
    result["rss"] = ferry.rss_mb()
    result["cpu"] = cpu_seconds(ferry.process.pid)
    result["ferry"] = ferry
    log(f"{name}: ready after {result['ready']:.3f} s, listing complete after {result['listed']:.3f} s")
    return result


def renewals(ferry: Ferry, ids: Path, seconds: int, connections: int) -> float:
    env = dict(os.environ, FERRY_BENCH_IDS=str(ids))
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
                          str(ROOT / "bench" / "renew.lua"), f"http://127.0.0.1:{ferry.eureka}"],
                         capture_output=True, text=True, env=env, timeout=seconds + 60, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"renewals on {ferry.name} had errors:\n{out}")
    rate = float(re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M).group(1))
    log(f"renewals on {ferry.name}: {rate:.0f}/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ferry", required=True)
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--work", required=True, help="an empty scratch folder")
    parser.add_argument("--registrations", type=int, default=DEFAULTS["registrations"])
    parser.add_argument("--watchers", type=int, default=DEFAULTS["watchers"])
    parser.add_argument("--rounds", type=int, default=DEFAULTS["rounds"])
    parser.add_argument("--instances", type=int, default=DEFAULTS["instances"])
    parser.add_argument("--seconds", type=int, default=DEFAULTS["seconds"], help="each renewal run")
    parser.add_argument("--connections", type=int, default=DEFAULTS["connections"], help="renewal concurrency")
    parser.add_argument("--etcd-port", type=int, default=DEFAULTS["etcd_port"],
                        help="etcd's client ports are this + 1..3, its peer ports this + 11..13")
    parser.add_argument("--command", default="bench/etcd.sh", help="the command line to record")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(args.work)
    processes = Processes(work)
    load_before = uptime()
    log(f"load before: {load_before}")
    r: dict = {}
    try:
        store, members = start_etcd(processes, args.etcd_port)
        store_url = f"etcd://{store}"
        nodes = [Ferry(processes, args.ferry, name, store_url) for name in ("node-a", "node-b", "node-c")]
        embedded = Ferry(processes, args.ferry, "embedded", None)
        for ferry in (*nodes, embedded):
            ferry.wait_ready()
        a, b, c = nodes
        log("every node is ready")

        log(f"1. registration to visibility, {args.registrations} registrations each")
        r["vis_ab"] = loadgen(args.loadgen, "visibility", f"127.0.0.1:{a.eureka}", f"127.0.0.1:{b.consul}",
                              f"127.0.0.1:{b.eureka}", "VIS-A-TO-B", args.registrations)
        r["vis_aa"] = loadgen(args.loadgen, "visibility", f"127.0.0.1:{a.eureka}", f"127.0.0.1:{a.consul}",
                              f"127.0.0.1:{a.eureka}", "VIS-A-TO-A", args.registrations)
        r["vis_e"] = loadgen(args.loadgen, "visibility", f"127.0.0.1:{embedded.eureka}", f"127.0.0.1:{embedded.consul}",
                             f"127.0.0.1:{embedded.eureka}", "VIS-EMBEDDED", args.registrations)

        log(f"2. {args.watchers} blocking health queries x {args.rounds} rounds")
        r["watch_cb"] = loadgen(args.loadgen, "service-watchers", f"127.0.0.1:{b.consul}", f"127.0.0.1:{c.eureka}",
                                "WATCHED-ETCD", args.watchers, args.rounds)
        r["watch_e"] = loadgen(args.loadgen, "service-watchers", f"127.0.0.1:{embedded.consul}",
                               f"127.0.0.1:{embedded.eureka}", "WATCHED-EMBEDDED", args.watchers, args.rounds)
        # Everything registered so far, to be listed by a new node beside the big registry.
        small = 2 * args.registrations + 1 + args.rounds

        log(f"3. {args.instances} instances across the three etcd nodes, then {args.instances} on the embedded node")
        r["rss_before"] = {ferry.name: ferry.rss_mb() for ferry in (*nodes, embedded)}
        shares = [args.instances // 3 + (1 if i < args.instances % 3 else 0) for i in range(3)]
        firsts = [sum(shares[:i]) for i in range(3)]
        took: dict[str, float] = {}
        errors: list[BaseException] = []

        def one(ferry: Ferry, first: int, count: int) -> None:
            try:
                took[ferry.name] = register_range(ferry.eureka, first, count, args.instances, work / f"{ferry.name}.ids")
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)
        began = time.monotonic()
        threads = [threading.Thread(target=one, args=(ferry, first, count))
                   for ferry, first, count in zip(nodes, firsts, shares)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        r["register_etcd"] = time.monotonic() - began
        r["register_each"] = dict(took)
        # Every node's copy holds them all before memory is read.
        for ferry in nodes:
            wait_until(lambda f=ferry: listing(f)[0] >= args.instances + small, 120, 0.2,
                       f"{ferry.name} listing every instance")
        r["register_visible"] = time.monotonic() - began
        time.sleep(2)
        r["rss_etcd"] = {ferry.name: ferry.rss_mb() for ferry in nodes}
        r["rss_members"] = [status_kb(member.pid, "VmRSS") / 1024 for member in members]
        r["etcd_status"] = etcd_status(store)
        r["register_embedded"] = register_range(embedded.eureka, 0, args.instances, args.instances,
                                                work / "embedded.ids")
        # The same checked listing (and cached document) as on the etcd nodes.
        expected = args.instances + args.registrations + 1 + args.rounds
        wait_until(lambda: listing(embedded)[0] >= expected, 60, 0.2, "the embedded node listing every instance")
        time.sleep(2)
        r["rss_embedded"] = embedded.rss_mb()
        log(f"registered: etcd {r['register_etcd']:.1f} s, embedded {r['register_embedded']:.1f} s; "
            f"RSS {r['rss_etcd']} embedded {r['rss_embedded']:.1f}")

        log("3b. a fourth etcd node, and a fresh embedded node for comparison")
        r["fourth"] = fourth_node(processes, args.ferry, store_url, "node-d", args.instances + small)
        r["fresh_embedded"] = fourth_node(processes, args.ferry, None, "embedded-fresh", 0)

        log(f"4. renewals, wrk -c{args.connections} for {args.seconds} s per node")
        r["renew"] = {}
        r["revisions"] = {}
        for ferry in nodes:
            before = etcd_status(store)["revision"]
            r["renew"][ferry.name] = renewals(ferry, work / f"{ferry.name}.ids", args.seconds, args.connections)
            r["revisions"][ferry.name] = (before, etcd_status(store)["revision"], changed_since(store, before))
        r["renew"]["embedded"] = renewals(embedded, work / "embedded.ids", args.seconds, args.connections)
        r["hwm"] = {ferry.name: ferry.rss_mb("VmHWM") for ferry in (*nodes, embedded)}
    except BaseException:
        for name, _ in processes.started:
            path = work / f"{name}.log"
            if path.exists() and name.startswith(("node", "embedded")):
                print(f"--- {name} log (end)\n{path.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        processes.close()
    load_after = uptime()
    log(f"load after: {load_after}")
    publish(report(args, r, load_before, load_after), args.record)


def report(args, r: dict, load_before: str, load_after: str) -> str:
    def load(text: str) -> str:
        return text.split("load average:")[1].strip()

    def ms(row: dict, key: str) -> str:
        return f"{float(row[f'{key}p50_ms']):.2f} / {float(row[f'{key}p99_ms']):.2f} / {float(row[f'{key}max_ms']):.2f}"

    fourth, fresh = r["fourth"], r["fresh_embedded"]
    def kinds(changed: dict) -> str:
        return ", ".join(f"{count} `{kind}/`" for kind, count in sorted(changed.items())) or "none"
    revisions = "; ".join(f"{name}: {before} → {after}, keys written since: {kinds(changed)}"
                          for name, (before, after, changed) in r["revisions"].items())
    rates = r["renew"]
    etcd_rates = [rates[name] for name in ("node-a", "node-b", "node-c")]
    lines = [
        "",
        f"## Many nodes on etcd (issue 14) — {datetime.date.today()} ({os.cpu_count()} cores, {platform.machine()})",
        f"Command: `{args.command}`. etcd {etcd_version()}, three members on loopback, data on disk",
        "(fsync on); three Ferry nodes on it (`--store etcd://...`: A, B, C) and one embedded-default",
        "Ferry (E), all release builds with their defaults (one worker thread per core), nothing pinned:",
        "every process shares the machine's cores. **A shared machine**: other engineers' builds and",
        f"tests ran during the measurement. Load averages (1, 5, 15 min): {load(load_before)} before,",
        f"{load(load_after)} after.",
        "",
        "### Registration to visibility",
        f"{args.registrations} Eureka registrations of one app, one at a time (bench/loadgen `visibility`); ms from",
        "the POST being sent until a Consul health blocking query on the reading node (sent before the",
        "POST) answers with the instance, and until its `/eureka/apps/APP/ID` answers 200 (polled after",
        "that answer); \"acknowledged\" is the POST's own round trip.",
        "",
        "| written → read | acknowledged p50 / p99 / max ms | Consul health on the reader | `/eureka/apps/APP/ID` on the reader |",
        "|---|---|---|---|",
    ]
    for key, label in (("vis_ab", "etcd: A → B"), ("vis_aa", "etcd: A → A"), ("vis_e", "embedded: E → E")):
        row = r[key]
        lines.append(f"| {label} | {ms(row, 'ack_')} | {ms(row, 'consul_')} | {ms(row, 'eureka_')} |")
    watch_cb, watch_e = r["watch_cb"], r["watch_e"]

    def verdict(row: dict) -> str:
        return "pass" if float(row["p99_ms"]) < 100 else "FAIL"
    lines += [
        "",
        "### Consul blocking queries woken by a registration",
        f"{args.watchers} `/v1/health/service/NAME?index=N&wait=60s` queries held, then one Eureka registration",
        f"of a new instance of NAME, {args.rounds} round(s) (bench/loadgen `service-watchers`). ms from the",
        "registration's POST being sent (etcd's commit included) to each answer.",
        "",
        "| watchers on ← writer | answers | p50 / p99 / max ms | target p99 < 100 ms |",
        "|---|---|---|---|",
        f"| etcd: B ← C | {watch_cb['samples']} | {ms(watch_cb, '')} | {verdict(watch_cb)} |",
        f"| embedded: E ← E | {watch_e['samples']} | {ms(watch_e, '')} | {verdict(watch_e)} |",
        "",
        f"### {args.instances:,} instances: memory, and a new node loading the registry",
        f"{args.instances:,} instances (bench/register.py's documents, 20 to an app, an hour's lease) registered",
        f"a third each through A, B and C, one client per node, all at once: {r['register_etcd']:.1f} s "
        f"({', '.join(f'{name} {seconds:.1f} s' for name, seconds in sorted(r['register_each'].items()))}),",
        f"listed by all three {r['register_visible']:.1f} s after the start. The same {args.instances:,} on E alone, "
        f"one client: {r['register_embedded']:.1f} s.",
        f"etcd after registering: revision {r['etcd_status']['revision']}, database {r['etcd_status']['db_mb']:.1f} MB;"
        f" members' RSS {', '.join(f'{rss:.1f}' for rss in r['rss_members'])} MB.",
        "",
        "RSS from /proc/PID/status: before registering (after the two runs above: B held the watchers'",
        "connections), and 2 s after every node listed them all, which the script checks by fetching each",
        "node's whole `/eureka/apps` (so each holds that document in its Eureka response cache too).",
        "",
        "| process | RSS before (MB) | RSS after registering (MB) | peak RSS at the end, after the renewals (MB) |",
        "|---|---|---|---|",
    ]
    for name, rss in r["rss_etcd"].items():
        lines.append(f"| Ferry {name} (etcd) | {r['rss_before'][name]:.1f} | {rss:.1f} | {r['hwm'][name]:.1f} |")
    lines += [
        f"| Ferry embedded (all {args.instances:,} on it) | {r['rss_before']['embedded']:.1f} | "
        f"{r['rss_embedded']:.1f} | {r['hwm']['embedded']:.1f} |",
        "",
        f"Then a fourth node D was started on the same etcd (everything registered so far: "
        f"{args.instances + 2 * args.registrations + 1 + args.rounds:,} instances",
        "but Config Servers). From its process start: `/ready` 200 after "
        f"**{fourth['ready']:.2f} s**; its `/eureka/apps` listing all of them",
        f"and its own Config Server after **{fourth['listed']:.2f} s** (listing polled every 50 ms once ready; each poll",
        f"fetches the whole document). D then: RSS {fourth['rss']:.1f} MB, {fourth['cpu']:.2f} s of CPU used. For comparison, a fresh",
        f"embedded node (empty registry) was ready after {fresh['ready']:.2f} s.",
        "",
        "### Eureka renewals per node",
        f"wrk `-t1 -c{args.connections} -d{args.seconds}s` with bench/renew.lua (PUT heartbeats cycling over the instances",
        f"registered through that node), one node at a time, with the {args.instances:,} instances registered. etcd's",
        "revision before → after each etcd node's run, and Ferry's keys written in etcd since the run began",
        "(`inst/` would be registrations; `nodes/` are the nodes' own keys, refreshed every 5 s with",
        f"the revision each has applied): {revisions}.",
        "",
        "| node | renewals/s |",
        "|---|---|",
    ]
    for name in ("node-a", "node-b", "node-c"):
        lines.append(f"| {name} (etcd) | {rates[name]:.0f} |")
    lines += [
        f"| embedded | {rates['embedded']:.0f} |",
        "",
        f"etcd nodes' mean / embedded: {sum(etcd_rates) / 3 / rates['embedded']:.2f}.",
    ]
    return "\n".join(lines)


def etcd_version() -> str:
    out = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout
    return out.split()[2] if out.startswith("etcd Version:") else out.strip()


if __name__ == "__main__":
    main()

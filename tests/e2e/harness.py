"""Starts the real `ferry` binary and the real third-party clients the tests drive.

Nothing here imitates a client: `PyEureka` wraps py-eureka-client's own `EurekaClient`,
`JsEureka` runs eureka-js-client in Node and reads what its cache holds.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from py_eureka_client import eureka_basic

ROOT = Path(__file__).resolve().parents[2]
JS_CLIENT = Path(__file__).resolve().parent / "js" / "eureka_client.js"
JS_CONSUL = Path(__file__).resolve().parent / "js" / "consul_client.js"
SAMPLE_CONSUL_SERVICE = ROOT / "samples" / "python-consul-service" / "service.py"
NODE_PATH = ROOT / "tests" / "node_modules"


def ferry_binary() -> Path:
    configured = os.environ.get("FERRY_BIN")
    binary = Path(configured) if configured else ROOT / "target" / "debug" / "ferry"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: build it with `cargo build -p ferry-bridge` first")
    return binary


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port free now and never handed out before by this process: the kernel
    may offer a just-closed port again, and two listeners of one ferry must not share one."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; fails with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def raw_exchange(port: int, payload: bytes, read_timeout: float = 10) -> bytes:
    """Sends bytes on a fresh connection and reads until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as connection:
        connection.sendall(payload)
        chunks = []
        try:
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
        return b"".join(chunks)


class Ferry:
    """One `ferry` process on free loopback ports with its own data directory."""

    def __init__(self, data_dir: Path, *extra_args: str, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self._choose_ports()

    def _choose_ports(self) -> None:
        self.eureka_port = free_port()
        self.consul_port = free_port()
        self.config_port = free_port()
        self.admin_port = free_port()
        data_dir, extra_args = self.data_dir, self.extra_args
        self.log_path = data_dir.parent / f"ferry-{self.eureka_port}.log"
        self.args = [
            str(ferry_binary()),
            "--eureka-listen", f"127.0.0.1:{self.eureka_port}",
            "--consul-listen", f"127.0.0.1:{self.consul_port}",
            "--config-listen", f"127.0.0.1:{self.config_port}",
            "--admin-listen", f"127.0.0.1:{self.admin_port}",
            "--data-dir", str(data_dir),
            # Ferry lists its own Config Server as an instance by default; tests that count
            # instances or apps see only their own, and the tests of that listing turn it
            # on again (a later flag wins).
            "--config-service-name", "off",
            *extra_args,
        ]

    @property
    def eureka_url(self) -> str:
        return f"http://127.0.0.1:{self.eureka_port}/eureka/"

    @property
    def consul_url(self) -> str:
        return f"http://127.0.0.1:{self.consul_port}"

    def consul(self, token: str | None = None):
        """A real py-consul client for this ferry."""
        import consul

        return consul.Consul(host="127.0.0.1", port=self.consul_port, token=token)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> "Ferry":
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("already running")
        first_start = self.process is None
        for attempt in range(3):
            log = open(self.log_path, "ab")
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
            try:
                wait_until(self._ready, timeout=15, what="ferry /ready")
                return self
            except AssertionError:
                # Another process took a port between free_port() and ferry's bind. Only a
                # first start may move: a restart must come back on the ports tests know.
                if not (first_start and attempt < 2 and "Address already in use" in self.log()):
                    # Not ready in time: nothing will stop a process no test got hold of.
                    if self.process.poll() is None:
                        self.process.kill()
                        self.process.wait(timeout=10)
                    raise
                self._choose_ports()
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"ferry exited with {self.process.returncode}: {self.log()}")
        try:
            return httpx.get(f"{self.admin_url}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        self.process.kill()
        self.process.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def get(self, path: str, accept: str = "application/json", **kwargs) -> httpx.Response:
        headers = {"Accept": accept, **kwargs.pop("headers", {})}
        return httpx.get(self.eureka_url + path, headers=headers, timeout=5, **kwargs)

    def apps_json(self, path: str = "apps/") -> dict:
        response = self.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def eureka_fetches(self) -> dict[str, int]:
        """`ferry_eureka_fetches_total` by kind ("full", "delta") from the admin /metrics."""
        text = httpx.get(f"{self.admin_url}/metrics", timeout=5).text
        counts = {}
        for line in text.splitlines():
            for kind in ("full", "delta"):
                series = f'ferry_eureka_fetches_total{{kind="{kind}"}} '
                if line.startswith(series):
                    counts[kind] = int(line[len(series):])
        assert set(counts) == {"full", "delta"}, text
        return counts

    def instances(self, path: str = "apps/") -> dict[str, dict]:
        """instanceId (or hostName) -> instance, from the server's own JSON."""
        found = {}
        for app in self.apps_json(path)["applications"]["application"]:
            for instance in app["instance"]:
                found[instance.get("instanceId", instance["hostName"])] = instance
        return found


def ctl(ferry: "Ferry", *args: str) -> str:
    """`ferry ctl` against `ferry`'s admin API; its standard output (a failure fails the test)."""
    result = subprocess.run([str(ferry_binary()), "ctl", "--admin", f"127.0.0.1:{ferry.admin_port}", *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def metric_series(ferry: "Ferry", name: str) -> dict[str, float]:
    """Every series of one metric on the admin /metrics, by its labels (`{source="x"}`, or
    "" for an unlabelled one); empty when the metric is not exported."""
    series = {}
    for line in httpx.get(f"{ferry.admin_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            key, value = line.rsplit(" ", 1)
            series[key[len(name):]] = float(value)
    return series


def sync_sources(ferry: "Ferry") -> dict[str, dict]:
    """The admin API's `GET /api/sync`: each legacy source's status, by its name
    (`legacy-eureka`, `legacy-consul`)."""
    response = httpx.get(f"{ferry.admin_url}/api/sync", timeout=5)
    assert response.status_code == 200, f"/api/sync: {response.status_code} {response.text}"
    body = response.json()
    sources = body["sources"] if isinstance(body, dict) else body
    return {source["name"]: source for source in sources}


def owned_by(instances: dict[str, dict], owner: str) -> dict[str, dict]:
    """The instances (as `Ferry.instances()` returns them) whose `ferry-owner` metadata is
    `owner`."""
    return {key: instance for key, instance in instances.items()
            if (instance.get("metadata") or {}).get("ferry-owner") == owner}


def app_instances(ferry: "Ferry", app: str) -> list[dict]:
    """The instances of one app in the full registry (empty when it has none)."""
    return [instance for instance in ferry.instances().values() if instance["app"] == app]


def js_instance(app: str, instance_id: str, port: int, metadata: dict | None = None) -> dict:
    """The `instance` eureka-js-client (`JsEureka`) registers: a loopback address and `port`."""
    return {
        "app": app,
        "instanceId": instance_id,
        "hostName": "127.0.0.1",
        "ipAddr": "127.0.0.1",
        "port": {"$": port, "@enabled": True},
        "vipAddress": app.lower(),
        "statusPageUrl": f"http://127.0.0.1:{port}/info",
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn",
        },
        **({"metadata": metadata} if metadata is not None else {}),
    }


class PyEureka:
    """py-eureka-client's `EurekaClient`, run on its own event loop thread."""

    def __init__(self, server_url: str, **options):
        from py_eureka_client.eureka_client import EurekaClient

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server_url = server_url
        self.client = EurekaClient(eureka_server=server_url, **options)
        self.run(self.client.start())

    def run(self, coroutine, timeout: float = 15):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def view(self) -> dict[str, list[tuple[str, str, int]]]:
        """App name -> [(instanceId, status, port)] as the client currently holds it."""
        seen = {}
        for application in self.client.applications.applications:
            seen[application.name] = sorted(
                (instance.instanceId, instance.status, instance.port.port)
                for instance in application.instances
            )
        return seen

    def stop(self):
        """Deregisters as py-eureka-client's own stop() does (DOWN, then cancel), once its
        heartbeat thread can no longer register the instance again.

        That thread is a `Timer` whose function loops for ever, so the `Timer.cancel()` in
        the client's stop() cannot end it once it has run: a beat that comes after the
        cancel finds the client not alive and registers the instance UP again, against
        Netflix Eureka as against Ferry. (This is what made
        `test_py_registration_is_seen_by_js_through_full_fetch_and_delta` fail now and then:
        the instance came back a second after its cancel.) The beat looks up these
        attributes on every pass, so it finds the inert ones from now on, a beat already
        under way included.

        The DOWN registration and the cancel are the library's own calls (`eureka_basic`),
        made without the client's `asyncio.Lock`: the heartbeat thread takes that lock on
        its own event loop, and a release from that thread does not wake a waiter on this
        loop, which then hangs. A second call (a test's, then the fixture's) does nothing,
        since the loop that would run it is gone."""
        if not self.thread.is_alive():
            return
        client = self.client
        registered = client.should_register

        async def inert(*_args, **_kwargs):
            return None

        client._EurekaClient__should_register = False
        client._EurekaClient__should_discover = False
        client.register = inert
        client.send_heartbeat = inert
        try:
            if registered:
                instance = client._EurekaClient__instance
                now = str(int(time.time() * 1000))
                instance.update(status="DOWN", lastUpdatedTimestamp=now, lastDirtyTimestamp=now)
                self.run(eureka_basic._register(self.server_url, instance))
                self.run(eureka_basic.cancel(self.server_url, instance["app"], instance["instanceId"]))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)


class JsEureka:
    """eureka-js-client in a Node process; `latest()` is its newest registry report."""

    def __init__(self, ferry: Ferry, instance: dict | None = None, use_delta: bool = False,
                 service_path: str = "/eureka/v2/apps/", interval_ms: int = 500):
        options = {
            "host": "127.0.0.1",
            "port": ferry.eureka_port,
            "servicePath": service_path,
            "instance": instance,
            "useDelta": use_delta,
            "intervalMs": interval_ms,
        }
        environment = {**os.environ, "NODE_PATH": str(NODE_PATH)}
        self.process = subprocess.Popen(
            ["node", str(JS_CLIENT), json.dumps(options)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        )
        self.events: queue.Queue = queue.Queue()
        self._latest: dict | None = None
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_errors, daemon=True).start()
        wait_until(lambda: self._drain() or self._latest is not None, timeout=15,
                   what=f"eureka-js-client to start ({self.stderr})")

    def _read(self):
        for line in self.process.stdout:
            line = line.strip()
            if line.startswith("{"):
                self.events.put(json.loads(line))

    def _read_errors(self):
        for line in self.process.stderr:
            self.stderr.append(line.rstrip())

    def _drain(self):
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return None
            if event["event"] == "error":
                raise AssertionError(f"eureka-js-client failed: {event['message']} {self.stderr}")
            if event["event"] == "registry":
                self._latest = event["apps"]

    def latest(self) -> dict:
        self._drain()
        return self._latest or {}

    def ids(self, app: str) -> list[str]:
        return sorted(instance["id"] for instance in self.latest().get(app, []))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return -9
        return self.process.returncode


class JsConsul:
    """The `consul` npm client in a Node process, one call at a time."""

    def __init__(self, ferry: Ferry, base_url: str | None = None):
        """`base_url` (ending in `/v1`) replaces the client's default base URL."""
        environment = {**os.environ, "NODE_PATH": str(NODE_PATH)}
        self.process = subprocess.Popen(
            ["node", str(JS_CONSUL), str(ferry.consul_port), *([base_url] if base_url else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        )
        self.lock = threading.Lock()

    def call(self, name: str, *args, timeout: float = 30):
        """Runs `consul.<name>(*args)`; returns its result or raises JsConsulError."""
        with self.lock:
            self.process.stdin.write(json.dumps({"call": name, "args": list(args)}) + "\n")
            self.process.stdin.flush()
            answer: queue.Queue = queue.Queue()
            reader = threading.Thread(target=lambda: answer.put(self.process.stdout.readline()), daemon=True)
            reader.start()
            line = answer.get(timeout=timeout)
        reply = json.loads(line)
        if "error" in reply:
            raise JsConsulError(reply["error"], reply.get("status"))
        return reply["ok"]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                return self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.returncode


class JsConsulError(Exception):
    def __init__(self, message: str, status: int | None):
        super().__init__(f"{status}: {message}")
        self.status = status


class SampleService:
    """samples/python-consul-service: registers itself through py-consul with an HTTP check."""

    def __init__(self, ferry: Ferry, name: str, interval: str = "1s"):
        self.port = free_port()
        self.id = f"{name}-{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, str(SAMPLE_CONSUL_SERVICE), "--name", name, "--port", str(self.port),
             "--consul", f"127.0.0.1:{ferry.consul_port}", "--interval", interval],
            stdout=subprocess.PIPE, text=True,
        )
        line = self.process.stdout.readline()
        assert json.loads(line)["event"] == "registered", line

    def set_healthy(self, healthy: bool):
        httpx.post(f"http://127.0.0.1:{self.port}/{'recover' if healthy else 'fail'}", timeout=5)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            return self.process.wait(timeout=10)
        return self.process.returncode

"""Starts the Spring estate (the jars `scripts/build-samples.sh` builds under samples/) as
real JVM processes on free loopback ports, beside the real `ferry` binary.

Reusable by any test file: `SpringApp` is one app process, `start_all` starts several side
by side (JVM start-up is mostly CPU; on 2 cores two at a time overlap their I/O and
class loading), `eureka_client_props` / `consul_client_props` / `config_client_props` are
the settings that point an app at a ferry with the short intervals tests want. The Ferry
process helpers are tests/e2e/harness.py's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from harness import Ferry, ctl, ferry_binary, free_port, wait_until  # noqa: E402,F401

GENERATIONS = ("boot3", "boot2")

# What the session's fixtures started ("apps", "ferries"), for the failure report.
SESSION: dict = {}
# Figures tests measured, printed at the end of the run (conftest's terminal summary).
MEASUREMENTS: list[str] = []

# JVM flags that cut start-up on a small machine (bench/RESULTS.md "Spring sample start-up"
# has the figures): C1 only, the serial collector, small stacks and heap, no JMX.
FAST_JVM_FLAGS = [
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-XX:CICompilerCount=1",
    "-Xss512k",
    "-Xmx256m",
    "-Dspring.jmx.enabled=false",
    "-Dspring.main.banner-mode=off",
]


def jar(generation: str, app: str) -> Path:
    path = ROOT / "samples" / generation / app / "target" / f"{app}.jar"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: build the samples with scripts/build-samples.sh")
    return path


def eureka_client_props(ferry: Ferry, fetch_seconds: int | None = 1, renew_seconds: int = 1) -> dict:
    """A Eureka client pointed at `ferry`; see `eureka_url_props`."""
    return eureka_url_props(ferry.eureka_url, fetch_seconds, renew_seconds)


def eureka_url_props(eureka_url: str, fetch_seconds: int | None = 1, renew_seconds: int = 1) -> dict:
    """A Eureka client pointed at any Eureka server (Ferry or the real one), announcing
    127.0.0.1 (test traffic stays on loopback). `fetch_seconds=None` keeps Spring's registry
    fetch interval (30 s)."""
    props = {
        "eureka.client.serviceUrl.defaultZone": eureka_url,
        "eureka.instance.prefer-ip-address": "true",
        "eureka.instance.ip-address": "127.0.0.1",
        "eureka.instance.hostname": "127.0.0.1",
        "eureka.instance.lease-renewal-interval-in-seconds": str(renew_seconds),
        # Registration is sent at start-up (not 40 s later, the default for the first
        # instance-info replication) and status changes within a second.
        "eureka.client.initial-instance-info-replication-interval-seconds": "1",
        "eureka.client.instance-info-replication-interval-seconds": "1",
    }
    if fetch_seconds is not None:
        props["eureka.client.registry-fetch-interval-seconds"] = str(fetch_seconds)
    return props


def consul_client_props(ferry: Ferry) -> dict:
    """A Spring Cloud Consul app pointed at `ferry`'s Consul API, with a 1 s HTTP check."""
    return {
        "spring.cloud.consul.host": "127.0.0.1",
        "spring.cloud.consul.port": str(ferry.consul_port),
        "spring.cloud.consul.discovery.ip-address": "127.0.0.1",
        "spring.cloud.consul.discovery.prefer-ip-address": "true",
        "spring.cloud.consul.discovery.health-check-interval": "1s",
        "spring.cloud.consul.discovery.catalog-services-watch-delay": "1000",
        "spring.cloud.consul.config.watch.wait-time": "5",
        "spring.cloud.consul.config.watch.delay": "500",
    }


def config_client_props(ferry: Ferry) -> dict:
    """A Config Server client pointed at `ferry`'s Config Server API."""
    return {"spring.cloud.config.uri": f"http://127.0.0.1:{ferry.config_port}"}


class SpringApp:
    """One Spring Boot jar as a JVM process on a free loopback port; its log is kept in
    `log_dir` and its tail printed when it fails to start."""

    # Seconds between two readiness probes while it starts.
    ready_interval = 0.25

    def __init__(self, generation: str, app: str, log_dir: Path, props: dict | None = None,
                 name: str | None = None):
        self.generation = generation
        self.app = app
        # A test may fix the port (the side-by-side runs use the same ports on both servers).
        self.port = int((props or {}).get("server.port") or free_port())
        self.name = name or f"{generation}-{app}-{self.port}"
        self.props = {"server.port": str(self.port), "server.address": "127.0.0.1", **(props or {})}
        self.log_path = log_dir / f"{self.name}.log"
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def instance_id(self) -> str:
        """The instance id the samples' application.yml gives: name:port."""
        return f"{self.props.get('spring.application.name', self.app)}:{self.port}"

    def command(self) -> list[str]:
        return ["java", *FAST_JVM_FLAGS, *(f"-D{key}={value}" for key, value in self.props.items()),
                "-jar", str(jar(self.generation, self.app))]

    def launch(self) -> "SpringApp":
        log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 180) -> "SpringApp":
        try:
            wait_until(self._healthy, timeout, interval=self.ready_interval, what=f"{self.name} /actuator/health UP")
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- {self.log_path} ---\n{self.log()}") from None
        return self

    def start(self, timeout: float = 180) -> "SpringApp":
        return self.launch().wait_ready(timeout)

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}")
        try:
            response = httpx.get(f"{self.url}/actuator/health", timeout=2)
            return response.status_code == 200 and response.json().get("status") == "UP"
        except (httpx.HTTPError, ValueError):
            return False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, as an orchestrator stops an app: Spring shuts down gracefully and the
        discovery clients deregister."""
        if not self.running():
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM")

    def kill(self) -> None:
        if self.running():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def get(self, path: str, timeout: float = 10, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout, **kwargs)

    def json(self, path: str, timeout: float = 10, **kwargs):
        response = self.get(path, timeout=timeout, **kwargs)
        assert response.status_code == 200, f"{self.name} GET {path}: {response.status_code} {response.text}"
        return response.json()

    def post(self, path: str, timeout: float = 10, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, timeout=timeout, **kwargs)


def start_all(apps: list[SpringApp], parallel: int = 4, timeout: float = 240) -> list[SpringApp]:
    """Launches every app at once and waits for all of them; on a failure every app of the
    batch is stopped and the failing logs are in the error."""
    for app in apps:
        app.launch()
    errors = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for app, future in [(app, pool.submit(app.wait_ready, timeout)) for app in apps]:
            try:
                future.result()
            except AssertionError as error:
                errors.append(str(error))
    if errors:
        for app in apps:
            app.kill()
        raise AssertionError("\n\n".join(errors))
    return apps


class Apps:
    """Every app a test session starts, killed at the end whatever happened."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[SpringApp] = []
        self.lock = threading.Lock()

    def new(self, generation: str, app: str, props: dict | None = None, name: str | None = None) -> SpringApp:
        return self.add(SpringApp(generation, app, self.log_dir, props, name))

    def add(self, app: SpringApp) -> SpringApp:
        """Keeps an app made elsewhere (a subclass of SpringApp) to kill and report it."""
        with self.lock:
            self.started.append(app)
        return app

    def kill_all(self) -> None:
        for app in self.started:
            try:
                app.kill()
            except Exception:  # noqa: BLE001 - every app must be reached
                pass


def metric(ferry: Ferry, series: str) -> float:
    """The value of one series on Ferry's /metrics (0 when it is not exported yet)."""
    for line in httpx.get(f"{ferry.admin_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


def eureka_instances(ferry: Ferry, app: str) -> dict[str, dict]:
    """instanceId -> instance of one app, as Ferry's Eureka view lists it."""
    response = ferry.get(f"apps/{app.upper()}")
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, response.text
    return {instance["instanceId"]: instance for instance in response.json()["application"]["instance"]}


def consul_health(ferry: Ferry, service: str) -> list[dict]:
    """Consul's /v1/health/service/{service} as Ferry answers it."""
    response = httpx.get(f"{ferry.consul_url}/v1/health/service/{service}", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def metrics(ferry: Ferry, prefix: str) -> dict[str, float]:
    """Every series on Ferry's /metrics whose name starts with `prefix` ("name{labels}" ->
    value): unlike `metric`, a series Ferry does not export is missing, not 0."""
    found = {}
    for line in httpx.get(f"{ferry.admin_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(prefix):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found


def eureka_registry(eureka_url: str) -> list[dict]:
    """Every instance a Eureka server lists at `{eureka_url}apps/` (Ferry or the real Netflix
    server: a single application or instance may come as an object, not a list), one entry
    per listing, so an instance listed twice is there twice."""
    response = httpx.get(f"{eureka_url}apps/", headers={"Accept": "application/json"}, timeout=5)
    assert response.status_code == 200, f"GET {eureka_url}apps/: {response.status_code} {response.text}"

    def listed(value):
        return value if isinstance(value, list) else [value] if value else []

    return [instance for application in listed(response.json()["applications"].get("application"))
            for instance in listed(application.get("instance"))]


def peer_ports(app: SpringApp, service: str) -> set[int]:
    """The ports of `service`'s instances an app's DiscoveryClient lists (its /peers)."""
    return {peer["port"] for peer in app.json(f"/peers/{service}")}


class Drive:
    """checkout's /drive run in a thread: `rate` calls a second for `seconds` through `via`."""

    def __init__(self, checkout: SpringApp, via: str, rate: int, seconds: float):
        self.checkout = checkout
        self.report = None
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(checkout, via, rate, seconds))
        self.thread.start()

    def _run(self, checkout, via, rate, seconds):
        try:
            self.report = checkout.json(f"/drive?via={via}&rate={rate}&seconds={seconds}", timeout=seconds + 60)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            self.error = error

    def stop(self) -> dict:
        """Ends the drive early and returns its report."""
        assert self.thread.is_alive(), "the drive ended before the sequence did"
        self.checkout.post("/drive/stop")
        return self.result()

    def result(self) -> dict:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.report


@contextmanager
def driving_through_cutover(ferry: Ferry, checkout: SpringApp, via: str, rate: int, seconds: float,
                            service: str = "orders"):
    """A `Drive` for the block; whatever the block did, `service` is back in legacy mode and
    the drive ended when it is left (the block takes the report with `drive.stop()`)."""
    drive = Drive(checkout, via, rate, seconds)
    try:
        yield drive
    finally:
        ctl(ferry, "cutover", service, "legacy")
        if drive.thread.is_alive():
            drive.stop()


# Calls Ferry's proxy forwarded to `orders`.
ORDERS_PROXIED = 'ferry_proxy_requests_total{service="ORDERS"}'


def wait_for_proxied(ferry: Ferry, since: float, timeout: float, series: str = ORDERS_PROXIED) -> float:
    """Seconds until Ferry's proxy counted a call (`series`) beyond `since`."""
    begin = time.monotonic()
    wait_until(lambda: metric(ferry, series) > since, timeout, interval=0.05, what="a proxied call")
    return time.monotonic() - begin


def wait_for_direct(ferry: Ferry, quiet: float, timeout: float, series: str = ORDERS_PROXIED) -> float:
    """Seconds until Ferry's proxy stopped counting calls (`series`: none for `quiet` s);
    the figure is the time to the last proxied call."""
    begin = time.monotonic()
    last_value, last_change = metric(ferry, series), time.monotonic()
    while time.monotonic() - last_change < quiet:
        assert time.monotonic() - begin < timeout, "calls still go through the proxy"
        time.sleep(0.05)
        value = metric(ferry, series)
        if value != last_value:
            last_value, last_change = value, time.monotonic()
    return last_change - begin


def assert_cutover_drive(report: dict, proxied: float, calls: int, each_mode: int) -> None:
    """What a drive through a cutover and a rollback must show, given the calls Ferry's proxy
    counted meanwhile: no call failed, at least `calls` calls, at least `each_mode` through the
    proxy and as many direct; every proxied call, and only those, reached the service traced
    (the proxy adds trace headers)."""
    assert report["failures"] == 0, report["failureSamples"]
    assert report["successes"] == report["calls"] >= calls, report
    assert proxied >= each_mode, "calls went through the proxy in mesh mode"
    assert report["traced"] == proxied, "every proxied call, and only those, reached orders traced"
    assert report["calls"] - report["traced"] >= each_mode, "calls went direct in legacy mode"


class Watch:
    """Calls `probe` every `interval` seconds on a thread until `stop()`, keeping each answer
    (or the exception it raised) with the second it was taken: for properties that must hold
    all the way through a disruption, not just before and after it."""

    def __init__(self, probe, interval: float = 0.25):
        self.probe = probe
        self.interval = interval
        self.samples: list[tuple[float, object]] = []
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            try:
                answer = self.probe()
            except Exception as error:  # noqa: BLE001 - kept for the test to judge
                answer = error
            self.samples.append((round(time.monotonic() - self.started, 2), answer))
            self.stopping.wait(self.interval)

    def stop(self) -> list[tuple[float, object]]:
        self.stopping.set()
        self.thread.join(timeout=30)
        return self.samples


__all__ = [
    "Apps", "Drive", "Ferry", "GENERATIONS", "MEASUREMENTS", "ORDERS_PROXIED", "ROOT", "SpringApp", "Watch",
    "assert_cutover_drive", "config_client_props", "consul_client_props", "consul_health", "ctl",
    "driving_through_cutover", "eureka_client_props", "eureka_instances", "eureka_registry", "eureka_url_props",
    "ferry_binary", "free_port", "metric", "metrics", "peer_ports", "start_all", "wait_for_direct",
    "wait_for_proxied", "wait_until",
]

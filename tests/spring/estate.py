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
            wait_until(self._healthy, timeout, interval=0.25, what=f"{self.name} /actuator/health UP")
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
        created = SpringApp(generation, app, self.log_dir, props, name)
        with self.lock:
            self.started.append(created)
        return created

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


__all__ = [
    "Apps", "Ferry", "GENERATIONS", "MEASUREMENTS", "SpringApp", "ROOT", "config_client_props", "consul_client_props",
    "consul_health", "ctl", "eureka_client_props", "eureka_instances", "ferry_binary", "free_port",
    "metric", "start_all", "wait_until",
]

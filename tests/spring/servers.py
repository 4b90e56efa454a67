"""The real Spring servers (Eureka Server, Config Server) and the Java sample apps as plain
processes on free loopback ports, for the side-by-side tests.

`Jvm` is the estate harness's `SpringApp` (one `java -jar` process: `-D` settings, its log
in a temp dir, printed by `log()` when a test fails, readiness `/actuator/health` UP) with
the lenient stop these comparisons want. `Ferry` and `free_port` are tests/e2e/harness.py's.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from harness import Ferry, free_port, wait_until  # noqa: E402

# The fast-start JVM flags, the jar paths and the Eureka client settings are the estate
# harness's (here by URL: these apps point at the real Eureka Server too).
from estate import FAST_JVM_FLAGS, SpringApp, jar  # noqa: E402,F401
from estate import eureka_url_props as eureka_client_props  # noqa: E402


class Jvm(SpringApp):
    """One Spring Boot jar on a loopback port (`server.port` in `props`, or a free one): the
    estate harness's `SpringApp`, stopped leniently (a JVM that hangs on SIGTERM is killed,
    not a failure: these tests compare servers, not shutdowns) and with a longer POST
    timeout for `/actuator/refresh` and `/encrypt`."""

    def wait_healthy(self, timeout: float = 180) -> "Jvm":
        return self.wait_ready(timeout)

    def post(self, path: str, timeout: float = 30, **kwargs) -> httpx.Response:
        return super().post(path, timeout=timeout, **kwargs)

    def stop(self, timeout: float = 30) -> None:
        try:
            super().stop(timeout)
        except AssertionError:
            pass  # SpringApp.stop has killed it.


class Processes:
    """Everything a test started; `close()` stops all of it, newest first, and
    `report()` is the log tails to print when the test failed."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list = []

    def jvm(self, generation: str, app: str, props: dict | None = None, start: bool = True) -> Jvm:
        process = Jvm(generation, app, self.log_dir, props)
        self.started.append(process)
        if not start:
            return process
        try:
            return process.start()
        except BaseException:
            self.close()
            raise

    def jvms(self, *specs: tuple[str, str, dict]) -> list[Jvm]:
        """Starts several apps side by side (their start-up overlaps) and waits for all."""
        started = [Jvm(generation, app, self.log_dir, props) for generation, app, props in specs]
        self.started.extend(started)
        try:
            for jvm in started:
                jvm.launch()
            return [jvm.wait_healthy() for jvm in started]
        except BaseException:
            self.close()
            raise

    def ferry(self, *args: str, env: dict | None = None) -> Ferry:
        data_dir = Path(tempfile.mkdtemp(prefix="ferry-data-", dir=self.log_dir))
        ferry = Ferry(data_dir, *args, env=env)
        self.started.append(ferry)
        try:
            return ferry.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for process in reversed(self.started):
            try:
                process.stop()
            except Exception:  # noqa: BLE001 - every process must be stopped
                if getattr(process, "process", None) is not None:
                    process.process.kill()

    def report(self) -> str:
        parts = [f"logs in {self.log_dir}"]
        for process in self.started:
            name = getattr(process, "name", "ferry")
            parts.append(f"----- {name} ({getattr(process, 'log_path', '')}) -----\n{process.log()}")
        return "\n".join(parts)


def eureka_server_props(response_cache_ms: int = 1000) -> dict:
    """The real Eureka Server standalone: self-preservation off, its read-only response
    cache refreshed every `response_cache_ms` (30 s by default), eviction every 5 s."""
    return {
        "eureka.server.enable-self-preservation": "false",
        "eureka.server.response-cache-update-interval-ms": str(response_cache_ms),
        "eureka.server.eviction-interval-timer-in-ms": "5000",
        # Standalone, it synced nothing from peers: without this it refuses registry reads
        # for its first 5 minutes.
        "eureka.server.wait-time-in-ms-when-sync-empty": "0",
    }


def settle(predicate, timeout: float = 30, what: str = "condition"):
    """`wait_until` with a half-second poll: JVM views change once per fetch interval."""
    return wait_until(predicate, timeout=timeout, interval=0.5, what=what)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "ferry-tests", "GIT_AUTHOR_EMAIL": "tests@ferry.invalid",
           "GIT_COMMITTER_NAME": "ferry-tests", "GIT_COMMITTER_EMAIL": "tests@ferry.invalid",
           # Fixed dates keep commit ids stable between the two servers' runs.
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


__all__ = ["Ferry", "Jvm", "Processes", "ROOT", "eureka_client_props", "eureka_server_props",
           "free_port", "git", "settle", "wait_until"]

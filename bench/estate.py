"""Ferry's footprint with the Spring sample estate registered, beside the real Spring Cloud
Netflix Eureka Server's and Config Server's with the same apps, on the same machine and in
the same run.

Run with `bench/estate.sh` (it builds the release binary and the samples). Two phases, one
after the other so that neither set of JVMs slows the other's measurement:

1. Ferry (the release build users run) as Eureka server, Consul agent and Config Server for
   orders x2 and checkout of both generations, inventory (Consul discovery and config) and
   pricing (Config Server client).
2. The real Eureka Server and Config Server for the same apps but inventory, which needs a
   Consul agent: no real Consul runs here.

The apps renew and fetch every second (the tests' short intervals, 30 times Spring's
defaults) so that the servers have work to do. After every app is registered, each server
is watched for `--seconds`: CPU time used (utime + stime from /proc) and resident memory
(VmRSS at the end, VmHWM the peak). The JVM servers run with the flags the tests use
(serial collector, C1 only, `-Xmx256m`), which keep their memory down. Prints a Markdown
section; `--record` appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "spring"))

from servers import Processes, eureka_client_props, eureka_server_props, settle  # noqa: E402

import httpx  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def watch(pids: dict[str, int], seconds: float) -> dict[str, dict]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: {
        "cpu_percent": 100 * (cpu_seconds(pid) - before[name]) / seconds,
        "rss_mb": status_kb(pid, "VmRSS") / 1024,
        "hwm_mb": status_kb(pid, "VmHWM") / 1024,
    } for name, pid in pids.items()}


def java_version() -> str:
    """The first line of `java -version`, for a section's heading."""
    return subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]


def publish(section: str, record: bool) -> None:
    """Prints a Markdown section and, when `record`, appends it to bench/RESULTS.md."""
    print(section)
    if record:
        with open(ROOT / "bench" / "RESULTS.md", "a") as results:
            results.write(section + "\n")


def eureka_apps(eureka_url: str) -> set[str]:
    answer = httpx.get(eureka_url + "apps", headers={"Accept": "application/json"}, timeout=10)
    return {app["name"] for app in answer.json()["applications"]["application"]}


def estate_specs(eureka_url: str, config_url: str, consul_port: int | None) -> list[tuple]:
    eureka = eureka_client_props(eureka_url)
    specs = []
    for generation in ("boot3", "boot2"):
        specs += [(generation, "orders", dict(eureka)), (generation, "orders", dict(eureka)),
                  (generation, "checkout", dict(eureka))]
    specs.append(("boot3", "pricing", {"spring.cloud.config.uri": config_url}))
    if consul_port is not None:
        specs.append(("boot3", "inventory", {
            "spring.cloud.consul.host": "127.0.0.1", "spring.cloud.consul.port": str(consul_port),
            "spring.cloud.consul.discovery.health-check-interval": "1s",
            "spring.cloud.consul.discovery.ip-address": "127.0.0.1"}))
    return specs


def ferry_phase(processes: Processes, binary: str, seconds: float) -> dict:
    os.environ["FERRY_BIN"] = binary
    ferry = processes.ferry("--config-repo", str(ROOT / "samples" / "config-repo"), "--log", "warn")
    processes.jvms(*estate_specs(ferry.eureka_url, f"http://127.0.0.1:{ferry.config_port}", ferry.consul_port))
    settle(lambda: {"ORDERS", "CHECKOUT", "INVENTORY"} <= eureka_apps(ferry.eureka_url),
           timeout=60, what="the estate registered with ferry")
    time.sleep(5)
    return watch({"ferry": ferry.process.pid}, seconds)


def real_phase(processes: Processes, seconds: float) -> dict:
    eureka_server = processes.jvm("boot3", "eureka-server", eureka_server_props())
    config_server = processes.jvm("boot3", "config-server", {
        "spring.profiles.active": "native",
        "spring.cloud.config.server.native.search-locations": f"file:{ROOT / 'samples' / 'config-repo'}/"})
    eureka_url = f"{eureka_server.url}/eureka/"
    processes.jvms(*estate_specs(eureka_url, config_server.url, None))
    settle(lambda: {"ORDERS", "CHECKOUT"} <= eureka_apps(eureka_url),
           timeout=60, what="the estate registered with the real Eureka Server")
    time.sleep(5)
    return watch({"Eureka Server": eureka_server.process.pid,
                  "Config Server": config_server.process.pid}, seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ferry", required=True)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    rows = {}
    for phase in ("ferry", "real"):
        processes = Processes(Path(tempfile.mkdtemp(prefix=f"estate-{phase}-")))
        try:
            rows.update(ferry_phase(processes, args.ferry, args.seconds) if phase == "ferry"
                        else real_phase(processes, args.seconds))
        finally:
            processes.close()

    java = java_version()
    lines = [
        "",
        f"## Footprint with the Spring estate registered — {datetime.date.today()} "
        f"({os.cpu_count()} cores, {platform.machine()}, {java})",
        f"Command: `bench/estate.sh{' --record' if args.record else ''}`. Ferry (release build) serves",
        "Eureka, Consul and Config for orders x2 + checkout of Boot 3.5 and of Boot 2.7, inventory",
        "(Consul discovery, 1 s HTTP check, Consul Config watch) and pricing (Config client); then",
        "the real Spring Cloud Netflix Eureka Server and Config Server (Cloud 2025.0.0, JVM flags of",
        "the tests: serial GC, C1, `-Xmx256m`) for the same apps but inventory (no real Consul here).",
        f"Every app renews and fetches each second. CPU and memory over {args.seconds:.0f} s once all",
        "are registered (CPU: utime + stime from /proc as a share of one core).",
        "",
        "| server | CPU % of one core | RSS MB | peak RSS MB |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['cpu_percent']:.1f} | {row['rss_mb']:.1f} | {row['hwm_mb']:.1f} |")
    publish("\n".join(lines), args.record)


if __name__ == "__main__":
    main()

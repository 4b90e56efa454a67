"""Ferry syncing with a legacy Eureka cluster (`--sync-eureka`): how long a registration on
one side takes to be seen on the other, and what Ferry costs while it syncs a legacy
registry of 10,000 instances.

Run with `bench/sync.sh` (it builds the release binary, bench/loadgen and the samples). The
legacy side is the real Spring Cloud Netflix Eureka Server (samples/boot3/eureka-server) in
a JVM with production settings where they matter here: JVM defaults (tiered JIT, the
collector the JVM picks) with a 1 GB heap, and the read-only response cache on, refreshed
every 30 s as by default, so it answers as legacy clients see it. Self-preservation is off
and expired leases are evicted every 5 s (tests/spring/servers.py's `eureka_server_props`):
neither matters here, every lease is renewed or long.

1. Delay, per `--intervals` value (Ferry's `--sync-interval`; default 30, then 5): a fresh
   Ferry syncing with the legacy server. `--changes` registrations on each side (plain
   Eureka JSON POSTs, bench/register.py's document) at uniform random offsets over
   max(2 intervals, 30 s), so each lands at a uniform phase of Ferry's sync loop and of the
   legacy response cache; both directions at once. Polled every 20 ms: Ferry's
   `/eureka/apps/APP` for legacy -> Ferry, and the legacy server's `/eureka/apps/APP`
   (response cache) for Ferry -> legacy as legacy clients see it and for the legacy
   server's own delay (its registrations, same cache). Every 250 ms each Ferry export not
   yet seen is looked up at `/eureka/apps/APP/ID`, which skips the cache: the moment
   Ferry's registration reached the legacy registry. A delay runs from the POST being sent
   to the first poll answer that lists the instance. A Java client adds its
   `registryFetchIntervalSeconds` (30 s) on top of what it reads from either server.
2. 10,000 instances (`--instances`) registered on the legacy server, 50 to an app
   (bench/register.py), renewed every 30 s each by bench/loadgen `renew` (333 PUT/s, open
   loop). Once the legacy cache lists them all, Ferry (default interval unless
   `--big-interval`) starts syncing: time to `/api/sync` imported == all, then CPU (utime +
   stime from /proc, mean and the busiest second) and memory (VmRSS, VmHWM) of Ferry and of
   the legacy JVM over `--seconds`, quiet, then again while a few instances are registered
   and cancelled on the legacy server every 10 s (deltas to apply).

Prints a Markdown section; `--record` appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "spring"))

from servers import FAST_JVM_FLAGS, Ferry, Jvm, Processes, eureka_server_props, wait_until  # noqa: E402

from bench.estate import cpu_seconds, java_version, publish, status_kb  # noqa: E402
from bench.register import instance, register  # noqa: E402

import httpx  # noqa: E402

# The legacy server as production runs it where it matters here: the JVM's own JIT and
# collector, heap for 10,000 instances (and their JSON, XML and gzip documents in the
# response cache), the 30 s response cache refresh of Spring Cloud Netflix's defaults.
LEGACY_JVM_FLAGS = ["-Xmx1g"]
LEGACY_CACHE_MS = 30_000
JAVA_FETCH_SECONDS = 30  # eureka.client.registry-fetch-interval-seconds, Spring's default
POLL = 0.02  # seconds between polls of an app's listing
DIRECT_POLL = 0.25  # seconds between lookups of each pending export, uncached
JSON = {"Accept": "application/json"}


class LegacyEureka(Jvm):
    """The real Eureka Server, with LEGACY_JVM_FLAGS instead of the tests' fast-start ones."""

    def command(self) -> list[str]:
        command = [arg for arg in super().command() if arg not in FAST_JVM_FLAGS]
        return [command[0], *LEGACY_JVM_FLAGS, *command[1:]]

    @property
    def eureka_url(self) -> str:
        return f"{self.url}/eureka/"


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, as bench/loadgen reports."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, int(-(-len(ordered) * p // 1)))) - 1]


def summary(values: list[float], expected: int) -> dict:
    row = {"seen": f"{len(values)}/{expected}"}
    if values:
        row.update(p50=percentile(values, 0.5), p99=percentile(values, 0.99), max=max(values))
    return row


def app_ids(client: httpx.Client, url: str) -> set[str]:
    """The instance ids one app lists at `url` (`.../apps/APP`); none when it is unknown."""
    response = client.get(url, headers=JSON)
    if response.status_code == 404:
        return set()
    response.raise_for_status()
    instances = response.json()["application"]["instance"]
    return {item["instanceId"] for item in (instances if isinstance(instances, list) else [instances])}


def sync_status(ferry: Ferry) -> dict:
    """The legacy Eureka source of Ferry's `/api/sync`."""
    sources = httpx.get(f"{ferry.admin_url}/api/sync", timeout=5).json()
    return next(source for source in sources if source["kind"] == "eureka")


def post_instance(client: httpx.Client, eureka_url: str, app: str, instance_id: str, ip: str) -> None:
    now = str(int(time.time() * 1000))
    # A long lease: these instances send no heartbeats and must outlive a run.
    body = instance(app, instance_id, ip, now, lease_seconds=600)
    response = client.post(f"{eureka_url}apps/{app}", json=body)
    assert response.status_code == 204, f"{eureka_url} registering {instance_id}: {response.status_code}"


def cancel_all(client: httpx.Client, eureka_url: str, app: str, ids) -> None:
    for instance_id in ids:
        status = client.delete(f"{eureka_url}apps/{app}/{instance_id}").status_code
        assert status in (200, 404), f"{eureka_url} cancelling {instance_id}: {status}"


def polling(stop: threading.Event, deadline: float, period: float, step) -> threading.Thread:
    """Runs `step` every `period` seconds until `stop` or `deadline` (monotonic)."""
    def loop():
        while not stop.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            try:
                step()
            except httpx.HTTPError:
                pass  # a slow or refused poll is retried at the next period
            stop.wait(max(0.0, period - (time.monotonic() - began)))
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def launch_ferry(processes: Processes, *args: str) -> Ferry:
    """A Ferry process with `args`, not waited for: Ferry.start gives up after 15 s without
    `/ready`, and a syncing Ferry may wait up to 20 s for its first import before serving."""
    ferry = Ferry(Path(tempfile.mkdtemp(prefix="ferry-data-", dir=processes.log_dir)), *args, "--log", "warn")
    processes.started.append(ferry)
    ferry.process = subprocess.Popen(ferry.args, stdout=open(ferry.log_path, "ab"), stderr=subprocess.STDOUT,
                                     env=ferry.env)
    return ferry


def delay_run(processes: Processes, legacy: LegacyEureka, interval: float, changes: int,
              rng: random.Random) -> dict:
    """One Ferry with `--sync-interval interval`; `changes` registrations each way."""
    ferry = launch_ferry(processes, "--sync-eureka", legacy.eureka_url, "--sync-interval", f"{interval:g}")
    wait_until(ferry._ready, timeout=60, what="ferry /ready")
    tag = f"{interval:g}".replace(".", "-")
    to_ferry_app, to_legacy_app = f"SYNC-TO-FERRY-{tag}S", f"SYNC-TO-LEGACY-{tag}S"
    spread = max(2 * interval, LEGACY_CACHE_MS / 1000)
    # A registration's worst case: the legacy cache, then Ferry's next sync; twice that, and then some.
    deadline = time.monotonic() + spread + 2 * (LEGACY_CACHE_MS / 1000 + interval) + 15
    events = sorted([(rng.uniform(0, spread), "to-ferry", n) for n in range(changes)]
                    + [(rng.uniform(0, spread), "to-legacy", n) for n in range(changes)])
    sent: dict[str, dict[str, float]] = {"to-ferry": {}, "to-legacy": {}}
    in_ferry: dict[str, float] = {}  # to-ferry ids listed by Ferry
    in_legacy_cache: dict[str, float] = {}  # ids of both directions listed by the legacy cache
    in_legacy_registry: dict[str, float] = {}  # to-legacy ids found uncached
    stop = threading.Event()
    clients = [httpx.Client(timeout=5) for _ in range(4)]
    ferry_client, legacy_client, direct_client, writer = clients

    def first_seen(seen: dict, ids) -> None:
        now = time.monotonic()
        for instance_id in ids:
            seen.setdefault(instance_id, now)

    def poll_ferry():
        first_seen(in_ferry, app_ids(ferry_client, f"{ferry.eureka_url}apps/{to_ferry_app}"))

    def poll_legacy_cache():
        for app in (to_ferry_app, to_legacy_app):
            first_seen(in_legacy_cache, app_ids(legacy_client, f"{legacy.eureka_url}apps/{app}"))

    def poll_legacy_registry():
        for instance_id in [i for i in list(sent["to-legacy"]) if i not in in_legacy_registry]:
            found = direct_client.get(f"{legacy.eureka_url}apps/{to_legacy_app}/{instance_id}", headers=JSON)
            if found.status_code == 200:
                first_seen(in_legacy_registry, [instance_id])

    try:
        pollers = [polling(stop, deadline, POLL, poll_ferry), polling(stop, deadline, POLL, poll_legacy_cache),
                   polling(stop, deadline, DIRECT_POLL, poll_legacy_registry)]
        began = time.monotonic()
        for offset, direction, n in events:
            time.sleep(max(0.0, began + offset - time.monotonic()))
            instance_id = f"sync-{direction}-{tag}-{n}"
            ip = f"127.1.{1 if direction == 'to-ferry' else 2}.{n % 250 + 1}"
            app, url = ((to_ferry_app, legacy.eureka_url) if direction == "to-ferry"
                        else (to_legacy_app, ferry.eureka_url))
            sent[direction][instance_id] = time.monotonic()
            post_instance(writer, url, app, instance_id, ip)
        everything = len(sent["to-ferry"]) + len(sent["to-legacy"])
        while time.monotonic() < deadline and not (
                len(in_ferry) == changes and len(in_legacy_cache) == everything
                and len(in_legacy_registry) == changes):
            time.sleep(0.1)
        stop.set()
        for poller in pollers:
            poller.join(timeout=10)
        status = sync_status(ferry)
    finally:
        stop.set()
        # Ferry cancels nothing when it stops: its exports are cancelled here, with the
        # legacy registrations, so that the next phase starts from an empty legacy registry.
        ferry.stop()
        cancel_all(writer, legacy.eureka_url, to_ferry_app, sent["to-ferry"])
        cancel_all(writer, legacy.eureka_url, to_legacy_app, sent["to-legacy"])
        for client in clients:
            client.close()

    def delays(seen: dict, direction: str, start: dict | None = None) -> list[float]:
        start = start or sent[direction]
        return [seen[i] - start[i] for i in sent[direction] if i in seen and i in start]

    return {
        "interval": interval, "spread": spread, "changes": changes, "status": status,
        "to_ferry": summary(delays(in_ferry, "to-ferry"), changes),
        "legacy_own": summary(delays(in_legacy_cache, "to-ferry"), changes),
        # Legacy -> Ferry after the legacy cache listed it: Ferry's own share.
        "ferry_share": summary(delays(in_ferry, "to-ferry", in_legacy_cache), changes),
        "to_legacy_registry": summary(delays(in_legacy_registry, "to-legacy"), changes),
        "to_legacy_cache": summary(delays(in_legacy_cache, "to-legacy"), changes),
    }


def legacy_up_count(client: httpx.Client, legacy: LegacyEureka) -> int:
    """How many UP instances the legacy full registry lists (through its cache): its
    `apps__hashcode` (`UP_10000_`), without decoding 9 MB of JSON."""
    text = client.get(f"{legacy.eureka_url}apps", headers=JSON).text
    match = re.search(r'"apps__hashcode"\s*:\s*"([^"]*)"', text)
    counts = dict(re.findall(r"([A-Z_]+?)_(\d+)_", match.group(1))) if match else {}
    return int(counts.get("UP", 0))


def watch(pids: dict[str, int], seconds: float) -> dict[str, dict]:
    """CPU over `seconds` as a share of one core, its busiest second, and memory at the end."""
    began = time.monotonic()
    first = {name: cpu_seconds(pid) for name, pid in pids.items()}
    previous, peak = dict(first), dict.fromkeys(pids, 0.0)
    for tick in range(1, int(seconds) + 1):
        time.sleep(max(0.0, began + tick - time.monotonic()))
        for name, pid in pids.items():
            used = cpu_seconds(pid)
            peak[name] = max(peak[name], used - previous[name])
            previous[name] = used
    elapsed = time.monotonic() - began
    return {name: {
        "cpu": 100 * (previous[name] - first[name]) / elapsed,
        "peak": 100 * peak[name],
        "rss": status_kb(pid, "VmRSS") / 1024,
        "hwm": status_kb(pid, "VmHWM") / 1024,
    } for name, pid in pids.items()}


def churn(stop: threading.Event, legacy: LegacyEureka, every: float, per_tick: int) -> dict:
    """Every `every` seconds, `per_tick` new instances on the legacy server and as many of
    the earlier ones cancelled, until `stop`. Counts what it did."""
    done = {"registered": 0, "cancelled": 0}

    def loop():
        alive: list[str] = []
        with httpx.Client(timeout=5) as client:
            n = 0
            while not stop.wait(every):
                for _ in range(per_tick):
                    instance_id = f"churn-{n}"
                    post_instance(client, legacy.eureka_url, "SYNC-CHURN", instance_id, f"127.2.{n // 250 % 250}.{n % 250 + 1}")
                    alive.append(instance_id)
                    n += 1
                    done["registered"] += 1
                if len(alive) > per_tick:
                    cancel_all(client, legacy.eureka_url, "SYNC-CHURN", alive[:per_tick])
                    del alive[:per_tick]
                    done["cancelled"] += per_tick
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    done["thread"] = thread
    return done


def big_registry(processes: Processes, legacy: LegacyEureka, loadgen: str, work: Path,
                 count: int, interval: float, seconds: float) -> dict:
    result: dict = {"count": count, "interval": interval, "seconds": seconds}
    ids = work / "legacy-ids.txt"
    began = time.monotonic()
    register("127.0.0.1", legacy.port, count, str(ids), per_app=50)
    result["register_seconds"] = time.monotonic() - began
    # The instances' heartbeats, each every 30 s, for longer than this phase can take
    # (it is stopped at the end).
    renewals = subprocess.Popen([loadgen, "renew", f"127.0.0.1:{legacy.port}", str(ids), "30", "900", "8"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(timeout=30)
    try:
        began = time.monotonic()
        # Exactly those (the delay runs' are cancelled and gone from the cache).
        wait_until(lambda: legacy_up_count(client, legacy) == count, timeout=LEGACY_CACHE_MS / 1000 + 30,
                   interval=1, what=f"the legacy server's cache listing {count} instances")
        result["legacy_cache_seconds"] = time.monotonic() - began
        print(f"registered in {result['register_seconds']:.1f} s, cached after {result['legacy_cache_seconds']:.1f} s",
              file=sys.stderr)

        began = time.monotonic()
        ferry = launch_ferry(processes, "--sync-eureka", legacy.eureka_url, "--sync-interval", f"{interval:g}")

        def imported() -> bool:
            if ferry.process.poll() is not None:
                raise AssertionError(f"ferry exited with {ferry.process.returncode}: {ferry.log()}")
            try:
                if "ready_seconds" not in result and httpx.get(f"{ferry.admin_url}/ready", timeout=1).status_code == 200:
                    result["ready_seconds"] = time.monotonic() - began
                return sync_status(ferry)["imported"] >= count
            except (httpx.HTTPError, StopIteration, ValueError):
                return False
        wait_until(imported, timeout=120, interval=0.05, what=f"ferry importing {count} instances")
        result["import_seconds"] = time.monotonic() - began
        wait_until(ferry._ready, timeout=30, what="ferry /ready")
        result.setdefault("ready_seconds", time.monotonic() - began)
        result["import_cpu_seconds"] = cpu_seconds(ferry.process.pid)
        result["after_import_rss"] = status_kb(ferry.process.pid, "VmRSS") / 1024
        print(f"imported in {result['import_seconds']:.2f} s", file=sys.stderr)
        pids = {"ferry": ferry.process.pid, "Eureka Server": legacy.process.pid}

        windows = []
        for label in ("quiet", "changes"):
            before = sync_status(ferry)
            stop = threading.Event()
            changed = churn(stop, legacy, every=10, per_tick=2) if label == "changes" else None
            rows = watch(pids, seconds)
            print(f"{label}: {rows}", file=sys.stderr)
            stop.set()
            if changed:
                changed["thread"].join(timeout=15)
            after = sync_status(ferry)
            windows.append({"label": label, "rows": rows, "changed": changed,
                            "full": after["full_fetches"] - before["full_fetches"],
                            "delta": after["delta_fetches"] - before["delta_fetches"],
                            "errors": after["errors"] - before["errors"], "status": after})
        result["windows"] = windows
        result["legacy_up_at_end"] = legacy_up_count(client, legacy)
        if renewals.poll() is not None:
            raise AssertionError(f"the heartbeats stopped early: {renewals.stdout.read()}")
        return result
    finally:
        client.close()
        renewals.kill()
        renewals.wait(timeout=10)


def seconds_cell(row: dict, key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "—"


def report(args, runs: list[dict], big: dict, load: tuple, java: str) -> str:
    command = "bench/sync.sh" + "".join(
        f" --{name.replace('_', '-')} {value:g}" if isinstance(value, float) else f" --{name.replace('_', '-')} {value}"
        for name, value in
        (("intervals", args.intervals), ("changes", args.changes), ("instances", args.instances),
         ("seconds", args.seconds), ("big_interval", args.big_interval))
        if value != DEFAULTS[name]) + (" --record" if args.record else "")
    lines = [
        "",
        f"## Sync with a legacy Eureka — {datetime.date.today()} ({os.cpu_count()} cores, {platform.machine()}, {java})",
        f"Command: `{command}`. Legacy side: the real Spring Cloud Netflix Eureka",
        "Server (samples/boot3/eureka-server, Cloud 2025.0.0), JVM defaults (tiered JIT, ergonomic",
        f"collector) with `{' '.join(LEGACY_JVM_FLAGS)}`; its read-only response cache on and refreshed every "
        f"{LEGACY_CACHE_MS / 1000:.0f} s",
        "(the default), self-preservation off, eviction every 5 s. Ferry: the release build. Load",
        f"average (1 min) {load[0]:.2f} at the start, {load[1]:.2f} at the end (other engineers' jobs share the cores).",
        "",
        "### Delay from a registration on one side to its visibility on the other",
        f"{args.changes} registrations each way per run, both directions at once, sent at uniform random",
        "offsets over the spread; polls every 20 ms (uncached lookups of Ferry's exports every 250 ms).",
        "Seconds from the POST to the first answer that lists the instance.",
        "",
        "| --sync-interval | spread | path | seen | p50 s | p99 s | max s |",
        "|---|---|---|---|---|---|---|",
    ]
    paths = [
        ("to_ferry", "legacy → Ferry (Ferry's `/eureka/apps/APP`)"),
        ("ferry_share", "legacy → Ferry, from the legacy cache listing it (Ferry's share)"),
        ("to_legacy_registry", "Ferry → legacy registry (`/eureka/apps/APP/ID`, uncached)"),
        ("to_legacy_cache", "Ferry → legacy as its clients read it (`/eureka/apps/APP`, cached)"),
        ("legacy_own", "legacy's own: its registration → its `/eureka/apps/APP` (cached)"),
    ]
    for run in runs:
        for key, label in paths:
            row = run[key]
            lines.append(f"| {run['interval']:g} s | {run['spread']:g} s | {label} | {row['seen']} | "
                         f"{seconds_cell(row, 'p50')} | {seconds_cell(row, 'p99')} | {seconds_cell(row, 'max')} |")
    lines.append("")
    for run in runs:
        status = run["status"]
        lines.append(f"Run at {run['interval']:g} s: {status['full_fetches']} full and {status['delta_fetches']} delta "
                     f"fetches, {status['errors']} errors (last: {status['last_error'] or 'none'}).")
    lines += [
        "",
        f"A Java client reads either server every `registryFetchIntervalSeconds` ({JAVA_FETCH_SECONDS} s by default: a",
        "configuration value, not measured), which comes on top of every row: a legacy client sees a",
        f"legacy registration within the legacy's own row + up to {JAVA_FETCH_SECONDS} s, and the same holds for a",
        "Ferry registration with the Ferry → legacy (cached) row; a Ferry client sees a legacy",
        f"registration within the legacy → Ferry row + its own fetch interval.",
        "",
        f"### Ferry syncing {big['count']:,} legacy instances",
        f"{big['count']:,} instances on the legacy server ({big['count'] // 50} apps × 50, bench/register.py), each",
        "renewed every 30 s (bench/loadgen `renew`, open loop). Registering them took "
        f"{big['register_seconds']:.1f} s;",
        f"the legacy cache listed all {big['legacy_cache_seconds']:.1f} s later. Then Ferry started with "
        f"`--sync-interval {big['interval']:g}`:",
        f"`/ready` after {big['ready_seconds']:.2f} s, all {big['count']:,} imported (`/api/sync`) after "
        f"{big['import_seconds']:.2f} s, having used",
        f"{big['import_cpu_seconds']:.2f} s of CPU; RSS {big['after_import_rss']:.1f} MB then. Then {big['seconds']:.0f} s "
        f"quiet, and {big['seconds']:.0f} s with 2",
        "instances registered and 2 cancelled on the legacy server every 10 s. CPU: utime + stime",
        "from /proc as a share of one core, over the window and in its busiest second; memory at",
        "the window's end.",
        "",
        "| window | process | CPU % of one core | busiest second % | RSS MB | peak RSS MB | Ferry's fetches: full / delta / errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for window in big["windows"]:
        label = window["label"]
        if window["changed"]:
            label += f" ({window['changed']['registered']} registered, {window['changed']['cancelled']} cancelled)"
        for name, row in window["rows"].items():
            fetches = f"{window['full']} / {window['delta']} / {window['errors']}" if name == "ferry" else "—"
            lines.append(f"| {label} | {name} | {row['cpu']:.1f} | {row['peak']:.0f} | {row['rss']:.1f} | "
                         f"{row['hwm']:.1f} | {fetches} |")
    end = big["windows"][-1]["status"]
    changed = big["windows"][-1]["changed"]
    lines += [
        "",
        f"At the end (the legacy registry holding {big['count'] + changed['registered'] - changed['cancelled']}, "
        "what its cache and then Ferry list lags by up to 30 s + an interval):",
        f"Ferry imported {end['imported']} (exported {end['exported']}), the legacy cache listed {big['legacy_up_at_end']} UP; "
        f"Ferry's totals {end['full_fetches']} full and {end['delta_fetches']} delta fetches, {end['errors']} errors"
        f" (last: {end['last_error'] or 'none'}).",
    ]
    return "\n".join(lines)


DEFAULTS = {"intervals": "30,5", "changes": 100, "instances": 10000, "seconds": 90.0, "big_interval": 30.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ferry", required=True)
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--intervals", default=DEFAULTS["intervals"],
                        help="--sync-interval of each delay run, comma-separated")
    parser.add_argument("--changes", type=int, default=DEFAULTS["changes"], help="registrations each way per run")
    parser.add_argument("--instances", type=int, default=DEFAULTS["instances"])
    parser.add_argument("--seconds", type=float, default=DEFAULTS["seconds"], help="each CPU window")
    parser.add_argument("--big-interval", type=float, default=DEFAULTS["big_interval"],
                        help="--sync-interval while syncing the big registry")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    # A SIGTERM ends the run through the same clean-up as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ["FERRY_BIN"] = args.ferry

    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    processes = Processes(work)
    try:
        legacy = LegacyEureka("boot3", "eureka-server", work, eureka_server_props(response_cache_ms=LEGACY_CACHE_MS))
        processes.started.append(legacy)
        legacy.start()
        rng = random.Random()
        runs = []
        for interval in (float(value) for value in args.intervals.split(",") if value):
            print(f"delay run, --sync-interval {interval:g}...", file=sys.stderr)
            runs.append(delay_run(processes, legacy, interval, args.changes, rng))
            # The next Ferry starts once the legacy cache no longer lists this run's
            # instances: a fresh Ferry takes the `ferry-owner: ferry` copies it finds there
            # for its own (a restart's rule) and registers them again, cancelled or not.
            with httpx.Client(timeout=30) as client:
                wait_until(lambda: legacy_up_count(client, legacy) == 0, timeout=LEGACY_CACHE_MS / 1000 + 30,
                           interval=1, what="the legacy cache listing no instance")
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "status"}), file=sys.stderr)
        print(f"{args.instances} instances...", file=sys.stderr)
        big = big_registry(processes, legacy, args.loadgen, work, args.instances, args.big_interval, args.seconds)
    except BaseException:
        print(processes.report(), file=sys.stderr)
        raise
    finally:
        processes.close()

    publish(report(args, runs, big, (load_start, os.getloadavg()[0]), java_version()), args.record)


if __name__ == "__main__":
    main()

"""The admin listener's `/metrics` and `ferry ctl` as scripts use them, against the real binary.

Traffic goes through every API with real clients (py-eureka-client in the sample service and
as a caller, py-consul, config-client; a second ferry as the legacy Eureka the first syncs
with; a cut-over service with a failing and a dead instance behind the proxy), then Debian's
`promtool check metrics` must find nothing to say about the scrape, every metric the Grafana
dashboard (compose/grafana/ferry-dashboard.json) queries must be in it, and every query must
parse as PromQL (`promtool check rules`) and return series from a real Prometheus (Debian's
server, same package) scraping the ferry. The ctl tests check `--output json` on every read
command and the exit codes: 3 not found, 4 refused, 5 unreachable, 2 usage."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess

import httpx
import pytest
from config.spring import ConfigClient

from harness import ROOT, PyEureka, app_instances, ferry_binary, free_port, metric_series, wait_until
from test_mesh import Service, register_raw

DASHBOARD = ROOT / "compose" / "grafana" / "ferry-dashboard.json"
CONFIG_REPO = ROOT / "samples" / "config-repo"

# PromQL words that precede `(` or `by (...)` without being metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "inf", "nan",
}


def promtool() -> str:
    """Debian's promtool (package prometheus, installed by scripts/test.sh). Missing under CI
    is a failure; elsewhere the test is skipped, saying what to install."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool is missing under CI: scripts/test.sh installs Debian's prometheus package",
                    pytrace=False)
    pytest.skip("promtool is not installed (apt-get install --no-install-recommends prometheus); "
                "under CI this is a failure")


def one_outbound_port() -> tuple[str, str]:
    """`--outbound-ports` with one free port: the one service these tests cut over gets a
    port no other process on the machine holds (the default range is shared)."""
    port = free_port()
    return "--outbound-ports", f"{port}-{port}"


@contextlib.contextmanager
def prometheus_scraping(ferry, directory):
    """Debian's Prometheus server scraping `ferry`'s admin listener every second; yields a
    function that runs an instant query and returns its result vector. Its scrape of the
    target must succeed with no error."""
    server = shutil.which("prometheus")
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing under CI: scripts/test.sh installs Debian's package", pytrace=False)
        pytest.skip("the prometheus server is not installed (apt-get install --no-install-recommends prometheus)")
    port = free_port()
    config = directory / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "ferry", "static_configs": [{"targets": [f"127.0.0.1:{ferry.admin_port}"]}]}],
    }))
    log = open(directory / "prometheus.log", "wb")
    process = subprocess.Popen([server, f"--config.file={config}", f"--storage.tsdb.path={directory / 'tsdb'}",
                                f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api/v1"

    def scraped() -> bool:
        assert process.poll() is None, (directory / "prometheus.log").read_text()[-3000:]
        try:
            answer = httpx.get(f"{api}/targets", timeout=2)
        except httpx.HTTPError:
            return False
        if answer.status_code == 503:  # still opening its storage
            return False
        targets = answer.json()["data"]["activeTargets"]
        assert all(target["lastError"] == "" for target in targets), targets
        return [target["health"] for target in targets] == ["up"]

    def query(expr: str) -> list:
        answer = httpx.get(f"{api}/query", params={"query": expr}, timeout=5).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    try:
        wait_until(scraped, 30, interval=0.5, what="Prometheus to scrape ferry")
        yield query
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def run_ctl(ferry, *args: str, admin: str | None = None) -> subprocess.CompletedProcess:
    """`ferry ctl` with whatever exit code it gives."""
    return subprocess.run([str(ferry_binary()), "ctl", "--admin", admin or f"127.0.0.1:{ferry.admin_port}", *args],
                          capture_output=True, text=True, timeout=60)


def ctl_json(ferry, *args: str):
    """`ferry ctl --output json ...`: exit 0 and one JSON document on stdout."""
    result = run_ctl(ferry, "--output", "json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def sample_names(text: str) -> set[str]:
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are neither functions
    (followed by `(`), nor PromQL words, nor label names inside `{...}` or `by (...)`."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)             # string literals
    expr = re.sub(r"\{[^}]*\}", "{}", expr)                       # label matchers
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)                      # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        after = expr[match.end():].lstrip()
        if after.startswith("(") or match.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(match.group(0))
    return names


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queries = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    assert len(queries) >= 10, "the dashboard's panels carry their queries"
    # Grafana's own variables, replaced as Grafana would before sending the query.
    return [re.sub(r"\$__rate_interval|\$__interval|\$__range", "5m", query) for query in queries]


def test_metrics_pass_promtool_after_traffic_through_every_api(start_ferry, clients, tmp_path):
    tool = promtool()
    repo = tmp_path / "config"
    shutil.copytree(CONFIG_REPO, repo)
    legacy = start_ferry()
    ferry = start_ferry("--config-repo", str(repo), "--sync-eureka", legacy.eureka_url,
                        "--sync-interval", "1", "--sync-grace", "2", *one_outbound_port())

    # Eureka: two instances through py-eureka-client (one answers 503), one registered raw
    # that refuses connections, and a py-eureka-client caller fetching full and deltas.
    clients(Service(ferry, "orders"))
    clients(Service(ferry, "orders", "--fail-with", "503"))
    register_raw(ferry, "ORDERS", "orders-dead", free_port())
    caller = clients(PyEureka(ferry.eureka_url, should_register=False, renewal_interval_in_secs=1))
    wait_until(lambda: len(app_instances(ferry, "ORDERS")) == 3, 10, what="three orders instances")
    wait_until(lambda: any(app.name == "ORDERS" for app in caller.client.applications.applications), 10,
               what="the caller's fetch")

    # Consul: a registration with a TTL check through py-consul, and its health read.
    consul = ferry.consul()
    consul.agent.service.register("billing", service_id="billing-1", address="127.0.0.1", port=9100,
                                  check={"TTL": "30s"})
    assert consul.agent.check.ttl_pass("service:billing-1")
    assert [entry["Service"]["ID"] for entry in consul.health.service("billing", passing=True)[1]] == ["billing-1"]

    # Config: config-client loads orders/dev from the folder.
    config = ConfigClient(address=f"http://127.0.0.1:{ferry.config_port}", app_name="orders", profile="dev",
                          label="master", fail_fast=False)
    config.get_config()
    assert config.get("greeting.source") == "orders-dev.yml"

    # The mesh: orders cut over; the proxy retries the 503s and ejects the dead instance.
    port = ctl_json(ferry, "cutover", "orders", "mesh")["port"]
    statuses = [httpx.get(f"http://127.0.0.1:{port}/items", timeout=5).status_code for _ in range(40)]
    assert statuses.count(200) > 0, statuses
    wait_until(lambda: metric_series(ferry, "ferry_sync_reachable") and
               all(value == 1 for value in metric_series(ferry, "ferry_sync_reachable").values()), 15,
               what="the sync with the legacy side")

    text = httpx.get(f"{ferry.admin_url}/metrics", timeout=5).text
    names = sample_names(text)
    for expected in ["ferry_proxy_requests_total", "ferry_proxy_responses_total", "ferry_proxy_retries_total",
                     "ferry_proxy_ejections_total", "ferry_proxy_request_duration_seconds_bucket",
                     "ferry_eureka_fetches_total", "ferry_http_requests_total", "ferry_sync_reachable",
                     "ferry_sync_fetches_total", "ferry_registry_instances", "ferry_store_current"]:
        assert expected in names, f"{expected} has no sample: the traffic above did not reach it"
    assert 'api="consul"' in text and 'api="config"' in text

    checked = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, ""), checked.stdout + checked.stderr

    # Every metric the dashboard reads is in the scrape (a histogram through its series).
    histograms = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ") and line.endswith(" histogram")}
    queries = dashboard_queries()
    used = set().union(*(metric_names(query) for query in queries))
    assert used, queries
    missing = sorted(name for name in used
                     if name not in names and re.sub(r"_(bucket|sum|count)$", "", name) not in histograms)
    assert missing == [], f"the dashboard queries metrics /metrics does not export: {missing}"

    # Every query parses as PromQL: promtool checks them as recording rules.
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text(json.dumps({"groups": [{"name": "ferry-dashboard", "rules": [
        {"record": f"ferry:dashboard:query_{number}", "expr": query} for number, query in enumerate(queries)]}]}))
    parsed = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=30)
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    assert f"SUCCESS: {len(queries)} rules found" in parsed.stdout, parsed.stdout

    # A real Prometheus scrapes this ferry (asking for OpenMetrics, its strict parser) and
    # answers every dashboard query with series.
    with prometheus_scraping(ferry, tmp_path) as query:
        wait_until(lambda: all(query(expr) for expr in queries), 30,
                   what="every dashboard query to return series from Prometheus")


def test_openmetrics_is_served_to_scrapers_that_ask_for_it(ferry):
    asked = httpx.get(f"{ferry.admin_url}/metrics", timeout=5,
                      headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"})
    assert asked.headers["content-type"].startswith("application/openmetrics-text")
    assert asked.text.endswith("# EOF\n")
    assert "# TYPE ferry_http_requests counter" in asked.text
    plain = httpx.get(f"{ferry.admin_url}/metrics", timeout=5)
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE ferry_http_requests_total counter" in plain.text and "# EOF" not in plain.text


def test_ctl_prints_json_for_every_read_and_write(start_ferry, clients):
    legacy = start_ferry()
    ferry = start_ferry("--sync-eureka", legacy.eureka_url, "--sync-interval", "1", *one_outbound_port())
    clients(Service(ferry, "orders"))
    wait_until(lambda: len(app_instances(ferry, "ORDERS")) == 1, 10, what="the orders instance")

    services = ctl_json(ferry, "services")
    assert [service["name"] for service in services] == ["ORDERS"]
    assert services[0]["mode"] == "legacy" and len(services[0]["instances"]) == 1

    moved = ctl_json(ferry, "cutover", "orders", "mesh")
    assert moved["name"] == "ORDERS" and moved["mode"] == "mesh" and moved["port"] > 0
    for _ in range(5):
        assert httpx.get(f"http://127.0.0.1:{moved['port']}/x", timeout=5).status_code == 200
    # `--output` is global: it may follow the subcommand too.
    shown = json.loads(run_ctl(ferry, "service", "orders", "--output", "json").stdout)
    assert shown["service"]["name"] == "ORDERS" and shown["service"]["mode"] == "mesh"
    assert shown["traffic"]["requests"] == 5
    [(endpoint, figures)] = shown["traffic"]["endpoints"].items()
    assert endpoint.startswith("orders-") and figures["responses"]["2xx"] == 5
    assert isinstance(shown["traffic"]["latency_seconds"]["p99"], (int, float))

    wait_until(lambda: ctl_json(ferry, "sync")[0]["reachable"], 10, what="the sync to reach the legacy side")
    [source] = ctl_json(ferry, "sync")
    assert source["kind"] == "eureka" and source["endpoints"] == [legacy.eureka_url]
    [node] = ctl_json(ferry, "nodes")
    assert node["self"] is True
    assert ctl_json(ferry, "allow") == {}, "no allow rule without sidecar mode"

    # The table stays the default.
    assert run_ctl(ferry, "services").stdout.startswith("SERVICE")


def test_ctl_exit_codes_tell_not_found_refused_unreachable_and_usage(start_ferry):
    ferry = start_ferry("--admin-token", "s3cret", *one_outbound_port())

    missing = run_ctl(ferry, "service", "nope")
    assert missing.returncode == 3, missing.stderr
    assert missing.stdout == "" and "404" in missing.stderr and "NOPE" in missing.stderr
    assert run_ctl(ferry, "--output", "json", "service", "nope").returncode == 3

    wrong = run_ctl(ferry, "--token", "guess", "cutover", "orders", "mesh")
    assert wrong.returncode == 4 and wrong.stdout == "", wrong.stderr
    assert "403" in wrong.stderr and "not valid" in wrong.stderr
    without = run_ctl(ferry, "cutover", "orders", "mesh")
    assert without.returncode == 4 and "401" in without.stderr, without.stderr
    assert httpx.get(f"{ferry.admin_url}/api/services", timeout=5).json() == [], "nothing was cut over"
    allowed = run_ctl(ferry, "--token", "s3cret", "--output", "json", "cutover", "orders", "mesh")
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["mode"] == "mesh", allowed.stderr

    nowhere = run_ctl(ferry, "services", admin=f"127.0.0.1:{free_port()}")
    assert nowhere.returncode == 5 and nowhere.stdout == "", nowhere.stderr
    assert "cannot be reached" in nowhere.stderr

    for bad in (["--output", "yaml", "services"], ["cutover", "orders", "sideways"], ["service"],
                ["allow", "--any"]):
        result = run_ctl(ferry, *bad)
        assert result.returncode == 2 and result.stdout == "", (bad, result.returncode, result.stderr)

    help_text = run_ctl(ferry, "--help").stdout
    assert "Exit codes:" in help_text and "5  unreachable" in help_text

"""Real Spring Cloud Config clients against the real binary: cloud-config-client (npm) and
config-client (PyPI) load configuration from a folder, from a git repository (labels, new
commits) and from the KV store, and see the values Spring's precedence rules give."""

import json
import os
import shutil
import subprocess
import threading
import time

import httpx
import pytest
from config.spring import ConfigClient

from harness import NODE_PATH, ROOT

SAMPLE = ROOT / "samples" / "config-repo"
JS_CONFIG = ROOT / "tests" / "e2e" / "js" / "config_client.js"


def js_load(ferry, name, profiles, label=None):
    options = {"endpoint": f"http://127.0.0.1:{ferry.config_port}", "name": name, "profiles": profiles}
    if label:
        options["label"] = label
    result = subprocess.run(["node", str(JS_CONFIG), json.dumps(options)], capture_output=True, text=True,
                            timeout=30, env={**os.environ, "NODE_PATH": str(NODE_PATH)})
    return json.loads(result.stdout)


def py_load(ferry, name, profile, label="master"):
    client = ConfigClient(address=f"http://127.0.0.1:{ferry.config_port}", app_name=name, profile=profile,
                          label=label, fail_fast=False)
    client.get_config()
    return client


class blocking_read:  # noqa: N801 - used like a function that returns a handle
    """A py-consul blocking KV read started on its own thread; `done` is set when it returns."""

    def __init__(self, ferry, prefix, index, wait):
        self.done = threading.Event()
        self.result = None
        self.returned_at = None
        client = ferry.consul()

        def run():
            try:
                self.result = client.kv.get(prefix, recurse=True, index=index, wait=wait)
            finally:
                self.returned_at = time.monotonic()
                self.done.set()

        threading.Thread(target=run, daemon=True).start()


def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=ferry", "-c", "user.email=ferry@example.invalid",
                    "-c", "commit.gpgsign=false", *args], cwd=repo, check=True, capture_output=True)


def test_both_clients_read_a_folder_with_springs_precedence(start_ferry, tmp_path):
    repo = tmp_path / "config"
    shutil.copytree(SAMPLE, repo)
    ferry = start_ferry("--config-repo", str(repo))

    js = js_load(ferry, "orders", ["dev"])
    properties = js["properties"]
    assert properties["orders.db.pool.max-size"] == 2            # orders-dev.yml beats orders.yml
    assert properties["greeting.source"] == "orders-dev.yml"
    assert properties["common.timeout"] == 20                    # application-dev.yml beats application.yml
    assert properties["greeting.message"] == "hello from orders.properties"  # .properties above .yml
    assert properties["orders.feature-flag"] is True            # YAML 1.1: yes is a boolean
    assert [name.rsplit("/", 1)[-1] for name in js["sources"]] == [
        "orders-dev.yml", "application-dev.yml", "orders.properties", "orders.yml", "application.yml (document #0)"]

    both = js_load(ferry, "orders", ["dev", "prod"])["properties"]
    assert both["orders.db.pool.max-size"] == 50                 # the later profile wins
    assert both["common.retries"] == 5
    assert both["common.timeout"] == 20                          # application-dev over application.yml's prod document

    py = py_load(ferry, "orders", "dev")
    assert py.get("orders.db.pool.max-size") == 2
    assert py.get("greeting.source") == "orders-dev.yml"
    assert py.get("orders.endpoints")[1]["name"] == "fallback"   # the client rebuilds lists
    assert py.get("features") == ["orders-x", "orders-y"]

    # An edit in the folder is served on the next load, with no restart.
    (repo / "orders-dev.yml").write_text("orders:\n  db:\n    pool:\n      max-size: 3\n")
    assert js_load(ferry, "orders", ["dev"])["properties"]["orders.db.pool.max-size"] == 3
    assert py_load(ferry, "orders", "dev").get("orders.db.pool.max-size") == 3


def test_git_labels_and_new_commits(start_ferry, tmp_path):
    repo = tmp_path / "git-config"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "billing.yml").write_text("billing:\n  currency: EUR\n  limits: [10, 20]\n")
    (repo / "billing-dev.properties").write_text("billing.currency=USD\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    git(repo, "tag", "v1")
    ferry = start_ferry("--config-repo", f"file://{repo}")

    assert js_load(ferry, "billing", ["dev"], "main")["properties"]["billing.currency"] == "USD"
    assert py_load(ferry, "billing", "default", "main").get("billing.limits") == [10, 20]

    (repo / "billing.yml").write_text("billing:\n  currency: GBP\n  limits: [30]\n")
    git(repo, "commit", "-qam", "second")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert py_load(ferry, "billing", "default", "main").get("billing.currency") == "GBP"
    assert py_load(ferry, "billing", "default", "v1").get("billing.currency") == "EUR"
    version = httpx.get(f"http://127.0.0.1:{ferry.config_port}/billing/default/main").json()["version"]
    assert version == head

    failed = js_load(ferry, "billing", ["default"], "no-such-label")
    assert "error" in failed, "an unknown label is a 404, which the client reports"
    assert httpx.get(f"http://127.0.0.1:{ferry.config_port}/billing/default/no-such-label").status_code == 404


def test_kv_is_one_source_of_truth_for_consul_config_and_config_server_apps(start_ferry, tmp_path):
    ferry = start_ferry("--config-repo", str(SAMPLE))
    consul = ferry.consul()
    assert consul.kv.put("config/orders,dev/data", "orders:\n  db:\n    pool:\n      max-size: 42\n")
    assert consul.kv.put("config/orders/greeting/source", "consul kv")
    js = js_load(ferry, "orders", ["dev"])
    assert js["properties"]["orders.db.pool.max-size"] == 42
    assert js["properties"]["greeting.source"] == "consul kv"
    assert js["sources"][:2] == ["consul:config/orders,dev/", "consul:config/orders/"]
    assert py_load(ferry, "orders", "dev").get("orders.db.pool.max-size") == 42
    # The same write wakes a Consul Config watcher already waiting, as Spring's ConfigWatch
    # waits on the prefix: the read blocks until the write, then returns at once.
    index, _ = consul.kv.get("config/orders,dev/", recurse=True)
    watch = blocking_read(ferry, "config/orders,dev/", index, wait="60s")
    assert not watch.done.wait(1.0), f"the watch returned before any write: {watch.result}"
    written_at = time.monotonic()
    assert consul.kv.put("config/orders,dev/data", "orders:\n  db:\n    pool:\n      max-size: 43\n")
    assert watch.done.wait(20), "the write did not wake the watcher (its wait is 60 s)"
    new_index, entries = watch.result
    assert watch.returned_at >= written_at
    assert int(new_index) > int(index)
    assert b"max-size: 43" in {e["Key"]: e["Value"] for e in entries}["config/orders,dev/data"]
    assert py_load(ferry, "orders", "dev").get("orders.db.pool.max-size") == 43


def test_rendered_views_and_bad_requests_over_the_wire(start_ferry):
    ferry = start_ferry("--config-repo", str(SAMPLE))
    base = f"http://127.0.0.1:{ferry.config_port}"
    yml = httpx.get(f"{base}/main/orders-dev.yml")
    assert yml.status_code == 200 and yml.headers["content-type"].startswith("text/plain")
    assert "url: jdbc:postgresql://db.internal:5432/orders" in yml.text
    properties = httpx.get(f"{base}/orders-dev,prod.properties").text.splitlines()
    assert "orders.db.pool.max-size: 50" in properties
    assert "features[0]: orders-x" in properties and "features[2]: base-c" not in properties
    assert httpx.get(f"{base}/orders-dev.json").json()["orders"]["endpoints"][0]["name"] == "primary"
    v2 = httpx.get(f"{base}/orders/dev", headers={"Accept": "application/vnd.spring-cloud.config-server.v2+json"})
    assert v2.status_code == 200
    assert [httpx.get(f"{base}{path}").status_code for path in
            ["/orders/dev/nope", "/orders/dev,,x", "/..%2F..%2Fetc/passwd", "/orders/dev/%2E%2E"]] == [404, 400, 400, 400]
    assert httpx.post(f"{base}/orders/dev").status_code == 405
    assert httpx.get(f"{base}/actuator/health").json() == {"status": "UP"}


@pytest.fixture(autouse=True)
def _needs_git():
    if shutil.which("git") is None:
        pytest.fail("git is needed to build the test repositories")


def test_a_bare_repository_a_plain_file_and_the_master_fallback(start_ferry, tmp_path):
    """A bare git repository (as a Config Server's remote usually is) whose only branch is
    `master`: requests with no label, and with the default label `main`, fall back to
    `master`; a plain file is served from the label's tree."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "master")
    (work / "billing.yml").write_text("billing:\n  currency: CHF\n")
    (work / "nginx.conf").write_text("server { listen 80; }\n")
    git(work, "add", ".")
    git(work, "commit", "-qm", "first")
    bare = tmp_path / "config.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()
    ferry = start_ferry("--config-repo", str(bare))
    base = f"http://127.0.0.1:{ferry.config_port}"

    # No label: the default `main` does not exist, `master` is served.
    unlabelled = httpx.get(f"{base}/billing/default")
    assert unlabelled.status_code == 200, unlabelled.text
    assert unlabelled.json()["version"] == head
    assert js_load(ferry, "billing", ["default"])["properties"]["billing.currency"] == "CHF"
    # The default label named explicitly falls back the same way, as Spring's tryMasterBranch does.
    assert httpx.get(f"{base}/billing/default/main").json()["version"] == head
    assert py_load(ferry, "billing", "default", "master").get("billing.currency") == "CHF"

    plain = httpx.get(f"{base}/billing/default/master/nginx.conf")
    assert plain.status_code == 200 and plain.text == "server { listen 80; }\n"
    assert plain.headers["content-type"].startswith("text/plain")
    assert httpx.get(f"{base}/billing/default/master/missing.conf").status_code == 404
    assert httpx.get(f"{base}/billing/default/no-such-label/nginx.conf").status_code == 404


def test_a_plain_file_from_a_folder(start_ferry):
    ferry = start_ferry("--config-repo", str(SAMPLE))
    base = f"http://127.0.0.1:{ferry.config_port}"
    plain = httpx.get(f"{base}/orders/dev/main/orders.yml")
    assert plain.status_code == 200 and plain.text == (SAMPLE / "orders.yml").read_text()
    assert httpx.get(f"{base}/orders/dev/main/..%2Fetc%2Fpasswd").status_code in (400, 404)


def test_comma_separated_names_and_label_lists_as_java_clients_send_them(start_ferry, tmp_path):
    """`spring.cloud.config.name=orders,shared` and `send-all-labels` (`/orders/dev/v1,v2`):
    every name's files are served, later names and later labels first, as Spring's server."""
    repo = tmp_path / "names"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "application.yml").write_text("who: application\n")
    (repo / "orders.yml").write_text("who: orders\norders:\n  pool: 5\n")
    (repo / "shared.yml").write_text("who: shared\nshared:\n  region: eu\n")
    (repo / "orders-dev.yml").write_text("who: orders-dev\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "main")
    git(repo, "checkout", "-qb", "hotfix")
    (repo / "orders.yml").write_text("who: orders\norders:\n  pool: 9\n")
    git(repo, "commit", "-qam", "hotfix")
    git(repo, "checkout", "-q", "main")
    ferry = start_ferry("--config-repo", str(repo))

    js = js_load(ferry, "orders,shared", ["dev"])
    assert [name.rsplit("/", 1)[-1] for name in js["sources"]] == [
        "orders-dev.yml", "shared.yml", "orders.yml", "application.yml"]
    assert js["properties"]["orders.pool"] == 5        # the app's own file is not lost
    assert js["properties"]["shared.region"] == "eu"
    assert js["properties"]["who"] == "orders-dev"
    py = py_load(ferry, "orders,shared", "default", "main")
    assert py.get("who") == "shared" and py.get("orders.pool") == 5

    both = py_load(ferry, "orders", "default", "main,hotfix")
    assert both.get("orders.pool") == 9                 # the last label ranks first
    listed = httpx.get(f"http://127.0.0.1:{ferry.config_port}/orders/default/main,hotfix").json()
    assert listed["label"] == "main,hotfix" and len(listed["version"].split(",")) == 2
    assert "error" in js_load(ferry, "orders", ["default"], "main,no-such-label")


def test_profile_names_spring_refuses_are_400_unless_validation_is_off(start_ferry, tmp_path):
    """Spring's server (4.3.3+) refuses `_local` and `dev:eu` with 400; with
    `spring.profiles.validate=false` (here `--config-validate-profiles false`) it serves them,
    as older servers did for the Boot 2.7 clients that send them."""
    repo = tmp_path / "profiles"
    repo.mkdir()
    (repo / "orders-_local.yml").write_text("where: local\n")
    (repo / "orders-dev:eu.yml").write_text("where: eu\n")
    strict = start_ferry("--config-repo", str(repo))
    assert httpx.get(f"http://127.0.0.1:{strict.config_port}/orders/_local").status_code == 400
    assert "error" in js_load(strict, "orders", ["dev:eu"])
    lenient = start_ferry("--config-repo", str(repo), "--config-validate-profiles", "false")
    assert py_load(lenient, "orders", "_local").get("where") == "local"
    assert js_load(lenient, "orders", ["dev:eu"])["properties"]["where"] == "eu"

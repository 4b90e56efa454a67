"""Fixtures: a running `ferry` per test, stopped with SIGTERM and checked for a clean exit."""

import signal

import pytest
from py_eureka_client import logger as py_eureka_logger

from etcd import EtcdCluster, ferry_node
from harness import Ferry, JsEureka, PyEureka

# py-eureka-client's heartbeat thread outlives stop() and logs warnings with tracebacks once
# the test's ferry is gone; the tests assert on what the client sees, not on its log. (The
# library knows DEBUG, INFO, WARN and ERROR only, and takes anything else as INFO.)
py_eureka_logger.set_level("ERROR")


@pytest.fixture
def start_ferry(tmp_path):
    started = []

    def start(*args: str, env: dict[str, str] | None = None) -> Ferry:
        ferry = Ferry(tmp_path / f"data-{len(started)}", *args, env=env).start()
        started.append(ferry)
        return ferry

    yield start
    for ferry in started:
        code = ferry.stop()
        assert code == 0, f"ferry did not shut down cleanly ({code}): {ferry.log()}"


@pytest.fixture
def ferry(start_ferry):
    return start_ferry()


@pytest.fixture
def clients():
    """Collects started clients and stops them after the test, whatever happened. A client
    whose stop() raises fails the test (after every client was stopped), unless it says its
    stop may fail (`stop_may_fail = True`, e.g. a client whose server is gone on purpose)."""
    running = []

    def track(client):
        running.append(client)
        return client

    yield track
    failures = []
    for client in reversed(running):
        try:
            client.stop()
        except Exception as error:  # noqa: BLE001 - cleanup must reach every client first
            if not getattr(client, "stop_may_fail", False):
                failures.append(f"{type(client).__name__}.stop(): {error!r}")
    if failures:
        pytest.fail("cleanup failed:\n" + "\n".join(failures), pytrace=False)


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory):
    """A real three-member etcd cluster (scripts/etcd-cluster.sh) shared by a module's tests.
    Without etcd the tests FAIL, saying what to install: a machine that cannot run them must
    not pass them."""
    try:
        cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    yield cluster
    cluster.stop()
    assert cluster.running() == [], "an etcd member outlived scripts/etcd-cluster.sh stop"


@pytest.fixture
def ferry_nodes(etcd_cluster, tmp_path):
    """Starts ferry nodes on `etcd_cluster`: `ferry_nodes("a", "b", "c", args=(...))` returns
    one started `Ferry` per name (node name `node-<name>`, its own data directory and free
    ports). After the test: every node is stopped with SIGTERM and must exit 0 (one the test
    killed with SIGKILL on purpose excepted), the members the test killed are started again
    and Ferry's prefix is emptied, so each test starts on three members and an empty registry."""
    started: list[Ferry] = []

    def start(*names: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> list[Ferry]:
        nodes = []
        for name in names:
            # A node that fails to start is stopped by start() itself, which raises.
            node = ferry_node(etcd_cluster, tmp_path / f"node-{name}", f"node-{name}", *args, env=env).start()
            started.append(node)
            nodes.append(node)
        return nodes

    yield start
    failures = []
    for node in started:
        if node.process is not None and node.process.returncode == -signal.SIGKILL:
            continue
        try:
            code = node.stop()
        except Exception as error:  # noqa: BLE001 - every node must be stopped first
            node.kill()
            code = repr(error)
        if code != 0:
            failures.append(f"node {node.args[node.args.index('--node-name') + 1]} exited {code}: {node.log()}")
    etcd_cluster.ensure_all_running()
    etcd_cluster.delete_prefix()
    if failures:
        pytest.fail("ferry nodes did not shut down cleanly:\n" + "\n".join(failures), pytrace=False)


__all__ = ["EtcdCluster", "Ferry", "JsEureka", "PyEureka"]

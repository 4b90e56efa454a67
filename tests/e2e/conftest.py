"""Fixtures: a running `ferry` per test, stopped with SIGTERM and checked for a clean exit."""

import pytest
from py_eureka_client import logger as py_eureka_logger

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


__all__ = ["Ferry", "JsEureka", "PyEureka"]

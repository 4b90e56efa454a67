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

    def start(*args: str) -> Ferry:
        ferry = Ferry(tmp_path / f"data-{len(started)}", *args).start()
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
    """Collects started clients and stops them after the test, whatever happened."""
    running = []

    def track(client):
        running.append(client)
        return client

    yield track
    for client in reversed(running):
        try:
            client.stop()
        except Exception:  # noqa: BLE001 - cleanup must reach every client
            pass


__all__ = ["Ferry", "JsEureka", "PyEureka"]

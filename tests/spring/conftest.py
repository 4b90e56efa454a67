"""Session fixtures for the Spring estate tests: one ferry and the long-lived apps shared by
every test that does not disturb them, logs under pytest's temp dir, printed on failure,
every process killed at the end."""

from __future__ import annotations

import random
import socket

import pytest

import estate as e
from estate import Apps, Ferry, eureka_client_props, consul_client_props, start_all



def outbound_range(size: int = 10) -> str:
    """A block of ports for Ferry's outbound listeners, outside the ephemeral range and the
    defaults other ferries on the machine use, every port free when chosen."""
    for _ in range(100):
        first = random.randrange(20000, 30000 - size)
        try:
            for port in range(first, first + size):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return f"{first}-{first + size - 1}"
    raise RuntimeError("no free block of outbound ports")


def start_ferry(directory, *args: str) -> Ferry:
    directory.mkdir(parents=True, exist_ok=True)
    return Ferry(directory / "data", "--outbound-ports", outbound_range(), *args).start()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("spring-logs")


@pytest.fixture(scope="session")
def apps(log_dir):
    """Every SpringApp made through it is killed at the end of the session."""
    registry = Apps(log_dir)
    e.SESSION["apps"] = registry
    yield registry
    registry.kill_all()


@pytest.fixture(scope="session")
def ferries(log_dir):
    """Starts ferries on free ports; each is stopped at the end of the session."""
    started: list[Ferry] = []
    e.SESSION["ferries"] = started

    def start(name: str, *args: str) -> Ferry:
        ferry = start_ferry(log_dir / name, *args)
        ferry.name = name
        started.append(ferry)
        return ferry

    yield start
    for ferry in started:
        if ferry.process and ferry.process.poll() is None:
            ferry.stop()


class Estate:
    """The shared estate: one ferry; two `orders` and one `checkout` per generation (Eureka,
    1 s fetch and renew, 1 s LoadBalancer cache); one `inventory` (Consul, 1 s HTTP check).
    Tests may cut `orders` over but must leave it in legacy mode, and may add apps but must
    not stop these."""

    def __init__(self, ferry: Ferry, orders: dict, checkout: dict, inventory):
        self.ferry = ferry
        self.orders = orders
        self.checkout = checkout
        self.inventory = inventory

    def all_orders(self):
        return [app for generation in e.GENERATIONS for app in self.orders[generation]]


def checkout_props(ferry: Ferry, **overrides) -> dict:
    return {**eureka_client_props(ferry), "spring.cloud.loadbalancer.cache.ttl": "1s", **overrides}


@pytest.fixture(scope="session")
def estate(ferries, apps) -> Estate:
    ferry = ferries("estate")
    orders = {g: [apps.new(g, "orders", eureka_client_props(ferry)) for _ in range(2)] for g in e.GENERATIONS}
    checkout = {g: apps.new(g, "checkout", checkout_props(ferry)) for g in e.GENERATIONS}
    inventory = apps.new("boot3", "inventory", consul_client_props(ferry))
    start_all([*orders["boot3"], *orders["boot2"], *checkout.values(), inventory])
    return Estate(ferry, orders, checkout, inventory)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, the tail of every app's and ferry's log goes into the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        registry = e.SESSION.get("apps")
        for app in getattr(registry, "started", []):
            if app.process is not None:
                report.sections.append((f"log {app.name}", app.log(1500)))
        for ferry in e.SESSION.get("ferries", []):
            report.sections.append((f"log ferry {ferry.name}", ferry.log()))
        # The hosts of a many-hosts module (tests/e2e/netns.py): each one's ferry and etcd.
        for host in e.SESSION.get("hosts", []):
            report.sections.append((f"log host{host.number}", host.logs()))


def pytest_terminal_summary(terminalreporter):
    if e.MEASUREMENTS:
        terminalreporter.section("Spring estate measurements")
        for line in e.MEASUREMENTS:
            terminalreporter.write_line(line)

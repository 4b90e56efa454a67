"""Spring Cloud Consul against a ferry that requires an ACL token (`--consul-token`): the app
is given the token, as it would be for a Consul cluster with default-deny ACLs."""

from __future__ import annotations

import httpx
import pytest

from estate import consul_client_props, wait_until

TOKEN = "b1gs3cr3t-acl-token"


def health_answer(app):
    """The app's /actuator/health status once it answers at all (None before)."""
    try:
        response = app.get("/actuator/health", timeout=2)
    except httpx.HTTPError:
        return None
    return response.json().get("status")


def test_inventory_with_an_acl_token_registers_and_stays_healthy(ferries, apps):
    ferry = ferries("acl", "--consul-token", TOKEN)
    inventory = apps.new("boot3", "inventory", {
        **consul_client_props(ferry),
        "spring.cloud.consul.discovery.acl-token": TOKEN,
        "spring.cloud.consul.config.acl-token": TOKEN,
    }).launch()
    try:
        wait_until(lambda: health_answer(inventory), 120, interval=0.25, what="inventory to answer /actuator/health")
        # The registration went through with the token ...
        entries = httpx.get(f"{ferry.consul_url}/v1/health/service/inventory", headers={"X-Consul-Token": TOKEN},
                            timeout=5).json()
        assert [entry["Service"]["Port"] for entry in entries] == [inventory.port]
        # ... and the app's own health, which reads the catalog, is UP.
        wait_until(lambda: health_answer(inventory) == "UP", 10, interval=0.25, what="inventory's health UP")
    finally:
        inventory.stop()

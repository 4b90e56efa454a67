"""One limits table across the three APIs, against the real binary over raw sockets: bodies
over `--max-body-bytes` (413; Consul KV values keep their own 512 KiB), bodies that stall past
`--body-timeout` (408), request heads over `--max-header-bytes` (431), unknown paths (404) and
wrong methods (405). Small limits keep it fast; every refused write must change nothing."""

import httpx
import pytest

from harness import ROOT, raw_exchange

MAX_BODY = 2048
# hyper's floor: a smaller --max-header-bytes still allows 8 KiB heads.
MAX_HEADER = 8192
KV_VALUE_LIMIT = 512 * 1024


def request(method: str, path: str, body: bytes = b"", content_type: str = "application/json",
            declared: int | None = None, extra_header: bytes = b"") -> bytes:
    length = len(body) if declared is None else declared
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n").encode()
    return head + extra_header + b"\r\n" + body


def json_body(size: int) -> bytes:
    """A JSON document of exactly `size` bytes (padding inside a string)."""
    start, end = b'{"Name":"padded","Meta":{"pad":"', b'"}}'
    return start + b"x" * (size - len(start) - len(end)) + end


BIG_HEADER = b"X-Big: " + b"a" * (MAX_HEADER + 100) + b"\r\n"
FITTING_HEADER = b"X-Big: " + b"a" * (MAX_HEADER - 1000) + b"\r\n"

# (api, what, raw request, expected status)
CASES = [
    ("eureka", "body over the limit", request("POST", "/eureka/apps/ORDERS", json_body(MAX_BODY + 1)), 413),
    ("consul", "body over the limit", request("PUT", "/v1/agent/service/register", json_body(MAX_BODY + 1)), 413),
    ("consul", "KV value over 512 KiB", request("PUT", "/v1/kv/big", b"v" * (KV_VALUE_LIMIT + 1)), 413),
    ("consul", "KV value over the body limit, under 512 KiB", request("PUT", "/v1/kv/ok", b"v" * (MAX_BODY * 4)), 200),
    ("eureka", "slow body", request("POST", "/eureka/apps/ORDERS", b'{"instance":', declared=200), 408),
    ("consul", "slow body", request("PUT", "/v1/agent/service/register", b'{"Name":', declared=200), 408),
    ("consul", "slow KV value", request("PUT", "/v1/kv/slow", b"abc", declared=200), 408),
    ("eureka", "head over the limit", request("GET", "/eureka/apps/", extra_header=BIG_HEADER), 431),
    ("consul", "head over the limit", request("GET", "/v1/agent/services", extra_header=BIG_HEADER), 431),
    ("config", "head over the limit", request("GET", "/orders/dev", extra_header=BIG_HEADER), 431),
    ("admin", "head over the limit", request("GET", "/metrics", extra_header=BIG_HEADER), 431),
    ("consul", "head under the limit", request("GET", "/v1/agent/services", extra_header=FITTING_HEADER), 200),
    ("eureka", "unknown path", request("GET", "/eureka/nowhere"), 404),
    ("consul", "unknown path", request("GET", "/v1/nowhere"), 404),
    ("config", "unknown path", request("GET", "/a/b/c/d/e/f"), 404),
    ("admin", "unknown path", request("GET", "/nowhere"), 404),
    ("eureka", "wrong method", request("DELETE", "/eureka/apps"), 405),
    ("consul", "wrong method", request("DELETE", "/v1/agent/services"), 405),
    ("consul", "wrong method on KV", request("POST", "/v1/kv/k", b"v"), 405),
    ("config", "wrong method", request("POST", "/orders/dev", b"{}"), 405),
    ("admin", "wrong method", request("DELETE", "/metrics"), 405),
]


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    from harness import Ferry

    ferry = Ferry(tmp_path_factory.mktemp("limits") / "data",
                  "--max-body-bytes", str(MAX_BODY), "--max-header-bytes", str(MAX_HEADER),
                  "--body-timeout", "0.5", "--config-repo", str(ROOT / "samples" / "config-repo")).start()
    yield ferry
    assert ferry.stop() == 0, ferry.log()


def port_of(ferry, api: str) -> int:
    return {"eureka": ferry.eureka_port, "consul": ferry.consul_port, "config": ferry.config_port,
            "admin": ferry.admin_port}[api]


def state(ferry):
    """What a refused request must leave as it was: the registry and the KV store."""
    apps = ferry.apps_json()["applications"]["application"]
    kv = httpx.get(f"{ferry.consul_url}/v1/kv/?recurse", timeout=5)
    return apps, (kv.json() if kv.status_code == 200 else [])


@pytest.mark.parametrize("api, what, raw, expected", CASES, ids=[f"{api}: {what}" for api, what, _, _ in CASES])
def test_limits_are_answered_with_the_protocol_status(limited, api, what, raw, expected):
    before = state(limited)
    reply = raw_exchange(port_of(limited, api), raw, read_timeout=15)
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 %d" % expected), f"{api} {what}: {reply[:300]!r}"
    if expected != 200:
        assert state(limited) == before, "a refused request changes nothing"


def test_a_body_at_the_limit_is_accepted(limited):
    registration = (b'{"instance":{"instanceId":"at-limit","hostName":"h","app":"LIMIT","ipAddr":"10.0.0.1",'
                    b'"dataCenterInfo":{"name":"MyOwn"},"metadata":{"pad":"')
    end = b'"}}}'
    body = registration + b"x" * (MAX_BODY - len(registration) - len(end)) + end
    assert len(body) == MAX_BODY
    reply = raw_exchange(limited.eureka_port, request("POST", "/eureka/apps/LIMIT", body))
    assert reply.startswith(b"HTTP/1.1 204"), reply[:300]
    assert "at-limit" in limited.instances()

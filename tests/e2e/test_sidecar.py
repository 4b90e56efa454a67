"""Issue 15, sidecar mode on several hosts for real: three hosts as network namespaces
(`netns.py`: veth pairs on one bridge, its own 198.18.N.0/24), each with a real etcd member
and a ferry node (`sidecar_mesh.py`). Host 1's node signs (`--ca-issuer`, the folder `ferry
ca init` made); hosts 2 and 3 join with tokens from `ferry ca token` and the pinned root.
Each node's inbound listener (15006) and admin listener (15000, with a token) are on the
host's address; its Eureka and Consul APIs and the outbound listeners are on the host's own
127.0.0.1, where its apps register (py-eureka-client, py-consul) and listen, so the mesh is
the only way from one host's app to another's.

What is checked, with real clients on both ends (httpx, grpcio, websockets), through both
sidecars: HTTP/1.1 and gRPC calls from host 1's app to host 3's, and a WebSocket
conversation (an HTTP/1.1 upgrade at both ends, an extended CONNECT on the HTTP/2 hop:
text, 100 kB and binary messages echoed intact); that the link carries only TLS on
15006 (tcpdump on host 3: application-data records, no request line, no app body); that a
client without a certificate, a node whose clock is 10 minutes ahead (libfaketime) and a
caller an allow rule leaves out are refused with host 3's app never reached (its access
log); that certificates renewed every 15-21 s fail no call of a steady load (which rides
one pooled connection), and a new connection afterwards shakes hands on the renewed ones;
and that after host 3's node is killed, calls go to the instance on host 2 with a few
failures at most. tests/spring/test_sidecar.py runs the Spring estate over the same mesh.

The skewed node signs its own certificate (`--ca-issuer`), so its validity starts by its
own clock, 5 minutes after everyone else's "now"; a joining node's is stamped by the
signer. Needs root, `ip` and `nft` (skipped without them); tcpdump and libfaketime
(Debian's `tcpdump`, `faketime`; scripts/test.sh installs them) for the tests that use
them. Namespaces, links and processes are removed afterwards, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netns
import sidecar_mesh
from harness import wait_until
from sidecar_app import BODY_MARKER, WS_MESSAGES

APP = Path(__file__).resolve().parent / "sidecar_app.py"
HTTP_PORT, GRPC_PORT, WS_PORT = 9080, 9090, 9070
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"

if (missing := netns.missing_tools()) is not None:
    pytest.skip(f"the sidecar tests {missing}", allow_module_level=True)


class Host(sidecar_mesh.Host):
    """A host of the mesh with its Python apps, and calls made by an app of it."""

    def serve(self, app: str, instance_id: str) -> Path:
        """Starts an app (HTTP, gRPC and WebSocket, registered with this host's node); its access log."""
        log = self.directory / f"{instance_id}.access.log"
        log.touch()
        process = self.start(sys.executable, str(APP), "serve", "--app", app, "--id", instance_id,
                             "--http-port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT), "--ws-port", str(WS_PORT),
                             "--log", str(log),
                             log=f"{instance_id}.log")
        wait_until(lambda: process.poll() is not None or "registered" in self.logs(f"{instance_id}.log"), 30,
                   interval=0.2, what=f"{instance_id} to register")
        assert process.poll() is None, self.logs(f"{instance_id}.log")
        return log

    def call(self, *args: str, timeout: float = 30) -> dict:
        """One run of `sidecar_app.py ARGS` as an app of this host; the JSON it printed."""
        result = self.run(sys.executable, str(APP), *args, timeout=timeout)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    def get(self, port: int, path: str, body: str | None = None) -> dict:
        return self.call("get", "--url", f"http://127.0.0.1:{port}{path}", *(("--body", body) if body else ()))

    def load(self, port: int, rate: float, duration: float) -> subprocess.Popen:
        """A paced run of calls in the background; `finish()` reads its outcome."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, str(APP), "load", "--url",
                                 f"http://127.0.0.1:{port}/orders", "--rate", str(rate), "--duration", str(duration)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(load: subprocess.Popen, timeout: float) -> dict:
    out, err = load.communicate(timeout=timeout)
    assert load.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


class Mesh:
    """The hosts, the CA and the apps: host 3 keeps `orders` (and `orders-grpc`,
    `orders-ws`), host 1 keeps `checkout`, whose app makes the calls; the three orders
    services are cut over to the mesh."""

    def __init__(self, hosts: list[Host], ca: Path, fingerprint: str):
        self.hosts = hosts
        self.ca = ca
        self.fingerprint = fingerprint
        self.orders_log = hosts[2].serve("orders", "orders-3")
        hosts[0].serve("checkout", "checkout-1")
        hosts[0].ctl("cutover", "orders", "mesh")
        hosts[0].ctl("cutover", "orders-grpc", "mesh")
        hosts[0].ctl("cutover", "orders-ws", "mesh")
        one = hosts[0]
        wait_until(lambda: one.outbound("ORDERS") and one.outbound("ORDERS-GRPC") and one.outbound("ORDERS-WS"), 20,
                   what="host 1's outbound listeners for orders, orders-grpc and orders-ws")
        self.http_port, self.grpc_port = one.outbound("ORDERS"), one.outbound("ORDERS-GRPC")
        self.ws_port = one.outbound("ORDERS-WS")
        # Ready once a call goes through: host 1 has host 3's inbound and instance.
        wait_until(lambda: one.get(self.http_port, "/orders/ready")["status"] == 200, 30, interval=0.5,
                   what="a first call from host 1 to reach host 3's app")


@contextlib.contextmanager
def running_mesh(directory: Path, prefix: str, subnets: range, cert_lifetime: str, hosts=(1, 2, 3),
                 node_args: tuple[str, ...] = ()):
    """`sidecar_mesh.nodes`, then the apps (`Mesh`); everything is removed on the way out."""
    with sidecar_mesh.nodes(Host, directory, prefix, subnets, cert_lifetime, hosts, node_args) as (started, ca, fingerprint):
        yield Mesh(started, ca, fingerprint)


@pytest.fixture
def rotating(tmp_path):
    """A mesh of its own whose certificates live 30 s (renewed every 15-21 s)."""
    with running_mesh(tmp_path, "fsr", range(190, 250), "30s") as mesh:
        yield mesh


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """The mesh the other tests share, certificates of a day; host 4 is for a skewed node.
    Round-robin, so that both instances of the node-loss test take calls until the kill
    (peak-EWMA may send nearly all of them to one)."""
    with running_mesh(tmp_path_factory.mktemp("sidecar"), "fsc", range(130, 190), "24h", hosts=(1, 2, 3, 4),
                      node_args=("--proxy-balancer", "round-robin")) as mesh:
        yield mesh


# First in the file: its own mesh is up and down before the shared one starts.
def test_certificates_renew_under_load_without_a_failed_call(rotating):
    one, _, three = rotating.hosts
    before = {host.number: host.identity()["not_after"] for host in (one, three)}
    renewed_before = three.metric("ferry_identity_renewals_total", '{result="ok"}')
    handshakes_before = three.metric("ferry_inbound_tls_handshakes_total")
    served_before = len(lines(rotating.orders_log))

    outcome = finish(one.load(rotating.http_port, rate=20, duration=60), timeout=120)

    after = {host.number: host.identity()["not_after"] for host in (one, three)}
    renewed = three.metric("ferry_identity_renewals_total", '{result="ok"}') - renewed_before
    print(f"rotation under load: {outcome['sent']} calls, {outcome['statuses']}, host 3 renewed {renewed:.0f} times, "
          f"not_after {before} -> {after}, inbound handshakes "
          f"+{three.metric('ferry_inbound_tls_handshakes_total') - handshakes_before:.0f}")
    assert outcome["failures"] == [], f"calls failed while certificates renewed: {outcome['failures'][:10]}"
    assert outcome["statuses"] == {"200": 1200}
    assert all(after[number] != before[number] for number in after), f"no renewal: {before} -> {after}"
    assert renewed >= 2, f"a 30 s certificate renews at 15-21 s: {renewed} renewals in 60 s"
    assert len(lines(rotating.orders_log)) - served_before == 1200, "every call reached host 3's app"
    # The load rode one pooled connection, shaken hands before the renewals: a node that
    # never called host 3 shakes hands now, both sides on renewed certificates.
    two = rotating.hosts[1]
    handshakes = three.metric("ferry_inbound_tls_handshakes_total")
    port = wait_until(lambda: two.outbound("ORDERS"), 10, what="host 2's outbound listener")
    answer = two.get(port, "/orders/fresh")
    assert answer["status"] == 200 and json.loads(answer["body"])["served_by"] == "orders-3", answer
    assert three.metric("ferry_inbound_tls_handshakes_total") > handshakes


def test_http_and_grpc_calls_cross_both_sidecars(mesh):
    one, _, three, _ = mesh.hosts
    served_before = len(lines(mesh.orders_log))
    answer = one.get(mesh.http_port, "/orders/42")
    assert answer["status"] == 200, answer
    body = json.loads(answer["body"])
    assert body["served_by"] == "orders-3" and body["path"] == "/orders/42", body
    assert body["ferry_headers"] == [], "the mesh's own headers never reach the app"
    posted = one.get(mesh.http_port, "/orders", body="x" * 5000)
    assert posted["status"] == 200 and json.loads(posted["body"])["received"] == 5000, posted

    checked = one.call("grpc", "--target", f"127.0.0.1:{mesh.grpc_port}")
    assert checked == {"status": "SERVING"}, checked

    assert lines(mesh.orders_log)[served_before:] == [
        "http GET /orders/42", "http POST /orders", "grpc /grpc.health.v1.Health/Check"]
    assert three.metric("ferry_inbound_requests_total") >= 3


def test_a_websocket_crosses_both_sidecars(mesh):
    one, _, three, _ = mesh.hosts
    served_before = len(lines(mesh.orders_log))
    requests_before = three.metric("ferry_inbound_requests_total")
    outcome = one.call("ws", "--url", f"ws://127.0.0.1:{mesh.ws_port}/echo")
    print(f"WebSocket through both sidecars: {outcome}")
    assert outcome.get("status") == 101, outcome
    assert outcome["greeting"] == {"served_by": "orders-3", "path": "/echo", "ferry_headers": []}, outcome
    assert outcome["echoed"] == [True] * len(WS_MESSAGES), "every message came back as it was sent"
    assert lines(mesh.orders_log)[served_before:] == [
        "ws /echo", "ws text 27", "ws text 100000", "ws binary 1024", "ws text 0"]
    assert three.metric("ferry_inbound_requests_total") > requests_before, "the upgrade entered through host 3's inbound"


def tcp_payloads(capture: Path) -> list[tuple[int, int, bytes]]:
    """(source port, destination port, payload) of every TCP segment in a pcap file of
    Ethernet frames carrying IPv4 (what tcpdump -w writes on a veth)."""
    data = capture.read_bytes()
    assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4, "a little-endian microsecond pcap"
    segments, offset = [], 24
    while offset + 16 <= len(data):
        included = struct.unpack("<I", data[offset + 8:offset + 12])[0]
        frame = data[offset + 16:offset + 16 + included]
        offset += 16 + included
        if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        ip = frame[14:]
        ip_length, ip_header = struct.unpack("!H", ip[2:4])[0], (ip[0] & 0x0F) * 4
        tcp = ip[ip_header:ip_length]
        source, destination = struct.unpack("!HH", tcp[:4])
        segments.append((source, destination, tcp[(tcp[12] >> 4) * 4:]))
    return segments


def test_the_link_carries_only_tls(mesh, tmp_path):
    if not shutil.which("tcpdump"):
        pytest.skip("needs tcpdump (apt: tcpdump; scripts/test.sh installs it)")
    one, _, three, _ = mesh.hosts
    capture = tmp_path / "host3.pcap"
    # Everything on host 3's link but etcd's traffic and the test's own admin reads.
    # --immediate-mode: packets go to the file as they come, not when the kernel's buffer
    # block fills or times out (stopped before that, tcpdump would write none of them).
    dump = three.start("tcpdump", "-i", "eth0", "-n", "-s", "0", "-U", "--immediate-mode", "-w", str(capture),
                       "tcp and not port 2379 and not port 2380 and not port 15000", log="tcpdump.log")
    wait_until(lambda: "listening on" in three.logs("tcpdump.log"), 10, what="tcpdump to listen")
    served_before = len(lines(mesh.orders_log))
    secret = "request-body-secret-text"
    answers = [one.get(mesh.http_port, "/orders/secret-path-7"), one.get(mesh.http_port, "/orders", body=secret)]
    checked = one.call("grpc", "--target", f"127.0.0.1:{mesh.grpc_port}")
    time.sleep(1)
    dump.send_signal(signal.SIGINT)
    dump.wait(timeout=10)
    assert [answer["status"] for answer in answers] == [200, 200] and checked == {"status": "SERVING"}
    assert len(lines(mesh.orders_log)) - served_before == 3
    assert "0 packets dropped" in three.logs("tcpdump.log"), three.logs("tcpdump.log")
    segments = [segment for segment in tcp_payloads(capture) if segment[2]]
    ports = {(source, destination) for source, destination, _ in segments}
    payload = b"".join(data for _, _, data in segments)
    records = payload.count(b"\x17\x03\x03")
    print(f"capture on host 3: {len(segments)} segments with payload, ports {sorted(ports)[:6]}..., "
          f"{records} TLS application-data record headers, {len(payload)} bytes")
    assert segments, "the calls crossed host 3's link"
    assert all(15006 in pair for pair in ports), f"only port 15006 carries the calls: {ports}"
    assert records >= 6, "the calls and answers travel as TLS application data"
    for plain in (b"GET /", b"POST /", b"HTTP/1.1", b"secret-path-7", secret.encode(), BODY_MARKER.encode(),
                  b"orders-3", b"grpc.health", b"PRI * HTTP/2.0"):
        assert plain not in payload, f"{plain!r} crossed the link in clear"


def test_a_client_without_a_certificate_is_refused_in_the_handshake(mesh):
    three = mesh.hosts[2]
    served_before = lines(mesh.orders_log)
    refused_before = three.metric("ferry_inbound_tls_handshake_failures_total", '{reason="no-client-certificate"}')
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((three.address, 15006), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)) as refused:
            with context.wrap_socket(raw, server_hostname="host3.node.ferry.test") as tls:
                # TLS 1.3: the server's refusal of the missing certificate comes as an alert
                # on the client's first read.
                tls.sendall(b"GET /orders/1 HTTP/1.1\r\nHost: x\r\nferry-target: ORDERS/orders-3\r\n\r\n")
                answer = tls.recv(4096)
                assert answer == b"", f"answered without a certificate: {answer!r}"
                raise ConnectionResetError("closed without an answer")
    print(f"no client certificate: {refused.value!r}")
    wait_until(lambda: three.metric("ferry_inbound_tls_handshake_failures_total",
                                    '{reason="no-client-certificate"}') > refused_before, 5,
               what="host 3 to count the handshake failure")
    assert lines(mesh.orders_log) == served_before, "host 3's app was reached"


def test_a_node_ten_minutes_ahead_cannot_call(mesh):
    if not os.path.exists(LIBFAKETIME):
        pytest.skip("needs libfaketime (apt: faketime; scripts/test.sh installs it)")
    one, _, three, skewed = mesh.hosts
    served_before = lines(mesh.orders_log)
    failures_before = three.metric("ferry_inbound_tls_handshake_failures_total", '{reason="not-yet-valid"}')
    # A signer's own certificate is stamped by its own clock: from 5 minutes before its
    # "now", which is 5 minutes after everyone else's.
    skewed.start_node("--ca-issuer", str(mesh.ca),
                      env={"LD_PRELOAD": LIBFAKETIME, "FAKETIME": "+600s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    try:
        wait_until(skewed.ready, 60, interval=0.2, what="the skewed node ready")
        shown = skewed.identity()
        print(f"skewed node's certificate: not_before {shown.get('not_before')}, not_after {shown.get('not_after')}")
        port = wait_until(lambda: skewed.outbound("ORDERS"), 20, what="the skewed node's outbound listener")
        answer = skewed.get(port, "/orders/skewed")
        print(f"skewed node's call: {answer}")
        assert answer["status"] is not None and answer["status"] >= 500, answer
        assert answer["error_header"], answer
        wait_until(lambda: three.metric("ferry_inbound_tls_handshake_failures_total",
                                        '{reason="not-yet-valid"}') > failures_before, 5,
                   what="host 3 to count a not-yet-valid handshake failure")
        assert lines(mesh.orders_log) == served_before, "host 3's app was reached"
        # The others, on time, still call.
        assert one.get(mesh.http_port, "/orders/on-time")["status"] == 200
    finally:
        skewed.kill_ferry()


def test_an_allow_rule_refuses_a_caller_it_leaves_out_until_lifted(mesh):
    one, _, three, _ = mesh.hosts
    one.ctl("allow", "orders", "payments")
    try:
        wait_until(lambda: one.get(mesh.http_port, "/orders/denied")["status"] == 403, 10, interval=0.2,
                   what="the allow rule to reach host 3")
        served_before = lines(mesh.orders_log)
        answer = one.get(mesh.http_port, "/orders/denied")
        assert answer["status"] == 403 and answer["error_header"] == "not-allowed", answer
        assert "CHECKOUT" in answer["body"], answer
        assert lines(mesh.orders_log) == served_before, "host 3's app was reached"
        assert three.metric("ferry_inbound_refusals_total", '{reason="not-allowed"}') >= 2
    finally:
        one.ctl("allow", "orders", "--any")
    wait_until(lambda: one.get(mesh.http_port, "/orders/allowed")["status"] == 200, 10, interval=0.2,
               what="calls to pass again once the rule is lifted")
    assert lines(mesh.orders_log)[-1] == "http GET /orders/allowed"


# Last: host 3's node does not come back.
def test_calls_move_to_host_2_when_host_3s_node_is_killed(mesh):
    one, two, three, _ = mesh.hosts
    two_log = two.serve("orders", "orders-2")
    wait_until(lambda: len(one.instances("ORDERS")) == 2, 20,
               what="host 1 to list both orders instances")
    served_before = len(lines(mesh.orders_log))
    retries_before = one.metric_total("ferry_proxy_retries_total", "ORDERS")
    load = one.load(mesh.http_port, rate=20, duration=30)
    time.sleep(8)
    killed_at = time.time()
    three.kill_ferry()
    served_by_three = len(lines(mesh.orders_log)) - served_before
    outcome = finish(load, timeout=90)
    late = [failure for failure in outcome["failures"] if failure["at"] >= killed_at]
    early = [failure for failure in outcome["failures"] if failure["at"] < killed_at]
    retries = one.metric_total("ferry_proxy_retries_total", "ORDERS") - retries_before
    recovered = max((failure["at"] for failure in late), default=killed_at) - killed_at
    print(f"node loss: host 3 served {served_by_three} calls before the kill; {outcome['sent']} calls, {outcome['statuses']}, served by {outcome['served_by']}; "
          f"host 1 retried {retries:.0f}; {len(late)} failed after the kill, the last {recovered:.2f} s after it: {late[:5]}")
    assert early == [], f"calls failed before the kill: {early[:5]}"
    assert served_by_three >= 40, f"host 3 took {served_by_three} of the ~160 calls before the kill"
    assert retries + len(late) > 0, "host 1 never noticed host 3's node was gone"
    assert len(late) <= 20, f"more than a second of calls failed: {late[:10]}"
    assert recovered <= 5, f"calls still failed {recovered:.1f} s after the kill"
    # Every call after the kill that did not fail was served by host 2's instance.
    assert outcome["served_by"].get("orders-2", 0) >= outcome["sent"] - 8 * 20 - len(late) - 10, outcome["served_by"]
    assert "http GET /orders/" in "\n".join(lines(two_log))

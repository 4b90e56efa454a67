"""The dashboard at `/` on the admin listener, in a real browser: Debian's headless Chromium
driven by playwright-core (js/dashboard.mjs). Services register through py-eureka-client (the
sample service) and py-consul; the page shows them, moves one to the mesh through its
confirmation dialog while a caller loop calls the outbound port, shows the traffic figures
and charts, and rolls back; a ferry with --admin-token refuses the control without the token
and takes it with the token. No console error or page error is allowed (but the refused
write's own 401 and 403, which Chromium logs). Screenshots go to target/test-output/dashboard/."""

import json
import os
import re
import struct
import subprocess
import threading
import time
import zlib

import httpx

from harness import ROOT, free_port, wait_until
from test_mesh import Service

SCRIPT = ROOT / "tests" / "e2e" / "js" / "dashboard.mjs"
OUTPUT = ROOT / "target" / "test-output" / "dashboard"
TOKEN = "dashboard-s3cret"


def service_json(ferry, name):
    return httpx.get(f"{ferry.admin_url}/api/services/{name}", timeout=5).json()


class Caller:
    """Calls a service's outbound port 20 times a second, from when the admin API shows it in
    the mesh until it leaves it or 30 s have passed."""

    def __init__(self, ferry, name):
        self.ferry, self.name = ferry, name
        self.statuses: list[int | str] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            deadline = time.monotonic() + 120
            while not self.stop.is_set() and service_json(self.ferry, self.name)["mode"] != "mesh":
                if time.monotonic() > deadline:
                    return
                time.sleep(0.2)
            port = service_json(self.ferry, self.name)["port"]
            until = time.monotonic() + 30
            with httpx.Client(timeout=5) as http:
                while not self.stop.is_set() and time.monotonic() < until:
                    try:
                        self.statuses.append(http.get(f"http://127.0.0.1:{port}/orders/7").status_code)
                    except httpx.HTTPError as error:
                        self.statuses.append(repr(error))
                    if len(self.statuses) % 20 == 0 and service_json(self.ferry, self.name)["mode"] != "mesh":
                        return
                    time.sleep(0.05)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            self.error = error

    def join(self):
        self.stop.set()
        self.thread.join(timeout=10)


def png_pixels(path):
    """(width, height, rows of RGBA tuples) of an 8-bit RGB or RGBA PNG, as Chromium writes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is no PNG"
    at, idat, header = 8, b"", None
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunk = data[at + 8:at + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        at += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    channels = 4 if color == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous, at = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[at], bytearray(raw[at + 1:at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                near = min((abs(estimate - left), 0, left), (abs(estimate - up), 1, up),
                           (abs(estimate - corner), 2, corner))[2]
                line[i] = (line[i] + near) & 0xFF
        rows.append([tuple(line[i:i + 3]) for i in range(0, stride, channels)])
        previous = line
    return width, height, rows


def test_the_dashboard_shows_services_moves_one_to_the_mesh_and_back(start_ferry, clients):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for earlier in OUTPUT.glob("*.png"):
        earlier.unlink()
    # Each ferry takes one outbound port of its own: the default range is the same for both.
    ferry = start_ferry("--outbound-ports", str(free_port()),
                        "--config-repo", str(ROOT / "samples" / "config-repo"))
    guarded = start_ferry("--outbound-ports", str(free_port()), "--admin-token", TOKEN)
    clients(Service(ferry, "orders"))
    clients(Service(ferry, "orders"))
    clients(Service(guarded, "billing"))
    consul = ferry.consul()
    consul.agent.service.register("inventory", service_id="inventory-1", address="127.0.0.1",
                                  port=free_port(), check={"TTL": "60s"}, meta={"version": "2.4.1"})
    assert consul.agent.check.ttl_pass("service:inventory-1", notes="ready")
    for instance, healthy in (("catalog-1", True), ("catalog-2", False)):
        consul.agent.service.register("catalog", service_id=instance, address="127.0.0.1",
                                      port=free_port(), check={"TTL": "60s"})
        check = consul.agent.check.ttl_pass if healthy else consul.agent.check.ttl_fail
        assert check(f"service:{instance}", notes="ready" if healthy else "disk full")
    assert consul.kv.put("config/orders/greeting", "hello")
    wait_until(lambda: len(service_json(ferry, "ORDERS")["instances"]) == 2, 10, what="two orders instances")
    events_served = httpx.get(f"{ferry.admin_url}/api/events?limit=1", timeout=5).status_code == 200

    caller = Caller(ferry, "ORDERS")
    try:
        run = subprocess.run(
            ["node", str(SCRIPT), json.dumps({
                "url": ferry.admin_url, "tokenUrl": guarded.admin_url, "token": TOKEN,
                "service": "ORDERS", "consulService": "INVENTORY", "tokenService": "BILLING",
                "out": str(OUTPUT), "expectEvents": events_served,
            })],
            capture_output=True, text=True, timeout=240, env={**os.environ})
    finally:
        caller.join()
    assert run.returncode == 0, f"the browser run failed:\n{run.stderr[-2000:]}\n{run.stdout[-6000:]}"
    report = json.loads(run.stdout.strip().splitlines()[-1])
    steps = {step["name"]: step for step in report["steps"]}

    # Nothing went wrong in the page: the refused writes' own 401 and 403 are all Chromium
    # may log, and only for the guarded ferry's cutover request.
    assert report["pageErrors"] == [], report["pageErrors"]
    refused_url = f"{guarded.admin_url}/api/services/BILLING"

    def expected(entry):
        if entry["url"] == refused_url:
            return "status of 401" in entry["text"] or "status of 403" in entry["text"]
        # A build without the event log answers its one probe of /api/events with 404, and
        # the page says so; with the log (events_served) no 404 is expected at all.
        return (not events_served and "/api/events?" in entry["url"]
                and "status of 404" in entry["text"])

    unexpected = [entry for entry in report["console"] if not expected(entry)]
    assert unexpected == [], unexpected

    overview = steps["overview"]
    assert "legacy" in overview["serviceRow"] and "Eureka 2" in overview["serviceRow"], overview
    assert "1 UP" in overview["consulRow"] and "Consul 1" in overview["consulRow"], overview
    assert "1 UP" in overview["catalogRow"] and "1 DOWN" in overview["catalogRow"], overview
    assert "samples/config-repo" in overview["config"] and "folder, label any" in overview["config"], overview
    assert "1 context under config/" in overview["config"], overview
    assert "greeting" in steps["kv"]["text"] and "5 B" in steps["kv"]["text"], steps["kv"]
    assert steps["service page"]["mode"] == "legacy"
    assert steps["service page"]["instances"].count("eureka") == 2, steps["service page"]

    dialog = steps["move dialog"]["text"]
    assert "Move ORDERS to the mesh?" in dialog and "65 s" in dialog and "35 s" in dialog, dialog
    assert steps["moved"]["mode"] == "mesh" and "port" in steps["moved"]["toast"], steps["moved"]
    traffic = steps["traffic"]
    assert float(traffic["figures"]["rate"]) > 0, traffic
    assert traffic["figures"]["success"] == "100%", traffic
    assert traffic["figures"]["p50"].endswith("ms") and traffic["figures"]["p99"].endswith("ms"), traffic
    assert traffic["points"] >= 2 and traffic["path"].count("L") >= 1, traffic
    served = re.search(r"Since start: (\d+) requests", traffic["endpoints"])
    assert served and int(served.group(1)) > 0, traffic["endpoints"]
    assert "mesh" in steps["overview in mesh"]["serviceRow"], steps["overview in mesh"]
    assert "Roll ORDERS back to legacy?" in steps["rollback dialog"]["text"], steps["rollback dialog"]
    assert steps["rolled back"]["mode"] == "legacy"
    if events_served:
        assert "ORDERS" in steps["cutover event"]["text"] and "mesh" in steps["cutover event"]["text"], steps
        assert "ORDERS" in steps["rollback event"]["text"], steps
        assert "ORDERS" in steps["events"]["text"] and "INVENTORY" in steps["events"]["text"], steps["events"]
    assert service_json(ferry, "ORDERS")["mode"] == "legacy"

    refused = steps["refused"]
    assert "401" in refused["refusal"] and "an admin token is required" in refused["refusal"], refused
    assert refused["apiMode"] == "legacy" and refused["pageMode"] == "legacy", refused
    assert "the admin token is not valid" in steps["wrong token"]["refusal"], steps["wrong token"]
    assert steps["accepted with token"] == {"name": "accepted with token", "apiMode": "mesh", "pageMode": "mesh"}
    assert service_json(guarded, "BILLING")["mode"] == "mesh"

    # The caller was served through the proxy while the page watched.
    if caller.error is not None:
        raise caller.error
    assert len(caller.statuses) >= 20 and set(caller.statuses) == {200}, caller.statuses[:10]

    # The screenshots exist, and the chart area is not blank: besides the background there
    # are the line's blue pixels.
    for name in ("overview.png", "service.png"):
        assert (OUTPUT / name).stat().st_size > 10_000, name
    width, height, rows = png_pixels(OUTPUT / "chart.png")
    assert width >= 300 and height >= 100, (width, height)
    pixels = [pixel for row in rows for pixel in row]
    background = max(set(pixels), key=pixels.count)
    drawn = [pixel for pixel in pixels if pixel != background]
    blue = [pixel for pixel in drawn if pixel[2] > pixel[0] + 60]
    assert len(drawn) > 200 and len(blue) > 50, (background, len(drawn), len(blue))

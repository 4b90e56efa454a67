"""Registers N instances with a Eureka server the way Spring Cloud clients do (JSON POST),
over one keep-alive connection, and prints the ids file the renewal benchmark reads.

Usage: `python3 bench/register.py HOST PORT COUNT IDS_FILE`. bench/sync.py imports
`instance` (one registration document) and `register`."""

import http.client
import json
import sys
import time


def instance(app: str, instance_id: str, ip: str, now: str, metadata: dict | None = None,
             lease_seconds: int = 90) -> dict:
    """The registration document of one instance of `app` at `ip`:8080, as a Spring Cloud
    client sends it; `now` (milliseconds since the epoch) is its dirty timestamp."""
    return {"instance": {
        "instanceId": instance_id, "hostName": ip, "app": app, "ipAddr": ip, "status": "UP",
        "overriddenStatus": "UNKNOWN", "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": lease_seconds},
        "metadata": metadata or {"management.port": "8080"},
        "homePageUrl": f"http://{ip}:8080/", "statusPageUrl": f"http://{ip}:8080/actuator/info",
        "healthCheckUrl": f"http://{ip}:8080/actuator/health",
        "vipAddress": app.lower(), "secureVipAddress": app.lower(),
        "isCoordinatingDiscoveryServer": "false", "lastUpdatedTimestamp": now, "lastDirtyTimestamp": now,
    }}


def register(host: str, port: int, count: int, ids_path: str, per_app: int = 20, prefix: str = "/eureka") -> None:
    """Registers `count` instances, `per_app` to an app, and writes the renewal path of each
    (`PREFIX/apps/APP/ID?status=UP&lastDirtyTimestamp=...`) to `ids_path`, one a line."""
    apps = max(1, count // per_app)
    connection = http.client.HTTPConnection(host, port, timeout=30)
    now = str(int(time.time() * 1000))
    ids = []
    for n in range(count):
        app = f"SERVICE-{n % apps:04d}"
        ip = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
        instance_id = f"{ip}:{app.lower()}:8080"
        connection.request("POST", f"{prefix}/apps/{app}", json.dumps(instance(app, instance_id, ip, now)),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 204:
            sys.exit(f"registration {n} failed: {response.status}")
        ids.append(f"{prefix}/apps/{app}/{instance_id}?status=UP&lastDirtyTimestamp={now}")
    with open(ids_path, "w") as out:
        out.write("\n".join(ids) + "\n")


if __name__ == "__main__":
    register(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])

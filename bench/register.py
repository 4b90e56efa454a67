"""Registers N instances with a Eureka server the way Spring Cloud clients do (JSON POST),
over one keep-alive connection, and prints the ids file the renewal benchmark reads."""

import http.client
import json
import sys
import time

host, port, count, ids_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
apps = max(1, count // 20)  # 20 instances per app, like a mid-sized estate
connection = http.client.HTTPConnection(host, port)
now = str(int(time.time() * 1000))
ids = []
for n in range(count):
    app = f"SERVICE-{n % apps:04d}"
    ip = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
    instance_id = f"{ip}:{app.lower()}:8080"
    body = {"instance": {
        "instanceId": instance_id, "hostName": ip, "app": app, "ipAddr": ip, "status": "UP",
        "overriddenStatus": "UNKNOWN", "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": {"management.port": "8080"},
        "homePageUrl": f"http://{ip}:8080/", "statusPageUrl": f"http://{ip}:8080/actuator/info",
        "healthCheckUrl": f"http://{ip}:8080/actuator/health",
        "vipAddress": app.lower(), "secureVipAddress": app.lower(),
        "isCoordinatingDiscoveryServer": "false", "lastUpdatedTimestamp": now, "lastDirtyTimestamp": now,
    }}
    connection.request("POST", f"/eureka/apps/{app}", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    if response.status != 204:
        sys.exit(f"registration {n} failed: {response.status}")
    ids.append(f"/eureka/apps/{app}/{instance_id}?status=UP&lastDirtyTimestamp={now}")
with open(ids_path, "w") as out:
    out.write("\n".join(ids) + "\n")

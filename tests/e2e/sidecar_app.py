"""The apps and callers of `test_sidecar.py`, run inside a host's network namespace (`ip
netns exec`), where only that host's 127.0.0.1 is theirs.

`serve` is an app: an HTTP service, a gRPC service (grpcio's standard health service) and
a WebSocket echo service (the `websockets` package) on the namespace's 127.0.0.1 only, so
the mesh is the only way in. It registers the HTTP one with its host's Ferry through
py-eureka-client and the gRPC and WebSocket ones (APP-grpc, APP-ws) through py-consul, as a
Spring app registers with its Eureka or Consul agent, and writes one access-log line per
request it serves (HTTP and gRPC alike) and per WebSocket connection and message. `get`,
`grpc`, `ws` and `load` are a calling app: one HTTP call, one gRPC health check, one
WebSocket conversation, or a paced run of HTTP calls; each prints one JSON line.

    python sidecar_app.py serve --app orders --id orders-3 --http-port 9080 --grpc-port 9090 --ws-port 9070 --log access.log
    python sidecar_app.py get --url http://127.0.0.1:15001/orders/1 [--body TEXT]
    python sidecar_app.py grpc --target 127.0.0.1:15002
    python sidecar_app.py ws --url ws://127.0.0.1:15003/echo
    python sidecar_app.py load --url http://127.0.0.1:15001/orders --rate 20 --duration 60
"""

import argparse
import json
import signal
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# What the HTTP service puts in every answer: a capture of the link must never show it.
BODY_MARKER = "plain-app-body-text"

# What the `ws` caller sends, in order, each echoed back as it came (text as text, bytes as
# bytes): a short text, one of 100 kB (several HTTP/2 DATA frames on the hop), binary data
# with every byte value, and an empty message.
WS_MESSAGES = ["hello through both sidecars", "w" * 100_000, bytes(range(256)) * 4, ""]


def serve(args) -> None:
    import consul
    import grpc
    import py_eureka_client.eureka_client as eureka_client
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    log_lock = threading.Lock()
    access_log = open(args.log, "a", buffering=1)

    def logged(line: str) -> None:
        with log_lock:
            access_log.write(line + "\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            length = int(self.headers.get("Content-Length") or 0)
            received = self.rfile.read(length) if length else b""
            logged(f"http {self.command} {self.path}")
            body = json.dumps({"served_by": args.id, "path": self.path, "received": len(received),
                               "note": BODY_MARKER, "ferry_headers": sorted(
                                   name for name in self.headers if name.lower().startswith("ferry-"))}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *_):
            pass

    class AccessLog(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            logged(f"grpc {details.method}")
            return continuation(details)

    http_server = ThreadingHTTPServer(("127.0.0.1", args.http_port), Handler)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[AccessLog()])
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    grpc_server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    grpc_server.start()
    ws_server = websocket_echo(args, logged) if args.ws_port else None

    eureka_client.init(eureka_server="http://127.0.0.1:8761/eureka/", app_name=args.app, instance_id=args.id,
                       instance_host="127.0.0.1", instance_ip="127.0.0.1", instance_port=args.http_port,
                       renewal_interval_in_secs=1, duration_in_secs=10)
    consul.Consul(host="127.0.0.1", port=8500).agent.service.register(
        f"{args.app}-grpc", service_id=f"{args.id}-grpc", address="127.0.0.1", port=args.grpc_port)
    if ws_server is not None:
        consul.Consul(host="127.0.0.1", port=8500).agent.service.register(
            f"{args.app}-ws", service_id=f"{args.id}-ws", address="127.0.0.1", port=args.ws_port)

    def stop(*_):
        grpc_server.stop(0)
        if ws_server is not None:
            ws_server.shutdown()
        threading.Thread(target=http_server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"event": "registered", "id": args.id}), flush=True)
    http_server.serve_forever()


def websocket_echo(args, logged):
    """The WebSocket service on its own thread: on each connection it first sends a JSON
    greeting (who serves, the path, the `ferry-*` headers of the upgrade request it saw),
    then echoes every message as it came, logging the connection and each message."""
    from websockets.sync.server import serve as ws_serve

    def echo(connection) -> None:
        request = connection.request
        logged(f"ws {request.path}")
        connection.send(json.dumps({"served_by": args.id, "path": request.path, "ferry_headers": sorted(
            name.lower() for name in request.headers if name.lower().startswith("ferry-"))}))
        for message in connection:
            kind = "binary" if isinstance(message, bytes) else "text"
            logged(f"ws {kind} {len(message)}")
            connection.send(message)

    server = ws_serve(echo, "127.0.0.1", args.ws_port, compression=None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def get(args) -> None:
    import httpx

    try:
        if args.body is None:
            response = httpx.get(args.url, timeout=10)
        else:
            response = httpx.post(args.url, content=args.body.encode(), timeout=10)
        print(json.dumps({"status": response.status_code, "error_header": response.headers.get("x-ferry-error"),
                          "http_version": response.http_version, "body": response.text}))
    except httpx.HTTPError as error:
        print(json.dumps({"status": None, "error": repr(error)}))


def grpc_check(args) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            print(json.dumps({"status": health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}))
        except grpc.RpcError as error:
            print(json.dumps({"status": None, "error": f"{error.code().name}: {error.details()}"}))


def ws(args) -> None:
    """One WebSocket conversation: the greeting, then each of WS_MESSAGES sent and its echo
    compared with what was sent; the outcome as one JSON line."""
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    try:
        with connect(args.url, proxy=None, compression=None, open_timeout=10, close_timeout=5) as connection:
            greeting = json.loads(connection.recv(timeout=10))
            echoed = []
            for message in WS_MESSAGES:
                connection.send(message)
                answer = connection.recv(timeout=10)
                echoed.append(answer == message and type(answer) is type(message))
            print(json.dumps({"greeting": greeting, "echoed": echoed,
                              "status": connection.response.status_code}))
    except (OSError, TimeoutError, WebSocketException) as error:
        print(json.dumps({"greeting": None, "error": repr(error)}))


def load(args) -> None:
    """`rate` calls a second for `duration` seconds on one keep-alive client, each paced to
    its slot, never more; every answer but a 200 is a failure, with when it happened."""
    import httpx

    statuses: dict[str, int] = {}
    served_by: dict[str, int] = {}
    failures = []
    started = time.time()
    total = int(args.rate * args.duration)
    with httpx.Client(timeout=5) as client:
        for number in range(total):
            delay = started + number / args.rate - time.time()
            if delay > 0:
                time.sleep(delay)
            at = time.time()
            try:
                response = client.get(f"{args.url}/{number}")
                outcome = str(response.status_code)
                if response.status_code == 200:
                    who = response.json()["served_by"]
                    served_by[who] = served_by.get(who, 0) + 1
                else:
                    failures.append({"at": at, "outcome": outcome, "error": response.headers.get("x-ferry-error"),
                                     "body": response.text[:200]})
            except httpx.HTTPError as error:
                outcome = type(error).__name__
                failures.append({"at": at, "outcome": outcome, "error": repr(error)[:200]})
            statuses[outcome] = statuses.get(outcome, 0) + 1
    print(json.dumps({"started": started, "ended": time.time(), "sent": total, "statuses": statuses,
                      "served_by": served_by, "failures": failures}))


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    app = commands.add_parser("serve")
    app.add_argument("--app", required=True)
    app.add_argument("--id", required=True)
    app.add_argument("--http-port", type=int, required=True)
    app.add_argument("--grpc-port", type=int, required=True)
    app.add_argument("--ws-port", type=int)
    app.add_argument("--log", required=True)
    one = commands.add_parser("get")
    one.add_argument("--url", required=True)
    one.add_argument("--body")
    check = commands.add_parser("grpc")
    check.add_argument("--target", required=True)
    conversation = commands.add_parser("ws")
    conversation.add_argument("--url", required=True)
    run = commands.add_parser("load")
    run.add_argument("--url", required=True)
    run.add_argument("--rate", type=float, required=True)
    run.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()
    {"serve": serve, "get": get, "grpc": grpc_check, "ws": ws, "load": load}[args.command](args)
    sys.exit(0)


if __name__ == "__main__":
    main()

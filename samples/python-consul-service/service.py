"""A small HTTP service that registers itself with a Consul agent (or Ferry) through the
real py-consul client, with an HTTP health check on its own /health, as Spring Cloud Consul
does by default. POST /fail and /recover flip its health, for demos and tests.

Run: python service.py --name orders --port 9000 --consul 127.0.0.1:8500
"""

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import consul

healthy = threading.Event()
healthy.set()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            status = 200 if healthy.is_set() else 503
            self.reply(status, {"status": "UP" if status == 200 else "DOWN"})
        else:
            self.reply(200, {"service": self.server.name, "port": self.server.server_port})

    def do_POST(self):
        if self.path == "/fail":
            healthy.clear()
        elif self.path == "/recover":
            healthy.set()
        self.reply(200, {"healthy": healthy.is_set()})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--consul", default="127.0.0.1:8500")
    parser.add_argument("--interval", default="10s")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.name = args.name
    host, port = args.consul.rsplit(":", 1)
    client = consul.Consul(host=host, port=int(port))
    service_id = f"{args.name}-{args.port}"
    client.agent.service.register(
        args.name,
        service_id=service_id,
        address="127.0.0.1",
        port=args.port,
        tags=["sample"],
        check=consul.Check.http(f"http://127.0.0.1:{args.port}/health", args.interval, timeout="2s"),
    )

    def stop(*_):
        client.agent.service.deregister(service_id)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"event": "registered", "id": service_id}), flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()

"""A small HTTP service that registers itself with a Eureka server (or Ferry) through the real
py-eureka-client, as a Spring Boot app with a Eureka client would. For demos and tests it
can answer slowly or fail on purpose.

Run: python service.py --app orders --port 9000 --eureka http://127.0.0.1:8761/eureka/
     [--fail-with 503] [--delay-ms 50]
"""

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import py_eureka_client.eureka_client as eureka_client


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--app", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--eureka", default="http://127.0.0.1:8761/eureka/")
    parser.add_argument("--fail-with", type=int, default=0, help="answer every request with this status")
    parser.add_argument("--delay-ms", type=int, default=0, help="wait this long before answering")
    parser.add_argument("--renewal", type=int, default=1, help="heartbeat and registry refresh, seconds")
    args = parser.parse_args()
    name = f"{args.app}-{args.port}"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if args.delay_ms:
                time.sleep(args.delay_ms / 1000)
            status = args.fail_with or 200
            body = json.dumps({
                "served_by": name,
                "path": self.path,
                "traceparent": self.headers.get("traceparent"),
                "b3_trace": self.headers.get("x-b3-traceid"),
            }).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PUT = do_GET
        do_DELETE = do_GET

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    eureka_client.init(eureka_server=args.eureka, app_name=args.app, instance_id=name,
                       instance_host="127.0.0.1", instance_ip="127.0.0.1", instance_port=args.port,
                       renewal_interval_in_secs=args.renewal, duration_in_secs=args.renewal * 3)

    def stop(*_):
        eureka_client.stop()
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"event": "registered", "id": name}), flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()

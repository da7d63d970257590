#!/usr/bin/env python3
"""A webhook receiver for the line tests: Python's own HTTP server (stdlib `http.server`).

Every POST is recorded as one JSON line in --log, flushed before the answer is sent:
  {"n": 1, "path": "/line", "arrived_ns": ..., "answered_ns": ..., "status": 200,
   "authorization": "Bearer ..." | null, "body": {...} | "<text that was not JSON>"}
`arrived_ns` is time.monotonic_ns() when the request's body was read (CLOCK_MONOTONIC, the
clock the station's `*_ns` fields use). `status` is what the receiver answers; with
--delay-ms the answer goes out that much later (the client may have given up by then).

  --port 0          pick a free port; "PORT <n>" is printed on stdout once listening
  --fail-first N    answer 500 to the first N requests
  --delay-ms D      wait D ms before answering each request
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True, help="JSONL file, one line per request")
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    args = ap.parse_args()

    lock = threading.Lock()
    counter = {"n": 0}
    log = open(args.log, "a", encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as a real web service would; TCP_NODELAY, or the answer's body (a second
        # small write after the headers) waits ~40 ms for the client's delayed ACK.
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            arrived = time.monotonic_ns()
            with lock:
                counter["n"] += 1
                n = counter["n"]
            status = 500 if n <= args.fail_first else 200
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            if args.delay_ms > 0:
                time.sleep(args.delay_ms / 1000.0)
            record = {
                "n": n,
                "path": self.path,
                "arrived_ns": arrived,
                "answered_ns": time.monotonic_ns(),
                "status": status,
                "authorization": self.headers.get("Authorization"),
                "body": body,
            }
            with lock:
                log.write(json.dumps(record) + "\n")
                log.flush()
            answer = b'{"ok":true}' if status == 200 else b'{"ok":false}'
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): recorded all the same

        def log_message(self, format: str, *a) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        log.close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()

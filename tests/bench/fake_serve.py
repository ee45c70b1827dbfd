"""A stand-in for `recaccel serve` in the fleet tests: answers readiness on --port, and
behaves as told on SIGTERM (--on-sigterm exit|ignore) or exits at once (--exit-code N)."""

from __future__ import annotations

import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/health/ready" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--on-sigterm", choices=["exit", "ignore"], default="exit")
    parser.add_argument("--exit-code", type=int)
    args = parser.parse_args()
    if args.exit_code is not None:
        print("fake server: cannot start, as asked", flush=True)
        sys.exit(args.exit_code)
    if args.on_sigterm == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("fake server: ready", flush=True)
    HTTPServer(("127.0.0.1", args.port), Ready).serve_forever()

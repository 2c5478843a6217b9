#!/usr/bin/env python3
"""A standalone receiver of proctor webhooks: checks each signature and prints the job.

Standard library only, independent of proctor's code, so it shows what any client
must do to trust a webhook:

    python3 scripts/webhook-receiver.py --port 9000 --secret whsec_...   # or WEBHOOK_SECRET=
    proctor submit examples/busybox --callback-url http://127.0.0.1:9000/hook

It answers 204 to a delivery whose signature verifies and 401 to any other, so
proctor retries a delivery that this receiver refused. `--once` exits after the
first verified delivery (exit 0), for scripts.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE_SECONDS = 300
BODY_MAX_BYTES = 16 * 1024 * 1024


def verify(secret: str, header: str, body: bytes, tolerance: float) -> tuple[bool, str]:
    """Whether `X-Proctor-Signature` HEADER signs BODY with SECRET, and why not."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if "t" not in fields or "v1" not in fields:
        return False, "no t= and v1= in the signature header"
    try:
        timestamp = int(fields["t"])
    except ValueError:
        return False, "the timestamp is not a number"
    if abs(time.time() - timestamp) > tolerance:
        return False, f"the timestamp is more than {tolerance:g} s away (a replay?)"
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), fields["v1"]):
        return False, "the HMAC does not match: wrong secret, or the body was changed"
    return True, "signature verified"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--secret",
        default=os.environ.get("WEBHOOK_SECRET"),
        help="the user's webhook secret (default: $WEBHOOK_SECRET)",
    )
    parser.add_argument("--tolerance", type=float, default=TOLERANCE_SECONDS)
    parser.add_argument("--once", action="store_true", help="exit after one verified delivery")
    args = parser.parse_args()
    if not args.secret:
        parser.error("give the webhook secret: --secret or WEBHOOK_SECRET")
    verified_once: list[bool] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > BODY_MAX_BYTES:
                self.send_response(413)
                self.end_headers()
                return
            body = self.rfile.read(length)
            header = self.headers.get("X-Proctor-Signature", "")
            ok, why = verify(args.secret, header, body, args.tolerance)
            print(f"--- POST {self.path}", flush=True)
            print(f"delivery:  {self.headers.get('X-Proctor-Delivery')}")
            print(f"event:     {self.headers.get('X-Proctor-Event')}")
            print(f"signature: {'VERIFIED' if ok else 'REJECTED'} ({why})")
            try:
                job = json.loads(body)
                print(
                    f"job:       {job.get('id')} {job.get('status')} "
                    f"performance={job.get('performance')} "
                    f"error={(job.get('error') or {}).get('code')}"
                )
                print(json.dumps(job, indent=2, sort_keys=True))
            except ValueError:
                print(f"body (not JSON): {body[:500]!r}")
            sys.stdout.flush()
            self.send_response(204 if ok else 401)
            self.end_headers()
            if ok:
                verified_once.append(True)

        def log_message(self, format: str, *values: object) -> None:
            del format, values  # the deliveries are printed above

    server = HTTPServer((args.host, args.port), Handler)
    print(f"listening on http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        while not (args.once and verified_once):
            server.handle_request()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

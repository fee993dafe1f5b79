"""Stands in for the server under the fake service managers: answers
GET /health on the --port of its arguments, exits 0 on SIGTERM, and prints
one line to stdout and one to stderr (the service's log files)."""

import http.server
import json
import signal
import sys


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "standin": True}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main(argv):
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 8000
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = http.server.HTTPServer(("127.0.0.1", port), Health)
    print(f"standin for {' '.join(argv)}", flush=True)
    print("standin stderr line", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])

"""Example Alertmanager webhook receiver: logs every POSTed notification as one JSON line."""

import json
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            payload = json.loads(body)
            alerts = [(a["status"], a["labels"]) for a in payload.get("alerts", [])]
            print(json.dumps({"path": self.path, "alerts": alerts}), flush=True)
        except ValueError:
            print(f"non-JSON POST to {self.path}: {body[:200]!r}", flush=True)
        self.send_response(200)
        self.end_headers()


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()

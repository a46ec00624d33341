"""A local stand-in for an OAuth token endpoint (refresh grants), for the host-side login tests."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any


class TokenEndpoint:
    """Answers refresh requests like the OAuth server: a new access and refresh token, once each."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.expires_in = 28800
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                n = len(endpoint.requests)
                answer = {
                    "access_token": f"{endpoint.prefix}access-{n}",
                    "refresh_token": f"{endpoint.prefix}refresh-{n}",
                    "expires_in": endpoint.expires_in,
                }
                data = json.dumps(answer if endpoint.status == 200 else {"error": "invalid_grant"}).encode()
                self.send_response(endpoint.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/oauth/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

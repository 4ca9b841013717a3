"""Small real HTTP servers for the SDK tests (stdlib ``http.server`` in a thread)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Recorded:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.at = time.monotonic()

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Recorded, BaseHTTPRequestHandler], None]


class HTTPServerThread:
    """Serves ``handler(request, raw_handler)`` on 127.0.0.1:<free port>; records requests."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[Recorded] = []
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in separate sends: without this, Nagle's algorithm holds
            # the body of every keep-alive response until the client's delayed ACK (~40 ms)
            disable_nagle_algorithm = True

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Recorded(self.command, self.path, dict(self.headers), body)
                outer.requests.append(request)
                handler(request, self)

            do_GET = do_POST = _handle  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        # a short poll: shutdown() waits for the loop to notice (0.5 s by default)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HTTPServerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_json(raw: BaseHTTPRequestHandler, status: int, payload: Any, headers=None) -> None:
    body = json.dumps(payload).encode()
    raw.send_response(status)
    raw.send_header("Content-Type", "application/json")
    raw.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        raw.send_header(key, value)
    raw.end_headers()
    raw.wfile.write(body)

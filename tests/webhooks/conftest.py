"""A real HTTP receiver for webhooks (http.server in a thread) that answers with the status
codes a test scripts, and records every request it gets."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from webhooks import delivery
from webhooks.models import EventStatus, WebhookEvent


class Receiver:
    def __init__(self):
        self.requests: list[tuple[dict, bytes]] = []
        self.statuses: list[int] = []  # scripted answers, then 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                code = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        # a short poll: shutdown() waits for the loop to notice (0.5 s by default)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def allow_private(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True


def deliver_pending() -> int:
    """Run the delivery task body for every due event (what the Celery worker does)."""
    ids = list(
        WebhookEvent.objects.filter(status=EventStatus.PENDING)
        .order_by("created_at")
        .values_list("pk", flat=True)
    )
    for event_id in ids:
        delivery.attempt(event_id)
    return len(ids)

"""Meterline as a separate process, SIGKILLed while the SDK is sending and restarted on the same
port: nothing is lost and nothing is stored twice (exact counts in the database)."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from meterline import Meterline, RetryPolicy

from tests.support import subprocess_database_url

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 3000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "SECRET_KEY": "sdk-restart-test",
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CONN_MAX_AGE": "0",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("TEST_DATABASE_NAME", None)
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "server process exited"
            try:
                httpx.get(f"{self.url}/v1/events/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def server_process(transactional_db):
    server = ServerProcess(free_port())
    server.start()
    yield server
    server.kill()


def test_server_killed_and_restarted_mid_stream_loses_and_duplicates_nothing(
    server_process, token_for
):
    from metering.models import Event

    org, secret = token_for("Restart Org")
    errors = []
    client = Meterline(
        secret,
        base_url=server_process.url,
        batch_size=100,
        flush_interval=0.01,
        retry=RetryPolicy(max_retries=200, backoff_base=0.05, backoff_max=0.3),
        on_error=errors.append,
    )
    ids = []

    def produce() -> None:
        for i in range(TOTAL):
            ids.append(
                client.ingest(
                    {"name": "restart", "external_customer_id": "u", "metadata": {"i": i}}
                )
            )
            if i % 10 == 0:
                time.sleep(0.01)  # ~3 s of steady traffic

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.8)
    sent_before_kill = client.stats.sent
    server_process.kill()
    killed_at = len(ids)
    time.sleep(1.0)  # events keep arriving while nothing listens
    server_process.start()
    producer.join()
    assert client.close(timeout=60)

    assert 0 < sent_before_kill < TOTAL and 0 < killed_at < TOTAL
    stats = client.stats
    assert stats.retries > 0  # the kill did hit traffic
    assert (stats.failed, stats.dropped) == (0, 0)
    assert stats.sent + stats.duplicates == TOTAL
    assert errors == []
    rows = Event.objects.filter(organization=org, name="restart")
    assert rows.count() == TOTAL
    assert set(rows.values_list("external_id", flat=True)) == set(ids)
    assert sorted(rows.values_list("metadata__i", flat=True)) == list(range(TOTAL))

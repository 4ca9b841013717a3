"""Helpers for tests that start other processes (servers, workers) on the test database."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def subprocess_database_url() -> str:
    """A DATABASE_URL for the database this test is connected to, as psycopg actually reached
    it: a host name and port, or a unix-socket directory (the embedded PostgreSQL)."""
    connection.ensure_connection()
    info = connection.connection.info
    user = quote(info.user, safe="")
    password = f":{quote(info.password, safe='')}" if info.password else ""
    name = quote(info.dbname, safe="")
    if info.host.startswith("/"):
        return f"postgresql://{user}{password}@/{name}?host={quote(info.host, safe='')}&port={info.port}"
    return f"postgresql://{user}{password}@{info.host}:{info.port}/{name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """Meterline served by a separate process on the test database: gunicorn (several worker
    processes, as in production) or runserver. The test must use `transactional_db` so the
    server sees its rows."""

    def __init__(
        self,
        *,
        kind: str = "gunicorn",
        workers: int = 3,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ):
        self.kind = kind
        self.extra_env = env or {}
        self.workers = workers
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        address = f"127.0.0.1:{self.port}"
        if self.kind == "gunicorn":
            return [
                *(sys.executable, "-m", "gunicorn", "config.wsgi"),
                *("--bind", address, "--workers", str(self.workers), "--threads", "2"),
                *("--log-level", "warning"),
            ]
        return [sys.executable, "manage.py", "runserver", address, "--noreload"]

    def start(self) -> "AppServer":
        env = {
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "SECRET_KEY": "test-server",
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CONN_MAX_AGE": "0",
            "LOG_LEVEL": "WARNING",
            **self.extra_env,
        }
        env.pop("TEST_DATABASE_NAME", None)
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.kind} exited"
            try:
                httpx.get(f"{self.url}/v1/events/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"{self.kind} did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

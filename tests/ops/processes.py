"""Real processes for the fault tests: a private redis-server, the web server, Celery worker and
beat, each on the test database, each in its own process group so a test can kill it outright."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from django.db import connection

from tests.support import free_port, subprocess_database_url

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def with_application_name(env: dict, name: str) -> dict:
    """The process's database sessions carry `name` (pg_stat_activity.application_name)."""
    url = env["DATABASE_URL"]
    return {**env, "DATABASE_URL": f"{url}{'&' if '?' in url else '?'}application_name={name}"}


def sessions(application_name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        )
        return cursor.fetchone()[0]


class Process:
    def __init__(self, command: list[str], env: dict, name: str) -> None:
        self.command, self.name = command, name
        self.application_name = f"test-{name}"
        self.env = (
            with_application_name(env, self.application_name) if "DATABASE_URL" in env else env
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Process":
        self.proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.running():
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)
            if "DATABASE_URL" in self.env:  # the server side notices a moment later
                wait_for(lambda: sessions(self.application_name) == 0, 30, "sessions to end")


class RedisServer(Process):
    """A throw-away redis-server (nothing saved to disk) that a test can stop and start again
    on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        command = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        super().__init__(command, env, "redis")

    def start(self) -> "RedisServer":
        super().start()
        wait_for(self._answers, 10, "redis-server")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def app_env(**extra: str) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "SECRET_KEY": "fault-tests",
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CONN_MAX_AGE": "0",
        "LOG_LEVEL": "WARNING",
        "API_RATE_LIMIT": "",
        **extra,
    }
    env.pop("TEST_DATABASE_NAME", None)
    return env


def web(env: dict, name: str = "web") -> tuple[Process, str]:
    port = free_port()
    server = Process(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], env, name
    ).start()
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert server.running(), "web server exited"
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, 60, "the web server")
    return server, url


def worker(env: dict, name: str = "worker") -> Process:
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo"]
    return Process([*command, "-l", "warning"], env, name).start()


def beat(env: dict, schedule: Path) -> Process:
    command = [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "warning"]
    return Process([*command, "--schedule", str(schedule)], env, "beat").start()

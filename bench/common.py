"""Shared pieces of the benchmarks: Django bootstrap against the benchmark database, the machine
description, a gunicorn server under production settings with RSS sampling, percentiles and the
JSON result files (bench/results/, git-ignored)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = BASE_DIR / "bench" / "results"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/meterline_bench"
PYTHON = str(BASE_DIR / ".venv" / "bin" / "python")
GUNICORN = str(BASE_DIR / ".venv" / "bin" / "gunicorn")
BENCH_SECRET_KEY = "bench-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def with_database(url: str, name: str) -> str:
    """The same server as `url`, another database name."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def server_env(url: str | None = None) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url or database_url(),
        DJANGO_SETTINGS_MODULE="bench.settings",
        DEBUG="0",
        SECRET_KEY=env.get("SECRET_KEY") or BENCH_SECRET_KEY,
        CELERY_TASK_ALWAYS_EAGER=env.get("CELERY_TASK_ALWAYS_EAGER", "1"),
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(BASE_DIR),
    )
    return env


def bootstrap(url: str | None = None) -> None:
    """Configure Django in this process for the benchmark database (production settings)."""
    os.environ.update({k: v for k, v in server_env(url).items() if k != "PYTHONPATH"})
    if str(BASE_DIR) not in sys.path:
        sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def ensure_database(url: str) -> None:
    """Create the database if missing and apply migrations (idempotent)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = with_database(url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [PYTHON, str(BASE_DIR / "manage.py"), "migrate", "--no-input", "-v", "0"],
        env=server_env(url),
        cwd=BASE_DIR,
        check=True,
    )


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=BASE_DIR, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def machine_info(url: str | None = None) -> dict:
    import psutil
    import psycopg

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "git": git_commit(),
    }
    with psycopg.connect(url or database_url()) as conn:
        info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                "('shared_buffers', 'work_mem', 'max_wal_size', 'synchronous_commit', "
                "'effective_cache_size', 'max_connections')"
            ).fetchall()
        )
        info["postgresql_settings"] = settings
        row = conn.execute(
            "SELECT reltuples::bigint, pg_total_relation_size(oid) FROM pg_class "
            "WHERE relname = 'metering_event'"
        ).fetchone()
        info["events_table_indexes"] = [
            name
            for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'metering_event' ORDER BY 1"
            ).fetchall()
        ]
        if row:
            info["events_table_estimated_rows"] = int(row[0])
            info["events_table_total_mib"] = round(row[1] / 2**20)
    return info


def print_machine(info: dict) -> None:
    print(
        f"machine: {info['cores']} cores ({info['cpu']}), {info['ram_gib']} GiB RAM, "
        f"PostgreSQL {info['postgresql']} "
        f"(shared_buffers={info['postgresql_settings'].get('shared_buffers')}), "
        f"Python {info['python']}, git {info['git']}"
    )
    if "events_table_estimated_rows" in info:
        print(
            f"events table: ~{info['events_table_estimated_rows']:,} rows, "
            f"{info['events_table_total_mib']:,} MiB with {len(info['events_table_indexes'])} "
            "indexes"
        )


def load_average() -> list[float]:
    """1/5/15-minute load average: the box is shared, every figure is recorded with it."""
    return [round(x, 2) for x in os.getloadavg()]


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    n = len(ordered)

    def pick(q: float) -> float:
        # nearest-rank percentile
        return ordered[max(0, min(n - 1, int(round(q * n + 0.5)) - 1))]

    return {
        "n": n,
        "mean": round(sum(ordered) / n, 3),
        "p50": round(pick(0.50), 3),
        "p90": round(pick(0.90), 3),
        "p99": round(pick(0.99), 3),
        "max": round(ordered[-1], 3),
    }


def fmt_ms(stats: dict) -> str:
    if not stats.get("n"):
        return "n=0"
    return (
        f"p50 {stats['p50']:.2f} ms, p90 {stats['p90']:.2f} ms, p99 {stats['p99']:.2f} ms, "
        f"max {stats['max']:.2f} ms (n={stats['n']})"
    )


_SERVER_TIMING = re.compile(r"app;dur=([0-9.]+)")


def server_ms(response) -> float | None:
    match = _SERVER_TIMING.search(response.headers.get("server-timing", ""))
    return float(match.group(1)) if match else None


def save_result(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    payload = {"benchmark": name, "finished_at": stamp, **payload}
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    text = json.dumps(payload, indent=2, default=str)
    path.write_text(text)
    (RESULTS_DIR / f"{name}-latest.json").write_text(text)
    print(f"result: {path.relative_to(BASE_DIR)}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn `config.wsgi` with production settings (DEBUG=0) plus the timing middleware; samples
    the RSS of its workers every `sample_every` seconds while running."""

    def __init__(self, *, url: str | None = None, workers: int = 4, sample_every: float = 0.5):
        self.url = url or database_url()
        self.workers = workers
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.sample_every = sample_every
        self.samples: list[tuple[float, int, int]] = []  # (t, pid, rss bytes)
        self._stop = threading.Event()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        cmd = [
            GUNICORN,
            "config.wsgi:application",
            "--workers",
            str(self.workers),
            "--worker-class",
            "sync",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--timeout",
            "300",
            "--log-level",
            "warning",
            "--chdir",
            str(BASE_DIR),
        ]
        self.process = subprocess.Popen(cmd, env=server_env(self.url), cwd=BASE_DIR)
        self._wait_ready()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("gunicorn exited during start-up")
            try:
                # 401 without a token: the app is loaded and answering
                httpx.get(f"{self.base_url}/v1/customers/", timeout=5)
                # let every worker boot (each imports Django on its first request otherwise)
                if len(self.worker_pids()) >= self.workers:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not become ready within 60 s")

    def worker_pids(self) -> list[int]:
        import psutil

        try:
            return [p.pid for p in psutil.Process(self.process.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            now = time.monotonic()
            for pid in self.worker_pids():
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.samples.append((now, pid, psutil.Process(pid).memory_info().rss))
            self._stop.wait(self.sample_every)

    def rss_report(self, *, since: float | None = None) -> dict:
        """Per worker: RSS at the first sample after `since` (warm), the peak and the last."""
        per: dict[int, list[tuple[float, int]]] = {}
        for t, pid, rss in self.samples:
            per.setdefault(pid, []).append((t, rss))
        workers = {}
        for pid, series in per.items():
            warm = [s for s in series if since is None or s[0] >= since] or series
            mib = [r / 2**20 for _, r in warm]
            workers[str(pid)] = {
                # RSS at 25 %, 50 %, 75 % and 100 % of the run: growth vs plateau
                "quarters_mib": [
                    round(mib[min(len(mib) - 1, int(len(mib) * q / 4))], 1) for q in (1, 2, 3, 4)
                ],
                "start_mib": round(mib[0], 1),
                "peak_mib": round(max(mib), 1),
                "end_mib": round(mib[-1], 1),
                "growth_mib": round(mib[-1] - mib[0], 1),
                "samples": len(mib),
            }
        return workers

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

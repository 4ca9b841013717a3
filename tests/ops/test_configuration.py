"""Configuration as a fresh clone meets it: importing the settings starts nothing (the embedded
PostgreSQL starts with the first database connection), `.env` is read before anything in the
settings looks at the environment, and `.env.example` copied to `.env` leaves the commands
working. Each test runs manage.py in a subprocess, with its own data folder or its own copy of
the repository, so nothing is written into this checkout."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# an existing server, so that commands in a copy of the repository need no embedded one
SERVER_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def clean_env(**values: str) -> dict:
    """The environment of a developer's shell: none of the settings this test run was given."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PYTEST_", "DJANGO_"))
        and name
        not in {
            "DATABASE_URL",
            "TEST_DATABASE_NAME",
            "METERLINE_DATA_DIR",
            "CELERY_BROKER_URL",
            "CACHE_URL",
            "SECRET_KEY",
            "DEBUG",
            # the embedded server's lock (and maybe socket) folder: the data folder's own
            "XDG_RUNTIME_DIR",
        }
    }
    return {**env, "PYTHONUNBUFFERED": "1", **values}


def manage(*args: str, env: dict, cwd: Path = ROOT, timeout: int = 180):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_of_the_repository(target: Path) -> Path:
    """The working tree's files (tracked, or new and not ignored) copied to `target`: the
    settings' BASE_DIR is then `target`, so its `.env` is the one they read."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, names.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    assert not (target / ".env").exists()
    return target


# --- 1. the embedded PostgreSQL starts with the first connection, not with the settings -------


@pytest.fixture
def embedded_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    # DATABASE_URL empty rather than absent: a developer's .env cannot name a server here
    env = clean_env(METERLINE_DATA_DIR=str(data_dir), DATABASE_URL="", DEBUG="1")
    yield data_dir, env
    if (data_dir / "postgres" / "postmaster.pid").exists():
        stop = manage("embedded_postgres", "stop", env=env)
        assert stop.stdout.strip() == "stopped", stop.stdout + stop.stderr
    assert not (data_dir / "postgres" / "postmaster.pid").exists()


def test_embedded_postgres_starts_with_the_first_connection(embedded_data_dir):
    data_dir, env = embedded_data_dir
    pgdata = data_dir / "postgres"

    status = manage("embedded_postgres", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == "not running"
    assert manage("--help", env=env).returncode == 0
    assert not pgdata.exists(), "importing the settings created the PostgreSQL data folder"

    # the first query starts it, in the data folder, and creates the Meterline database
    query = (
        "from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        "    cursor.execute('SELECT current_database()')\n"
        "    print(cursor.fetchone()[0], connection.connection.info.host)"
    )
    shell = manage("shell", "-c", query, env=env)
    assert shell.returncode == 0, shell.stderr
    database, host = shell.stdout.splitlines()[-1].split()  # (after the shell's import note)
    assert database == "meterline"
    assert (pgdata / "PG_VERSION").exists()
    assert host.startswith("/")  # its unix socket

    # it outlives the command that started it
    assert manage("embedded_postgres", "status", env=env).stdout.strip() == "running"


def test_embedded_postgres_that_cannot_start_says_to_set_database_url(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "postgres").write_text("not a folder")  # initdb fails here
    env = clean_env(METERLINE_DATA_DIR=str(data_dir), DATABASE_URL="", DEBUG="1")

    assert manage("check", env=env).returncode == 0  # no connection, no attempt
    shell = manage("shell", "-c", "from django.db import connection; connection.cursor()", env=env)
    assert shell.returncode != 0
    last_line = shell.stderr.strip().splitlines()[-1]
    assert "Could not start the embedded PostgreSQL" in last_line
    assert "Set DATABASE_URL=" in last_line


# --- 2. METERLINE_DATA_DIR (like every setting) can come from .env -----------------------------


def test_data_dir_can_be_set_in_dot_env(tmp_path):
    repo = copy_of_the_repository(tmp_path / "repo")
    data_dir = tmp_path / "data-from-dot-env"
    (repo / ".env").write_text(f"DEBUG=1\nMETERLINE_DATA_DIR={data_dir}\n")

    shell = manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings; print(settings.DATA_DIR)",
        env=clean_env(DATABASE_URL=SERVER_DATABASE_URL),
        cwd=repo,
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.splitlines()[-1] == str(data_dir)
    assert (data_dir / "broker" / "queue").is_dir()  # the filesystem broker went there too
    assert not (repo / ".data").exists()


# --- 3. `cp .env.example .env` leaves every command working -----------------------------------


def test_env_example_copied_to_dot_env_keeps_the_commands_working(tmp_path):
    repo = copy_of_the_repository(tmp_path / "repo")
    shutil.copy(repo / ".env.example", repo / ".env")
    env = clean_env(DATABASE_URL=SERVER_DATABASE_URL)

    check = manage("check", env=env, cwd=repo)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "System check identified no issues" in check.stdout
    close_cycles = manage("close_cycles", "--help", env=env, cwd=repo)
    assert close_cycles.returncode == 0, close_cycles.stderr
    assert "--as-of" in close_cycles.stdout

    # django-environ keeps an inline comment as part of the value: comments go on their own lines
    for number, line in enumerate((ROOT / ".env.example").read_text().splitlines(), start=1):
        if line and not line.startswith("#"):
            assert "#" not in line, f".env.example:{number}: {line}"


def test_a_blank_email_url_means_unset_and_commands_print_no_library_banner():
    """`EMAIL_URL=` (a blank line kept from .env.example) used to stop every command with
    'Invalid email schema'; and no library's start-up banner precedes a command's own output."""
    done = manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings; print(settings.EMAIL_BACKEND)",
        env=clean_env(
            EMAIL_URL="", DATABASE_URL=SERVER_DATABASE_URL, SECRET_KEY="x", DEBUG="0"
        ),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["core.mail.ConsoleSummaryBackend"]
    assert "AXES" not in done.stderr

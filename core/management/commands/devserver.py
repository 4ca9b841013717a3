"""`./dev run`: migrate, seed demo data on first start, then serve with a Celery worker and beat,
and localstripe (the Stripe stand-in) unless real Stripe keys are configured.

The terminal is for the banner (addresses, login, token): it is printed last, once everything
answers, and nothing follows it. Each process's output goes to its own file in the data folder's
`logs/`, and emails to files in `mail/` (unless EMAIL_URL says otherwise), one banner line each
saying where; should a process exit, the end of its log is printed with the error.

Stopping is part of the contract: Ctrl-C (SIGINT) and `kill` (SIGTERM) both stop the web
server, the worker, beat and localstripe, print one line, and leave nothing running but the embedded
PostgreSQL (kept for the next start; `./dev stop` stops it). The children run in their own
sessions, so a terminal's Ctrl-C reaches only this process, which then stops them in order; and
they are asked to die with it should this process be killed outright.
"""

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from core import devrun

DEMO_CREDENTIALS = "demo-credentials.json"
STARTUP_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 8
# localstripe's own default port; its state is kept in the data folder between runs
LOCALSTRIPE_PORT = 8420
LOCALSTRIPE_STATE = "localstripe.pickle"
# any `sk_test_…` key opens localstripe (the demo's keys, never real ones)
LOCALSTRIPE_SETTINGS = {
    "STRIPE_SECRET_KEY": "sk_test_meterline_demo",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_meterline_demo",
    "STRIPE_WEBHOOK_SECRET": "whsec_meterline_demo",
}
# in the data folder: one log file per process, and the emails (when EMAIL_URL is unset)
LOG_DIR = "logs"
MAIL_DIR = "mail"
# the lines of a log shown when its process exits
LOG_TAIL_LINES = 20
PR_SET_PDEATHSIG = 1


class Stop(Exception):
    """Raised in the main thread by SIGINT / SIGTERM."""


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def _die_with_parent():  # runs in the child between fork and exec
    # not Linux: no prctl, and the parent's own cleanup still applies
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _unapplied_migrations() -> list:
    executor = MigrationExecutor(connection)
    return executor.migration_plan(executor.loader.graph.leaf_nodes())


def _shown(path: Path) -> str:
    """A path as the developer would type it: relative to the current folder when inside it."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    return str(path)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as log:
            return "".join(deque(log, maxlen=lines))
    except OSError:
        return ""


class Command(BaseCommand):
    help = "Run Meterline for development: web server, Celery worker and beat."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-seed", action="store_true", help="skip demo data on first start")
        parser.add_argument(
            "--stripe-port",
            type=int,
            default=int(os.environ.get("LOCALSTRIPE_PORT", LOCALSTRIPE_PORT)),
            help="localstripe's port (when no real Stripe key is configured)",
        )

    def handle(self, *args, host, port, no_seed, stripe_port, **options):
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.logs: dict[str, Path] = {}
        self.log_starts: dict[str, int] = {}
        self.localstripe_url = None
        # the settings this run gives its children (and records for its neighbours)
        self.shared: dict[str, str] = {}
        recorded = False
        self.log_dir = settings.DATA_DIR / LOG_DIR
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # the stripe library logs each request at INFO: hundreds of lines while the demo seeds
        logging.getLogger("stripe").setLevel(logging.WARNING)
        previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._check_port_free(host, port)
            self.mail_dir = self._emails_to_files()
            if not settings.STRIPE_SECRET_KEY:
                self._check_port_free("127.0.0.1", stripe_port, option="--stripe-port")
                self._start_localstripe(stripe_port)
            # `./dev manage …` beside this run: the same localstripe and mail folder
            devrun.record(settings.DATA_DIR, self.shared)
            recorded = True
            # the web server boots (seconds of CPU) while this process checks the migrations
            # and the schedules; the banner waits for both. Its first connection would start
            # the embedded PostgreSQL too: this process starts it first
            connection.ensure_connection()
            self._start_web(host, port)
            self._prepare(no_seed)
            self._wait_until_serving(host, port)
            self._wait_for_localstripe()
            # Worker and beat boot after the web server has, not beside it: on a busy machine
            # the banner comes seconds sooner, and tasks wait in the broker meanwhile.
            self._start_background()
            self._print_banner(host, port)
            self._supervise()
        except Stop:
            pass
        finally:
            # a second Ctrl-C while stopping must not abandon the children half-stopped
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            self._stop_children()
            if recorded:
                devrun.forget(settings.DATA_DIR)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write("» Meterline stopped.")
        self.stdout.flush()
        sys.stderr.flush()
        connection.close()
        # Nothing is left to clean up (children reaped, connection closed); the interpreter's
        # own teardown of everything Django loaded takes 1-2 s on a busy machine.
        os._exit(0)

    # --- steps --------------------------------------------------------------------------------

    def _check_port_free(self, host: str, port: int, option: str = "--port") -> None:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                raise CommandError(
                    f"{host}:{port} is already in use (another `./dev run`?). "
                    f"Stop it, or start on another port: ./dev run {option} {port + 1}"
                )

    def _emails_to_files(self) -> Path | None:
        """Unless EMAIL_URL is set (here or in .env), every process writes its emails to files in
        the data folder instead of printing them: the demo's invoices alone are hundreds of
        lines. Django's file backend, one file per sending connection (here: per email)."""
        if os.environ.get("EMAIL_URL"):
            return None
        mail_dir = settings.DATA_DIR / MAIL_DIR
        mail_dir.mkdir(parents=True, exist_ok=True)
        # django-environ drops the first slash after `filemail://`: four make an absolute path
        self._share("EMAIL_URL", f"filemail:///{mail_dir.resolve()}")
        settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
        settings.EMAIL_FILE_PATH = str(mail_dir.resolve())
        return mail_dir

    def _prepare(self, no_seed: bool) -> None:
        if _unapplied_migrations():
            # (migrate's post-migrate hooks cost a second or two even when there is nothing
            # to do, hence the check)
            call_command("migrate", interactive=False, verbosity=0)
        call_command("setup_schedules", verbosity=0)
        credentials_file = settings.DATA_DIR / DEMO_CREDENTIALS
        if not no_seed and not credentials_file.exists():
            # the demo gives its customers cards and charges them
            self._wait_for_localstripe()
            self.stdout.write("» first start: loading demo data (about a minute)")
            call_command("seed_demo", credentials_file=str(credentials_file))

    def _spawn(self, name: str, command: list[str], **kwargs) -> None:
        """A child in its own session, its output appended to logs/<name>.log."""
        path = self.log_dir / f"{name}.log"
        self.logs[name] = path
        with open(path, "ab") as log:
            log.write(f"--- ./dev run started {name} at {time.strftime('%F %T')}\n".encode())
            log.flush()
            self.log_starts[name] = log.tell()
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                **kwargs,
            )
        self.children.append((name, child))

    def _start_localstripe(self, port: int) -> None:
        """localstripe as a child, its state in the data folder; this process and the other
        children talk to it as Stripe (keys and address in their settings)."""
        self.localstripe_url = f"http://127.0.0.1:{port}"
        state = settings.DATA_DIR / LOCALSTRIPE_STATE
        self._spawn(
            "localstripe",
            [
                sys.executable,
                "-m",
                "payments.management.commands.localstripe",  # `manage.py localstripe`, sans Django
                "--port",
                str(port),
                "--state",
                str(state),
                "--skip-checks",
            ],
        )
        values = {**LOCALSTRIPE_SETTINGS, "STRIPE_API_BASE": self.localstripe_url}
        # the installation's default when Stripe is configured (an explicit setting wins)
        values["PAYMENTS_COLLECTION"] = os.environ.get("PAYMENTS_COLLECTION", "automatic")
        for name, value in values.items():
            self._share(name, value)
            setattr(settings, name, value)  # this process's (the demo seed)

    def _share(self, name: str, value: str) -> None:
        os.environ[name] = value  # the children's settings
        self.shared[name] = value

    def _wait_for_localstripe(self) -> None:
        if self.localstripe_url is None:
            return
        port = int(self.localstripe_url.rsplit(":", 1)[1])
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self._fail_if_a_child_exited()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise CommandError(
            f"localstripe did not listen on {port} within {STARTUP_TIMEOUT_SECONDS}s"
        )

    def _child_env(self) -> dict:
        return {
            **os.environ,
            # A development container usually runs as root; the worker's warning about it would
            # print on every start. Production starts the worker itself and keeps the warning.
            "PYTHONWARNINGS": "ignore:You're running the worker with superuser privileges",
            # the logs are read while the processes run
            "PYTHONUNBUFFERED": "1",
        }

    def _start_web(self, host: str, port: int) -> None:
        python = sys.executable
        self._spawn(
            "web",
            # this command has run the system checks already
            [python, "manage.py", "runserver", f"{host}:{port}", "--noreload", "--skip-checks"],
            env=self._child_env(),
        )

    def _start_background(self) -> None:
        python = sys.executable
        # --quiet: no start-up banners (ours is the one to read)
        celery = [python, "-m", "celery", "-A", "config", "--quiet"]
        env = self._child_env()
        # one process (solo pool) is plenty for development and starts and stops fastest
        # …and alone: no waiting for neighbours to synchronise with (mingle, gossip)
        self._spawn(
            "worker",
            [
                *celery,
                "worker",
                "-l",
                "info",
                "--pool",
                "solo",
                "--without-mingle",
                "--without-gossip",
            ],
            env=env,
        )
        self._spawn(
            "beat",
            [
                *celery,
                "beat",
                "-l",
                "info",
                "--schedule",
                str(settings.DATA_DIR / "celerybeat-schedule"),
            ],
            env=env,
        )

    def _logged(self, name: str, text: bytes) -> bool:
        """Whether the child has written `text` to its log since it started."""
        try:
            with open(self.logs[name], "rb") as log:
                log.seek(self.log_starts[name])
                return text in log.read()
        except OSError:
            return False

    def _wait_until_serving(self, host: str, port: int) -> None:
        url = f"http://{host}:{port}/healthz"
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self._fail_if_a_child_exited()
            try:
                with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise CommandError(f"the web server did not answer {url} within {STARTUP_TIMEOUT_SECONDS}s")

    def _print_banner(self, host: str, port: int) -> None:
        base = f"http://{host}:{port}"
        logs = {name: _shown(path) for name, path in self.logs.items()}
        database = (
            "embedded PostgreSQL in "
            f"{_shown(settings.DATA_DIR / 'postgres')} (kept running; `./dev stop` stops it)"
            if settings.EMBEDDED_POSTGRES
            else "DATABASE_URL"
        )
        if self.mail_dir is not None:
            emails = f"not sent: each one is written to a file in {_shown(self.mail_dir)}/"
        else:
            emails = "sent through EMAIL_URL"
        if self.localstripe_url:
            stripe = (
                f"localstripe at {self.localstripe_url} (log: {logs['localstripe']}); "
                "card 4242 4242 4242 4242 pays, 4000 0000 0000 0341 is declined"
            )
        else:
            stripe = "the keys in STRIPE_SECRET_KEY / STRIPE_API_BASE"
        lines = [
            "",
            self.style.SUCCESS(f"Meterline is running at {base}"),
            f"  admin:   {base}/admin/",
            f"  API:     {base}/v1/   (OpenAPI schema: {base}/v1/openapi.json)",
            f"  web:     requests and errors in {logs['web']}",
            f"  worker:  tasks (invoices, emails, payments, webhooks) in {logs['worker']}",
            f"  beat:    every minute: closes periods, collects payments; log: {logs['beat']}",
            f"  emails:  {emails}",
            f"  stripe:  {stripe}",
            f"  data:    {database}",
        ]
        credentials_file = settings.DATA_DIR / DEMO_CREDENTIALS
        if credentials_file.exists():
            demo = json.loads(credentials_file.read_text())
            lines.append(f"  login:   {demo['username']} / {demo['password']}")
            lines.append(f"  token:   {demo['token']}")
        lines.append("  Ctrl-C stops everything.")
        lines.append("")
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def _supervise(self) -> None:
        while True:
            self._fail_if_a_child_exited()
            time.sleep(0.5)

    def _fail_if_a_child_exited(self) -> None:
        for name, child in self.children:
            if child.poll() is not None:
                log = self.logs[name]
                raise CommandError(
                    f"the {name} process exited (status {child.returncode}); "
                    f"the end of {_shown(log)}:\n{_tail(log)}"
                )

    def _stop_children(self) -> None:
        running = [(name, child) for name, child in self.children if child.poll() is None]
        for name, child in running:
            if name == "beat":
                # Beat answers SIGTERM by saving its schedule from inside the signal handler,
                # on the database connection its main loop may be using at that moment (at
                # start-up it always is): a traceback, or worse. Its state is already saved
                # after every task it sends (CELERY_BEAT_SYNC_EVERY = 1), so nothing is lost.
                child.kill()
            elif name == "localstripe":
                # it saves its state after every request that changes it (to a new file, then
                # renamed): nothing to save at exit, and its graceful stop takes seconds
                child.kill()
            elif name == "worker" and not self._logged(name, b" ready."):
                # still starting: it holds no task, and a warm shutdown would wait for its
                # start-up to finish first
                child.kill()
            else:
                # the main process only: the worker stops its own pool (warm shutdown) once its
                # task is done
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for _, child in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
        # whatever is left (each child leads its own process group, which holds its pool too)
        for _, child in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()

"""`./dev run`: migrate, seed demo data on first start, then serve with a Celery worker and beat,
and localstripe (the Stripe stand-in) unless real Stripe keys are configured.

Stopping is part of the contract: Ctrl-C (SIGINT) and `kill` (SIGTERM) both stop the web
server, the worker, beat and localstripe, print one line, and leave nothing running but the embedded
PostgreSQL (kept for the next start; `./dev stop` stops it). The children run in their own
sessions, so a terminal's Ctrl-C reaches only this process, which then stops them in order; and
they are asked to die with it should this process be killed outright.
"""

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

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
        self.localstripe_url = None
        previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._check_port_free(host, port)
            if not settings.STRIPE_SECRET_KEY:
                self._check_port_free("127.0.0.1", stripe_port, option="--stripe-port")
                self._start_localstripe(stripe_port)
            self._prepare(no_seed)
            self._start_children(host, port)
            self._wait_until_serving(host, port)
            self._wait_for_localstripe()
            self._print_banner(host, port)
            self._supervise()
        except Stop:
            pass
        finally:
            # a second Ctrl-C while stopping must not abandon the children half-stopped
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            self._stop_children()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write("» Meterline stopped.")

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

    def _start_localstripe(self, port: int) -> None:
        """localstripe as a child, its state in the data folder; this process and the other
        children talk to it as Stripe (keys and address in their settings)."""
        self.localstripe_url = f"http://127.0.0.1:{port}"
        state = settings.DATA_DIR / LOCALSTRIPE_STATE
        log = open(settings.DATA_DIR / "localstripe.log", "ab")  # noqa: SIM115 - the child's
        command = [
            sys.executable,
            "manage.py",
            "localstripe",
            "--port",
            str(port),
            "--state",
            str(state),
            "--skip-checks",
        ]
        with log:
            self.children.append(
                (
                    "localstripe",
                    subprocess.Popen(
                        command,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    ),
                )
            )
        values = {**LOCALSTRIPE_SETTINGS, "STRIPE_API_BASE": self.localstripe_url}
        # the installation's default when Stripe is configured (an explicit setting wins)
        values["PAYMENTS_COLLECTION"] = os.environ.get("PAYMENTS_COLLECTION", "automatic")
        for name, value in values.items():
            os.environ[name] = value  # the children's settings
            setattr(settings, name, value)  # this process's (the demo seed)

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

    def _start_children(self, host: str, port: int) -> None:
        python = sys.executable
        # --quiet: no start-up banners (ours is the one to read)
        celery = [python, "-m", "celery", "-A", "config", "--quiet"]
        commands = {
            # first: the banner waits for it. This command has run the system checks already
            "web": [
                python,
                "manage.py",
                "runserver",
                f"{host}:{port}",
                "--noreload",
                "--skip-checks",
            ],
            # one process (solo pool) is plenty for development and starts and stops fastest
            # …and alone: no waiting for neighbours to synchronise with (mingle, gossip)
            "worker": [
                *celery,
                "worker",
                "-l",
                "warning",
                "--pool",
                "solo",
                "--without-mingle",
                "--without-gossip",
            ],
            "beat": [
                *celery,
                "beat",
                "-l",
                "warning",
                "--schedule",
                str(settings.DATA_DIR / "celerybeat-schedule"),
            ],
        }
        env = {
            **os.environ,
            # A development container usually runs as root; the worker's warning about it would
            # print on every start. Production starts the worker itself and keeps the warning.
            "PYTHONWARNINGS": "ignore:You're running the worker with superuser privileges",
        }
        for name, command in commands.items():
            self.children.append(
                (
                    name,
                    subprocess.Popen(
                        command,
                        # runserver's start-up chatter goes to stdout; its request log and
                        # every error stay on stderr
                        stdout=subprocess.DEVNULL if name == "web" else None,
                        env=env,
                        start_new_session=True,
                        preexec_fn=_die_with_parent,
                    ),
                )
            )

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
            time.sleep(0.1)
        raise CommandError(f"the web server did not answer {url} within {STARTUP_TIMEOUT_SECONDS}s")

    def _print_banner(self, host: str, port: int) -> None:
        base = f"http://{host}:{port}"
        lines = [
            "",
            self.style.SUCCESS(f"Meterline is running at {base}"),
            f"  admin:   {base}/admin/",
            f"  API:     {base}/v1/   (OpenAPI schema: {base}/v1/openapi.json)",
        ]
        credentials_file = settings.DATA_DIR / DEMO_CREDENTIALS
        if credentials_file.exists():
            demo = json.loads(credentials_file.read_text())
            lines.append(f"  login:   {demo['username']} / {demo['password']}")
            lines.append(f"  token:   {demo['token']}")
        database = (
            "embedded PostgreSQL in .data/postgres (kept running; `./dev stop` stops it)"
            if settings.EMBEDDED_POSTGRES
            else "DATABASE_URL"
        )
        lines.append(f"  data:    {database}")
        if self.localstripe_url:
            lines.append(
                f"  stripe:  localstripe at {self.localstripe_url} (state in the data folder); "
                "card 4242 4242 4242 4242 pays, 4000 0000 0000 0341 is declined"
            )
        else:
            lines.append("  stripe:  the keys in STRIPE_SECRET_KEY / STRIPE_API_BASE")
        lines.append("  worker and beat are running. Ctrl-C stops everything.")
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
                raise CommandError(f"the {name} process exited (status {child.returncode})")

    def _stop_children(self) -> None:
        running = [(name, child) for name, child in self.children if child.poll() is None]
        for name, child in running:
            if name == "beat":
                # Beat answers SIGTERM by saving its schedule from inside the signal handler,
                # on the database connection its main loop may be using at that moment (at
                # start-up it always is): a traceback, or worse. Its state is already saved
                # after every task it sends (CELERY_BEAT_SYNC_EVERY = 1), so nothing is lost.
                child.kill()
            else:
                # the main process only: the worker stops its own pool (warm shutdown)
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

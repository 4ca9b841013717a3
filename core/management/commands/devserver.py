"""`./dev run`: migrate, seed demo data on first start, then serve with a Celery worker and beat."""

import json
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

DEMO_CREDENTIALS = "demo-credentials.json"


class Command(BaseCommand):
    help = "Run Meterline for development: web server, Celery worker and beat."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-seed", action="store_true", help="skip demo data on first start")

    def handle(self, *args, host, port, no_seed, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("setup_schedules", verbosity=0)
        credentials_file = settings.DATA_DIR / DEMO_CREDENTIALS
        if not no_seed and not credentials_file.exists():
            self.stdout.write("» first start: loading demo data")
            call_command("seed_demo", credentials_file=str(credentials_file))
        python = sys.executable
        children = [
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-l",
                    "warning",
                    "--concurrency",
                    "2",
                ]
            ),
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "beat",
                    "-l",
                    "warning",
                    "--schedule",
                    str(settings.DATA_DIR / "celerybeat-schedule"),
                ]
            ),
            subprocess.Popen([python, "manage.py", "runserver", f"{host}:{port}", "--noreload"]),
        ]
        base = f"http://{host}:{port}"
        self.stdout.write(self.style.SUCCESS("\nMeterline is running"))
        self.stdout.write(f"  admin:   {base}/admin/")
        self.stdout.write(f"  API:     {base}/v1/   (schema: {base}/v1/openapi.json)")
        self.stdout.write(f"  portal:  {base}/")
        if credentials_file.exists():
            demo = json.loads(credentials_file.read_text())
            self.stdout.write(f"  login:   {demo['username']} / {demo['password']}")
            self.stdout.write(f"  token:   {demo['token']}")
        database = (
            "embedded PostgreSQL (.data/postgres)" if settings.EMBEDDED_POSTGRES else "DATABASE_URL"
        )
        self.stdout.write(f"  data:    {database}; worker + beat running. Ctrl-C stops.\n")
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()

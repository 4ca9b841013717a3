"""Django's deployment checklist passes with production settings (reliability.md)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_check_deploy_passes_with_production_settings():
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "k" * 64 + "-production-grade-secret-value-1234567890",
        "ALLOWED_HOSTS": "billing.example.com",
        "SESSION_COOKIE_SECURE": "1",
        "CSRF_COOKIE_SECURE": "1",
        "SECURE_SSL_REDIRECT": "1",
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
        "SECURE_HSTS_PRELOAD": "1",
        "EMAIL_URL": "smtp+tls://billing:secret@smtp.example.com:587",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_secret_key_refuses_to_start_in_production():
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": ""}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


def test_check_deploy_fails_when_email_is_not_delivered():
    """Without EMAIL_URL sign-in links would be printed to the worker's log: the deploy checklist
    says so and fails."""
    env = {
        **{key: value for key, value in os.environ.items() if key != "EMAIL_URL"},
        "DEBUG": "0",
        "SECRET_KEY": "k" * 64 + "-production-grade-secret-value-1234567890",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "(meterline.E001) Email is not delivered" in result.stderr
    assert "Set EMAIL_URL" in result.stderr

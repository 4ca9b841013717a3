"""docs/operations.md's deploy, walked as written: the documented `.env` (with this test's own
database, broker and secrets), the install block verbatim in a fresh virtual environment against
a fresh database, the three process commands verbatim, then what an operator checks — `/healthz`,
a portal page with its static files, an admin sign-in, the API token — over HTTP with the headers
the documented TLS proxy sends. And without `collectstatic`, a page is served, not a 500."""

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from django.test import Client, override_settings

from tests.ops.processes import RedisServer, wait_for
from tests.support import free_port, subprocess_database_url

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "operations.md"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
HOST = "billing.example.com"
# what the documented nginx sends in front of every request
PROXIED = {"Host": HOST, "X-Forwarded-Proto": "https"}
# the settings an operator must replace with their own; every other line is used as written
OWN = ("SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "EMAIL_URL")


def deploy_blocks() -> dict[str, list[tuple[str, str]]]:
    """The fenced blocks of the deploy section, by subsection title."""
    text = GUIDE.read_text()
    section = text[text.index("## Deploy, start to finish") : text.index("\n## ", 20)]
    blocks = {}
    for part in section.split("\n### ")[1:]:
        title, _, body = part.partition("\n")
        blocks[title.strip()] = FENCE.findall(body)
    return blocks


def test_the_deploy_section_has_the_blocks_this_test_walks():
    blocks = deploy_blocks()
    assert [lang for lang, _ in blocks["Settings"]] == ["ini"]
    assert [lang for lang, _ in blocks["Install, migrate, first account"]] == ["bash"]
    commands = blocks["Run: web, worker, beat"][0][1].splitlines()
    assert [c.split()[0] for c in commands] == ["venv/bin/gunicorn", "venv/bin/celery"] + [
        "venv/bin/celery"
    ]
    env_lines = dict(
        line.split("=", 1) for line in blocks["Settings"][0][1].splitlines() if "=" in line
    )
    assert set(OWN) <= set(env_lines)
    assert env_lines["DEBUG"] == "0"


def copy_of_the_checkout(target: Path) -> None:
    """What a clone holds: the files git knows (committed or not yet), not .venv, .data, .env."""
    names = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, names):
        source = ROOT / name
        if source.is_file() and not name.startswith((".env", ".data/")):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture
def fresh_database(transactional_db):
    url = subprocess_database_url()
    name = f"meterline_deploy_{uuid.uuid4().hex[:8]}"
    admin_url = url.replace(url.rsplit("/", 1)[1].split("?")[0], "postgres", 1)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield url.replace(url.rsplit("/", 1)[1].split("?")[0], name, 1)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cookies_of(response: httpx.Response, jar: dict) -> dict:
    """Set-Cookie kept by hand: the cookies are Secure (HTTPS at the proxy), and an HTTP
    client would not send them back over the plain HTTP between proxy and server."""
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]
    return jar


def cookie_header(jar: dict) -> dict:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}


@pytest.mark.slow
def test_deploy_section_walked_as_written(fresh_database, tmp_path):
    blocks = deploy_blocks()
    checkout = tmp_path / "meterline"
    copy_of_the_checkout(checkout)
    redis = RedisServer().start()
    password = "a-long-admin-password-for-the-deploy-test"
    own = {
        "SECRET_KEY": "deploy-test-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "DATABASE_URL": fresh_database,
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis.port}/0",
        "CACHE_URL": f"redis://127.0.0.1:{redis.port}/1",
        # nothing is emailed here; a port where no server listens
        "EMAIL_URL": f"smtp://127.0.0.1:{free_port()}",
    }
    lines = []
    for line in blocks["Settings"][0][1].splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={own[key]}" if key in own else line)
    (checkout / ".env").write_text("\n".join(lines) + "\n")

    # the operator's shell: none of this test run's settings, the password for createsuperuser
    env = {
        "PATH": os.pathsep.join(
            p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p
        ),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "DJANGO_SUPERUSER_PASSWORD": password,
    }
    started = time.monotonic()
    install = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", blocks["Install, migrate, first account"][0][1]],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    installed_in = time.monotonic() - started
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-5000:]
    token = install.stdout.strip().splitlines()[-1]  # create_api_token prints only the token
    assert "System check identified no issues" in install.stdout
    assert (checkout / "staticfiles" / "staticfiles.json").exists()

    port = free_port()
    processes = []
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        for index, line in enumerate(blocks["Run: web, worker, beat"][0][1].splitlines()):
            command = shlex.split(line.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
            with open(logs / f"{index}.log", "wb") as log:
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=checkout,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        base = f"http://127.0.0.1:{port}"

        def healthy():
            assert processes[0].poll() is None, (logs / "0.log").read_text()
            try:
                # a load balancer's check: plain HTTP, exempt from the HTTPS redirect
                return httpx.get(f"{base}/healthz", headers={"Host": HOST}, timeout=2)
            except httpx.HTTPError:
                return None

        health = wait_for(healthy, 60, "gunicorn")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        # without the proxy's header, the HTTPS redirect applies
        plain = httpx.get(f"{base}/portal/acme/sign-in", headers={"Host": HOST})
        assert plain.status_code == 301
        assert plain.headers["location"] == f"https://{HOST}/portal/acme/sign-in"

        # a portal page, its stylesheet hashed by collectstatic and served by WhiteNoise
        page = httpx.get(f"{base}/portal/acme/sign-in", headers=PROXIED)
        assert page.status_code == 200, page.text[:2000]
        assert "strict-transport-security" in page.headers
        stylesheets = re.findall(r'href="(/static/[^"]+\.css)"', page.text)
        assert stylesheets and all(re.search(r"\.[0-9a-f]{12}\.css$", s) for s in stylesheets)
        for stylesheet in stylesheets:
            served = httpx.get(f"{base}{stylesheet}", headers=PROXIED)
            assert served.status_code == 200 and "max-age=315360000" in served.headers.get(
                "cache-control", ""
            )

        # the admin: sign in as the superuser the guide creates
        jar: dict = {}
        login = httpx.get(f"{base}/admin/login/", headers=PROXIED)
        assert login.status_code == 200
        cookies_of(login, jar)
        (csrf,) = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
        signed_in = httpx.post(
            f"{base}/admin/login/?next=/admin/",
            headers={
                **PROXIED,
                **cookie_header(jar),
                "Origin": f"https://{HOST}",
                "Referer": f"https://{HOST}/admin/login/",
            },
            data={"csrfmiddlewaretoken": csrf, "username": "admin", "password": password},
        )
        assert signed_in.status_code == 302, signed_in.text[:2000]
        assert signed_in.headers["location"] == "/admin/"
        assert "Secure" in signed_in.headers["set-cookie"]
        cookies_of(signed_in, jar)
        index = httpx.get(f"{base}/admin/", headers={**PROXIED, **cookie_header(jar)})
        assert index.status_code == 200 and "/admin/logout/" in index.text

        # the organization's token, printed once by the guide's last command
        customers = httpx.get(
            f"{base}/v1/customers/", headers={**PROXIED, "Authorization": f"Bearer {token}"}
        )
        assert customers.status_code == 200 and customers.json()["items"] == []

        # worker and beat run on the documented broker: beat's every-10-s rollup job is done
        def worked():
            assert all(p.poll() is None for p in processes), [p.poll() for p in processes]
            return "succeeded" in (logs / "1.log").read_text()

        wait_for(worked, 90, "the worker to run a task beat sent", interval=1)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        redis.kill()
        print(f"install block: {installed_in:.0f} s")


@pytest.mark.django_db
def test_a_page_is_served_before_collectstatic_has_run(tmp_path, caplog):
    """DEBUG=0's storage with nothing collected: the admin's sign-in page (stylesheets) is a
    200 with the files' plain names, and the log names the command to run."""
    storages = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "core.staticfiles.StaticFilesStorage"},
    }
    with (
        override_settings(STORAGES=storages, STATIC_ROOT=tmp_path / "nothing-collected"),
        caplog.at_level(logging.WARNING, logger="core.staticfiles"),
    ):
        response = Client().get("/admin/login/")
    assert response.status_code == 200
    assert 'href="/static/admin/css/base.css"' in response.content.decode()
    warnings = [r.getMessage() for r in caplog.records if r.name == "core.staticfiles"]
    assert "static file admin/css/base.css has not been collected: run `manage.py " in (warnings[0])
    # once per file
    assert len(warnings) == len(set(warnings))

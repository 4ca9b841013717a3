"""The edges of /v1/: every path in both slash forms, JSON for unknown paths and methods (DEBUG
or not), 413s that state the limit, chunked bodies, and the admin's empty optional fields."""

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from customers.models import Customer
from metering.models import Event
from tests.support import free_port, subprocess_database_url

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("get", "post", "put", "patch", "delete")


def api_paths() -> list[str]:
    """Every routed /v1/ path with its converters filled in."""

    def walk(patterns, prefix):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                yield prefix + str(entry.pattern)

    filled = {
        "uuid": str(uuid.UUID(int=7)),
        "str": "missing-key",
        "int": "7",
        "slug": "missing",
        "path": "missing",
    }
    paths = []
    for route in walk(get_resolver().url_patterns, "/"):
        if not route.startswith("/v1/"):
            continue
        paths.append(re.sub(r"<(\w+):\w+>", lambda m: filled[m.group(1)], route))
    return sorted(set(paths))


def toggled(path: str) -> str:
    return path[:-1] if path.endswith("/") else f"{path}/"


def test_the_route_table_is_what_the_clients_use():
    paths = api_paths()
    assert "/v1/events/ingest" in paths and "/v1/customers/" in paths
    assert len(paths) >= 14


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_every_path_in_both_slash_forms_answers_json_for_every_method(api, settings, debug):
    settings.DEBUG = debug
    for path, method in itertools.product(api_paths(), METHODS):
        for form in (path, toggled(path)):
            if method == "get":
                response = api.get(form)
            else:
                response = getattr(api, method)(form, data=b"{}", content_type="application/json")
            assert "json" in response["Content-Type"], (method, form)
            body = response.json()
            # the routed view answered (its own 404 names the object; a routing miss would not)
            assert response.status_code != 500, (method, form, body)
            if response.status_code == 405:
                assert body["error"] == "MethodNotAllowed"
            if response.status_code == 404:
                assert body == {"error": "ResourceNotFound", "detail": body["detail"]}


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(
    "path", ["/v1/", "/v1/nope", "/v1/events/ingest/extra", "/v1/customers/x/y/z/"]
)
def test_unknown_paths_are_a_json_404(api, settings, debug, path):
    settings.DEBUG = debug
    for method in METHODS:
        response = getattr(api, method)(path)
        assert response.status_code == 404
        assert response.json() == {"error": "ResourceNotFound", "detail": "Not found."}


@pytest.mark.django_db
def test_unsupported_method_is_a_json_405(api):
    response = api.put("/v1/events/ingest", data={}, format="json")
    assert response.status_code == 405
    assert response.json() == {"error": "MethodNotAllowed", "detail": 'Method "PUT" not allowed.'}


@pytest.mark.django_db
def test_slash_forms_reach_the_same_view(api, organization):
    events = {"events": [{"name": "a", "external_customer_id": "u1", "external_id": "e1"}]}
    assert api.post("/v1/events/ingest/", events, format="json").json() == {
        "inserted": 1,
        "duplicates": 0,
    }
    assert api.post("/v1/events/ingest", events, format="json").json() == {
        "inserted": 0,
        "duplicates": 1,
    }
    created = api.post("/v1/customers", {"email": "a@x.io", "external_id": "u1"}, format="json")
    assert created.status_code == 201
    customer_id = created.json()["id"]
    assert api.get(f"/v1/customers/{customer_id}/").json()["email"] == "a@x.io"
    assert api.get("/v1/customers/external/u1/state/").json()["id"] == customer_id
    assert api.get("/v1/events").json()["pagination"]["total_count"] == 1
    assert Event.objects.filter(organization=organization).count() == 1


@pytest.mark.django_db
def test_413_states_the_limit(api, settings):
    settings.INGEST_MAX_BODY_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024
    events = [{"name": "a", "external_customer_id": "u", "metadata": {"p": "x" * 500}}] * 5
    response = api.post("/v1/events/ingest", {"events": events}, format="json")
    assert response.status_code == 413
    assert response.json() == {
        "error": "RequestTooLarge",
        "detail": "Request body is too large: the limit is 2 KiB (2048 bytes).",
    }
    response = api.post("/v1/customers/", {"email": "x" * 3000}, format="json")
    assert response.status_code == 413
    assert response.json()["detail"].endswith("the limit is 2 KiB (2048 bytes).")
    assert Event.objects.count() == 0 and Customer.objects.count() == 0


def chunks(total: int, size: int = 64 * 1024):
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        yield b" " * piece
        sent += piece


def chunked_json(payload: dict):
    text = json.dumps(payload).encode()
    for start in range(0, len(text), 7):
        yield text[start : start + 7]


@pytest.mark.django_db(transaction=True)
def test_chunked_bodies_under_runserver_get_a_411_not_a_parse_error(live_server, token_for):
    _, secret = token_for("Chunked")
    response = httpx.post(
        f"{live_server.url}/v1/events/ingest",
        content=chunked_json({"events": [{"name": "a", "external_customer_id": "u"}]}),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 411
    assert response.json()["error"] == "LengthRequired"
    assert Event.objects.count() == 0


@pytest.fixture
def gunicorn_url(transactional_db):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "SECRET_KEY": "edge-test",
        "DEBUG": "0",
        "INGEST_MAX_BODY_BYTES": str(1024 * 1024),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("TEST_DATABASE_NAME", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(20)


def test_chunked_bodies_under_gunicorn_parse_or_get_the_413(gunicorn_url, token_for):
    _, secret = token_for("Chunked")
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    events = {"events": [{"name": "a", "external_customer_id": "u", "external_id": "c1"}]}
    small = httpx.post(
        f"{gunicorn_url}/v1/events/ingest/",
        content=chunked_json(events),
        headers=headers,
        timeout=30,
    )
    assert small.status_code == 200, small.text
    assert small.json() == {"inserted": 1, "duplicates": 0}

    big = httpx.post(
        f"{gunicorn_url}/v1/events/ingest",
        content=chunks(20 * 1024 * 1024),
        headers=headers,
        timeout=60,
    )
    assert big.status_code == 413
    assert big.json() == {
        "error": "RequestTooLarge",
        "detail": "Request body is too large: the limit is 1 MiB (1048576 bytes).",
    }
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_admin_customer_page_shows_empty_optional_fields_empty(admin_client, organization):
    customer = Customer.objects.create(organization=organization, email="n@x.io")
    assert customer.billing_address is None and customer.tax_id is None
    page = admin_client.get(f"/admin/customers/customer/{customer.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    for field in ("billing_address", "tax_id"):
        box = re.search(rf'<textarea[^>]*name="{field}"[^>]*>(.*?)</textarea>', html, re.S)
        assert box is not None, field
        assert box.group(1).strip() == "", (field, box.group(1))
    assert "null" not in re.sub(r"<script.*?</script>", "", html, flags=re.S)

    # saving the page unchanged keeps them NULL
    form = {
        "email": "n@x.io",
        "external_id": "",
        "name": "",
        "locale": "",
        "metadata": "{}",
        "billing_name": "",
        "billing_address": "",
        "tax_id": "",
    }
    response = admin_client.post(f"/admin/customers/customer/{customer.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    customer.refresh_from_db()
    assert customer.billing_address is None and customer.tax_id is None


@pytest.fixture
def admin_client(db):
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    return client

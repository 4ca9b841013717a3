"""Admin sign-in is throttled per username and per client address (django-axes): after
AXES_FAILURE_LIMIT wrong passwords the username (or the address) is refused — the right password
too — until the cool-off has passed. The portal and the API don't sign in with passwords and are
not affected."""

import datetime

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core import mail
from django.test import Client
from django.utils import timezone

from config.celery import app
from customers.models import Customer

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "ops", password=PASSWORD, is_staff=True, is_superuser=True
    )


def sign_in(client: Client, username: str, password: str):
    return client.post(LOGIN, {"username": username, "password": password})


def signed_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_default_limit_is_five_tries_for_fifteen_minutes():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME * 60 == 15
    assert settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]


def test_wrong_passwords_lock_the_username_even_for_the_right_password(staff):
    client = Client(REMOTE_ADDR="203.0.113.7")
    # the first four wrong passwords get the form again (200) ...
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = sign_in(client, "ops", "wrong")
        assert response.status_code == 200
        assert b"Please enter the correct username and password" in response.content
    # ... the fifth locks
    assert sign_in(client, "ops", "wrong").status_code == 429
    response = sign_in(client, "ops", PASSWORD)
    assert response.status_code == 429, "the right password is refused while locked"
    assert b"Account locked: too many login attempts" in response.content
    # from another address too: the username is locked, not only the pair
    assert sign_in(Client(REMOTE_ADDR="198.51.100.9"), "ops", PASSWORD).status_code == 429


def test_an_address_trying_many_usernames_is_locked(staff):
    client = Client(REMOTE_ADDR="203.0.113.8")
    for index in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, f"guess{index}", "wrong")
    # a real account from the same address is refused as well
    assert sign_in(client, "ops", PASSWORD).status_code == 429
    # the account itself is not locked: from elsewhere it signs in
    assert signed_in(sign_in(Client(REMOTE_ADDR="198.51.100.10"), "ops", PASSWORD))


def test_after_the_cool_off_the_right_password_works_and_resets_the_count(staff):
    client = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "ops", "wrong")
    assert sign_in(client, "ops", PASSWORD).status_code == 429
    # the attempts are rows: age them past the cool-off instead of waiting 15 minutes
    cool_off = datetime.timedelta(hours=settings.AXES_COOLOFF_TIME)
    AccessAttempt.objects.update(attempt_time=timezone.now() - cool_off - datetime.timedelta(1))
    assert signed_in(sign_in(client, "ops", PASSWORD))
    assert AccessAttempt.objects.count() == 0


def test_fewer_failures_than_the_limit_then_success_reset(staff):
    client = Client(REMOTE_ADDR="203.0.113.10")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "ops", "wrong")
    assert signed_in(sign_in(client, "ops", PASSWORD))
    # the count starts again: four more wrong tries don't lock
    other = Client(REMOTE_ADDR="203.0.113.10")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(other, "ops", "wrong").status_code == 200
    assert signed_in(sign_in(other, "ops", PASSWORD))


def test_portal_and_api_are_not_affected_by_a_locked_address(
    staff, api, org_token, django_capture_on_commit_callbacks
):
    client = Client(REMOTE_ADDR="127.0.0.1")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "ops", "wrong")
    assert sign_in(client, "ops", PASSWORD).status_code == 429
    # the API (token) from the same address
    assert api.get("/v1/customers/", REMOTE_ADDR="127.0.0.1").status_code == 200
    # the portal's sign-in (an emailed link, no password) from the same address
    organization = org_token[0]
    Customer.objects.create(organization=organization, email="ada@example.com", external_id="a")
    assert client.get(f"/portal/{organization.slug}/sign-in").status_code == 200
    # the sign-in email is a task: run it here, so it lands in mail.outbox
    eager, app.conf.task_always_eager = app.conf.task_always_eager, True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                f"/portal/{organization.slug}/sign-in", {"email": "ada@example.com"}
            )
    finally:
        app.conf.task_always_eager = eager
    assert response.status_code in (200, 302), response.content[:300]
    assert [message.to for message in mail.outbox] == [["ada@example.com"]]

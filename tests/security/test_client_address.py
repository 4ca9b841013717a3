"""Which address the per-address limits and the audit log count (core.clients): the connection's
unless TRUSTED_PROXY_COUNT says how many of our proxies append to X-Forwarded-For — never an entry
the client wrote itself."""

import pytest
from axes.models import AccessAttempt
from django.test import Client, RequestFactory

from core.clients import client_address

pytestmark = pytest.mark.django_db


def request(remote="10.0.0.5", forwarded=None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return RequestFactory().get("/", REMOTE_ADDR=remote, **headers)


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "198.51.100.7", "10.0.0.5"),  # no proxy: the header is anyone's
        (1, None, "10.0.0.5"),  # reached us around the proxy
        (1, "198.51.100.7", "198.51.100.7"),  # nginx appended the client
        (1, "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # the client's own entry is ignored
        (2, "6.6.6.6, 198.51.100.7, 10.1.1.1", "198.51.100.7"),  # load balancer, then nginx
        (2, "198.51.100.7", "10.0.0.5"),  # fewer hops than proxies
        (1, "not-an-address", "10.0.0.5"),
        (1, "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_address(settings, proxies, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    assert client_address(request(forwarded=forwarded)) == expected


def test_admin_lockout_behind_one_proxy_counts_each_client_not_the_proxy(settings, django_user_model):
    """Behind nginx every request comes from the proxy's address: counted by it, five wrong
    passwords from one client would lock every staff member out."""
    settings.TRUSTED_PROXY_COUNT = 1
    django_user_model.objects.create_user("ops", password="right-password", is_staff=True)
    django_user_model.objects.create_user("other", password="other-password", is_staff=True)
    attacker = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.9")
    for _ in range(6):
        attacker.post("/admin/login/", {"username": "nobody", "password": "wrong"})
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.9"}
    colleague = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    response = colleague.post(
        "/admin/login/?next=/admin/", {"username": "other", "password": "other-password"}
    )
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert attacker.post(
        "/admin/login/", {"username": "ops", "password": "right-password"}
    ).status_code == 429

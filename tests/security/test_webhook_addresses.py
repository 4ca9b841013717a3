"""Webhook URLs whose IPv6 address embeds a private IPv4 one (IPv4-compatible, NAT64, 6to4) are
refused like the plain private addresses: when the endpoint is created and again when a delivery
is about to connect. IPv6 and embedded-IPv4 addresses that are public stay accepted."""

import pytest

from customers import services as customer_services
from tests.webhooks.conftest import deliver_pending
from webhooks.addresses import is_public
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

EMBEDDED_PRIVATE = [
    # IPv4-compatible ::a.b.c.d, written both ways
    ("http://[::127.0.0.1]/", "::127.0.0.1"),
    ("http://[::7f00:1]/", "::7f00:1"),
    # NAT64's well-known prefix 64:ff9b::/96
    ("http://[64:ff9b::7f00:1]/", "64:ff9b::7f00:1"),
    # 6to4 2002::/16 carrying 127.0.0.1
    ("http://[2002:7f00:1::]/", "2002:7f00:1::"),
]

PUBLIC = [
    "http://[2606:4700:4700::1111]/hooks",  # a public IPv6 address
    "http://[64:ff9b::808:808]/hooks",  # NAT64 of 8.8.8.8
    "http://[2002:808:808::]/hooks",  # 6to4 of 8.8.8.8
    "http://[::ffff:8.8.8.8]/hooks",  # IPv4-mapped 8.8.8.8
    "http://8.8.8.8/hooks",
]


@pytest.mark.parametrize(("url", "address"), EMBEDDED_PRIVATE)
def test_embedded_private_ipv4_is_refused_at_creation(api, settings, url, address):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    body = {"url": url, "format": "raw", "events": ["order.paid"]}
    response = api.post("/v1/webhooks/endpoints", body, format="json")
    assert response.status_code == 422, response.content
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "url"]
    assert "non-public address" in error["msg"] and "public addresses" in error["msg"]
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.parametrize("url", PUBLIC)
def test_public_addresses_are_still_accepted(api, settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    body = {"url": url, "format": "raw", "events": ["order.paid"]}
    response = api.post("/v1/webhooks/endpoints", body, format="json")
    assert response.status_code == 201, response.content
    assert WebhookEndpoint.objects.get().url == url


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("::ffff:10.0.0.1", False),
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::a9fe:a9fe", False),  # local-use NAT64 of 169.254.169.254
        ("2002:c0a8:1::", False),  # 6to4 of 192.168.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("2606:4700:4700::1111", True),
        ("64:ff9b::808:808", True),
        ("2002:808:808::", True),
    ],
)
def test_is_public(address, public):
    assert is_public(address) is public


@pytest.mark.parametrize(("url", "address"), EMBEDDED_PRIVATE)
def test_delivery_refuses_an_embedded_private_ipv4(organization, settings, url, address):
    """An endpoint stored before the rule (or while private URLs were allowed) is checked again
    when a delivery is about to connect: no connection is made."""
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    WebhookEndpoint.objects.create(organization=organization, url=url, events=["customer.created"])
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    customer_services.create_customer(organization=organization, email="ed@example.com")

    deliver_pending()

    (attempt,) = WebhookDelivery.objects.all()
    assert not attempt.succeeded and attempt.http_code is None
    assert f"The host {address!r} resolves to a private" in attempt.response
    assert "non-public address" in attempt.response

"""`Idempotency-Key` on `POST /v1/customers/{id}/credit-packs`: a retry with the same key and
body replays the first answer and buys nothing more; the same key with another request is a 422;
two requests with one key at the same time buy one pack; a refused request keeps no key; after
24 hours the key is free again."""

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from rest_framework.test import APIClient

from billing import catalog
from billing.api import packs as packs_api
from billing.catalog import PriceSpec
from billing.models import BillingReason, Invoice
from core.models import IdempotencyKey
from customers.services import create_customer


def pack(organization, name="1,000 calls", cents=1250):
    return catalog.create_product(
        organization=organization,
        name=name,
        recurring_interval=None,
        prices=[PriceSpec(amount_type="fixed", price_amount=cents)],
    )


def purchases():
    return Invoice.objects.filter(billing_reason=BillingReason.PURCHASE)


def buy(api, customer, product, key=None):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return api.post(
        f"/v1/customers/{customer.pk}/credit-packs",
        {"product_id": str(product.pk)},
        format="json",
        **headers,
    )


@pytest.mark.django_db
def test_a_retry_with_the_same_key_replays_the_first_answer(api, organization, token_for):
    customer = create_customer(organization=organization, email="a@example.com", external_id="a")
    small, large = pack(organization), pack(organization, "5,000 calls", 5000)

    first = buy(api, customer, small, key="order-7")
    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first
    again = buy(api, customer, small, key="order-7")
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert first.json()["total_amount"] == 1250
    (order,) = purchases()
    assert str(order.pk) == first.json()["id"]

    # the same key for another pack, or for another customer: refused, nothing bought
    other = create_customer(organization=organization, email="b@example.com", external_id="b")
    for response in (buy(api, customer, large, key="order-7"), buy(api, other, small, "order-7")):
        assert response.status_code == 422, response.content
        assert [e["loc"] for e in response.json()["detail"]] == [["header", "Idempotency-Key"]]
    assert purchases().count() == 1

    # keys belong to an organization: another one's "order-7" is its own purchase
    theirs, secret = token_for("Other")
    their_api = APIClient()
    their_api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    stranger = create_customer(organization=theirs, email="s@example.com", external_id="s")
    assert buy(their_api, stranger, pack(theirs), key="order-7").status_code == 201

    # without a key each call buys one more; a new key buys once
    assert buy(api, customer, small).status_code == 201
    assert buy(api, customer, small).status_code == 201
    assert buy(api, customer, large, key="order-8").status_code == 201
    assert buy(api, customer, large, key="order-8").status_code == 201
    assert sorted(purchases().values_list("customer__external_id", "total")) == [
        ("a", Decimal("12.50")),
        ("a", Decimal("12.50")),
        ("a", Decimal("12.50")),
        ("a", Decimal("50.00")),
        ("s", Decimal("12.50")),
    ]
    assert IdempotencyKey.objects.count() == 3


@pytest.mark.django_db
def test_bad_keys_and_refused_requests_keep_nothing(api, organization):
    customer = create_customer(organization=organization, email="a@example.com", external_id="a")
    product = pack(organization)
    for bad in ("", "x" * 256, "caf\u00e9"):
        response = buy(api, customer, product, key=bad)
        assert response.status_code == 422, (bad, response.content)
        assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert buy(api, customer, product, key="k" * 255).status_code == 201

    # refused (the pack is archived): the key is not kept, so the corrected retry buys
    catalog.update_product(product, is_archived=True)
    refused = buy(api, customer, product, key="retry-me")
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "product_id"]
    assert not IdempotencyKey.objects.filter(key="retry-me").exists()
    catalog.update_product(product, is_archived=False)
    assert buy(api, customer, product, key="retry-me").status_code == 201
    assert purchases().count() == 2


@pytest.mark.django_db
def test_a_key_is_free_again_after_24_hours(api, organization):
    customer = create_customer(organization=organization, email="a@example.com", external_id="a")
    product = pack(organization)
    first = buy(api, customer, product, key="monthly")
    stored = IdempotencyKey.objects.get(key="monthly")
    IdempotencyKey.objects.filter(pk=stored.pk).update(
        created_at=stored.created_at - timedelta(hours=23, minutes=59)
    )
    assert buy(api, customer, product, key="monthly").json()["id"] == first.json()["id"]
    IdempotencyKey.objects.filter(pk=stored.pk).update(
        created_at=stored.created_at - timedelta(hours=24)
    )
    later = buy(api, customer, product, key="monthly")
    assert later.status_code == 201 and "Idempotent-Replayed" not in later
    assert later.json()["id"] != first.json()["id"]
    assert purchases().count() == 2
    (row,) = IdempotencyKey.objects.filter(key="monthly")
    assert row.response_body["id"] == later.json()["id"]


WAITING_ON_THE_KEY = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND wait_event_type = 'Lock' AND query LIKE '%%core_idempotencykey%%'
"""


@pytest.mark.django_db(transaction=True)
def test_two_requests_with_one_key_at_once_buy_one_pack(org_token, monkeypatch):
    organization, secret = org_token
    customer = create_customer(organization=organization, email="a@example.com", external_id="a")
    product = pack(organization)
    real_buy = packs_api.packs.buy
    waited = []

    def buy_once_the_other_waits(**kwargs):
        # the first request holds its claim until the second is blocked on the same key, so
        # the two really overlap (without the claim the second would buy and this times out)
        deadline = time.monotonic() + 10
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(WAITING_ON_THE_KEY)
                if cursor.fetchone()[0]:
                    waited.append(True)
                    break
                time.sleep(0.02)
        return real_buy(**kwargs)

    monkeypatch.setattr(packs_api.packs, "buy", buy_once_the_other_waits)
    responses = []

    def request():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        try:
            responses.append(buy(client, customer, product, key="once"))
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert waited == [True]
    assert [r.status_code for r in responses] == [201, 201]
    assert sorted(r.get("Idempotent-Replayed", "") for r in responses) == ["", "true"]
    assert responses[0].json() == responses[1].json()
    (order,) = purchases()
    assert str(order.pk) == responses[0].json()["id"]
    assert IdempotencyKey.objects.count() == 1


@pytest.mark.django_db
def test_the_schema_documents_the_header(client):
    schema = client.get("/v1/openapi.json").json()
    operation = schema["paths"]["/v1/customers/{id}/credit-packs"]["post"]
    (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
    assert (header["name"], header.get("required", False)) == ("Idempotency-Key", False)
    assert "24 hours" in header["description"]
    assert list(operation["responses"]) == ["201"]

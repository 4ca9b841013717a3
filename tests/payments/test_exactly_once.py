"""Exactly once, with real processes against localstripe: concurrent collectors, a collector
killed between the provider call and its commit, and duplicated (and forged) provider webhooks.
What counts is localstripe's own record: one successful charge per invoice, equal to its total,
and no payment left pending."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from io import StringIO

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from billing import catalog, subscriptions
from billing.catalog import PriceSpec
from billing.models import Invoice, InvoiceStatus
from billing.money import to_minor
from customers.services import create_customer
from customers.tokens import create_token
from payments import methods
from payments.models import Payment, PaymentStatus, ProviderEvent
from tests.localstripe import WEBHOOK_SECRET, sign_webhook
from tests.payments.conftest import stripe_env
from tests.payments.holding_proxy import HoldingProxy
from tests.support import ROOT, AppServer, subprocess_database_url

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = "4242424242424242"


def subprocess_env(localstripe, api_base=None) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "SECRET_KEY": "test-collector",
        "DEBUG": "0",
        "CELERY_BROKER_URL": "memory://",
        "LOG_LEVEL": "WARNING",
        **stripe_env(localstripe, api_base),
    }
    env.pop("TEST_DATABASE_NAME", None)
    return env


def collector(env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "collect_payments"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def organization_with_plan(stripe_settings):
    api_token, _ = create_token(organization_name="Collect", label="tests")
    organization = api_token.organization
    plans = [
        catalog.create_product(
            organization=organization,
            name=f"Plan {amount}",
            prices=[PriceSpec(amount_type="fixed", price_amount=amount)],
        )
        for amount in (2900, 1234, 50)
    ]
    return organization, plans


def open_invoices(organization, plans, count, localstripe):
    """`count` customers with a 4242 card, each with a subscription whose first invoice is due
    for collection (the collection task went to the in-memory broker: nobody ran it)."""
    for n in range(count):
        customer = create_customer(
            organization=organization, email=f"c{n}@example.com", external_id=f"c{n}"
        )
        methods.set_default_method(customer, localstripe.card(GOOD))
        subscriptions.create_subscription(customer=customer, product=plans[n % len(plans)])
    invoices = list(Invoice.objects.filter(organization=organization).select_related("customer"))
    assert len(invoices) == count
    assert all(invoice.status == InvoiceStatus.OPEN for invoice in invoices)
    return invoices


def assert_each_paid_once(invoices, localstripe):
    """localstripe's charges: exactly one succeeded per invoice, for its total; our side agrees
    and has nothing pending."""
    by_invoice = {}
    for intent in localstripe.payment_intents():
        invoice_id = intent.metadata.to_dict().get("meterline_invoice_id")
        if intent.status == "succeeded":
            by_invoice.setdefault(invoice_id, []).append(intent.amount)
    charges = [c for c in localstripe.charges() if c.status == "succeeded"]
    for invoice in invoices:
        invoice.refresh_from_db()
        assert by_invoice.get(str(invoice.pk)) == [to_minor(invoice.total)], invoice.pk
        assert invoice.status == InvoiceStatus.PAID
        (succeeded,) = Payment.objects.filter(invoice=invoice, status=PaymentStatus.SUCCEEDED)
        assert succeeded.amount == to_minor(invoice.total)
    assert len(charges) == sum(len(v) for v in by_invoice.values())
    assert not Payment.objects.filter(status=PaymentStatus.PENDING).exists()


def test_three_collectors_at_once_charge_each_invoice_once(localstripe, organization_with_plan):
    organization, plans = organization_with_plan
    invoices = open_invoices(organization, plans, 24, localstripe)
    env = subprocess_env(localstripe)
    started = time.monotonic()
    processes = [collector(env) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in processes]
    elapsed = time.monotonic() - started
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    attempted = sum(int(out.split("attempted ")[1].split(" ")[0]) for out, _ in outputs)
    assert attempted == 24, outputs  # every invoice attempted by exactly one collector
    assert Payment.objects.count() == 24
    assert_each_paid_once(invoices, localstripe)
    print(
        f"3 collectors, 24 invoices: {elapsed:.1f} s; attempts per collector:",
        [out.strip() for out, _ in outputs],
    )


@pytest.mark.parametrize(
    ("held", "intents_per_invoice"),
    [
        # killed after localstripe charged, before the collector heard it: reconciled as paid
        (r"^POST /v1/payment_intents/pi_\w+/confirm", 1),
        # killed after the intent was created, before its id was committed: never confirmed,
        # so the attempt is counted as not made and the next run charges once
        (r"^POST /v1/payment_intents$", 2),
    ],
    ids=["after-confirm", "after-create"],
)
def test_collector_killed_between_provider_call_and_commit(
    localstripe, organization_with_plan, held, intents_per_invoice
):
    organization, plans = organization_with_plan
    (invoice,) = open_invoices(organization, plans[:1], 1, localstripe)
    proxy = HoldingProxy(localstripe.port).start()
    try:
        proxy.hold(held)
        process = collector(subprocess_env(localstripe, api_base=proxy.url))
        assert proxy.held.wait(60), process.communicate(timeout=5)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        proxy.stop()
    (pending,) = Payment.objects.filter(invoice=invoice)
    assert pending.status == PaymentStatus.PENDING
    assert bool(pending.provider_payment_id) == (intents_per_invoice == 1)

    # not yet stale: left for the collector that may still be answering
    out = StringIO()
    call_command("collect_payments", stdout=out)
    assert "reconciled 0;" in out.getvalue()
    later = timezone.now() + timedelta(minutes=6)
    out = StringIO()
    call_command("collect_payments", "--as-of", later.isoformat(), stdout=out)
    assert "reconciled 1;" in out.getvalue()
    if intents_per_invoice == 2:
        call_command(
            "collect_payments", "--as-of", (later + timedelta(minutes=6)).isoformat(), stdout=out
        )
        first, second = Payment.objects.filter(invoice=invoice).order_by("attempt")
        assert (first.status, first.not_attempted, first.decline_reason) == (
            PaymentStatus.FAILED,
            True,
            "not_confirmed",
        )
        assert second.status == PaymentStatus.SUCCEEDED
    else:
        (settled,) = Payment.objects.filter(invoice=invoice)
        assert settled.status == PaymentStatus.SUCCEEDED
    intents = [
        i
        for i in localstripe.payment_intents()
        if i.metadata.to_dict().get("meterline_invoice_id") == str(invoice.pk)
    ]
    assert len(intents) == intents_per_invoice
    assert_each_paid_once([invoice], localstripe)


def signed(payload: bytes, secret: str = WEBHOOK_SECRET) -> dict:
    return {"Stripe-Signature": sign_webhook(payload, secret), "Content-Type": "application/json"}


def test_duplicated_webhook_applies_once_and_a_forged_one_is_refused(
    localstripe, organization_with_plan
):
    organization, plans = organization_with_plan
    (invoice,) = open_invoices(organization, plans[:1], 1, localstripe)
    # a collector killed after the charge: the payment waits, pending, with its intent id
    proxy = HoldingProxy(localstripe.port).start()
    try:
        proxy.hold(r"^POST /v1/payment_intents/pi_\w+/confirm")
        process = collector(subprocess_env(localstripe, api_base=proxy.url))
        assert proxy.held.wait(60)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        proxy.stop()
    (payment,) = Payment.objects.filter(invoice=invoice)
    intent = localstripe.client.v1.payment_intents.retrieve(payment.provider_payment_id)
    assert (payment.status, intent.status) == (PaymentStatus.PENDING, "succeeded")

    event = {
        "id": "evt_meterline_1",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "type": "payment_intent.succeeded",
        "data": {"object": intent.to_dict()},
    }
    payload = json.dumps(event).encode()
    forged_event = {**event, "id": "evt_forged", "data": {"object": {**intent.to_dict()}}}
    server = AppServer(kind="gunicorn", workers=2, env=subprocess_env(localstripe)).start()
    try:
        url = f"{server.url}/v1/payments/providers/stripe/webhook"
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(
                    lambda _: httpx.post(url, content=payload, headers=signed(payload)), [1, 2]
                )
            )
        forged_payload = json.dumps(forged_event).encode()
        forged = httpx.post(url, content=forged_payload, headers=signed(forged_payload, "whsec_x"))
        unsigned = httpx.post(
            url, content=forged_payload, headers={"Content-Type": "application/json"}
        )
        again = httpx.post(url, content=payload, headers=signed(payload))
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert sorted(a.json()["applied"] for a in answers) == [False, True]
    assert (again.status_code, again.json()) == (200, {"received": True, "applied": False})
    assert forged.status_code == 400 and unsigned.status_code == 400, forged.text
    assert ProviderEvent.objects.filter(event_id="evt_meterline_1").count() == 1
    assert not ProviderEvent.objects.filter(event_id="evt_forged").exists()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    out = StringIO()
    call_command(
        "collect_payments", "--as-of", (timezone.now() + timedelta(hours=1)).isoformat(), stdout=out
    )
    assert "attempted 0" in out.getvalue() and "reconciled 0;" in out.getvalue()
    assert_each_paid_once([invoice], localstripe)

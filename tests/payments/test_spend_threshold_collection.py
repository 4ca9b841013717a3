"""A spend-threshold invoice is collected at once with automatic collection: charged through the
provider (localstripe) as a cycle payment, and paid."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from moneyed import Money

from billing import catalog, subscriptions, thresholds
from billing.catalog import PriceSpec
from billing.models import InvoiceStatus
from customers.services import create_customer
from metering.ingest import ingest_events
from payments import methods, tasks
from payments.models import InvoiceCollection, Payment, PaymentStatus, PaymentTrigger
from tests.factories import event_count_meter

pytestmark = pytest.mark.django_db


def test_a_threshold_invoice_is_charged_at_once(organization, stripe_settings, localstripe):
    meter = event_count_meter(organization)
    product = catalog.create_product(
        organization=organization,
        name="Usage",
        prices=[PriceSpec(amount_type="metered_unit", meter_id=meter.pk, unit_amount=Decimal(2))],
        spend_threshold=Money(20, "USD"),
    )
    customer = create_customer(organization=organization, email="t@example.com", external_id="t")
    methods.set_default_method(customer, localstripe.card("4242424242424242"))
    subscriptions.create_subscription(
        customer=customer, product=product, started_at=timezone.now() - timedelta(hours=1)
    )
    now = timezone.now()
    ingest_events(
        organization=organization,
        events=[
            {
                "name": "api.call",
                "external_customer_id": "t",
                "timestamp": (now - timedelta(seconds=1)).isoformat(),
            }
            for _ in range(1100)
        ],
    )
    (invoice,) = thresholds.check()
    # due at its finalization: the collection task enqueued on commit runs it now
    collection = InvoiceCollection.objects.get(pk=invoice.pk)
    assert collection.next_attempt_at == invoice.finalized_at
    tasks.collect_invoice.run(str(invoice.pk))
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert (payment.status, payment.amount, payment.trigger) == (
        PaymentStatus.SUCCEEDED,
        2200,
        PaymentTrigger.SUBSCRIPTION_CYCLE,
    )
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID

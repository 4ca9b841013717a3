"""`seed_demo` shows billing on first start: a catalog, subscriptions (some backdated) and closed
invoices; re-running adds nothing."""

import pytest
from django.core.management import call_command
from django.test import override_settings

from billing.models import Invoice, Product, Subscription
from customers.models import Organization

pytestmark = pytest.mark.django_db


@override_settings(DEBUG=True)  # the demo seed is for development only
def test_seed_demo_adds_a_catalog_subscriptions_and_closed_invoices(tmp_path):
    credentials = tmp_path / "demo.json"
    call_command("seed_demo", events=1500, credentials_file=str(credentials), no_progress=True)
    org = Organization.objects.get(name="Meterline Demo")
    assert sorted(Product.objects.filter(organization=org).values_list("name", flat=True)) == [
        "Growth",
        "Scale",
        "Starter",
    ]
    subs = Subscription.objects.filter(organization=org)
    assert subs.count() == 18
    closed = Invoice.objects.filter(organization=org, billing_reason="subscription_cycle")
    assert closed.count() >= 12
    assert closed.filter(lines__late_units__gte=0, lines__meter__isnull=False).exists()
    counts = (subs.count(), Invoice.objects.filter(organization=org).count())
    call_command("seed_demo", events=1500, credentials_file=str(credentials), no_progress=True)
    assert (subs.count(), Invoice.objects.filter(organization=org).count()) == counts

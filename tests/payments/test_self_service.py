"""The customer-facing payment services the portal calls, against localstripe: a setup session
is read back from the provider and must be the customer's; "Pay now" charges once through
collection's attempt with the customer's trigger and refuses what it can't pay."""

import pytest

from billing import subscriptions
from billing.catalog import PriceSpec, create_product
from billing.models import Invoice, InvoiceStatus
from customers.services import create_customer
from payments import methods, self_service
from payments.errors import PaymentMethodError
from payments.models import Payment, PaymentStatus, PaymentTrigger

GOOD, DECLINED = "4242424242424242", "4000000000000341"


@pytest.fixture
def shop(organization, stripe_settings, settings):
    settings.PAYMENTS_COLLECTION = "send_invoice"  # nothing charged before "Pay now"
    product = create_product(
        organization=organization,
        name="Pro",
        prices=[PriceSpec(amount_type="fixed", price_amount=2900)],
    )
    return organization, product


def customer_of(organization, name):
    return create_customer(organization=organization, email=f"{name}@example.com", name=name)


def confirmed_setup(localstripe, customer, number: str) -> str:
    session = self_service.start_card_setup(customer)
    localstripe.client.v1.setup_intents.confirm(
        session.id, params={"payment_method": localstripe.card(number)}
    )
    return session.id


def test_a_confirmed_setup_session_of_the_customer_becomes_the_default(shop, localstripe):
    organization, _ = shop
    ada, bea = customer_of(organization, "ada"), customer_of(organization, "bea")
    methods.ensure_provider_customer(ada)
    beas = confirmed_setup(localstripe, bea, GOOD)
    with pytest.raises(self_service.SetupSessionNotFound):
        self_service.save_confirmed_card(ada, beas)
    with pytest.raises(self_service.SetupSessionNotFound):
        self_service.save_confirmed_card(ada, "seti_unknown")
    unconfirmed = self_service.start_card_setup(ada).id
    with pytest.raises(PaymentMethodError, match="not confirmed"):
        self_service.save_confirmed_card(ada, unconfirmed)
    assert self_service.default_method(ada) is None

    profile, retried = self_service.save_confirmed_card(
        ada, confirmed_setup(localstripe, ada, GOOD)
    )
    assert (profile.brand, profile.last4, profile.exp_month, profile.exp_year) == (
        "visa",
        "4242",
        12,
        2034,
    )
    assert retried == []
    assert self_service.default_method(ada).pk == profile.pk


def test_pay_now_charges_once_with_the_customers_trigger(shop, localstripe):
    organization, product = shop
    ada, bea = customer_of(organization, "ada"), customer_of(organization, "bea")
    invoice = Invoice.objects.get(
        subscription=subscriptions.create_subscription(customer=ada, product=product)
    )
    with pytest.raises(self_service.NotPayable) as refused:
        self_service.pay_now(invoice)
    assert refused.value.reason == "no_method"

    self_service.save_confirmed_card(ada, confirmed_setup(localstripe, ada, GOOD))
    paid = self_service.pay_now(invoice)
    assert (paid.status, paid.amount, paid.trigger, paid.attempt) == (
        PaymentStatus.SUCCEEDED,
        2900,
        PaymentTrigger.RETRY_CUSTOMER,
        1,
    )
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    with pytest.raises(self_service.NotPayable) as refused:
        self_service.pay_now(invoice)
    assert refused.value.reason == "not_open"
    charges = localstripe.succeeded_charges(
        methods.ensure_provider_customer(ada).provider_customer_id
    )
    assert [c.amount for c in charges] == [2900]
    assert Payment.objects.filter(invoice=invoice).count() == 1

    # a declined card: the invoice stays open; a new card retries it at once
    owed = Invoice.objects.get(
        subscription=subscriptions.create_subscription(customer=bea, product=product)
    )
    self_service.save_confirmed_card(bea, confirmed_setup(localstripe, bea, DECLINED))
    declined = self_service.pay_now(owed)
    assert (declined.status, declined.trigger) == (PaymentStatus.FAILED, "retry_customer")
    assert declined.decline_message
    owed.refresh_from_db()
    assert owed.status == InvoiceStatus.OPEN
    _, retried = self_service.save_confirmed_card(bea, confirmed_setup(localstripe, bea, GOOD))
    assert [(p.status, p.trigger, p.attempt) for p in retried] == [
        (PaymentStatus.SUCCEEDED, PaymentTrigger.RETRY_PAYMENT_METHOD_UPDATE, 2)
    ]
    owed.refresh_from_db()
    assert owed.status == InvoiceStatus.PAID

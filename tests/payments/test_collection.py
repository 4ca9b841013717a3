"""Collection services in one process: what is charged is the amount due after the customer
balance, a customer without a method fails without a provider call, and a duplicated task
changes nothing."""

import pytest

from billing import balance, catalog, invoices, subscriptions
from billing.catalog import PriceSpec
from billing.errors import InvoiceStateError
from billing.models import InvoiceStatus, SubscriptionStatus
from customers.services import create_customer
from payments import collection, methods, tasks
from payments.models import CollectionState, InvoiceCollection, Payment, PaymentStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def plan(organization, stripe_settings):
    return catalog.create_product(
        organization=organization,
        name="Plan",
        prices=[PriceSpec(amount_type="fixed", price_amount=2900)],
    )


def subscribe(organization, plan, localstripe, email, *, card="4242424242424242", credit=0):
    customer = create_customer(organization=organization, email=email)
    if card:
        methods.set_default_method(customer, localstripe.card(card))
    if credit:
        balance.credit(customer.pk, "USD", credit)
    subscription = subscriptions.create_subscription(customer=customer, product=plan)
    return customer, subscription, subscription.invoices.get()


def stripe_customer(customer):
    return customer.billing_profile.provider_customer_id


def test_the_amount_due_after_the_balance_is_charged(organization, plan, localstripe):
    customer, _, invoice = subscribe(organization, plan, localstripe, "b@example.com", credit=1000)
    assert collection.amount_due(invoice) == 1900
    tasks.collect_invoice.run(str(invoice.pk))
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert (payment.status, payment.amount) == (PaymentStatus.SUCCEEDED, 1900)
    charges = localstripe.succeeded_charges(stripe_customer(customer))
    assert [c.amount for c in charges] == [1900]
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID


def test_a_balance_covering_the_invoice_pays_it_without_the_provider(
    organization, plan, localstripe
):
    customer, _, invoice = subscribe(organization, plan, localstripe, "c@example.com", credit=5000)
    assert invoice.status == InvoiceStatus.PAID
    tasks.collect_invoice.run(str(invoice.pk))
    assert not Payment.objects.exists()
    assert InvoiceCollection.objects.get(pk=invoice.pk).state == CollectionState.PAID
    assert localstripe.charges(stripe_customer(customer)) == []


def test_no_payment_method_is_a_failed_attempt_without_a_provider_call(
    organization, plan, localstripe
):
    _, subscription, invoice = subscribe(
        organization, plan, localstripe, "n@example.com", card=None
    )
    intents_before = len(localstripe.payment_intents())
    tasks.collect_invoice.run(str(invoice.pk))
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert (payment.status, payment.decline_reason, payment.provider_payment_id) == (
        PaymentStatus.FAILED,
        "payment_method_missing",
        None,
    )
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.PAST_DUE
    assert len(localstripe.payment_intents()) == intents_before


def test_a_duplicated_collection_task_charges_once(organization, plan, localstripe):
    customer, _, invoice = subscribe(organization, plan, localstripe, "d@example.com")
    for _ in range(3):
        tasks.collect_invoice.run(str(invoice.pk))
    assert collection.collect_due().attempted == 0
    (payment,) = Payment.objects.filter(invoice=invoice)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert [c.amount for c in localstripe.succeeded_charges(stripe_customer(customer))] == [2900]


def test_declines_on_request_while_dunning_leave_the_schedule_alone(
    organization, plan, localstripe, settings
):
    """Pay now, staff's retry and a new card that is declined too don't count as dunning steps:
    clicking Pay now ten times can't bring the final action closer."""
    settings.DUNNING_FINAL_ACTION = "cancel"
    customer, subscription, invoice = subscribe(
        organization, plan, localstripe, "d@example.com", card="4000000000000341"
    )
    first = collection.attempt(invoice.pk, as_of=invoice.finalized_at)
    assert first.status == PaymentStatus.FAILED
    row = InvoiceCollection.objects.get(pk=invoice.pk)
    scheduled = row.next_attempt_at
    assert row.failures == 1
    for trigger in ("retry_customer", "retry_admin", "retry_customer"):
        assert collection.retry_now(invoice, trigger=trigger).status == PaymentStatus.FAILED
    methods.set_default_method(customer, localstripe.card("4000000000000341"))
    (declined,) = collection.retry_after_new_method(customer)
    assert declined.status == PaymentStatus.FAILED
    row.refresh_from_db()
    subscription.refresh_from_db()
    assert (row.state, row.failures, row.next_attempt_at, row.attempts) == (
        CollectionState.COLLECTING,
        1,
        scheduled,
        5,
    )
    assert subscription.status == SubscriptionStatus.PAST_DUE
    # the scheduled retry is still the second step
    assert collection.collect_due(scheduled).failed == 1
    row.refresh_from_db()
    assert row.failures == 2
    # exhausted, then asked for again and declined: still exhausted, nothing else happens
    for _ in range(3):
        row.refresh_from_db()
        collection.collect_due(row.next_attempt_at)
    row.refresh_from_db()
    assert (row.state, row.failures, row.next_attempt_at) == (CollectionState.EXHAUSTED, 5, None)
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.UNCOLLECTIBLE
    assert collection.retry_now(invoice, trigger="retry_customer").status == PaymentStatus.FAILED
    row.refresh_from_db()
    assert (row.state, row.failures) == (CollectionState.EXHAUSTED, 5)


def test_collect_due_in_batches_settles_each_invoice_as_one_attempt_would(
    organization, plan, localstripe, monkeypatch
):
    """Batches of 2 across five due invoices: a good card, a declined one, none, an invoice
    whose attempt is under way (left alone) and a second good card."""
    monkeypatch.setattr(collection, "BATCH", 2)
    paid_customer, _, paid = subscribe(organization, plan, localstripe, "p@example.com")
    _, declined_subscription, declined = subscribe(
        organization, plan, localstripe, "x@example.com", card="4000000000000341"
    )
    _, _, no_card = subscribe(organization, plan, localstripe, "n@example.com", card=None)
    busy_customer, _, busy = subscribe(organization, plan, localstripe, "u@example.com")
    Payment.objects.create(
        organization=organization,
        invoice=busy,
        customer=busy_customer,
        attempt=1,
        trigger="purchase",
        status=PaymentStatus.PENDING,
        amount=2900,
        currency="USD",
        provider="stripe",
        idempotency_key=f"{busy.pk}:1",
    )
    second_customer, _, second = subscribe(
        organization, plan, localstripe, "s@example.com", credit=900
    )
    report = collection.collect_due()
    assert (report.attempted, report.succeeded, report.failed) == (4, 2, 2)
    for invoice, customer, amount in ((paid, paid_customer, 2900), (second, second_customer, 2000)):
        (payment,) = Payment.objects.filter(invoice=invoice)
        assert (payment.status, payment.amount, payment.attempt, payment.idempotency_key) == (
            PaymentStatus.SUCCEEDED,
            amount,
            1,
            f"{invoice.pk}:1",
        )
        assert payment.settled_at is not None
        charges = localstripe.succeeded_charges(stripe_customer(customer))
        assert [(c.amount, c.payment_intent) for c in charges] == [
            (amount, payment.provider_payment_id)
        ]
        invoice.refresh_from_db()
        assert invoice.status == InvoiceStatus.PAID
        row = InvoiceCollection.objects.get(pk=invoice.pk)
        assert (row.state, row.next_attempt_at, row.attempts) == (CollectionState.PAID, None, 1)
    (failed,) = Payment.objects.filter(invoice=declined)
    assert (failed.status, failed.decline_reason) == (PaymentStatus.FAILED, "card_declined")
    declined_subscription.refresh_from_db()
    assert declined_subscription.status == SubscriptionStatus.PAST_DUE
    assert InvoiceCollection.objects.get(pk=declined.pk).failures == 1
    (missing,) = Payment.objects.filter(invoice=no_card)
    assert (missing.status, missing.decline_reason) == (
        PaymentStatus.FAILED,
        "payment_method_missing",
    )
    (pending,) = Payment.objects.filter(invoice=busy)
    assert pending.status == PaymentStatus.PENDING
    assert localstripe.charges(stripe_customer(busy_customer)) == []
    assert InvoiceCollection.objects.get(pk=busy.pk).attempts == 0


def test_an_invoice_is_not_voided_while_its_charge_is_under_way(organization, plan, localstripe):
    """A void cutting in between the charge's confirmation and its settling would leave money
    taken for a void invoice: refused (422) while a payment is pending, allowed once settled."""
    customer, _, invoice = subscribe(
        organization, plan, localstripe, "v@example.com", card="4000000000000341"
    )
    started = collection._start(
        invoice.pk, as_of=invoice.finalized_at, skip_locked=False, trigger=None
    )
    assert started is not None
    with pytest.raises(InvoiceStateError) as refused:
        invoices.void(invoice)
    assert "a charge of it is under way" in refused.value.message
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN
    payment, _ = started
    collection.reconcile(payment)
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.FAILED
    assert invoices.void(invoice).status == InvoiceStatus.VOID

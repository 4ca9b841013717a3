"""Subscriptions and cycle close through the services: anchor days, late usage, credits, cancel,
revoke, invoice numbers."""

from decimal import Decimal

import pytest
from django.core.management import call_command

from billing import cycles, invoices, subscriptions
from billing.models import Invoice, InvoiceStatus, SubscriptionStatus
from billing.money import to_minor
from metering import customer_meters, meters
from tests.billing.conftest import at, fixed_price, unit_price

pytestmark = pytest.mark.django_db


def cents(invoice, field="total"):
    return to_minor(getattr(invoice, field))


def test_anchor_day_is_kept_and_every_backdated_period_is_billed(
    make_product, customer, api_calls, send
):
    product = make_product(fixed_price(1000), unit_price(api_calls, 2), name="Pro")
    sub = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-31T12:00:00")
    )
    first = Invoice.objects.get(subscription=sub)
    assert (first.billing_reason, cents(first), first.number) == (
        "subscription_create",
        1000,
        "ACME-0001",
    )
    send("api.call", "ada", "2024-02-10T00:00:00", count=5)
    send("api.call", "ada", "2024-03-30T00:00:00", count=7)
    cycles.close_due(as_of=at("2024-05-01T00:00:00"))
    sub.refresh_from_db()
    closed = list(sub.invoices.filter(billing_reason="subscription_cycle").order_by("period_start"))
    assert [
        (i.period_start.date().isoformat(), i.period_end.date().isoformat()) for i in closed
    ] == [
        ("2024-01-31", "2024-02-29"),
        ("2024-02-29", "2024-03-31"),
        ("2024-03-31", "2024-04-30"),
    ]
    # usage (2 cents per call) plus the next period's fixed $10
    assert [cents(i) for i in closed] == [1010, 1014, 1000]
    assert [i.number for i in closed] == ["ACME-0002", "ACME-0003", "ACME-0004"]
    assert (sub.current_period_start, sub.current_period_end) == (
        at("2024-04-30T12:00:00"),
        at("2024-05-31T12:00:00"),
    )


def test_late_usage_goes_to_the_next_open_period_and_finalized_invoices_never_change(
    make_product, customer, api_calls, send
):
    product = make_product(unit_price(api_calls, 100))
    sub = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    send("api.call", "ada", "2024-01-15T00:00:00", count=3)
    # arrives within the grace: still period 1
    send("api.call", "ada", "2024-01-31T23:59:59", count=1)
    (p1,) = cycles.close_due(as_of=at("2024-02-01T01:00:00")).invoices
    p1_line = p1.lines.get()
    assert (p1_line.quantity, p1_line.late_units, cents(p1)) == (4, 0, 400)
    # period 1 events arriving after its close: late usage of period 2
    send("api.call", "ada", "2024-01-20T00:00:00", count=2)
    send("api.call", "ada", "2024-02-10T00:00:00", count=5)
    upcoming = subscriptions.upcoming_invoice(sub)
    assert (upcoming.lines[0].consumed_units, upcoming.lines[0].late_units, upcoming.total) == (
        7,
        2,
        700,
    )
    (p2,) = cycles.close_due(as_of=at("2024-03-01T01:00:00")).invoices
    line = p2.lines.get()
    assert (line.quantity, line.late_units, cents(p2)) == (7, 2, 700)
    p1.refresh_from_db()
    assert (cents(p1), p1.lines.get().quantity) == (400, 4)


def test_count_and_sum_meters_bill_only_usage_after_the_price_started(
    make_product, customer, tokens, send
):
    send("llm", "ada", "2024-01-01T00:00:00", tokens=1000)  # before the subscription
    product = make_product(unit_price(tokens, "0.5"))
    subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-02T00:00:00")
    )
    send("llm", "ada", "2024-01-05T00:00:00", tokens=7)
    (invoice,) = cycles.close_due(as_of=at("2024-02-02T01:00:00")).invoices
    assert (invoice.lines.get().quantity, cents(invoice)) == (7, 4)  # 3.5 cents → 4


@pytest.mark.parametrize(("rollover", "second_period"), [(False, 0), (True, 50)])
def test_credits_are_used_first_and_roll_over(
    org, make_product, customer, api_calls, send, rollover, second_period
):
    from billing import catalog

    benefit = catalog.create_benefit(
        organization=org,
        description="100 calls",
        meter_id=api_calls.pk,
        units=100,
        rollover=rollover,
    )
    product = make_product(unit_price(api_calls, 1))
    product.benefits.add(benefit)
    sub = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    send("api.call", "ada", "2024-01-10T00:00:00", count=250)
    (p1,) = cycles.close_due(as_of=at("2024-02-01T01:00:00")).invoices
    line = p1.lines.get()
    assert (line.consumed_units, line.credited_units, line.quantity, cents(p1)) == (
        250,
        100,
        150,
        150,
    )
    send("api.call", "ada", "2024-02-10T00:00:00", count=50)
    (p2,) = cycles.close_due(as_of=at("2024-03-01T01:00:00")).invoices
    assert p2.lines.get().credited_units == 100  # nothing unused in period 1: nothing rolls over
    # period 2 used 50 of 100: with rollover period 3 has 150 credits
    sub.refresh_from_db()
    customer_meter = customer_meters.numbers_for(api_calls, customer)
    assert customer_meter.credited_units == 100 + second_period
    assert customer_meter.consumed_units == 0


def test_cancel_at_period_end_undo_and_final_invoice(make_product, customer, api_calls, send):
    product = make_product(fixed_price(500), unit_price(api_calls, 10))
    sub = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    subscriptions.set_cancel_at_period_end(sub, True)
    subscriptions.set_cancel_at_period_end(sub, False)
    sub.refresh_from_db()
    assert (sub.cancel_at_period_end, sub.ends_at) == (False, None)
    subscriptions.set_cancel_at_period_end(sub, True)
    send("api.call", "ada", "2024-01-03T00:00:00", count=3)
    (final,) = cycles.close_due(as_of=at("2024-03-01T00:00:00")).invoices
    sub.refresh_from_db()
    assert cents(final) == 30  # usage, no renewal
    assert (sub.status, sub.ended_at) == (SubscriptionStatus.CANCELED, at("2024-02-01T00:00:00"))


def test_revoke_bills_usage_up_to_now(make_product, customer, api_calls, send):
    from django.utils import timezone

    product = make_product(fixed_price(500), unit_price(api_calls, 10))
    sub = subscriptions.create_subscription(customer=customer, product=product)
    send("api.call", "ada", timezone.now().replace(tzinfo=None).isoformat(), count=2)
    sub = subscriptions.revoke(sub)
    final = sub.invoices.get(billing_reason="subscription_cycle")
    assert (cents(final), sub.status) == (20, "canceled")
    with pytest.raises(Exception, match="already ended"):
        subscriptions.revoke(sub)


def test_close_cycles_command_is_idempotent_and_numbers_are_gapless(
    make_product, customer, api_calls
):
    product = make_product(fixed_price(100))
    subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    call_command("close_cycles", "--as-of", "2024-04-01T02:00:00Z")
    call_command("close_cycles", "--as-of", "2024-04-01T02:00:00Z")
    numbers = list(Invoice.objects.order_by("sequence").values_list("sequence", flat=True))
    assert numbers == [1, 2, 3, 4]


def test_invoice_status_transitions(make_product, customer):
    product = make_product(fixed_price(100))
    sub = subscriptions.create_subscription(customer=customer, product=product)
    invoice = sub.invoices.get()
    assert invoice.status == InvoiceStatus.OPEN
    invoice = invoices.mark_paid(invoice)
    assert invoice.paid_at is not None
    with pytest.raises(Exception, match="cannot become"):
        invoices.void(invoice)


def test_trial_bills_nothing_until_it_ends(org, make_product, customer, api_calls, send):
    product = make_product(
        fixed_price(900), unit_price(api_calls, 1), trial_interval="day", trial_interval_count=14
    )
    sub = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    assert (sub.status, sub.current_period_end, sub.invoices.count()) == (
        "trialing",
        at("2024-01-15T00:00:00"),
        0,
    )
    send("api.call", "ada", "2024-01-05T00:00:00", count=9)  # during the trial: free
    (invoice,) = cycles.close_due(as_of=at("2024-01-15T01:00:00")).invoices
    sub.refresh_from_db()
    assert (cents(invoice), sub.status, sub.current_period_end) == (
        900,
        "active",
        at("2024-02-15T00:00:00"),
    )
    assert invoice.lines.get().period_start == at("2024-01-15T00:00:00")
    assert Decimal(0) == sum(
        (line.quantity for line in invoice.lines.filter(meter__isnull=False)), Decimal(0)
    )


def test_beat_entry_fans_out_one_task_per_batch(
    make_product, customer, org, settings, django_capture_on_commit_callbacks
):
    from django_celery_beat.models import PeriodicTask

    from billing import tasks
    from core.schedules import ensure_schedules
    from customers.models import Customer

    ensure_schedules()
    entry = PeriodicTask.objects.get(name="close billing cycles")
    assert (entry.task, entry.interval.every) == ("billing.tasks.close_due_cycles", 60)
    product = make_product(fixed_price(100))
    for n in range(3):
        other = Customer.objects.create(organization=org, email=f"c{n}@example.com")
        subscriptions.create_subscription(
            customer=other, product=product, started_at=at("2024-01-01T00:00:00")
        )
    settings.BILLING_CLOSE_BATCH_SIZE = 2
    # the batch tasks are recorded (core.outbox) and sent on commit: capture the sends and run
    # the recorded tasks' bodies here (the worker's part), without a broker
    from core.models import PendingTask

    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        assert tasks.close_due_cycles.run() == 2
    assert len(enqueued) == 2
    recorded = list(
        PendingTask.objects.filter(name=tasks.close_subscriptions.name).order_by("created_at")
    )
    batches = [task.args for task in recorded]
    assert [len(ids) for ids, _as_of in batches] == [2, 1]
    for ids, as_of in batches:
        assert tasks.close_subscriptions.run(ids, as_of) > 20  # every month since Jan 2024
    assert not cycles.due_subscription_ids(as_of=at("2024-02-01T02:00:00"))


def test_meters_in_use_by_billing_cannot_be_redefined_or_archived(
    make_product, customer, api_calls, send
):
    assert meters.archive_blockers(api_calls) == []
    product = make_product(unit_price(api_calls, 1))
    assert meters.archive_blockers(api_calls) == [
        "An active price uses this meter; archive the price or product first."
    ]
    assert meters.definition_change_blockers(api_calls) == []
    subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    cycles.close_due(as_of=at("2024-02-01T02:00:00"))
    assert meters.definition_change_blockers(api_calls) == [
        "The meter's usage is on a finalized invoice; create a new meter instead."
    ]

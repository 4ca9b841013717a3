"""Voiding an open invoice releases what it billed: its usage units are billed by the next invoice
(exact units, for a count meter and for a max meter), its fixed lines only when staff choose so."""

from decimal import Decimal

import pytest

from billing import cycles, invoices, subscriptions
from billing.models import Invoice, InvoiceStatus, SubscriptionPrice
from billing.money import to_minor
from metering import meters
from tests.billing.conftest import at, fixed_price, named, unit_price


@pytest.fixture
def peak(org):
    return meters.create_meter(
        organization=org,
        name="Peak seats",
        filter=named("seats"),
        aggregation={"func": "max", "property": "seats"},
    )


@pytest.fixture
def voided_january(make_product, api_calls, peak, customer, send):
    """$29/month + 1 ¢ per call + 10 ¢ per peak seat. January: 7 calls, a peak of 7 seats; its
    invoice (January's usage and February's $29) is voided."""
    product = make_product(
        fixed_price(2900), unit_price(api_calls, 1), unit_price(peak, 10), name="Team"
    )
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    send("api.call", "ada", "2024-01-10T00:00:00", count=7)
    for day, seats in ((5, 3), (12, 7), (20, 5)):
        send("seats", "ada", f"2024-01-{day:02d}T00:00:00", seats=seats)
    cycles.close_due(as_of=at("2024-02-01T02:00:00"))
    january = subscription.invoices.get(sequence=2)
    assert sorted(
        (line.label, line.quantity, to_minor(line.amount)) for line in january.lines.all()
    ) == [
        ("Team (Feb 01, 2024 – Mar 01, 2024)", 1, 2900),
        ("Team — API calls", 7, 7),
        ("Team — Peak seats", 7, 70),
    ]
    # February: 2 calls and a peak of 4 seats
    send("api.call", "ada", "2024-02-10T00:00:00", count=2)
    send("seats", "ada", "2024-02-11T00:00:00", seats=4)
    return subscription, january


def lines_of(invoice: Invoice) -> list[tuple]:
    return [
        (line.label, line.meter_id is not None, line.quantity, to_minor(line.amount))
        for line in invoice.lines.order_by("position")
    ]


@pytest.mark.django_db
def test_a_voided_invoices_units_are_billed_on_the_next_invoice(voided_january, api_calls, peak):
    subscription, january = voided_january
    invoices.void(january)
    assert Invoice.objects.get(pk=january.pk).status == InvoiceStatus.VOID

    cycles.close_due(as_of=at("2024-03-01T02:00:00"))
    february = subscription.invoices.get(sequence=3)
    by_label = {line.label: line for line in february.lines.all()}
    # count: February's 2 calls + January's 7 released = 9, the 7 shown as late units
    calls = by_label["Team — API calls"]
    assert (calls.quantity, calls.late_units, to_minor(calls.amount)) == (Decimal(9), 7, 9)
    # max: February's own peak (4) and January's peak (7) carried as it was priced
    assert (
        by_label["Team — Peak seats"].quantity,
        to_minor(by_label["Team — Peak seats"].amount),
    ) == (4, 40)
    carried = by_label["Team — Peak seats (usage of voided ACME-0002)"]
    assert (carried.quantity, to_minor(carried.amount), carried.meter_id) == (7, 70, peak.pk)
    assert (carried.period_start, carried.period_end) == (
        at("2024-01-01T00:00:00"),
        at("2024-02-01T00:00:00"),
    )
    # February's $29 (billed in advance by the voided invoice) is not billed again: only March's
    fixed = [line for line in february.lines.all() if line.meter_id is None]
    assert [(line.label, to_minor(line.amount)) for line in fixed] == [
        ("Team (Mar 01, 2024 – Apr 01, 2024)", 2900)
    ]
    assert to_minor(february.total) == 9 + 40 + 70 + 2900

    # and exactly once: the next period bills nothing of it again
    cycles.close_due(as_of=at("2024-04-01T02:00:00"))
    march = subscription.invoices.get(sequence=4)
    assert [
        (line.label, line.quantity, line.late_units) for line in march.lines.all() if line.meter_id
    ] == [("Team — API calls", 0, 0), ("Team — Peak seats", 0, 0)]
    assert to_minor(march.total) == 2900
    span = SubscriptionPrice.objects.get(subscription=subscription, price__meter=api_calls)
    assert span.billed_units == 9


@pytest.mark.django_db
def test_fixed_lines_are_billed_again_when_staff_choose_so(voided_january):
    subscription, january = voided_january
    invoices.void(january, rebill_fixed=True)
    cycles.close_due(as_of=at("2024-03-01T02:00:00"))
    february = subscription.invoices.get(sequence=3)
    fixed = [
        (line.label, to_minor(line.amount))
        for line in february.lines.order_by("position")
        if line.meter_id is None
    ]
    assert fixed == [
        ("Team (Feb 01, 2024 – Mar 01, 2024) (re-billed from ACME-0002)", 2900),
        ("Team (Mar 01, 2024 – Apr 01, 2024)", 2900),
    ]
    assert to_minor(february.total) == 2900 + 9 + 40 + 70 + 2900


@pytest.mark.django_db
def test_a_void_racing_a_close_keeps_its_release(voided_january, api_calls):
    """The close measured before the void committed: it adds what it billed to the span's
    billed units, so the released units stay released for the next close."""
    subscription, january = voided_january
    loaded = cycles.live_subscriptions().get(pk=subscription.pk)
    read, usages, _ = cycles.measure(
        [(loaded, loaded.current_period_start, loaded.current_period_end)]
    )
    invoices.void(january)  # commits between the close's read and its write
    cycles.close_period(
        subscription.pk,
        expected_start=loaded.current_period_start,
        usage=usages[subscription.pk],
        read=read,
        loaded=loaded,
    )
    february = subscription.invoices.get(sequence=3)
    calls = next(line for line in february.lines.all() if line.label == "Team — API calls")
    assert calls.quantity == 2  # the close measured before the release
    cycles.close_due(as_of=at("2024-04-01T02:00:00"))
    march = subscription.invoices.get(sequence=4)
    calls = next(line for line in march.lines.all() if line.label == "Team — API calls")
    assert (calls.quantity, calls.late_units) == (7, 7)  # released, billed once

"""Usage corrections on invoices: a corrected event of a period that is already invoiced puts a
correction line — the difference, negative allowed — on the next invoice, once; an event of a
period not invoiced yet just changes what that period bills."""

from decimal import Decimal

import pytest
from django.template.loader import render_to_string

from billing import cycles, documents, plan_changes, subscriptions
from metering import corrections
from metering.ingest import ingest_events
from metering.models import Event
from portal import billing as portal_billing
from tests.billing.conftest import at, unit_price
from tests.factories import event_meter

# each ingest and correction commits on its own, as in production (arrivals are transactions)
pytestmark = pytest.mark.django_db(transaction=True)

MONTH = {"recurring_interval": "month"}
JANUARY = (at("2024-01-01T00:00:00"), at("2024-02-01T00:00:00"))


def meter(org, aggregation):
    return event_meter(org, aggregation)


def close(moment):
    return cycles.close_due(as_of=at(moment)).invoices


def lines(invoice):
    return [
        (line.period_start, line.quantity, line.consumed_units, int(line.amount.amount * 100))
        for line in invoice.lines.order_by("position")
    ]


def correct(org, *items):
    return corrections.correct_events(organization=org, corrections=list(items), actor="test")


def cancel(external_id):
    return {"external_id": external_id, "action": "cancel", "reason": "sent twice"}


def replace(external_id, **metadata):
    return {
        "external_id": external_id,
        "action": "replace",
        "reason": "wrong value",
        "metadata": metadata,
    }


def subscribe(make_product, customer, m, cents):
    product = make_product(unit_price(m, cents), name="Metered", **MONTH)
    return subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )


def send_one(org, external_id, timestamp, **metadata):
    ingest_events(
        organization=org,
        events=[
            {
                "name": "req",
                "external_customer_id": "ada",
                "timestamp": at(timestamp).isoformat(),
                "external_id": external_id,
                "metadata": metadata,
            }
        ],
    )


def test_cancelling_3_of_10_billed_events_credits_3_units_on_the_next_invoice(
    org, make_product, customer
):
    count = meter(org, {"func": "count"})
    subscribe(make_product, customer, count, 25)
    for i in range(10):
        send_one(org, f"jan{i}", f"2024-01-{10 + i}T12:00:00")
    (january,) = close("2024-02-01T02:00:00")
    assert lines(january) == [(JANUARY[0], 10, 10, 250)]
    correct(org, cancel("jan2"), cancel("jan5"), cancel("jan7"))
    for i in range(4):
        send_one(org, f"feb{i}", f"2024-02-{10 + i}T12:00:00")
    # the upcoming invoice shows it at once
    upcoming = subscriptions.upcoming_invoice(customer.subscriptions.get())
    assert [(line.quantity, line.amount) for line in upcoming.lines[:2]] == [(-3, -75), (4, 100)]
    (february,) = close("2024-03-01T02:00:00")
    assert lines(february) == [
        (JANUARY[0], -3, -3, -75),  # January's correction, January's dates
        (at("2024-02-01T00:00:00"), 4, 4, 100),
    ]
    correction = february.lines.order_by("position")[0]
    assert "usage correction" in correction.label and correction.corrected_events == 3
    # the invoice document (PDF, portal page) says what the line is
    (shown, _own) = portal_billing.invoice_document(february).lines
    assert shown.corrected_events == 3
    html = render_to_string("billing/invoice_document.html", documents.document_context(february))
    assert "corrects 3 events of this invoiced period" in html
    (march,) = close("2024-04-01T02:00:00")
    assert lines(march) == [(at("2024-03-01T00:00:00"), 0, 0, 0)]  # billed once
    january.refresh_from_db()
    assert lines(january) == [(JANUARY[0], 10, 10, 250)]  # finalized: unchanged
    assert Event.objects.filter(source="canceled").count() == 3  # kept


def test_replacing_a_max_meters_peak_corrects_the_periods_max(org, make_product, customer):
    peak = meter(org, {"func": "max", "property": "v"})
    subscribe(make_product, customer, peak, 100)
    send_one(org, "a", "2024-01-05T00:00:00", v=10)
    send_one(org, "b", "2024-01-06T00:00:00", v=20)
    send_one(org, "c", "2024-01-07T00:00:00", v=60)
    (january,) = close("2024-02-01T02:00:00")
    assert lines(january) == [(JANUARY[0], 60, 60, 6000)]
    correct(org, replace("c", v=30))
    send_one(org, "d", "2024-02-05T00:00:00", v=50)
    (february,) = close("2024-03-01T02:00:00")
    # January's max is now 30: 30 units less, at January's price
    assert lines(february) == [
        (JANUARY[0], -30, -30, -3000),
        (at("2024-02-01T00:00:00"), 50, 50, 5000),
    ]
    assert february.total.amount == Decimal("20.00")


@pytest.mark.parametrize(
    ("aggregation", "correction", "line", "own"),
    [
        # January 10 + 20 + 30 = 60 at 10 ¢; 30 → 5. February's own: 100 + 200 + 300
        ({"func": "sum", "property": "v"}, replace("e2", v=5), (-25, -250), (600, 6000)),
        # count: a canceled event is a unit less
        ({"func": "count"}, cancel("e0"), (-1, -10), (3, 30)),
        # avg 20 → (10 + 20 + 90) / 3 = 40
        ({"func": "avg", "property": "v"}, replace("e2", v=90), (20, 200), (200, 2000)),
        # min 10 → 20 (a correction may add to the bill)
        ({"func": "min", "property": "v"}, replace("e0", v=40), (10, 100), (100, 1000)),
        # unique values 10, 20, 30 → 10, 20
        ({"func": "unique", "property": "v"}, replace("e2", v=10), (-1, -10), (3, 30)),
    ],
    ids=["sum", "count", "avg", "min", "unique"],
)
def test_every_aggregation_bills_the_difference_once(
    org, make_product, customer, aggregation, correction, line, own
):
    m = meter(org, aggregation)
    subscribe(make_product, customer, m, 10)
    for i, v in enumerate((10, 20, 30)):
        send_one(org, f"e{i}", f"2024-01-{5 + i:02d}T00:00:00", v=v)
    close("2024-02-01T02:00:00")
    correct(org, correction)
    for i, v in enumerate((100, 200, 300)):
        send_one(org, f"f{i}", f"2024-02-{5 + i:02d}T00:00:00", v=v)
    (february,) = close("2024-03-01T02:00:00")
    assert lines(february) == [
        (JANUARY[0], line[0], line[0], line[1]),
        (at("2024-02-01T00:00:00"), own[0], own[0], own[1]),
    ]
    (march,) = close("2024-04-01T02:00:00")
    assert len(lines(march)) == 1


def test_a_correction_before_the_close_changes_the_period_itself(org, make_product, customer):
    count = meter(org, {"func": "count"})
    subscribe(make_product, customer, count, 25)
    for i in range(5):
        send_one(org, f"jan{i}", f"2024-01-{10 + i}T12:00:00")
    correct(org, cancel("jan0"), replace("jan1", v=1))
    (january,) = close("2024-02-01T02:00:00")
    assert lines(january) == [(JANUARY[0], 4, 4, 100)]
    (february,) = close("2024-03-01T02:00:00")
    assert lines(february) == [(at("2024-02-01T00:00:00"), 0, 0, 0)]


def test_two_corrections_of_one_period_at_two_closes_each_bill_their_own_difference(
    org, make_product, customer
):
    peak = meter(org, {"func": "max", "property": "v"})
    subscribe(make_product, customer, peak, 100)
    for i, v in enumerate((10, 40, 60)):
        send_one(org, f"e{i}", f"2024-01-{5 + i:02d}T00:00:00", v=v)
    close("2024-02-01T02:00:00")
    correct(org, replace("e2", v=50))
    send_one(org, "f", "2024-02-05T00:00:00", v=100)
    (february,) = close("2024-03-01T02:00:00")
    assert lines(february)[0] == (JANUARY[0], -10, -10, -1000)
    correct(org, cancel("e1"))
    (replacement,) = Event.objects.filter(source="user", metadata__v=50)
    correct(org, {"event_id": str(replacement.pk), "action": "cancel", "reason": "x"})
    send_one(org, "g", "2024-03-05T00:00:00", v=100)
    (march,) = close("2024-04-01T02:00:00")
    # January's max: 60 billed, −10 corrected, now 10: another −40
    assert lines(march) == [
        (JANUARY[0], -40, -40, -4000),
        (at("2024-03-01T00:00:00"), 100, 100, 10000),
    ]


def test_a_late_arrival_is_corrected_in_the_period_whose_set_it_joined(org, make_product, customer):
    peak = meter(org, {"func": "max", "property": "v"})
    subscribe(make_product, customer, peak, 100)
    send_one(org, "a", "2024-01-05T00:00:00", v=10)
    close("2024-02-01T02:00:00")
    send_one(org, "late", "2024-01-20T00:00:00", v=90)  # January's, after January closed
    send_one(org, "b", "2024-02-05T00:00:00", v=30)
    (february,) = close("2024-03-01T02:00:00")
    assert lines(february) == [(at("2024-02-01T00:00:00"), 90, 90, 9000)]
    correct(org, replace("late", v=40))
    send_one(org, "c", "2024-03-05T00:00:00", v=100)
    (march,) = close("2024-04-01T02:00:00")
    # February billed it (max 90 of 30 and the late 90): now max(30, 40) = 40
    assert lines(march) == [
        (at("2024-02-01T00:00:00"), -50, -50, -5000),
        (at("2024-03-01T00:00:00"), 100, 100, 10000),
    ]


def test_a_replaced_prices_last_period_is_corrected_at_its_own_price(org, make_product, customer):
    count = meter(org, {"func": "count"})
    subscription = subscribe(make_product, customer, count, 25)
    for i in range(10):
        send_one(org, f"jan{i}", f"2024-01-{10 + i}T12:00:00")
    close("2024-02-01T02:00:00")
    dearer = make_product(unit_price(count, 40), name="Dearer", **MONTH)
    plan_changes.change_product(subscription, dearer, at=at("2024-02-01T00:00:00"))
    correct(org, cancel("jan0"), cancel("jan1"), cancel("jan2"))
    send_one(org, "feb0", "2024-02-10T12:00:00")
    send_one(org, "feb1", "2024-02-11T12:00:00")
    (february,) = close("2024-03-01T02:00:00")
    assert lines(february) == [
        (JANUARY[0], -3, -3, -75),  # at the old price, January's
        (at("2024-02-01T00:00:00"), 2, 2, 80),
    ]
    assert "usage correction" in february.lines.order_by("position")[0].label


def test_a_replaced_max_prices_last_period_is_measured_again_with_the_correction(
    org, make_product, customer
):
    peak = meter(org, {"func": "max", "property": "v"})
    subscription = subscribe(make_product, customer, peak, 100)
    send_one(org, "a", "2024-01-05T00:00:00", v=10)
    send_one(org, "b", "2024-01-06T00:00:00", v=60)
    close("2024-02-01T02:00:00")
    dearer = make_product(unit_price(peak, 200), name="Dearer", **MONTH)
    plan_changes.change_product(subscription, dearer, at=at("2024-02-01T00:00:00"))
    correct(org, replace("b", v=30))
    send_one(org, "c", "2024-02-05T00:00:00", v=50)
    (february,) = close("2024-03-01T02:00:00")
    assert lines(february) == [
        (JANUARY[0], -30, -30, -3000),  # January's max 60 → 30, at January's price
        (at("2024-02-01T00:00:00"), 50, 50, 10000),
    ]


def test_the_current_periods_meter_figures_leave_an_earlier_periods_correction_out(
    org, make_product, customer
):
    count = meter(org, {"func": "count"})
    subscription = subscribe(make_product, customer, count, 25)
    for i in range(10):
        send_one(org, f"jan{i}", f"2024-01-{10 + i}T12:00:00")
    close("2024-02-01T02:00:00")
    correct(org, cancel("jan0"), cancel("jan1"))
    for i in range(4):
        send_one(org, f"feb{i}", f"2024-02-{10 + i}T12:00:00")
    subscription.refresh_from_db()  # in February now
    (line,) = subscriptions.current_meters([subscription])[subscription.pk]
    assert (line.consumed, line.amount) == (4, 100)  # February's own calls
    upcoming = subscriptions.upcoming_invoice(subscription)
    assert [(item.quantity, item.amount) for item in upcoming.lines] == [(-2, -50), (4, 100)]

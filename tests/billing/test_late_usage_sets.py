"""Late usage of avg/min/max/unique meters: an event that arrives after its period's close
joins the next period's set (its value counts there once), and the closed invoice never
changes."""

import pytest

from billing import cycles, subscriptions
from metering import meters
from tests.billing.conftest import at, unit_price

# each ingest commits on its own, so its events get their own arrival time (`now()` of its
# transaction), as in production
pytestmark = pytest.mark.django_db(transaction=True)

MONTH = {"recurring_interval": "month"}


def meter(org, name, aggregation):
    return meters.create_meter(
        organization=org,
        name=name,
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "req"}],
        },
        aggregation=aggregation,
    )


def close(moment):
    return cycles.close_due(as_of=at(moment)).invoices


def only_line(invoice):
    (line,) = invoice.lines.all()
    return line


@pytest.mark.parametrize(
    ("aggregation", "values", "p1", "p2", "p2_late"),
    [
        # p1 own: 10, 20 → avg 15; p2 own: 30 + late 60 → avg 45
        ({"func": "avg", "property": "v"}, (10, 20, 60, 30), 15, 45, 1),
        ({"func": "max", "property": "v"}, (10, 20, 60, 30), 20, 60, 1),
        ({"func": "min", "property": "v"}, (10, 20, 5, 30), 10, 5, 1),
    ],
    ids=["avg", "max", "min"],
)
def test_a_late_event_joins_the_next_periods_set(
    org, make_product, customer, send, aggregation, values, p1, p2, p2_late
):
    m = meter(org, "latency", aggregation)
    product = make_product(unit_price(m, 100), name="Metered", **MONTH)
    subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    own1, own2, late, own3 = values
    send("req", "ada", "2024-01-05T00:00:00", v=own1)
    send("req", "ada", "2024-01-06T00:00:00", v=own2)
    (january,) = close("2024-02-01T02:00:00")
    assert (only_line(january).quantity, only_line(january).late_units) == (p1, 0)
    send("req", "ada", "2024-01-20T00:00:00", v=late)  # January's, after January closed
    send("req", "ada", "2024-02-10T00:00:00", v=own3)
    (february,) = close("2024-03-01T02:00:00")
    line = only_line(february)
    assert (line.quantity, line.late_units, line.amount.amount * 100) == (p2, p2_late, p2 * 100)
    january.refresh_from_db()
    assert only_line(january).quantity == p1  # finalized: unchanged
    (march,) = close("2024-04-01T02:00:00")
    assert only_line(march).quantity == 0  # the late event counted once


def test_unique_counts_a_late_value_only_if_the_period_lacks_it(org, make_product, customer, send):
    m = meter(org, "models", {"func": "unique", "property": "model"})
    product = make_product(unit_price(m, 100), name="Models", **MONTH)
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    for day, model in ((5, "a"), (6, "b")):
        send("req", "ada", f"2024-01-0{day}T00:00:00", model=model)
    (january,) = close("2024-02-01T02:00:00")
    assert only_line(january).quantity == 2
    for model in ("c", "a"):  # January's, arriving after its close
        send("req", "ada", "2024-01-20T00:00:00", model=model)
    for model in ("a", "d"):
        send("req", "ada", "2024-02-10T00:00:00", model=model)
    (meter_line,) = subscriptions.current_meters([cycles.live_subscriptions().get()])[
        subscription.pk
    ]
    assert (meter_line.consumed, meter_line.late) == (3, 2)  # {a, d} + c; 2 late events
    (february,) = close("2024-03-01T02:00:00")
    line = only_line(february)
    assert (line.quantity, line.late_units) == (3, 2)


def test_late_arrivals_older_than_the_lookback_are_not_carried(
    org, make_product, customer, send, settings
):
    settings.BILLING_LATE_LOOKBACK = settings.BILLING_LATE_LOOKBACK.__class__(days=10)
    m = meter(org, "peak", {"func": "max", "property": "v"})
    product = make_product(unit_price(m, 1), name="Peak", **MONTH)
    subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    close("2024-02-01T02:00:00")
    send("req", "ada", "2024-01-05T00:00:00", v=99)  # 27 days before February: beyond 10 days
    send("req", "ada", "2024-01-25T00:00:00", v=7)  # 7 days before: carried
    (february,) = close("2024-03-01T02:00:00")
    assert (only_line(february).quantity, only_line(february).late_units) == (7, 1)

"""Events sent under an external id before any customer had it, and linked to the customer after
their period closed, are late usage for every aggregation — not only count and sum."""

import pytest

from billing import cycles, subscriptions
from customers import services as customer_services
from customers.models import Customer
from metering import meters
from tests.billing.conftest import at, named, unit_price

# each ingest and the linking commit on their own, as in production
pytestmark = pytest.mark.django_db(transaction=True)

START = "2024-01-01T00:00:00"


def close(moment):
    return cycles.close_due(as_of=at(moment)).invoices


def only_line(invoice):
    (line,) = invoice.lines.all()
    return line


@pytest.mark.parametrize(
    ("aggregation", "values", "january", "february", "late"),
    [
        ({"func": "max", "property": "v"}, [500, 120, 80], 0, 500, 3),
        ({"func": "unique", "property": "v"}, ["a", "b", "c", "a"], 0, 3, 4),
        ({"func": "count"}, [1, 2, 3], 0, 3, 3),
        ({"func": "sum", "property": "v"}, [500, 120, 80], 0, 700, 700),
    ],
    ids=["max", "unique", "count", "sum"],
)
def test_usage_linked_after_its_period_closed_is_billed_late(
    org, make_product, send, aggregation, values, january, february, late
):
    meter = meters.create_meter(
        organization=org, name="m", filter=named("req"), aggregation=aggregation
    )
    product = make_product(unit_price(meter, 1), name="Metered")
    customer = Customer.objects.create(organization=org, email="later@example.com")
    subscriptions.create_subscription(customer=customer, product=product, started_at=at(START))
    for day, value in enumerate(values, start=5):
        send("req", "acme-42", f"2024-01-{day:02d}T00:00:00", v=value)  # no customer has acme-42
    (jan,) = close("2024-02-01T02:00:00")
    assert only_line(jan).quantity == january
    customer_services.update_customer(customer=customer, changes={"external_id": "acme-42"})
    (feb,) = close("2024-03-01T02:00:00")
    line = only_line(feb)
    assert (line.quantity, line.late_units, int(line.amount.amount * 100)) == (
        february,
        late,
        february,
    )
    (mar,) = close("2024-04-01T02:00:00")
    assert only_line(mar).quantity == 0  # billed once

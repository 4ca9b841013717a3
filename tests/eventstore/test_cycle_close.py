"""A whole cycle close over the same events gives byte-identical invoice lines from both stores:
six metered prices (one per aggregation), decimals, a customer sending by external id before
it exists... and after, a late event arriving after January's close, February's close."""

import json
from decimal import Decimal

import pytest

from billing import catalog, cycles, subscriptions
from billing.catalog import PriceSpec
from billing.models import InvoiceLine
from customers.services import create_customer
from metering import corrections, meters
from metering.ingest import ingest_events
from tests.billing.conftest import at

pytestmark = pytest.mark.django_db(transaction=True)

COMPARED = [
    f.attname
    for f in InvoiceLine._meta.concrete_fields
    if f.name not in ("id", "invoice", "price", "meter", "created_at", "tax_rate")
]


def lifecycle(store, settings, chdb_url, token_for) -> list[str]:
    settings.EVENT_STORE = store
    settings.CLICKHOUSE_URL = chdb_url
    org = token_for(f"Close {store}")[0]
    made = []
    for func in ("count", "sum", "avg", "min", "max", "unique"):
        aggregation = {"func": func}
        if func != "count":
            aggregation["property"] = "model" if func == "unique" else "v"
        made.append(
            meters.create_meter(
                organization=org,
                name=f"m {func}",
                filter={
                    "conjunction": "and",
                    "clauses": [{"property": "name", "operator": "eq", "value": "req"}],
                },
                aggregation=aggregation,
            )
        )
    product = catalog.create_product(
        organization=org,
        name="Metered",
        recurring_interval="month",
        prices=[
            PriceSpec(amount_type="metered_unit", meter_id=m.pk, unit_amount=Decimal("0.37"))
            for m in made
        ],
    )

    def send(moment, v, model, key):
        result = ingest_events(
            organization=org,
            events=[
                {
                    "name": "req",
                    "external_customer_id": "ada",
                    "timestamp": at(moment).isoformat(),
                    "external_id": key,
                    "metadata": {"v": v, "model": model},
                }
            ],
        )
        assert result.inserted == 1

    send("2024-01-02T00:00:00", Decimal("1.25"), "a", "k0")  # before ada exists
    customer = create_customer(organization=org, email="ada@x.io", external_id="ada")
    subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    send("2024-01-05T10:00:00", 10, "a", "k1")
    send("2024-01-06T10:30:00", Decimal("20.125"), "b", "k2")
    (january,) = cycles.close_due(as_of=at("2024-02-01T02:00:00")).invoices
    send("2024-01-20T00:00:00", 60, "c", "k3")  # January's, after January closed
    send("2024-02-10T00:00:00", 30, "a", "k4")
    (february,) = cycles.close_due(as_of=at("2024-03-01T02:00:00")).invoices
    # corrections of both invoiced periods: January's 20.125 "b" becomes 5 "a", February's own
    # 30 "a" is canceled
    corrections.correct_events(
        organization=org,
        corrections=[
            {
                "external_id": "k2",
                "action": "replace",
                "reason": "r",
                "metadata": {"v": 5, "model": "a"},
            },
            {"external_id": "k4", "action": "cancel", "reason": "r"},
        ],
        actor="test",
    )
    send("2024-03-10T00:00:00", 7, "d", "k5")
    (march,) = cycles.close_due(as_of=at("2024-04-01T02:00:00")).invoices
    lines = InvoiceLine.objects.filter(invoice__in=[january, february, march]).order_by(
        "invoice__period_start", "position"
    )
    return [json.dumps(list(line.values()), default=str) for line in lines.values(*COMPARED)]


def test_the_same_events_close_to_identical_invoice_lines(settings, chdb_url, token_for):
    postgres = lifecycle("postgres", settings, chdb_url, token_for)
    clickhouse = lifecycle("clickhouse", settings, chdb_url, token_for)
    assert len(postgres) == 12 + 15
    assert postgres == clickhouse
    quantities = [json.loads(line)[COMPARED.index("quantity")] for line in postgres]
    # January: count, sum, avg, min, max, unique over 1.25 ("a", linked), 10 ("a"), 20.125 ("b");
    # February: its own 30 ("a") and the late 60 ("c") that arrived after January's close
    assert quantities == [
        "3",
        "31.375",
        "10.45833333333333333333333333333333333333",
        "1.25",
        "20.125",
        "2",
        "2",
        "90.000",
        "45",
        "30",
        "60",
        "2",
        # March: the correction lines (no line where the value did not change: count and min
        # of January, max of February), then March's own 7 "d"
        "-1",  # count, February: k4 canceled
        "-15.125",  # sum, January: 20.125 → 5
        "-30.000",  # sum, February
        # avg, January: 16.25 / 3 − 31.375 / 3, each rounded to 40 digits as billed
        "-5.041666666666666666666666666666666666663",
        "15",  # avg, February: {30, 60} → {60}
        "30",  # min, February: 30 → 60
        "-10.125",  # max, January: 20.125 → 10
        "-1",  # unique, January: {a, b} → {a}
        "-1",  # unique, February: {a, c} → {c}
        "1",
        "7.000",
        "7",
        "7",
        "7",
        "1",
    ]

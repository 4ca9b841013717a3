"""The usage page's statements don't grow with the customer's meters: the periods of all meters
are looked up at once (one statement), and a billed meter's chart refresh reads no window.

The event store's own window reads are the exception: it answers the windows of one meter per
statement (a pair of statements per priced meter for each current-period measure, docs/scaling.md),
so they are counted apart and checked to be exactly that."""

import re
from decimal import Decimal

from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing import subscriptions
from billing.catalog import PriceSpec, create_product
from customers.services import create_customer
from metering import meters
from metering.ingest import ingest_events
from metering.models import CustomerMeter

from .conftest import portal_path


def priced_customer(token_for, name: str, meter_count: int):
    """A customer of a plan pricing `meter_count` count meters, one event on each."""
    organization, _ = token_for(name)
    made = [
        meters.create_meter(
            organization=organization,
            name=f"Meter {index}",
            filter={
                "conjunction": "and",
                "clauses": [{"property": "name", "operator": "eq", "value": f"e{index}"}],
            },
            aggregation={"func": "count"},
        )
        for index in range(meter_count)
    ]
    customer = create_customer(
        organization=organization, email=f"c@{organization.slug}.example", external_id="c"
    )
    product = create_product(
        organization=organization,
        name="Plan",
        prices=[
            PriceSpec(amount_type="metered_unit", meter_id=meter.pk, unit_amount=Decimal(10))
            for meter in made
        ],
    )
    subscriptions.create_subscription(customer=customer, product=product)
    ingest_events(
        organization=organization,
        events=[{"name": f"e{index}", "external_customer_id": "c"} for index in range(meter_count)],
    )
    return customer, made


def _is_store_read(sql: str) -> bool:
    # the event store's window reads (metering/stores): unnest()ed windows joined to the events
    return "unnest(" in sql and ("WITH w AS" in sql or "SELECT w.k" in sql)


def statements(client, path: str) -> tuple[int, int, int]:
    """(statements outside the event store, the store's window reads, period lookups)."""
    client.get(path)  # warm: the session's first request
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200
    sql = [q["sql"] for q in captured.captured_queries]
    store = [s for s in sql if _is_store_read(s)]
    periods = [s for s in sql if "ARRAY_AGG" in s and 'FROM "billing_subscription"' in s]
    return len(sql) - len(store), len(store), len(periods)


def test_meters_block_statements_do_not_grow_with_the_meters(db, token_for, signed_in):
    few, _ = priced_customer(token_for, "Two meters", 2)
    many, _ = priced_customer(token_for, "Seven meters", 7)
    few_client, many_client = signed_in(few), signed_in(many)

    html = many_client.get(portal_path(many, "usage/meters")).content.decode()
    consumed = re.findall(r'data-field="consumed" data-value="([^"]+)"', html)
    assert [Decimal(v) for v in consumed] == [Decimal(1)] * 7
    assert re.findall(r'data-field="estimated-charge" class="num">([^<]+)<', html) == ["$0.10"] * 7

    few_other, few_store, few_periods = statements(few_client, portal_path(few, "usage/meters"))
    other, store, periods = statements(many_client, portal_path(many, "usage/meters"))
    assert (other, periods) == (few_other, few_periods) == (other, 1)
    # two measures of the current period (the customer meters' numbers and the estimate), each
    # two statements per priced meter, plus the ledger's credit read
    assert (few_store, store) == (2 * 2 * 2 + 2, 2 * 2 * 7 + 2)

    # the whole page adds one statement per meter: its chart's daily values
    page_few, _, page_periods = statements(few_client, portal_path(few))
    page_many, _, _ = statements(many_client, portal_path(many))
    assert (page_many, page_periods) == (page_few + 5, 1)


def test_a_billed_meters_chart_refresh_reads_its_period_once(db, token_for, signed_in):
    customer, made = priced_customer(token_for, "Chart", 3)
    client = signed_in(customer)
    cm = CustomerMeter.objects.get(customer=customer, meter=made[0])
    path = portal_path(customer, f"meters/{cm.pk}/chart")
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    sql = [q["sql"] for q in captured.captured_queries]
    # one period lookup; no reset/credit read and no usage total for the window start
    assert sum('FROM "billing_subscription"' in s for s in sql) == 1
    assert not any("meter.reset" in s for s in sql)

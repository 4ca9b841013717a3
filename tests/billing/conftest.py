"""Billing fixtures: a meter, customers, products and events with chosen timestamps."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing import catalog
from billing.catalog import PriceSpec
from customers.models import Customer
from metering import meters
from metering.ingest import ingest_events
from tests.factories import event_count_meter


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def org(organization):
    return organization


@pytest.fixture
def api_calls(org):
    return event_count_meter(org)


@pytest.fixture
def tokens(org):
    return meters.create_meter(
        organization=org,
        name="Tokens",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "llm"}],
        },
        aggregation={"func": "sum", "property": "tokens"},
    )


def named(name: str) -> dict:
    """The filter of events called `name`."""
    return {
        "conjunction": "and",
        "clauses": [{"property": "name", "operator": "eq", "value": name}],
    }


@pytest.fixture
def calls_meter(polar):
    """A count meter of `api.call` events, created through polar-sdk on the live server."""
    return polar.meters.create(
        name="API calls", filter=named("api.call"), aggregation={"func": "count"}
    )


@pytest.fixture
def customer(org):
    return Customer.objects.create(organization=org, email="ada@example.com", external_id="ada")


@pytest.fixture
def make_product(org):
    def make(*prices: PriceSpec, **kwargs):
        kwargs.setdefault("name", "Plan")
        return catalog.create_product(organization=org, prices=list(prices), **kwargs)

    return make


def unit_price(meter, cents, cap=None) -> PriceSpec:
    return PriceSpec(
        amount_type="metered_unit",
        meter_id=meter.pk,
        unit_amount=Decimal(str(cents)),
        cap_amount=cap,
    )


def fixed_price(cents) -> PriceSpec:
    return PriceSpec(amount_type="fixed", price_amount=cents)


@pytest.fixture
def send(org):
    """send("api.call", "ada", "2024-02-03T10:00:00", count=3, tokens=None)"""
    counter = iter(range(10**9))

    def send_events(name, external_customer_id, timestamp, count=1, **metadata):
        events = [
            {
                "name": name,
                "external_customer_id": external_customer_id,
                "timestamp": at(timestamp).isoformat(),
                "external_id": f"e{next(counter)}",
                "metadata": metadata,
            }
            for _ in range(count)
        ]
        return ingest_events(organization=org, events=events)

    return send_events

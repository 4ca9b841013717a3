from datetime import UTC, datetime, timedelta

import factory

from customers.models import Customer, Organization
from metering import meters
from metering.ingest import ingest_events


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Org {n}")


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    organization = factory.SubFactory(OrganizationFactory)
    email = factory.Sequence(lambda n: f"customer{n}@example.com")
    external_id = factory.Sequence(lambda n: f"cust_{n}")
    name = factory.Faker("name")


def event_meter(organization, aggregation: dict, *, event: str = "req", name: str | None = None):
    """A meter over the events of one name, aggregated as given."""
    return meters.create_meter(
        organization=organization,
        name=name or f"{event} {aggregation['func']}",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": event}],
        },
        aggregation=aggregation,
    )


def event_count_meter(organization, *, name: str = "API calls", event: str = "api.call"):
    """A meter counting the events of one name: what most scenario tests bill."""
    return event_meter(organization, {"func": "count"}, event=event, name=name)


TEN_REQUESTS_AT = datetime(2024, 1, 5, 10, tzinfo=UTC)


def send_ten_requests(organization, external_customer_id: str = "ada") -> None:
    """`req` events r0..r9 of one customer, seven minutes apart from TEN_REQUESTS_AT, with
    v = 10..100 and model m0..m3 in turn (the usage-correction tests' usage)."""
    ingest_events(
        organization=organization,
        events=[
            {
                "name": "req",
                "external_customer_id": external_customer_id,
                "timestamp": (TEN_REQUESTS_AT + timedelta(minutes=i * 7)).isoformat(),
                "external_id": f"r{i}",
                "metadata": {"v": (i + 1) * 10, "model": f"m{i % 4}"},
            }
            for i in range(10)
        ],
    )

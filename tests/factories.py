import factory

from customers.models import Customer, Organization
from metering import meters


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


def event_count_meter(organization, *, name: str = "API calls", event: str = "api.call"):
    """A meter counting the events of one name: what most scenario tests bill."""
    return meters.create_meter(
        organization=organization,
        name=name,
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": event}],
        },
        aggregation={"func": "count"},
    )

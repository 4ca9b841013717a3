"""Property: whatever valid body polar-sdk can send, polar-sdk can read back.

Hypothesis generates create and update bodies from the client's own input types — customers
(every optional field, billing addresses, metadata of every value type), meters (random nested
filters, every aggregation, every unit) and events (both customer forms, metadata, `_llm`, `_cost`) —
sends them to a live server through polar-sdk and reads each object back with `get` and `list`.
A response the client cannot deserialize raises, and fails the example. Lists are read a whole
page at a time, so one unreadable object anywhere in the organization fails every later example
(as a decimal filter value once broke `meters.list` for a whole organization).

Filter clause values are integers, strings and booleans only: how decimal values are handled
is decided elsewhere.
"""

import dataclasses
import typing
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polar.v2026_10.literals import CountryAlpha2Input

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = int(__import__("os").environ.get("READBACK_EXAMPLES", "300"))

safe_char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def text(min_size=1, max_size=40):
    # DRF trims surrounding whitespace; a body whose text is only whitespace is not valid
    return st.text(safe_char, min_size=min_size, max_size=max_size).filter(lambda s: s.strip())


metadata_key = text(max_size=40).filter(lambda k: not k.startswith("_"))
metadata_value = st.one_of(
    text(max_size=60),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
metadata = st.dictionaries(metadata_key, metadata_value, max_size=5)
# an event's numbers lie within the range every event store holds exactly: below 10^40, at most
# 20 decimal places (a larger or finer one is refused, see tests/billing/test_isolation.py)
event_metadata_value = st.one_of(
    text(max_size=60),
    st.integers(min_value=-(10**40) + 1, max_value=10**40 - 1),
    st.floats(min_value=-1e39, max_value=1e39).map(lambda number: round(number, 6)),
    st.booleans(),
)

# --- customers -------------------------------------------------------------------------------

address = st.fixed_dictionaries(
    {"country": st.sampled_from(typing.get_args(CountryAlpha2Input))},
    optional={
        "line1": st.none() | text(max_size=60),
        "line2": st.none() | text(max_size=60),
        "postal_code": st.none() | text(max_size=12),
        "city": st.none() | text(max_size=40),
        "state": st.none() | text(max_size=40),
    },
)
external_id = st.from_regex(r"\A[A-Za-z0-9_.:@+=-]{1,30}\Z")
locale = st.from_regex(r"\A[a-z]{2}(-[A-Z]{2})?\Z")
customer_fields = {
    "name": st.none() | text(max_size=80),
    "billing_address": st.none() | address,
    "tax_id": st.none() | st.from_regex(r"\A[A-Z0-9]{4,20}\Z"),
    "locale": st.none() | locale,
    "metadata": metadata,
}


def email(tag: str) -> st.SearchStrategy[str]:
    # dot-separated atoms: a local part never has two dots in a row (an invalid address)
    atoms = st.lists(st.from_regex(r"\A[a-z0-9_+-]{1,8}\Z"), min_size=1, max_size=3)
    return atoms.map(lambda parts: f"u{'.'.join(parts)}.{tag}@example.com")


# --- meters ----------------------------------------------------------------------------------

filter_property = st.sampled_from(["name", "source", "timestamp"]) | metadata_key
clause = st.fixed_dictionaries(
    {
        "property": filter_property,
        "operator": st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "like", "not_like"]),
        "value": st.one_of(
            text(max_size=40), st.integers(min_value=-(2**53), max_value=2**53), st.booleans()
        ),
    }
)
meter_filter = st.recursive(
    st.fixed_dictionaries(
        {"conjunction": st.sampled_from(["and", "or"]), "clauses": st.lists(clause, max_size=3)}
    ),
    lambda inner: st.fixed_dictionaries(
        {
            "conjunction": st.sampled_from(["and", "or"]),
            "clauses": st.lists(clause | inner, max_size=3),
        }
    ),
    max_leaves=8,
)
aggregation = st.one_of(
    st.just({"func": "count"}),
    st.fixed_dictionaries(
        {"func": st.sampled_from(["sum", "max", "min", "avg"]), "property": metadata_key}
    ),
    st.fixed_dictionaries({"func": st.just("unique"), "property": metadata_key}),
)
unit = st.one_of(
    st.fixed_dictionaries({"unit": st.sampled_from(["scalar", "token"])}),
    st.fixed_dictionaries(
        {
            "unit": st.just("custom"),
            "custom_label": text(max_size=30),
            "custom_multiplier": st.integers(min_value=1, max_value=2**62),
        }
    ),
)

# --- events ----------------------------------------------------------------------------------

llm = st.fixed_dictionaries(
    {
        "vendor": text(max_size=20),
        "model": text(max_size=30),
        "input_tokens": st.integers(0, 10**6),
        "output_tokens": st.integers(0, 10**6),
    }
).map(lambda d: {**d, "total_tokens": d["input_tokens"] + d["output_tokens"]})
# Polar's cost block: the amount as a number or a decimal string (polar-sdk's input type), read
# back as a decimal string (its output type)
cost = st.fixed_dictionaries(
    {
        "amount": st.one_of(
            st.integers(-(10**12), 10**12),
            st.decimals(min_value=-(10**12), max_value=10**12, places=6).map(str),
            st.floats(min_value=0, max_value=1e9).map(lambda number: round(number, 6)),
        ),
        "currency": st.sampled_from(["usd", "EUR"]),
    }
)
event_metadata = st.tuples(
    st.dictionaries(metadata_key, event_metadata_value, max_size=5),
    st.none() | llm,
    st.none() | cost,
).map(
    lambda parts: {
        **parts[0],
        **({"_llm": parts[1]} if parts[1] else {}),
        **({"_cost": parts[2]} if parts[2] else {}),
    }
)
moment = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
)


def as_dict(value):
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def trimmed(value):
    """What the server stores for a text field: DRF trims surrounding whitespace."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return {k: trimmed(v) for k, v in value.items()}
    return value


@pytest.fixture
def unlimited(settings):
    settings.API_RATE_LIMIT = ""  # hundreds of requests with one token; not what is tested


@pytest.fixture
def known_customer(polar):
    return polar.customers.create(email="known@example.com", external_id="known")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kind=st.sampled_from(["customer", "meter", "events"]), data=st.data())
def test_every_valid_body_reads_back_through_polar_sdk(
    polar, unlimited, known_customer, kind, data
):
    tag = uuid.uuid4().hex[:10]
    if kind == "customer":
        check_customer(polar, data, tag)
    elif kind == "meter":
        check_meter(polar, data, tag)
    else:
        check_events(polar, data, tag, known_customer)


def check_customer(polar, data, tag):
    body = data.draw(st.fixed_dictionaries({"email": email(tag)}, optional=customer_fields))
    if data.draw(st.booleans()):
        # it becomes a URL path segment in get_external: no "/" (see docs/polar-compatibility.md)
        body["external_id"] = f"{data.draw(external_id)}-{tag}"
    created = polar.customers.create(**body)
    assert created.email == body["email"].lower()
    assert created.metadata == body.get("metadata", {})
    if body.get("billing_address"):
        sent = {k: v for k, v in trimmed(body["billing_address"]).items()}
        read = as_dict(created.billing_address)
        assert {k: read[k] for k in sent} == sent
    if body.get("external_id"):
        assert polar.customers.get_external(body["external_id"]).id == created.id

    changes = data.draw(st.fixed_dictionaries({}, optional=customer_fields))
    updated = polar.customers.update(created.id, **changes)
    for key in ("name", "locale"):
        if key in changes:
            assert getattr(updated, key) == trimmed(changes[key])
    assert polar.customers.get(created.id).modified_at is not None
    listed = polar.customers.list(limit=100)  # every customer of the organization, parsed
    assert created.id in {c.id for c in listed.items}


def check_meter(polar, data, tag):
    body = {
        "name": f"{tag} {data.draw(text(max_size=40))}",
        "filter": data.draw(meter_filter),
        "aggregation": data.draw(aggregation),
        **data.draw(unit),
    }
    if data.draw(st.booleans()):
        body["metadata"] = data.draw(metadata)
    created = polar.meters.create(**body)
    assert as_dict(created.filter) == body["filter"]  # strings kept verbatim
    assert as_dict(created.aggregation)["func"] == body["aggregation"]["func"]
    assert [m.id for m in polar.meters.list(query=tag).items] == [created.id]

    changes = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "name": text(min_size=3, max_size=40).filter(lambda s: len(s.strip()) >= 3),
                "filter": meter_filter,
                "aggregation": aggregation,
                "is_archived": st.booleans(),
            },
        )
    )
    updated = polar.meters.update(created.id, **changes)
    if "filter" in changes:
        assert as_dict(updated.filter) == changes["filter"]
    if "is_archived" in changes:
        assert (updated.archived_at is not None) == changes["is_archived"]
    assert polar.meters.get(created.id).id == created.id
    listed = polar.meters.list(limit=100, sorting=["-created_at"])  # every meter, parsed
    assert listed.items[0].id == created.id


def check_events(polar, data, tag, customer):
    count = data.draw(st.integers(min_value=1, max_value=4))
    events = []
    for index in range(count):
        event = {
            "name": data.draw(text(max_size=60)),
            "external_id": f"{tag}-{index}",
            "metadata": data.draw(event_metadata),
        }
        if data.draw(st.booleans()):
            event["timestamp"] = data.draw(moment).isoformat()
        if data.draw(st.booleans()):
            event["customer_id"] = customer.id
        else:
            event["external_customer_id"] = f"x-{tag}"
        events.append(event)
    result = polar.events.ingest(events=events)
    assert (result.inserted, result.duplicates) == (count, 0)
    mine = polar.events.list(external_customer_id=f"x-{tag}", limit=100).items
    sent = sorted(e["name"] for e in events if "external_customer_id" in e)
    assert sorted(e.name for e in mine) == sent  # names are kept exactly as sent
    # costs come back as decimal strings of exactly the amounts sent
    sent_costs = sorted(
        Decimal(str(e["metadata"]["_cost"]["amount"]))
        for e in events
        if "external_customer_id" in e and "_cost" in e["metadata"]
    )
    read_costs = [e.metadata["_cost"].amount for e in mine if "_cost" in e.metadata]
    assert all(isinstance(amount, str) for amount in read_costs)
    assert sorted(map(Decimal, read_costs)) == sent_costs
    latest = polar.events.list(limit=100).items  # the organization's latest events, parsed
    assert polar.events.get(latest[0].id).id == latest[0].id

"""The demo organization's meters, shared by `seed_demo`, `generate_events` and the benchmarks."""

from customers.models import Organization
from metering.meters import create_meter
from metering.models import Meter

# The six demo meters, one per aggregation.
DEMO_METERS = (
    ("API requests", {"name": "api.request"}, {"func": "count"}),
    ("LLM tokens", {"name": "llm.completion"}, {"func": "sum", "property": "total_tokens"}),
    ("Average API latency", {"name": "api.request"}, {"func": "avg", "property": "latency_ms"}),
    ("Smallest upload", {"name": "storage.upload"}, {"func": "min", "property": "bytes"}),
    ("Largest upload", {"name": "storage.upload"}, {"func": "max", "property": "bytes"}),
    ("LLM models used", {"name": "llm.completion"}, {"func": "unique", "property": "model"}),
)


def ensure_demo_meters(organization: Organization) -> str:
    """Create the six demo meters through the meters service (skipping names that exist)."""
    existing = set(Meter.objects.filter(organization=organization).values_list("name", flat=True))
    created = 0
    for name, where, aggregation in DEMO_METERS:
        if name in existing:
            continue
        clauses = [{"property": k, "operator": "eq", "value": v} for k, v in where.items()]
        create_meter(
            organization=organization,
            name=name,
            filter={"conjunction": "and", "clauses": clauses},
            aggregation=aggregation,
        )
        created += 1
    return f"Meters: {created} created, {len(existing)} already there."

"""The benchmark workload: an organization with customers, a token and the six meters (one per
aggregation function), and deterministic event batches in the API's wire format.

Event mix (per event, seeded RNG):
- 60 % `llm.completion` with `model` and `_llm` {vendor, model, input/output/total tokens}
- 30 % `api.request` with `endpoint`, `region`, `duration_ms`
- 10 % `storage.write` with `bucket`, `bytes`
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

MODELS = ["gpt-4o", "gpt-4o-mini", "o3", "claude-sonnet", "llama-3-70b", "mistral-large"]
ENDPOINTS = ["/v1/search", "/v1/answer", "/v1/embed", "/v1/upload", "/v1/chat"]
REGIONS = ["eu-west", "us-east", "ap-south"]
BUCKETS = ["media", "backups", "logs"]


def _clause(prop, op, value):
    return {"property": prop, "operator": op, "value": value}


LLM = _clause("name", "eq", "llm.completion")
API = _clause("name", "eq", "api.request")

# One meter per aggregation function; the sum meter has a nested filter.
METERS = [
    {
        "name": "bench: requests (count)",
        "filter": {"conjunction": "and", "clauses": [API]},
        "aggregation": {"func": "count"},
    },
    {
        "name": "bench: tokens (sum)",
        "filter": {
            "conjunction": "and",
            "clauses": [
                LLM,
                {
                    "conjunction": "or",
                    "clauses": [
                        _clause("model", "eq", "gpt-4o"),
                        _clause("_llm.total_tokens", "gte", 1000),
                    ],
                },
            ],
        },
        "aggregation": {"func": "sum", "property": "_llm.total_tokens"},
    },
    {
        "name": "bench: latency (avg)",
        "filter": {"conjunction": "and", "clauses": [API]},
        "aggregation": {"func": "avg", "property": "duration_ms"},
    },
    {
        "name": "bench: smallest prompt (min)",
        "filter": {"conjunction": "and", "clauses": [LLM]},
        "aggregation": {"func": "min", "property": "_llm.input_tokens"},
    },
    {
        "name": "bench: slowest request (max)",
        "filter": {"conjunction": "and", "clauses": [API, _clause("region", "ne", "ap-south")]},
        "aggregation": {"func": "max", "property": "duration_ms"},
    },
    {
        "name": "bench: models used (unique)",
        "filter": {"conjunction": "and", "clauses": [LLM]},
        "aggregation": {"func": "unique", "property": "model"},
    },
]


def make_event(rng: random.Random, *, customer: str, external_id: str | None, ts: datetime):
    kind = rng.random()
    if kind < 0.6:
        model = rng.choice(MODELS)
        inp = rng.randint(10, 4000)
        out = rng.randint(1, 2000)
        name = "llm.completion"
        metadata = {
            "model": model,
            "_llm": {
                "vendor": "openai",
                "model": model,
                "input_tokens": inp,
                "output_tokens": out,
                "total_tokens": inp + out,
            },
        }
    elif kind < 0.9:
        name = "api.request"
        metadata = {
            "endpoint": rng.choice(ENDPOINTS),
            "region": rng.choice(REGIONS),
            "duration_ms": rng.randint(1, 2500),
        }
    else:
        name = "storage.write"
        metadata = {"bucket": rng.choice(BUCKETS), "bytes": rng.randint(1, 10_000_000)}
    event = {
        "name": name,
        "external_customer_id": customer,
        "timestamp": ts.isoformat().replace("+00:00", "Z"),
        "metadata": metadata,
    }
    if external_id is not None:
        event["external_id"] = external_id
    return event


def customer_external_id(index: int) -> str:
    return f"bench-cust-{index:06d}"


def make_batches(
    *,
    seed: int,
    run_id: str,
    batches: int,
    batch_size: int,
    customers: int,
    spread_seconds: float = 300.0,
    now: datetime | None = None,
) -> list[list[dict]]:
    """`batches` lists of `batch_size` events with unique external ids, timestamps in the last
    `spread_seconds` (live traffic), customers uniform over `customers` external ids."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    out = []
    serial = 0
    for _ in range(batches):
        batch = []
        for _ in range(batch_size):
            batch.append(
                make_event(
                    rng,
                    customer=customer_external_id(rng.randrange(customers)),
                    external_id=f"{run_id}-{serial}",
                    ts=now - timedelta(seconds=rng.uniform(0, spread_seconds)),
                )
            )
            serial += 1
        out.append(batch)
    return out


def body(batch: list[dict]) -> bytes:
    return json.dumps({"events": batch}, separators=(",", ":")).encode()


def setup_organization(*, name: str, customers: int, with_meters: bool = True):
    """Organization + `customers` customers (external ids bench-cust-NNNNNN) + a token + the six
    meters. Returns (organization, token secret, {meter name: meter id})."""
    from customers.models import Customer
    from customers.tokens import create_token

    api_token, secret = create_token(organization_name=name, label="bench")
    organization = api_token.organization
    existing = set(
        Customer.objects.filter(organization=organization).values_list("external_id", flat=True)
    )
    Customer.objects.bulk_create(
        [
            Customer(
                organization=organization,
                external_id=customer_external_id(i),
                email=f"{customer_external_id(i)}@bench.example",
            )
            for i in range(customers)
            if customer_external_id(i) not in existing
        ],
        batch_size=5000,
    )
    meter_ids = {}
    if with_meters:
        meter_ids = ensure_meters(organization)
    return organization, secret, meter_ids


def ensure_meters(organization) -> dict:
    from metering.meters import create_meter
    from metering.models import Meter

    meter_ids = {}
    for spec in METERS:
        meter = Meter.objects.filter(organization=organization, name=spec["name"]).first()
        if meter is None:
            meter = create_meter(organization=organization, **spec)
        meter_ids[spec["name"]] = str(meter.pk)
    return meter_ids


COPY_COLUMNS = (
    "organization_id, name, source, timestamp, ingested_at, customer_id, external_customer_id, "
    "external_id, parent_reference, metadata"
)


def _copy_text(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def copy_payload(batches: list[list[dict]], *, organization_id, customer_ids: dict) -> bytes:
    """The same rows as text-format COPY data (customer resolved as ingestion resolves it)."""
    now = datetime.now(UTC).isoformat()
    lines = []
    for batch in batches:
        for event in batch:
            customer_id = customer_ids.get(event["external_customer_id"])
            lines.append(
                "\t".join(
                    (
                        str(organization_id),
                        _copy_text(event["name"]),
                        "user",
                        event["timestamp"],
                        now,
                        str(customer_id) if customer_id else "\\N",
                        _copy_text(event["external_customer_id"]),
                        _copy_text(event["external_id"]),
                        "\\N",
                        _copy_text(json.dumps(event["metadata"], separators=(",", ":"))),
                    )
                )
            )
    return ("\n".join(lines) + "\n").encode()

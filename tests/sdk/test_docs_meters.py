"""The meter definitions of docs/sdk.md bill what the strategies emit: each documented meter is
created through the real polar-sdk client, the strategies send events through the SDK, and the
SDK's own reads (customer_meters, customer_state) show the expected consumed units."""

import io
import json
import re
import time
from pathlib import Path

import boto3
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


def documented_meters():
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)]


def test_documented_meters_bill_the_strategies(ml, polar, moto_url):
    meters = {m["name"]: polar.meters.create(**m) for m in documented_meters()}
    assert set(meters) == {
        "LLM tokens",
        "Egress bytes",
        "Storage uploaded bytes",
        "Compute seconds",
        "API calls",
    }
    polar.customers.create(email="u1@example.com", external_id="u1")

    ml.record_usage(
        {"model": "m", "usage": {"prompt_tokens": 30, "completion_tokens": 12}},
        customer="u1",
        name="llm.completion",
    )
    chunks = [b"a" * 100, b"b" * 23]
    assert list(ml.stream(iter(chunks), customer="u1", name="egress")) == chunks
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="docs")
    ml.s3(s3, customer="u1", name="storage")
    s3.upload_fileobj(io.BytesIO(b"s" * 4000), "docs", "k")
    s3.get_object(Bucket="docs", Key="k")["Body"].read()  # a download: not in the upload meter
    timer = ml.delta_time(customer="u1", name="job.seconds").start()
    time.sleep(0.05)
    seconds = timer.stop()
    for _ in range(3):
        ml.ingest({"name": "api.call", "external_customer_id": "u1"})
    assert ml.flush(timeout=10)
    assert ml.stats.failed == 0

    page = ml.customer_meters(external_customer_id="u1", limit=100)
    consumed = {item["meter"]["name"]: item["consumed_units"] for item in page["items"]}
    assert consumed["LLM tokens"] == 42
    assert consumed["Egress bytes"] == 123
    assert consumed["Storage uploaded bytes"] == 4000
    assert consumed["Compute seconds"] == pytest.approx(seconds)
    assert consumed["API calls"] == 3
    assert page["pagination"]["total_count"] == 5
    state = ml.customer_state(external_id="u1")
    assert len(state["active_meters"]) == 5

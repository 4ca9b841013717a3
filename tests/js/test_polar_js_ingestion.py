"""Polar's own JavaScript ingestion package (`@polar-sh/ingestion`, unchanged, pinned by
tests/js/package-lock.json) against a live Meterline: its LLM strategy wraps an AI SDK model
served by a local OpenAI-compatible server and sends one event per call with `_llm` and `_cost`.
Every call arrives, a `sum` meter over `_cost.amount` equals the costs the package sent (exactly,
as the decimals it wrote) and one over `_llm.total_tokens` the tokens the model reported.

The test installs the packages itself (`npm ci`) into .data/js-ingestion, once per lockfile;
npm's cache sits beside them."""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from django.utils import timezone

from metering import meters
from metering.models import Event
from tests.sdk._openai_server import OpenAIServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

HERE = Path(__file__).resolve().parent
WORK = HERE.parents[1] / ".data" / "js-ingestion"
SCRIPT = "polar_llm_ingestion.mjs"
EVENT = "openai-usage"


def installed() -> Path:
    """The pinned packages in WORK/node_modules (npm ci when the lockfile changed)."""
    WORK.mkdir(parents=True, exist_ok=True)
    lock = (HERE / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (HERE / "package.json").read_bytes()).hexdigest()
    stamp = WORK / "node_modules" / ".installed-from"
    with open(WORK / ".lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # two test processes install once
        if not stamp.exists() or stamp.read_text() != digest:
            for name in ("package.json", "package-lock.json"):
                shutil.copy(HERE / name, WORK / name)
            done = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--cache", str(WORK / "npm-cache")],
                cwd=WORK,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            stamp.write_text(digest)
    # ES modules resolve packages from the script's own folder
    shutil.copy(HERE / SCRIPT, WORK / SCRIPT)
    return WORK


def named(name):
    return {
        "conjunction": "and",
        "clauses": [{"property": "name", "operator": "eq", "value": name}],
    }


def test_polar_llm_strategy_costs_and_tokens_sum_exactly(live_url, live_org_token, polar):
    organization, token = live_org_token
    work = installed()
    for external_id in ("js-alice", "js-bob"):
        polar.customers.create(email=f"{external_id}@example.com", external_id=external_id)
    cost_meter = meters.create_meter(
        organization=organization,
        name="LLM cost",
        filter=named(EVENT),
        aggregation={"func": "sum", "property": "_cost.amount"},
    )
    token_meter = meters.create_meter(
        organization=organization,
        name="LLM tokens",
        filter=named(EVENT),
        aggregation={"func": "sum", "property": "_llm.total_tokens"},
    )

    with OpenAIServer() as llm:
        run = subprocess.run(
            ["node", SCRIPT],
            cwd=work,
            env={
                **os.environ,
                "METERLINE_URL": live_url,
                "METERLINE_TOKEN": token,
                "OPENAI_BASE_URL": llm.url + "/v1",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        usages = list(llm.usages)
    # the numbers as the package wrote them in JSON (binary floats: exact as decimals written)
    sent = json.loads(run.stdout.strip().splitlines()[-1], parse_float=Decimal)
    assert len(sent) == len(usages) == 4
    assert [s["tokens"] for s in sent] == [u["total_tokens"] for u in usages]

    events = list(Event.objects.filter(organization=organization, name=EVENT).order_by("timestamp"))
    assert len(events) == 4
    assert [e.customer.external_id for e in events] == [s["customer"] for s in sent]
    assert {e.metadata["_cost"]["currency"] for e in events} == {"usd"}

    def total(meter, **customer):
        # read as the JSON the server wrote, decimals kept exact (polar-sdk would make floats)
        now = timezone.now()
        response = requests.get(
            f"{live_url}/v1/meters/{meter.pk}/quantities",
            headers={"Authorization": f"Bearer {token}"},
            params={
                "start_timestamp": (now - timedelta(hours=1)).isoformat(),
                "end_timestamp": (now + timedelta(minutes=1)).isoformat(),
                "interval": "hour",
                **customer,
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return json.loads(response.text, parse_float=Decimal)["total"]

    costs = sum(s["cost"] for s in sent)
    tokens = sum(u["total_tokens"] for u in usages)
    assert costs > 0 and tokens > 0
    assert total(cost_meter) == costs
    assert total(token_meter) == tokens
    alice = sum(s["cost"] for s in sent if s["customer"] == "js-alice")
    assert total(cost_meter, external_customer_id="js-alice") == alice
    assert total(cost_meter, external_customer_id="js-bob") == costs - alice
    print("costs sent:", [str(s["cost"]) for s in sent], "sum", costs, "tokens", tokens)

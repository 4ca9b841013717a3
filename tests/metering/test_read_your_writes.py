"""Read-your-writes: ingest, then immediately read customer state, 1,000 times from several
threads over real HTTP (the live server serves each request on its own DB connection)."""

import threading

import pytest
from polar.v2026_10 import Polar

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8
ROUNDS = 125  # 8 × 125 = 1,000 ingest-then-read pairs


def test_zero_stale_reads(polar, live_url, live_org_token):
    token = live_org_token[1]
    meter = polar.meters.create(
        name="calls",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "call"}],
        },
        aggregation={"func": "sum", "property": "n"},
    )
    for index in range(THREADS):
        polar.customers.create(email=f"ryw{index}@example.com", external_id=f"ryw{index}")
    stale, errors = [], []

    def worker(index: int):
        client = Polar(token, base_url=live_url)
        external_id = f"ryw{index}"
        try:
            for round_ in range(1, ROUNDS + 1):
                client.events.ingest(
                    events=[
                        {"name": "call", "external_customer_id": external_id, "metadata": {"n": 2}},
                        {
                            "name": "other",
                            "external_customer_id": external_id,
                            "metadata": {"n": 5},
                        },
                    ]
                )
                state = client.customers.get_state_external(external_id)
                consumed = [m.consumed_units for m in state.active_meters if m.meter_id == meter.id]
                if consumed != [2 * round_]:
                    stale.append((external_id, round_, consumed))
        except Exception as exc:  # surfaced below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert stale == []
    listed = polar.customer_meters.list(meter_id=meter.id, limit=100)
    assert sorted(m.consumed_units for m in listed.items) == [2 * ROUNDS] * THREADS

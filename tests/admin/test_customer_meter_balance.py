"""The admin's customer meters show a balance only where there are credits: an average or a
count without credits has no balance (credited − consumed would print minus the usage)."""

import re

from customers.services import create_customer
from metering import customer_meters, meters
from metering.ingest import ingest_events


def _meter(organization, name, event, aggregation):
    return meters.create_meter(
        organization=organization,
        name=name,
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": event}],
        },
        aggregation=aggregation,
    )


def test_balance_only_where_credits_exist(admin_client, organization):
    latency = _meter(
        organization, "Average API latency", "latency", {"func": "avg", "property": "ms"}
    )
    calls = _meter(organization, "API calls", "call", {"func": "count"})
    uploads = _meter(organization, "Uploads", "upload", {"func": "count"})
    customer = create_customer(organization=organization, email="a@x.io", external_id="a")
    ingest_events(
        organization=organization,
        events=[
            {"name": "latency", "external_customer_id": "a", "metadata": {"ms": 80.5}},
            {"name": "latency", "external_customer_id": "a", "metadata": {"ms": 84.34}},
            *[{"name": "call", "external_customer_id": "a"}] * 7,
            *[{"name": "upload", "external_customer_id": "a"}] * 3,
        ],
    )
    customer_meters.grant_credits(customer=customer, meter=calls, units=5, reason="trial")
    customer_meters.grant_credits(customer=customer, meter=uploads, units=10, reason="trial")

    page = admin_client.get("/admin/metering/customermeter/").content.decode()
    balances = {
        name: re.sub(r"<[^>]+>", "", cell)
        for name, cell in re.findall(
            r'<td class="field-meter nowrap">([^<]+)</td>.*?<td class="field-balance">(.*?)</td>',
            page,
            re.S,
        )
    }
    # latency: no credits, no balance (it was −82.42); calls: 7 used of 5, exactly −2
    assert balances == {"Average API latency": "—", "API calls": "−2", "Uploads": "7"}

    section = admin_client.get(f"/admin/customers/customer/{customer.pk}/change/").content
    rows = re.findall(
        r">(Average API latency|API calls|Uploads)</a></td>(.*?)</tr>", section.decode(), re.S
    )
    cells = {name: re.findall(r">([^<>]*)</span>", row) for name, row in rows}
    assert cells == {
        "API calls": ["7", "5", "−2"],
        "Average API latency": ["82.42", "0", "—"],
        "Uploads": ["3", "10", "7"],
    }
    assert "−82.42" not in page + section.decode() and latency.name in page

"""Margins of the seeded demo: for a demo customer, the report's revenue is its invoices (without
tax) less a credit note, its cost the `_cost.amount` of its events, the margin their difference;
a cost in another currency is its own row. The service, the API (JSON and CSV) and the admin
page give the same numbers."""

import csv
import io
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from billing import credit_notes, cycles, margins, plan_changes, subscriptions
from billing.models import CreditNote, Invoice, InvoiceLine, Price
from billing.money import to_minor
from customers.models import Customer, Organization
from customers.tokens import create_token
from metering.ingest import ingest_events
from metering.models import Event
from tests.billing.conftest import at, fixed_price, unit_price

pytestmark = pytest.mark.django_db


def event_costs(customer) -> dict:
    """(event name, currency) → the exact sum of the customer's `_cost.amount`s."""
    rows = (
        Event.objects.filter(customer=customer, metadata__has_key="_cost")
        .annotate(
            amount=KeyTextTransform("amount", KeyTransform("_cost", "metadata")),
            currency=KeyTextTransform("currency", KeyTransform("_cost", "metadata")),
        )
        .values_list("name", "currency", "amount")
    )
    totals: dict = defaultdict(Decimal)
    for name, currency, amount in rows:
        totals[(name, currency.upper())] += Decimal(amount)
    return totals


def credited_net(line_ids) -> dict:
    """line id → what credit notes took back from it, without tax."""
    credited: dict = defaultdict(int)
    for lines in CreditNote.objects.values_list("lines", flat=True):
        for share in lines:
            if share["line_id"] in line_ids:
                credited[share["line_id"]] += share["amount"] - share["tax_amount"]
    return credited


def by_name(rows, currency="USD"):
    return {row.label: row for row in rows if row.currency == currency}


@override_settings(DEBUG=True)  # the demo seed is for development only
def test_demo_customer_margin_is_its_invoices_minus_its_costs(tmp_path):
    call_command(
        "seed_demo", events=1500, credentials_file=str(tmp_path / "demo.json"), no_progress=True
    )
    org = Organization.objects.get(name="Meterline Demo")
    finalized = Invoice.objects.filter(organization=org, status__in=margins.REVENUE_STATUSES)
    # the demo customer with the most invoices (then the most events), all in USD
    customer = max(
        Customer.objects.filter(organization=org, invoices__in=finalized).distinct(),
        key=lambda c: (finalized.filter(customer=c).count(), c.events.count(), c.external_id),
    )
    invoices = list(finalized.filter(customer=customer))
    assert len(invoices) >= 2 and {i.currency for i in invoices} == {"USD"}
    costs = event_costs(customer)
    assert costs[("llm.completion", "USD")] > 0 and costs[("api.request", "USD")] > 0

    # a balance credit note of 5.00 on its largest invoice, and a cost in euros
    largest = max(invoices, key=lambda i: i.total)
    credit_notes.issue(largest, amount=500, kind="balance", reason="customer_request")
    ingest_events(
        organization=org,
        events=[
            {
                "name": "llm.completion",
                "external_customer_id": customer.external_id,
                "metadata": {"_cost": {"amount": "7.25", "currency": "eur"}},
            }
        ],
    )

    notes = CreditNote.objects.filter(invoice__customer=customer)
    expected_revenue = sum(to_minor(i.total) - to_minor(i.tax) for i in invoices) - sum(
        to_minor(n.amount) - to_minor(n.tax_amount) for n in notes
    )
    expected_cost = costs[("llm.completion", "USD")] + costs[("api.request", "USD")]
    assert sum(v for (_, c), v in costs.items() if c == "USD") == expected_cost

    now = timezone.now()
    start, end = now - timedelta(days=120), now + timedelta(days=1)
    report = margins.report(org, start=start, end=end, customer_id=customer.pk)

    (row,) = [r for r in report.customers if r.currency == "USD"]
    assert (row.revenue, row.cost) == (expected_revenue, expected_cost)
    assert row.margin == expected_revenue - expected_cost
    (euros,) = [r for r in report.customers if r.currency == "EUR"]
    assert (euros.revenue, euros.cost, euros.margin, euros.margin_percent) == (
        0,
        Decimal("7.25"),
        Decimal("-7.25"),
        None,
    )
    assert [(t.currency, t.revenue, t.cost) for t in report.totals] == [
        ("EUR", 0, Decimal("7.25")),
        ("USD", expected_revenue, expected_cost),
    ]

    # meters: each one's metered lines against the costs of the events it matches
    lines = InvoiceLine.objects.filter(invoice__in=invoices)
    credited = credited_net({str(line.pk) for line in lines})
    meter_revenue: dict = defaultdict(int)
    for line in lines.filter(meter__isnull=False):
        inclusive = to_minor(line.tax_amount) if line.invoice.tax_inclusive else 0
        meter_revenue[line.meter.name] += (
            to_minor(line.amount) - to_minor(line.discount_amount) - inclusive
        ) - credited[str(line.pk)]
    meters = by_name(report.meters)
    assert meters["LLM tokens"].cost == costs[("llm.completion", "USD")]
    assert meters["API requests"].cost == costs[("api.request", "USD")]
    # the latency meter matches the same events as API requests: the same costs, no revenue
    assert meters["Average API latency"].cost == costs[("api.request", "USD")]
    assert meters["Average API latency"].revenue == 0
    for name, amount in meter_revenue.items():
        assert meters[name].revenue == amount, name
    assert by_name(report.meters, "EUR")["LLM tokens"].cost == Decimal("7.25")

    # products: the customer's plan earned all its revenue, its meters' events cost the rest
    (product,) = {i.product for i in invoices}
    priced = set(
        Price.objects.filter(product=product, meter__isnull=False).values_list(
            "meter__name", flat=True
        )
    )
    product_cost = sum(
        costs[(name, "USD")]
        for name, meter_name in (("llm.completion", "LLM tokens"), ("api.request", "API requests"))
        if meter_name in priced
    )
    products = by_name(report.products)
    assert (products[product.name].revenue, products[product.name].cost) == (
        expected_revenue,
        product_cost,
    )

    # the whole organization: every finalized invoice against every linked customer's costs
    everyone = margins.report(org, start=start, end=end)
    all_notes = CreditNote.objects.filter(organization=org)
    all_costs = sum(
        (v for c in Customer.objects.filter(organization=org) for (_, cur), v in
         event_costs(c).items() if cur == "USD"),
        Decimal(0),
    )  # fmt: skip
    assert [(t.currency, t.revenue, t.cost) for t in everyone.totals] == [
        ("EUR", 0, Decimal("7.25")),
        (
            "USD",
            sum(to_minor(i.total) - to_minor(i.tax) for i in finalized)
            - sum(to_minor(n.amount) - to_minor(n.tax_amount) for n in all_notes),
            all_costs,
        ),
    ]
    assert sum(r.cost for r in everyone.customers if r.currency == "USD") == all_costs

    # the API, in JSON and in CSV, and the admin page give the same figures
    _, secret = create_token(organization_name=org.name, label="margins")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    query = {
        "start_timestamp": start.isoformat(),
        "end_timestamp": end.isoformat(),
        "customer_id": str(customer.pk),
    }
    body = client.get("/v1/metrics/margins", query).json()
    (usd,) = [r for r in body["customers"] if r["currency"] == "USD"]
    assert usd == {
        "id": str(customer.pk),
        "name": row.label,
        "currency": "USD",
        "revenue": expected_revenue,
        "cost": margins.decimal_text(expected_cost),
        "margin": margins.decimal_text(expected_revenue - expected_cost),
        "margin_percent": f"{row.margin_percent:f}",
    }
    assert Decimal(usd["margin"]) == expected_revenue - expected_cost
    response = client.get("/v1/metrics/margins", {**query, "format": "csv"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    for section, rows in (
        ("customer", body["customers"]),
        ("meter", body["meters"]),
        ("product", body["products"]),
        ("total", body["totals"]),
    ):
        from_csv = [
            {**{k: v for k, v in r.items() if k != "section"}, "revenue": int(r["revenue"])}
            for r in table
            if r["section"] == section
        ]
        as_json = [{**r, "margin_percent": r["margin_percent"] or ""} for r in rows]
        assert from_csv == as_json, section

    staff = get_user_model().objects.create_superuser("margins-admin", "m@example.com", "pw")
    admin = APIClient()
    admin.force_login(staff)
    day = "%Y-%m-%d"
    page = admin.get(
        "/admin/billing/margins/",
        {
            "organization": str(org.pk),
            "start": start.strftime(day),
            "end": end.strftime(day),
            "customer": customer.external_id,
        },
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert f"{Decimal(expected_revenue) / 100:,.2f} USD" in html
    # 7.25 cents: shown rounded to the cent of a euro, exact on hover
    assert '<td title="7.25">0.07 EUR</td><td class="ml-negative">−0.07 EUR</td>' in html
    exported = admin.get(
        "/admin/billing/margins/",
        {
            "organization": str(org.pk),
            "start": start.strftime(day),
            "end": end.strftime(day),
            "customer": customer.external_id,
            "format": "csv",
        },
    )
    # the admin's period is whole UTC days around the same one: nothing lies in the difference
    assert exported.content == response.content


def test_margin_api_refuses_bad_periods_with_the_field(api):
    def locs(query):
        response = api.get("/v1/metrics/margins", query)
        assert response.status_code == 422, response.content
        assert response["Content-Type"].startswith("application/json")
        return [tuple(item["loc"]) for item in response.json()["detail"]]

    assert locs({}) == [("query", "start_timestamp"), ("query", "end_timestamp")]
    good = {"start_timestamp": "2025-01-01T00:00:00Z", "end_timestamp": "2025-02-01T00:00:00Z"}
    assert locs({**good, "end_timestamp": "2024-12-01T00:00:00Z"}) == [("query", "end_timestamp")]
    assert locs({**good, "end_timestamp": "2027-01-01T00:00:00Z"}) == [("query", "end_timestamp")]
    assert locs({**good, "customer_id": "nope"}) == [("query", "customer_id")]
    assert locs({**good, "customer_id": "7f0b3b7e-5e0f-4a4e-9d43-8c55f1f8a111"}) == [
        ("query", "customer_id")
    ]
    assert locs({**good, "format": "csv", "start_timestamp": "x"}) == [("query", "start_timestamp")]
    empty = api.get("/v1/metrics/margins", good).json()
    assert [empty[k] for k in ("customers", "meters", "products", "totals")] == [[], [], [], []]


def test_costs_after_a_plan_change_count_for_the_product_priced_at_their_time(
    org, api_calls, tokens, make_product, customer, send
):
    """Ada starts on Starter (prices API calls), moves to Pro (API calls and tokens) on April
    10th; Bob is on Pro all April. Each cost event counts for the product whose price applied
    at its timestamp: Ada's calls before the change for Starter only, after it for Pro only."""
    starter = make_product(fixed_price(1000), unit_price(api_calls, 1), name="Starter")
    pro = make_product(
        fixed_price(5000), unit_price(api_calls, 2), unit_price(tokens, 1), name="Pro"
    )
    bob = Customer.objects.create(organization=org, email="bob@example.com", external_id="bob")
    april = at("2024-04-01T00:00:00")
    ada_sub = subscriptions.create_subscription(
        customer=customer, product=starter, started_at=april
    )
    subscriptions.create_subscription(customer=bob, product=pro, started_at=april)

    def cost(amount):
        return {"amount": amount, "currency": "usd"}

    send("api.call", "ada", "2024-04-03T10:00:00", count=3, _cost=cost("1.5"))  # Starter
    send("llm", "ada", "2024-04-05T10:00:00", _cost=cost("10"))  # no Starter price: no product
    plan_changes.change_product(ada_sub, pro, at=at("2024-04-10T00:00:00"))
    send("api.call", "ada", "2024-04-12T10:00:00", count=2, _cost=cost("2.25"))  # Pro
    send("llm", "ada", "2024-04-15T10:00:00", _cost=cost("0.75"))  # Pro
    send("api.call", "bob", "2024-04-20T10:00:00", _cost=cost("100"))  # Pro
    send("api.call", "ada", "2024-05-02T10:00:00", _cost=cost("1000"))  # after the period
    cycles.close_due(as_of=at("2024-05-01T02:00:00"))

    report = margins.report(org, start=april, end=at("2024-05-01T00:00:00"))
    products = by_name(report.products)
    assert (products["Starter"].cost, products["Pro"].cost) == (Decimal("4.5"), Decimal("105.25"))
    assert products["Starter"].revenue > 0 and products["Pro"].revenue > 0
    assert {r.label: r.cost for r in report.customers} == {
        "ada@example.com": Decimal("19.75"),
        "bob@example.com": Decimal("100"),
    }
    assert [(t.currency, t.cost) for t in report.totals] == [("USD", Decimal("119.75"))]
    assert {r.label: r.cost for r in report.meters} == {
        "API calls": Decimal("109"),
        "Tokens": Decimal("10.75"),
    }

    # one customer's report: the same split
    only_ada = margins.report(
        org, start=april, end=at("2024-05-01T00:00:00"), customer_id=customer.pk
    )
    assert {r.label: r.cost for r in only_ada.products} == {
        "Starter": Decimal("4.5"),
        "Pro": Decimal("5.25"),
    }
    # a period ending before the change: Ada's calls are Starter's, Pro has only its own
    early = margins.report(org, start=april, end=at("2024-04-10T00:00:00"), customer_id=customer.pk)
    assert [(r.label, r.cost) for r in early.products] == [("Starter", Decimal("4.5"))]


def test_the_schema_documents_the_csv_format(client, api):
    schema = client.get("/v1/openapi.json").json()
    operation = schema["paths"]["/v1/metrics/margins"]["get"]
    (fmt,) = [p for p in operation["parameters"] if p["name"] == "format"]
    assert (fmt["in"], sorted(fmt["schema"]["enum"])) == ("query", ["csv", "json"])
    assert "text/csv" in fmt["description"]
    ok = operation["responses"]["200"]
    assert ok["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/MarginReport"}},
        "text/csv": {"schema": {"type": "string"}},
    }
    header = ",".join(margins.CSV_COLUMNS)
    assert f"`{header}`" in ok["description"]

    # what is served is what is documented: the media type and the header row
    query = {"start_timestamp": "2025-01-01T00:00:00Z", "end_timestamp": "2025-02-01T00:00:00Z"}
    response = api.get("/v1/metrics/margins", {**query, "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] in ok["content"]
    assert response.content.decode() == header + "\n"
    response = api.get("/v1/metrics/margins", query, HTTP_ACCEPT="text/csv")
    assert response["Content-Type"].startswith("text/csv")
    assert response.content.decode() == header + "\n"

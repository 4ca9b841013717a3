"""Margins: what a period's invoices earned against what the usage behind them cost, per customer,
per meter and per product (docs/billing.md, "Costs and margins").

- **Revenue** (integer minor units of the invoice currency): the lines of finalized invoices
  (open, paid or uncollectible; not drafts, not void) whose service period starts in the
  report's period, each as charged after its discount and without tax (an inclusive tax is taken
  out of the line), less what credit notes credited back on that line (their share of the line
  without its tax part), whenever the credit note was issued.
- **Cost** (minor units as sent, exact, fractional allowed): the sum of `_cost.amount` of the
  events with timestamps in the period — a customer's row counts all its cost events, a meter's
  row the events the meter's filter matches (an event two meters match counts in both, so meter
  rows need not add up to the customers'), a product's row the events matched by any meter the
  product prices while a price of that product applied to the customer's subscription (its
  `SubscriptionPrice` spans): after a plan change, the events before it count for the old
  product and those after it for the new one, never for both. Usage no price applied to (a
  trial, before or after a subscription) is in no product's row. Unlinked events (no customer
  yet) are left out. Read through metering's query API, from raw events.
- **Currencies** are never converted: a row is one currency; costs in a currency no invoice of
  the row uses appear as their own row with no revenue.
- margin = revenue − cost; margin % = margin ÷ revenue × 100, rounded half up to 2 places (none
  when there is no revenue).
"""

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce

from billing.errors import BillingError
from billing.models import (
    CreditNote,
    InvoiceLine,
    InvoiceStatus,
    Price,
    Product,
    SubscriptionPrice,
)
from billing.money import minor_factor, round_minor
from customers.models import Customer
from metering import queries
from metering.models import Meter, MeterState

# finalized and not voided, as the dashboard counts revenue
REVENUE_STATUSES = (InvoiceStatus.OPEN, InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE)
COST_AMOUNT = "_cost.amount"
COST_CURRENCY = "_cost.currency"
# costs are read from raw events: a report spans at most this much
MAX_PERIOD = timedelta(days=400)
PERCENT = Decimal("0.01")


class InvalidPeriod(BillingError):
    pass


@dataclass
class MarginRow:
    """One row of the report: `key` is a customer, meter or product id ("" for none)."""

    key: str
    label: str
    currency: str  # ISO code, upper case
    revenue: int = 0
    cost: Decimal = Decimal(0)

    @property
    def margin(self) -> Decimal:
        return Decimal(self.revenue) - self.cost

    @property
    def margin_percent(self) -> Decimal | None:
        if not self.revenue:
            return None
        return (self.margin * 100 / Decimal(self.revenue)).quantize(PERCENT, ROUND_HALF_UP)


@dataclass
class MarginReport:
    start: datetime
    end: datetime
    customers: list[MarginRow] = field(default_factory=list)
    meters: list[MarginRow] = field(default_factory=list)
    products: list[MarginRow] = field(default_factory=list)
    totals: list[MarginRow] = field(default_factory=list)

    def sections(self):
        return (
            ("customer", self.customers),
            ("meter", self.meters),
            ("product", self.products),
            ("total", self.totals),
        )


def check_period(start: datetime | None, end: datetime | None) -> None:
    if start is None or end is None:
        missing = "start_timestamp" if start is None else "end_timestamp"
        raise InvalidPeriod("The period's start and end are required", field=(missing,))
    if start >= end:
        raise InvalidPeriod("The period's start must be before its end", field=("end_timestamp",))
    if end - start > MAX_PERIOD:
        raise InvalidPeriod(
            f"A margin report covers at most {MAX_PERIOD.days} days", field=("end_timestamp",)
        )


# --- revenue --------------------------------------------------------------------------------


def _revenue(organization, start, end, customer_id) -> dict:
    """(customer id, currency, meter id | None, product id | None) → revenue in minor units."""
    lines = InvoiceLine.objects.filter(
        invoice__organization=organization,
        invoice__status__in=REVENUE_STATUSES,
        period_start__gte=start,
        period_start__lt=end,
    )
    if customer_id is not None:
        lines = lines.filter(invoice__customer_id=customer_id)
    grouped = (
        lines.annotate(product=Coalesce(F("price__product_id"), F("invoice__product_id")))
        .values("invoice__customer_id", "invoice__currency", "meter_id", "product")
        .annotate(
            charged=Sum("amount"),
            discounts=Sum("discount_amount"),
            inclusive_tax=Sum("tax_amount", filter=Q(invoice__tax_inclusive=True)),
        )
        .order_by()
    )
    revenue: dict = defaultdict(int)
    for row in grouped:
        currency = row["invoice__currency"]
        net = row["charged"] - row["discounts"] - (row["inclusive_tax"] or 0)
        key = (row["invoice__customer_id"], currency, row["meter_id"], row["product"])
        revenue[key] += round_minor(Decimal(net) * minor_factor(currency))
    # credit notes: each line's share less its tax part (rare: one query, then the lines hit)
    credited: dict = defaultdict(int)
    notes = CreditNote.objects.filter(invoice__in=lines.values("invoice_id")).values_list("lines")
    for (note_lines,) in notes:
        for share in note_lines:
            credited[share["line_id"]] += int(share["amount"]) - int(share.get("tax_amount", 0))
    if credited:
        hit = (
            lines.filter(pk__in=list(credited))
            .annotate(product=Coalesce(F("price__product_id"), F("invoice__product_id")))
            .values_list("pk", "invoice__customer_id", "invoice__currency", "meter_id", "product")
        )
        for pk, customer, currency, meter, product in hit:
            revenue[(customer, currency, meter, product)] -= credited[str(pk)]
    return revenue


# --- costs ----------------------------------------------------------------------------------


def _with_currency(event_filter: dict | None, currency: str) -> dict:
    clause = {"property": COST_CURRENCY, "operator": "eq", "value": currency}
    clauses = [clause] if event_filter is None else [event_filter, clause]
    return {"conjunction": "and", "clauses": clauses}


def _without_currencies(currencies) -> dict:
    """Events with a `_cost` block in none of `currencies` (`ne` is false on a missing key)."""
    return {
        "conjunction": "and",
        "clauses": [
            {"property": COST_CURRENCY, "operator": "ne", "value": currency}
            for currency in sorted(currencies)
        ],
    }


def _cost_currencies(organization, start, end, candidates: set[str], customer_ids) -> set[str]:
    """The lower-case currencies of the period's cost events: the expected ones, and any other
    found among the (few) events that have none of them."""
    found = set(candidates)
    others = queries.customer_sums(
        organization_id=organization.pk,
        event_filter=_without_currencies(candidates),
        prop=COST_AMOUNT,
        start=start,
        end=end,
        customer_ids=customer_ids,
    )
    for customer_id, (count, _) in others.items():
        if count:
            found |= queries.string_values(
                organization_id=organization.pk,
                customer_id=customer_id,
                event_filter=_without_currencies(candidates),
                prop=COST_CURRENCY,
                start=start,
                end=end,
            )
    return found


def _costs(organization, start, end, event_filter, currencies, customer_ids) -> dict:
    """(customer id, upper-case currency) → cost of the events `event_filter` matches."""
    costs = {}
    for currency in sorted(currencies):
        sums = queries.customer_sums(
            organization_id=organization.pk,
            event_filter=_with_currency(event_filter, currency),
            prop=COST_AMOUNT,
            start=start,
            end=end,
            customer_ids=customer_ids,
        )
        for customer_id, (count, total) in sums.items():
            if count:
                costs[(customer_id, currency.upper())] = total
    return costs


def _either(filters: list[dict]) -> dict:
    return {"conjunction": "or", "clauses": filters}


def _price_spans(organization, start, end, customer_id) -> dict:
    """product id → {customer id → sorted, disjoint ranges inside [start, end) when a price of
    the product applied to one of the customer's subscriptions}."""
    spans = SubscriptionPrice.objects.filter(
        subscription__organization=organization, starts_at__lt=end
    ).filter(Q(ends_at__isnull=True) | Q(ends_at__gt=start))
    if customer_id is not None:
        spans = spans.filter(subscription__customer_id=customer_id)
    clipped: dict = defaultdict(list)
    for product_id, customer, lo, hi in spans.values_list(
        "price__product_id", "subscription__customer_id", "starts_at", "ends_at"
    ):
        lo, hi = max(lo, start), min(hi or end, end)
        if lo < hi:
            clipped[(product_id, customer)].append((lo, hi))
    result: dict = defaultdict(dict)
    for (product_id, customer), ranges in clipped.items():
        result[product_id][customer] = _merged(ranges)
    return result


def _merged(ranges: list) -> tuple:
    """Overlapping or touching ranges joined (a product's prices share their spans)."""
    merged: list = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _span_costs(organization, event_filter, currencies, spans: dict) -> dict:
    """(customer id, upper-case currency) → cost of the events `event_filter` matches inside
    each customer's ranges (`spans`: customer id → ranges): one read per currency."""
    costs = {}
    for currency in sorted(currencies):
        # never saved, as metering's own ad-hoc sums: without rollups it is read from raw events
        meter = Meter(
            organization_id=organization.pk,
            name="costs",
            filter=_with_currency(event_filter, currency),
            aggregation={"func": "sum", "property": COST_AMOUNT},
            state=MeterState.BACKFILLING,
        )
        windows = [
            queries.Window(key=customer, meter=meter, customer_id=customer, ranges=ranges)
            for customer, ranges in spans.items()
        ]
        for customer, found in queries.window_values(windows).items():
            if found.value:
                costs[(customer, currency.upper())] = found.value
    return costs


# --- the report -----------------------------------------------------------------------------


def report(organization, *, start: datetime, end: datetime, customer_id=None) -> MarginReport:
    """The margin report of `organization` for [start, end), optionally of one customer."""
    check_period(start, end)
    revenue = _revenue(organization, start, end, customer_id)
    meters = {m.pk: m for m in Meter.objects.filter(organization=organization)}
    product_meters: dict = defaultdict(set)
    for product_id, meter_id in Price.objects.filter(
        product__organization=organization, meter__isnull=False
    ).values_list("product_id", "meter_id"):
        product_meters[product_id].add(meter_id)

    candidates = {"usd"} | {currency.lower() for _, currency, _, _ in revenue}
    candidates |= {
        c.lower()
        for c in Product.objects.filter(organization=organization)
        .values_list("currency", flat=True)
        .distinct()
    }
    only = None if customer_id is None else [customer_id]
    currencies = _cost_currencies(organization, start, end, candidates, only)
    customer_costs = _costs(organization, start, end, None, currencies, only)
    meter_costs = {
        meter_id: _costs(organization, start, end, meter.filter, currencies, only)
        for meter_id, meter in meters.items()
    }
    product_costs = {}
    for product_id, spans in _price_spans(organization, start, end, customer_id).items():
        filters = [meters[m].filter for m in product_meters.get(product_id, ()) if m in meters]
        if filters:
            product_costs[product_id] = _span_costs(
                organization, _either(filters), currencies, spans
            )

    result = MarginReport(start=start, end=end)
    rows: dict = {}

    def row(section, key, label_of, currency) -> MarginRow:
        slot = (section, key, currency)
        if slot not in rows:
            rows[slot] = MarginRow(key=str(key or ""), label=label_of(key), currency=currency)
        return rows[slot]

    names = _labels(organization, revenue, customer_costs, meters)
    for (customer, currency, meter, product), amount in revenue.items():
        row("customer", customer, names.customer, currency).revenue += amount
        row("product", product, names.product, currency).revenue += amount
        row("total", None, lambda _: "All customers", currency).revenue += amount
        if meter is not None:
            row("meter", meter, names.meter, currency).revenue += amount
    for (customer, currency), cost in customer_costs.items():
        row("customer", customer, names.customer, currency).cost += cost
        row("total", None, lambda _: "All customers", currency).cost += cost
    for meter_id, costs in meter_costs.items():
        for (_, currency), cost in costs.items():
            row("meter", meter_id, names.meter, currency).cost += cost
    for product_id, costs in product_costs.items():
        for (_, currency), cost in costs.items():
            row("product", product_id, names.product, currency).cost += cost

    sections = {"customer": result.customers, "meter": result.meters, "product": result.products}
    sections["total"] = result.totals
    for (section, _, _), margin_row in sorted(
        rows.items(), key=lambda item: (item[1].label.lower(), item[1].currency, item[1].key)
    ):
        sections[section].append(margin_row)
    return result


@dataclass
class _Names:
    customers: dict
    meters: dict
    products: dict

    def customer(self, key) -> str:
        return self.customers.get(key, str(key))

    def meter(self, key) -> str:
        return self.meters.get(key, str(key))

    def product(self, key) -> str:
        return "No product" if key is None else self.products.get(key, str(key))


def _labels(organization, revenue, customer_costs, meters) -> _Names:
    customer_ids = {key[0] for key in revenue} | {key[0] for key in customer_costs}
    customers = {
        pk: name or email or external_id or str(pk)
        for pk, name, email, external_id in Customer.objects.filter(
            pk__in=customer_ids
        ).values_list("pk", "name", "email", "external_id")
    }
    products = dict(Product.objects.filter(organization=organization).values_list("pk", "name"))
    return _Names(customers, {pk: m.name for pk, m in meters.items()}, products)


# --- export ---------------------------------------------------------------------------------

CSV_COLUMNS = ("section", "id", "name", "currency", "revenue", "cost", "margin", "margin_percent")


def decimal_text(value: Decimal) -> str:
    """An exact decimal as plain text: 12.5, -0.0001, 0 (never 1E+1)."""
    return "0" if not value else f"{value.normalize():f}"


def row_values(row: MarginRow) -> dict:
    """A row as the API and the CSV give it: revenue in minor units (integer), cost and margin
    as exact decimal strings of minor units, margin % with 2 places."""
    percent = row.margin_percent
    return {
        "id": row.key,
        "name": row.label,
        "currency": row.currency,
        "revenue": row.revenue,
        "cost": decimal_text(row.cost),
        "margin": decimal_text(row.margin),
        "margin_percent": None if percent is None else f"{percent:f}",
    }


def to_csv(report: MarginReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for section, rows in report.sections():
        for row in rows:
            values = row_values(row)
            writer.writerow([section, *(values[c] for c in CSV_COLUMNS[1:])])
    return buffer.getvalue()

"""The billing dashboard's figures for one organization, each one set-based (a grouped query,
never a loop over invoices or subscriptions): revenue per month and per product, MRR, usage per
meter per day, open and overdue invoices. Amounts are Decimal major units per currency.

Revenue is counted on the invoice's date, the day a billing tool would have issued it, not the
day the row was written: a cycle invoice is dated at the end of its period, a subscription's
first invoice at its start, anything else (plan change, spend threshold) when it was finalized —
and never later than it was finalized. A subscription backdated three months therefore puts its
three invoices in the three months they bill, not all in the month someone created it."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.cache import cache
from django.db.models import Case, Count, DateTimeField, F, Q, Sum, When
from django.db.models.functions import Least, TruncMonth

from billing import periods
from billing.models import (
    LIVE_STATUSES,
    BillingReason,
    Invoice,
    InvoiceStatus,
    PriceType,
    SubscriptionPrice,
    SubscriptionStatus,
)
from customers.models import Organization
from metering import queries

# what counts as revenue: finalized and not voided (uncollectible was still invoiced)
REVENUE_STATUSES = (InvoiceStatus.OPEN, InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE)
# a fixed price's amount per month, by its interval (× 1 / interval count)
MONTHS_PER_INTERVAL = {
    periods.DAY: Decimal(12) / Decimal(365),
    periods.WEEK: Decimal(12) / Decimal(52),
    periods.MONTH: Decimal(1),
    periods.YEAR: Decimal(12),
}
CENT = Decimal("0.01")


@dataclass(frozen=True)
class MonthRevenue:
    month: datetime
    currency: str
    invoiced: Decimal  # net of discounts, before tax
    paid: Decimal


@dataclass(frozen=True)
class ProductRevenue:
    product: str
    currency: str
    invoiced: Decimal
    invoices: int


@dataclass(frozen=True)
class Receivables:
    currency: str
    open_count: int
    open_total: Decimal
    overdue_count: int
    overdue_total: Decimal


def month_start(moment: datetime, months_back: int) -> datetime:
    month = moment.year * 12 + moment.month - 1 - months_back
    return moment.replace(
        year=month // 12, month=month % 12 + 1, day=1, hour=0, minute=0, second=0, microsecond=0
    )


# The invoice's date (see the module's docstring), as SQL.
INVOICE_DATE = Case(
    When(
        billing_reason=BillingReason.SUBSCRIPTION_CYCLE,
        then=Least("period_end", "finalized_at"),
    ),
    When(
        billing_reason=BillingReason.SUBSCRIPTION_CREATE,
        then=Least("period_start", "finalized_at"),
    ),
    default=F("finalized_at"),
    output_field=DateTimeField(),
)


def invoice_date(invoice: Invoice) -> datetime | None:
    """INVOICE_DATE of one invoice (None while it is a draft)."""
    if invoice.finalized_at is None:
        return None
    if invoice.billing_reason == BillingReason.SUBSCRIPTION_CYCLE:
        return min(invoice.period_end, invoice.finalized_at)
    if invoice.billing_reason == BillingReason.SUBSCRIPTION_CREATE:
        return min(invoice.period_start, invoice.finalized_at)
    return invoice.finalized_at


def _revenue(organization, *, since: datetime):
    return (
        Invoice.objects.filter(organization=organization, status__in=REVENUE_STATUSES)
        .annotate(invoice_date=INVOICE_DATE)
        .filter(invoice_date__gte=since)
    )


def revenue_by_month(organization, *, now: datetime, months: int = 12) -> list[MonthRevenue]:
    rows = (
        _revenue(organization, since=month_start(now, months - 1))
        .annotate(month=TruncMonth("invoice_date"))
        .values("month", "net_currency")
        .annotate(invoiced=Sum("net"), paid=Sum("net", filter=Q(status=InvoiceStatus.PAID)))
        .order_by("month", "net_currency")
    )
    return [
        MonthRevenue(row["month"], row["net_currency"], row["invoiced"], row["paid"] or Decimal(0))
        for row in rows
    ]


def revenue_by_product(organization, *, now: datetime, months: int = 12) -> list[ProductRevenue]:
    rows = (
        _revenue(organization, since=month_start(now, months - 1))
        .values("product__name", "net_currency")
        .annotate(invoiced=Sum("net"), invoices=Count("id"))
        .order_by("-invoiced", "product__name")
    )
    return [
        ProductRevenue(
            row["product__name"] or "—", row["net_currency"], row["invoiced"], row["invoices"]
        )
        for row in rows
    ]


def busiest_organization() -> Organization | None:
    """The organization with the most live subscriptions (then by name): where the dashboard
    opens when staff haven't chosen one. One grouped query over subscriptions."""
    return (
        Organization.objects.annotate(
            live=Count("subscriptions", filter=Q(subscriptions__status__in=LIVE_STATUSES))
        )
        .order_by("-live", "name")
        .first()
    )


def mrr(organization, *, now: datetime) -> dict[str, Decimal]:
    """Monthly recurring revenue per currency: the fixed prices of active (not trialing, not
    ended) subscriptions, each brought to a month by its interval. Metered usage is not
    recurring by promise and is left out (it is in the revenue per month)."""
    rows = (
        SubscriptionPrice.objects.filter(
            subscription__organization=organization,
            subscription__status__in=(SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE),
            price__amount_type=PriceType.FIXED,
            starts_at__lte=now,
        )
        .filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now))
        .values(
            currency=F("price__price_amount_currency"),
            interval=F("subscription__product__recurring_interval"),
            count=F("subscription__product__recurring_interval_count"),
        )
        .annotate(amount=Sum("price__price_amount"))
    )
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        totals[row["currency"]] += (
            row["amount"] / MONTHS_PER_INTERVAL[row["interval"]] / row["count"]
        )
    return {
        currency: amount.quantize(CENT, rounding=ROUND_HALF_UP)
        for currency, amount in sorted(totals.items())
    }


def receivables(organization, *, now: datetime) -> list[Receivables]:
    """Open invoices, and those open longer than BILLING_INVOICE_DUE_DAYS (overdue)."""
    overdue = Q(finalized_at__lt=now - timedelta(days=settings.BILLING_INVOICE_DUE_DAYS))
    rows = (
        Invoice.objects.filter(organization=organization, status=InvoiceStatus.OPEN)
        .values("total_currency")
        .annotate(
            open_count=Count("id"),
            open_total=Sum("total"),
            overdue_count=Count("id", filter=overdue),
            overdue_total=Sum("total", filter=overdue),
        )
        .order_by("total_currency")
    )
    return [
        Receivables(
            row["total_currency"],
            row["open_count"],
            row["open_total"],
            row["overdue_count"],
            row["overdue_total"] or Decimal(0),
        )
        for row in rows
    ]


def oldest_overdue(organization, *, now: datetime, limit: int = 10) -> list[Invoice]:
    return list(
        Invoice.objects.filter(
            organization=organization,
            status=InvoiceStatus.OPEN,
            finalized_at__lt=now - timedelta(days=settings.BILLING_INVOICE_DUE_DAYS),
        )
        .select_related("customer")
        .order_by("finalized_at")[:limit]
    )


# The usage chart sums every customer's daily rollups (1–1.5 s for 10,000 customers and 10M
# events, docs/performance.md); staff see it at most this many seconds old.
USAGE_CACHE_SECONDS = 300


@dataclass(frozen=True)
class MeterUsage:
    series: list
    as_of: datetime


def meter_usage(organization, *, now: datetime, days: int = 90) -> MeterUsage:
    """Each live meter's value per UTC day over the last `days` days (today included), as of
    `now` or of a read at most USAGE_CACHE_SECONDS earlier."""
    key = f"billing:dashboard:usage:{organization.pk}:{days}:{now:%Y-%m-%d}"
    cached = cache.get(key)
    if cached is None:
        since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        series = queries.daily_values(organization_id=organization.pk, since=since, until=now)
        cached = MeterUsage(series=series, as_of=now)
        cache.set(key, cached, USAGE_CACHE_SECONDS)
    return cached

"""The "Margins" admin page: the margin report (`billing.margins`) of one organization for a
period, optionally of one customer, with its CSV export. Staff who may view invoices see it."""

from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from billing import margins
from billing.money import is_known_currency, minor_factor
from customers.models import Customer, Organization

CENT = Decimal("0.01")


def _day(raw: str | None, default: date) -> date:
    try:
        return date.fromisoformat(raw) if raw else default
    except ValueError:
        return default


def major(minor, currency: str) -> str:
    """Minor units → major units for display, rounded half up to 2 places (costs may be
    fractional cents; the CSV keeps them exact)."""
    factor = minor_factor(currency) if is_known_currency(currency) else 100
    amount = (Decimal(minor) / factor).quantize(CENT, ROUND_HALF_UP)
    text = f"{abs(amount):,.2f} {currency}"
    return f"−{text}" if amount < 0 else text


def display(rows):
    for row in rows:
        percent = row.margin_percent
        yield {
            "row": row,
            "revenue": major(row.revenue, row.currency),
            "cost": major(row.cost, row.currency),
            "margin": major(row.margin, row.currency),
            "percent": "—" if percent is None else f"{percent:f} %",
            "negative": row.margin < 0,
        }


def margins_view(request):
    """Revenue against costs per customer, meter and product for a period (UTC days, the end
    day included): this month so far by default."""
    if not request.user.has_perm("billing.view_invoice"):
        raise PermissionDenied
    organizations = list(Organization.objects.order_by("name"))
    chosen = request.GET.get("organization")
    organization = next((o for o in organizations if str(o.pk) == chosen), None) or (
        organizations[0] if organizations else None
    )
    today = timezone.now().astimezone(UTC).date()
    first = _day(request.GET.get("start"), today.replace(day=1))
    last = _day(request.GET.get("end"), today)
    customer = None
    if organization is not None and request.GET.get("customer"):
        customer = (
            Customer.objects.filter(organization=organization, external_id=request.GET["customer"])
            .order_by("deleted_at")
            .first()
        )
        if customer is None:
            customer = Customer.objects.filter(
                organization=organization, email__iexact=request.GET["customer"]
            ).first()
    context = {
        **admin.site.each_context(request),
        "title": "Margins",
        "organizations": organizations,
        "organization": organization,
        "start": first,
        "end": last,
        "customer_query": request.GET.get("customer", ""),
        "customer": customer,
    }
    if organization is not None:
        start = datetime.combine(first, time.min, tzinfo=UTC)
        end = datetime.combine(last, time.min, tzinfo=UTC) + timedelta(days=1)
        try:
            report = margins.report(
                organization, start=start, end=end, customer_id=customer.pk if customer else None
            )
        except margins.InvalidPeriod as exc:
            context["error"] = exc.message
        else:
            if request.GET.get("format") == "csv":
                response = HttpResponse(margins.to_csv(report), content_type="text/csv")
                response["Content-Disposition"] = (
                    f'attachment; filename="margins-{first}-{last}.csv"'
                )
                return response
            context["sections"] = [
                ("Customers", list(display(report.customers))),
                ("Meters", list(display(report.meters))),
                ("Products", list(display(report.products))),
                ("Total", list(display(report.totals))),
            ]
            query = request.GET.copy()
            query["format"] = "csv"
            context["csv_query"] = query.urlencode()
    return TemplateResponse(request, "admin/billing/margins.html", context)

"""Invoices in the admin (read-only: a finalized invoice never changes; mark paid and void are
actions through the invoice services), their PDF, and the billing dashboard."""

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing import dashboard, documents, invoices
from billing.admin.credit_notes import CreditNoteInline
from billing.admin.display import cents
from billing.charts import Bar, bar_chart
from billing.errors import BillingError
from billing.models import Invoice, InvoiceLine
from billing.money import format_amount, to_minor
from core.admin import MeterlineModelAdmin
from customers.models import Organization


def dashboard_context(organization, *, now) -> dict:
    by_currency = defaultdict(list)
    for row in dashboard.revenue_by_month(organization, now=now):
        by_currency[row.currency].append(
            Bar(
                label=f"{row.month:%b %Y}",
                value=row.invoiced,
                tooltip=f"{row.month:%B %Y}: {format_amount(row.invoiced, row.currency)} "
                f"invoiced, {format_amount(row.paid, row.currency)} paid",
            )
        )
    days = [(now - timedelta(days=n)).date() for n in range(89, -1, -1)]
    usage_charts = []
    usage_read = dashboard.meter_usage(organization, now=now, days=len(days))
    for one in usage_read.series:
        bars = [
            Bar(
                label=f"{day:%b %d}" if day.day == 1 else "",
                value=one.values.get(day, Decimal(0)),
                tooltip=f"{day:%Y-%m-%d}: {one.values.get(day, Decimal(0)).normalize():f}",
            )
            for day in days
        ]
        total = sum(one.values.values(), Decimal(0)).normalize()
        usage_charts.append(
            (
                one.meter.name,
                one.func,
                f"{total:f}",
                bar_chart(bars, title=f"{one.meter.name} per day"),
            )
        )
    return {
        "revenue_charts": [
            (currency, bar_chart(bars, title=f"Revenue per month ({currency})"))
            for currency, bars in sorted(by_currency.items())
        ],
        "products": [
            (row.product, format_amount(row.invoiced, row.currency), row.invoices)
            for row in dashboard.revenue_by_product(organization, now=now)
        ],
        "mrr": [
            format_amount(amount, currency)
            for currency, amount in dashboard.mrr(organization, now=now).items()
        ],
        "receivables": [
            (
                row.currency,
                row.open_count,
                format_amount(row.open_total, row.currency),
                row.overdue_count,
                format_amount(row.overdue_total, row.currency),
            )
            for row in dashboard.receivables(organization, now=now)
        ],
        "overdue": dashboard.oldest_overdue(organization, now=now),
        "due_days": settings.BILLING_INVOICE_DUE_DAYS,
        "usage_charts": usage_charts,
        "usage_as_of": usage_read.as_of,
    }


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    fields = (
        "position",
        "label",
        "period_start",
        "period_end",
        "quantity",
        "late_units",
        "credited_units",
        "unit_amount",
        "amount",
        "discount_amount",
        "tax_amount",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Invoice)
class InvoiceAdmin(MeterlineModelAdmin):
    """Finalized invoices are immutable: every field is read-only; status changes go through the
    actions (mark paid, void)."""

    list_display = (
        "number",
        "customer",
        "billing_reason",
        "status",
        "total_display",
        "period_start",
        "period_end",
    )
    list_filter = ("status", "billing_reason")
    list_select_related = ("customer", "organization")
    search_fields = ("=number", "customer__email", "=customer__external_id")
    show_full_result_count = False
    ordering = ("-created_at",)
    inlines = (InvoiceLineInline, CreditNoteInline)
    actions = ("mark_paid", "void", "void_rebill_fixed")

    def get_readonly_fields(self, request, obj=None):
        return [*(field.name for field in Invoice._meta.fields), "pdf_link"]

    def get_urls(self):
        pdf = path(
            "<uuid:invoice_id>/pdf/",
            self.admin_site.admin_view(self.pdf_view),
            name="billing_invoice_pdf",
        )
        board = path(
            "dashboard/",
            self.admin_site.admin_view(self.dashboard_view),
            name="billing_dashboard",
        )
        return [pdf, board, *super().get_urls()]

    def dashboard_view(self, request):
        """Revenue per month and per product, MRR, usage per meter (90 days), open and
        overdue invoices — of one organization (a selector when there are several)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        organizations = list(Organization.objects.order_by("name"))
        chosen = request.GET.get("organization")
        organization = next((o for o in organizations if str(o.pk) == chosen), None) or (
            organizations[0] if organizations else None
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Billing dashboard",
            "organizations": organizations,
            "organization": organization,
        }
        if organization is not None:
            context.update(dashboard_context(organization, now=timezone.now()))
        return TemplateResponse(request, "admin/billing/dashboard.html", context)

    def pdf_view(self, request, invoice_id):
        invoice = self.get_object(request, str(invoice_id))
        if invoice is None or not self.has_view_permission(request, invoice):
            raise PermissionDenied
        try:
            pdf = documents.invoice_pdf(invoice.pk)
        except BillingError as exc:
            raise Http404(exc.message)
        response = HttpResponse(pdf, content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{documents.filename(invoice)}"'
        return response

    @admin.display(description="PDF")
    def pdf_link(self, obj):
        if obj is None or not obj.is_finalized:
            return "—"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:billing_invoice_pdf", args=[obj.pk]), "Open PDF"
        )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Total")
    def total_display(self, obj):
        return f"{cents(to_minor(obj.total))} {obj.currency}"

    def has_mark_paid_permission(self, request):
        return request.user.has_perm("billing.mark_paid_invoice")

    def has_void_permission(self, request):
        return request.user.has_perm("billing.void_invoice")

    def _apply(self, request, queryset, transition, verb):
        done = 0
        for invoice in queryset:
            try:
                transition(invoice)
                done += 1
            except BillingError as exc:
                self.message_user(request, f"{invoice.number}: {exc.message}", messages.WARNING)
        self.message_user(request, f"{verb} {done} invoice(s).")

    @admin.action(description="Mark paid", permissions=["mark_paid"])
    def mark_paid(self, request, queryset):
        self._apply(request, queryset, invoices.mark_paid, "Marked paid")

    @admin.action(description="Void (usage is billed on the next invoice)", permissions=["void"])
    def void(self, request, queryset):
        self._apply(request, queryset, invoices.void, "Voided")

    @admin.action(description="Void and re-bill its fixed lines too", permissions=["void"])
    def void_rebill_fixed(self, request, queryset):
        self._apply(
            request,
            queryset,
            lambda invoice: invoices.void(invoice, rebill_fixed=True),
            "Voided",
        )

"""Invoices in the admin, their PDF, and the billing dashboard.

An invoice's page is a read-only document, like a billing tool's: a header (number, status,
customer, dates, amounts), its lines, credit notes (and payments, added by the payments app);
the copied columns (seller, tax, usage boundaries) are under "Details". A finalized invoice never
changes, so the page offers no Save; status changes are the list's actions (mark paid, void),
also offered as buttons at the top of the page when they apply to the invoice's status: a button
opens a confirmation page, then runs the same action (same permission, same service) on that one
invoice."""

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from billing import dashboard, documents, invoices
from billing.admin.credit_notes import CreditNoteInline
from billing.admin.display import (
    amount_cell,
    customer_cell,
    day,
    money,
    number,
    span,
    unit_price,
)
from billing.charts import Bar, bar_chart
from billing.errors import BillingError
from billing.models import Invoice, InvoiceLine, InvoiceStatus
from core.admin import MeterlineModelAdmin
from core.display import currency_places
from customers.admin import register_activity_section
from customers.models import Organization

# the session key remembering the organization staff last chose on the dashboard
DASHBOARD_CHOICE = "billing_dashboard_organization"


def compact(amount: Decimal, currency: str) -> str:
    """A bar's label: whole units with separators, or millions/thousands when long."""
    value = abs(amount)
    if value >= 1_000_000:
        text = f"{value / 1_000_000:,.1f}M"
    elif value >= 100_000:
        text = f"{value / 1_000:,.0f}k"
    elif value >= 1_000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:,.{currency_places(currency)}f}"
    return f"\u2212{text}" if amount < 0 else text


def dashboard_context(organization, *, now) -> dict:
    by_currency = defaultdict(list)
    for row in dashboard.revenue_by_month(organization, now=now):
        by_currency[row.currency].append(row)
    revenue = []
    for currency, rows in sorted(by_currency.items()):
        bars = [
            Bar(
                label=f"{row.month:%b %Y}",
                value=row.invoiced,
                tooltip=f"{row.month:%B %Y}: {money(row.invoiced, currency)} invoiced, "
                f"{money(row.paid, currency)} paid",
                value_label=compact(row.invoiced, currency),
            )
            for row in rows
        ]
        table = [
            (f"{row.month:%B %Y}", money(row.invoiced, currency), money(row.paid, currency))
            for row in rows
        ]
        chart = bar_chart(bars, title=f"Revenue per month ({currency})")
        revenue.append((currency, chart, table))
    days = [(now - timedelta(days=n)).date() for n in range(89, -1, -1)]
    usage_charts = []
    usage_read = dashboard.meter_usage(organization, now=now, days=len(days))
    for one in usage_read.series:
        values = [one.values.get(d, Decimal(0)) for d in days]
        bars = [
            Bar(
                label=f"{d:%b %d}" if d.day == 1 else "",
                value=value,
                tooltip=f"{d:%Y-%m-%d}: {number(value)}",
            )
            for d, value in zip(days, values, strict=True)
        ]
        peak = max(values, default=Decimal(0))
        summable = one.func in ("count", "sum")
        usage_charts.append(
            {
                "name": one.meter.name,
                "func": one.func,
                "total": number(sum(values, Decimal(0))) if summable else None,
                "peak": number(peak),
                "today": number(values[-1]) if values else "0",
                "chart": bar_chart(
                    bars, title=f"{one.meter.name} per day", top_label=f"peak {number(peak)}"
                ),
            }
        )
    return {
        "revenue_charts": revenue,
        "products": [
            (row.product, money(row.invoiced, row.currency), row.invoices)
            for row in dashboard.revenue_by_product(organization, now=now)
        ],
        "mrr": [
            money(amount, currency)
            for currency, amount in dashboard.mrr(organization, now=now).items()
        ],
        "receivables": [
            (
                row.currency,
                row.open_count,
                money(row.open_total, row.currency),
                row.overdue_count,
                money(row.overdue_total, row.currency),
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
    verbose_name_plural = "Lines"
    fields = ("description", "qty", "unit_price_display", "amount_display", "discount", "tax")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Description")
    def description(self, line):
        notes = []
        if line.late_units:
            notes.append(f"incl. {number(line.late_units)} late units")
        if line.credited_units:
            notes.append(f"{number(line.credited_units)} units credited")
        if line.proration:
            notes.append("prorated")
        return format_html(
            '{}<div class="ml-sub">{}{}</div>',
            line.label,
            span(line.period_start, line.period_end),
            f" · {', '.join(notes)}" if notes else "",
        )

    @admin.display(description="Qty")
    def qty(self, line):
        return amount_cell(number(line.quantity))

    @admin.display(description="Unit price")
    def unit_price_display(self, line):
        if line.unit_amount is None:
            return "—"
        return amount_cell(unit_price(line.unit_amount, str(line.amount.currency)))

    @admin.display(description="Amount")
    def amount_display(self, line):
        return amount_cell(money(line.amount))

    @admin.display(description="Discount")
    def discount(self, line):
        return amount_cell(money(line.discount_amount))

    @admin.display(description="Tax")
    def tax(self, line):
        return amount_cell(money(line.tax_amount))


STATUS_CLASS = {"open": "open", "paid": "paid", "void": "void", "uncollectible": "void"}

# the invoice's own columns shown under "Details" (the header shows the rest)
DETAIL_FIELDS = (
    "id",
    "organization",
    "billing_reason",
    "billing_name",
    "billing_address",
    "seller_name",
    "seller_address",
    "tax_name",
    "tax_basis_points",
    "tax_inclusive",
    "tax_country",
    "tax_state",
    "usage_snapshot",
    "usage_read_at",
    "late_since_snapshot",
    "late_since_at",
    "created_at",
    "modified_at",
    "emailed_at",
)


@admin.register(Invoice)
class InvoiceAdmin(MeterlineModelAdmin):
    """Finalized invoices are immutable: the page is a read-only document; status changes go
    through the actions (mark paid, void), from the list or from the page's buttons."""

    # the list's actions offered as buttons on an invoice's page, with the statuses each applies
    # to (the services' own rules: invoices.TRANSITIONS)
    page_actions = {
        "mark_paid": invoices.TRANSITIONS[InvoiceStatus.PAID],
        "void": invoices.TRANSITIONS[InvoiceStatus.VOID],
        "void_rebill_fixed": invoices.TRANSITIONS[InvoiceStatus.VOID],
    }
    # what each page action does, said on its confirmation page
    page_action_notes = {
        "mark_paid": "The invoice becomes paid: nothing is charged; the payment is recorded as "
        "received outside Meterline.",
        "void": "The invoice is voided: it keeps its number and lines but is no longer owed. Its "
        "metered usage is billed on the subscription's next invoice; the customer balance it "
        "used is given back.",
        "void_rebill_fixed": "The invoice is voided: it keeps its number and lines but is no "
        "longer owed. Its metered usage and its fixed lines are billed again on the "
        "subscription's next invoice; the customer balance it used is given back.",
    }
    # a button's label where the action's own (the list's) is long
    page_action_buttons = {"void": "Void"}
    # offered on another action's confirmation page rather than as a button of their own
    page_action_variants = {"void": ("void_rebill_fixed",)}
    # page actions with a form page of their own (the action renders it): no confirmation first
    form_actions: tuple[str, ...] = ()

    # five columns that fit beside the sidebar and the filters at 1440 px: the organization
    # under the customer, the period under the invoice date
    list_display = ("number_display", "customer_display", "status_badge", "total_display", "dated")
    list_filter = ("organization", "status", "billing_reason")
    list_select_related = ("customer", "organization")
    search_fields = ("=number", "customer__email", "=customer__external_id")
    show_full_result_count = False
    ordering = ("-created_at",)
    inlines = (InvoiceLineInline, CreditNoteInline)
    actions = ("mark_paid", "void", "void_rebill_fixed")

    def get_readonly_fields(self, request, obj=None):
        return [*(field.name for field in Invoice._meta.fields), "pdf_link", "summary"]

    def get_fieldsets(self, request, obj=None):
        known = {field.name for field in Invoice._meta.fields} | {"pdf_link", "summary"}
        # read-only fields a subclass adds (payments: the collection state) join the header
        added = [name for name in self.get_readonly_fields(request, obj) if name not in known]
        return [
            (None, {"fields": ("summary", *added)}),
            ("Details", {"classes": ("collapse",), "fields": DETAIL_FIELDS}),
        ]

    def has_change_permission(self, request, obj=None):
        # the list's actions need the model's permission; an invoice itself is never edited
        return obj is None and super().has_change_permission(request)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("customer", "organization", "subscription", "product", "discount")
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        invoice = self.get_object(request, object_id)
        extra = {"subtitle": None, "invoice": invoice, **(extra_context or {})}
        if invoice is not None:
            extra["title"] = f"Invoice {invoice.number or '(draft)'}"
            if invoice.is_finalized:
                extra["pdf_url"] = reverse("admin:billing_invoice_pdf", args=[invoice.pk])
            variants = {v for names in self.page_action_variants.values() for v in names}
            extra["page_actions"] = [
                (
                    reverse("admin:billing_invoice_act", args=[invoice.pk, name]),
                    self.page_action_buttons.get(name, label),
                )
                for name, label in self.available_page_actions(request, invoice)
                if name not in variants
            ]
        return super().change_view(request, object_id, form_url, extra)

    def page_action_applies(self, name: str, invoice: Invoice) -> bool:
        return invoice.status in self.page_actions[name]

    def available_page_actions(self, request, invoice) -> list[tuple[str, str]]:
        """(name, label) of the page actions the user may run (the list's permission checks)
        that apply to the invoice."""
        allowed = self.get_actions(request)
        return [
            (name, allowed[name][2])
            for name in self.page_actions
            if name in allowed and self.page_action_applies(name, invoice)
        ]

    def page_action_view(self, request, invoice_id, name):
        """A page button: the list's action `name` on this one invoice. Actions with their own
        form (record a payment, refund) show it at once; the others a confirmation page first.
        Done, it goes back to the invoice's page."""
        invoice = self.get_object(request, str(invoice_id))
        if invoice is None or name not in self.page_actions:
            raise Http404
        allowed = self.get_actions(request)
        if name not in allowed:
            raise PermissionDenied
        action, _, label = allowed[name]
        page = reverse("admin:billing_invoice_change", args=[invoice.pk])
        if not self.page_action_applies(name, invoice):
            status = invoice.get_status_display().lower()
            self.message_user(
                request,
                f"{invoice.number}: “{label}” does not apply to a {status} invoice.",
                messages.WARNING,
            )
            return redirect(page)
        confirmed = request.method == "POST" and "apply" in request.POST
        if name not in self.form_actions and not confirmed:
            alternatives = [
                (reverse("admin:billing_invoice_act", args=[invoice.pk, other]), other_label)
                for other, other_label in self.available_page_actions(request, invoice)
                if other in self.page_action_variants.get(name, ())
            ]
            return TemplateResponse(
                request,
                "admin/billing/invoice/confirm_action.html",
                {
                    **self.admin_site.each_context(request),
                    "title": f"{label}: invoice {invoice.number}",
                    "label": label,
                    "note": self.page_action_notes.get(name, ""),
                    "invoice": invoice,
                    "total": money(invoice.total),
                    "amount_due": money(invoice.amount_due),
                    "invoice_url": page,
                    "alternatives": alternatives,
                    "opts": self.model._meta,
                },
            )
        response = action(self, request, Invoice.objects.filter(pk=invoice.pk))
        return response or redirect(page)

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
        act = path(
            "<uuid:invoice_id>/act/<slug:name>/",
            self.admin_site.admin_view(self.page_action_view),
            name="billing_invoice_act",
        )
        return [pdf, board, act, *super().get_urls()]

    def dashboard_view(self, request):
        """Revenue per month and per product, MRR, usage per meter (90 days), open and
        overdue invoices — of one organization: the one chosen (remembered in the session),
        else the one with the most live subscriptions."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        organizations = list(Organization.objects.order_by("name"))
        by_pk = {str(o.pk): o for o in organizations}
        chosen = request.GET.get("organization")
        if chosen in by_pk:
            request.session[DASHBOARD_CHOICE] = chosen
        else:
            chosen = request.session.get(DASHBOARD_CHOICE)
        organization = by_pk.get(chosen) if chosen else None
        if organization is None and organizations:
            organization = dashboard.busiest_organization()
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

    @admin.display(description="Invoice")
    def summary(self, invoice):
        """The header: who, when, how much — what staff look for first."""
        customer = invoice.customer
        facts = [
            (
                "Customer",
                format_html(
                    '<a href="{}">{}</a>{}',
                    reverse("admin:customers_customer_change", args=[customer.pk]),
                    customer.email,
                    f" · {customer.name}" if customer.name else "",
                ),
            ),
            ("Organization", invoice.organization.name),
        ]
        if invoice.subscription_id:
            facts.append(
                (
                    "Subscription",
                    format_html(
                        '<a href="{}">{}</a>',
                        reverse(
                            "admin:billing_subscription_change", args=[invoice.subscription_id]
                        ),
                        invoice.product.name if invoice.product else "subscription",
                    ),
                )
            )
        facts += [
            ("Billing reason", invoice.get_billing_reason_display()),
            ("Invoice date", day(dashboard.invoice_date(invoice))),
            ("Period", span(invoice.period_start, invoice.period_end)),
        ]
        if invoice.finalized_at:
            due = invoice.finalized_at + timedelta(days=settings.BILLING_INVOICE_DUE_DAYS)
            facts += [("Finalized", day(invoice.finalized_at)), ("Due", day(due))]
        if invoice.paid_at:
            facts.append(("Paid", day(invoice.paid_at)))
        if invoice.voided_at:
            facts.append(("Voided", day(invoice.voided_at)))
        if invoice.discount_id:
            facts.append(("Discount", str(invoice.discount)))
        amounts = [
            ("Subtotal", invoice.subtotal),
            ("Discount", -invoice.discount_amount.amount),
            (documents.tax_label(invoice), invoice.tax),
            ("Total", invoice.total),
        ]
        if invoice.balance_applied.amount:
            amounts.append(("Customer balance applied", -invoice.balance_applied.amount))
        amounts.append(("Amount due", invoice.amount_due))
        if invoice.credited_amount.amount:
            amounts.append(("Credited", invoice.credited_amount))
        if invoice.refunded_amount.amount:
            amounts.append(("Refunded", invoice.refunded_amount))
        currency = invoice.currency
        return format_html(
            '<div class="ml-doc"><div class="ml-doc-head"><span class="ml-doc-number">{}</span>'
            '<span class="ml-status ml-status-{}">{}</span>'
            '<span class="ml-doc-total ml-num">{}</span></div>'
            '<div class="ml-doc-body"><dl class="ml-facts">{}</dl>'
            '<table class="ml-amounts"><tbody>{}</tbody></table></div></div>',
            invoice.number or "Draft",
            STATUS_CLASS.get(invoice.status, "draft"),
            invoice.get_status_display(),
            money(invoice.total),
            format_html_join("", "<dt>{}</dt><dd>{}</dd>", facts),
            format_html_join(
                "",
                '<tr><th scope="row">{}</th><td class="ml-num">{}</td></tr>',
                (
                    (label, money(value if isinstance(value, Decimal) else value.amount, currency))
                    for label, value in amounts
                ),
            ),
        )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return format_html(
            '<span class="ml-status ml-status-{}">{}</span>',
            STATUS_CLASS.get(obj.status, "draft"),
            obj.get_status_display(),
        )

    @admin.display(description="Total", ordering="total")
    def total_display(self, obj):
        return amount_cell(money(obj.total))

    @admin.display(description="Number", ordering="sequence")
    def number_display(self, obj):
        return format_html('<span class="ml-nowrap">{}</span>', obj.number or "Draft")

    @admin.display(description="Customer", ordering="customer__email")
    def customer_display(self, obj):
        return customer_cell(obj.customer, obj.organization)

    @admin.display(description="Invoice date · period", ordering="period_start")
    def dated(self, obj):
        return format_html(
            '<span class="ml-nowrap">{}</span><div class="ml-sub">{}</div>',
            day(dashboard.invoice_date(obj)),
            span(obj.period_start, obj.period_end),
        )

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


RECENT_INVOICES = 10


def invoices_section(customer) -> str:
    """The customer's latest invoices (one range scan of the (customer, -created_at) index) and
    a link to all of them."""
    rows = list(Invoice.objects.filter(customer=customer).order_by("-created_at")[:RECENT_INVOICES])
    if not rows:
        return format_html("<p>{}</p>", "No invoices.")
    all_url = reverse("admin:billing_invoice_changelist") + f"?customer__id__exact={customer.pk}"
    return format_html(
        '<table class="ml-table"><thead><tr><th>Number</th><th>Status</th>'
        '<th class="ml-right">Total</th><th class="ml-right">Amount due</th>'
        "<th>Invoice date</th><th>Period</th></tr></thead><tbody>{}</tbody></table>"
        '<p><a href="{}">All invoices of this customer →</a></p>',
        format_html_join(
            "",
            '<tr><td class="ml-nowrap"><a href="{}">{}</a></td><td>{}</td>'
            '<td class="ml-right ml-num">{}</td><td class="ml-right ml-num">{}</td>'
            '<td class="ml-nowrap">{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:billing_invoice_change", args=[i.pk]),
                    i.number or "Draft",
                    format_html(
                        '<span class="ml-status ml-status-{}">{}</span>',
                        STATUS_CLASS.get(i.status, "draft"),
                        i.get_status_display(),
                    ),
                    money(i.total),
                    money(i.amount_due),
                    day(dashboard.invoice_date(i)),
                    span(i.period_start, i.period_end),
                )
                for i in rows
            ),
        ),
        all_url,
    )


register_activity_section("Invoices", invoices_section, order=20)

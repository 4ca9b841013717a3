"""Staff run billing from the admin: catalog (prices inline with a tier editor), benefits,
discounts, tax rates, subscriptions (current usage and upcoming invoice on the page; close now,
cancel, revoke) and invoices (lines inline; mark paid, void). Every action is guarded by a Django
permission; lists select related rows and never count the whole table."""

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from billing import catalog, cycles, dashboard, documents, invoices, plan_changes, subscriptions
from billing.charts import Bar, bar_chart
from billing.errors import BillingError
from billing.models import (
    Benefit,
    Discount,
    Invoice,
    InvoiceLine,
    Price,
    PriceType,
    Product,
    Subscription,
    TaxRate,
)
from billing.money import format_amount, to_minor
from core.admin import MeterlineModelAdmin
from customers.models import Organization


def units(value: Decimal) -> str:
    """A quantity as staff write it: 1000, 0.5, 0 (never 1E+3 or 0E-12)."""
    return f"{Decimal(value).normalize():f}"


def cents(value) -> str:
    """Minor units → '12.34' for display."""
    return f"{Decimal(value) / 100:,.2f}"


class TiersField(forms.CharField):
    """The tier editor: one tier per line, `up to | unit amount (cents) | flat amount (cents)`;
    the last line's bound is `*` (unbounded). The first line may name the mode: `graduated` or
    `volume`."""

    widget = forms.Textarea(
        attrs={"rows": 4, "cols": 48, "placeholder": "graduated\n10 | 1000 | 200\n* | 500"}
    )

    def prepare_value(self, value):
        if isinstance(value, str) or not value:
            return value or ""
        lines = [value["type"]]
        for tier in value["tiers"]:
            bound = "*" if tier["bound"] is None else str(tier["bound"])
            parts = [bound, str(tier["unit_amount"])]
            if tier.get("flat_amount"):
                parts.append(str(tier["flat_amount"]))
            lines.append(" | ".join(parts))
        return "\n".join(lines)

    def to_python(self, value):
        text = (value or "").strip()
        if not text:
            return None
        rows = [line.strip() for line in text.splitlines() if line.strip()]
        kind = "graduated"
        if rows[0] in ("graduated", "volume"):
            kind, rows = rows[0], rows[1:]
        tiers = []
        for number, row in enumerate(rows, start=1):
            parts = [part.strip() for part in row.split("|")]
            if len(parts) not in (2, 3):
                raise ValidationError(
                    f"Line {number}: expected 'up to | unit amount [| flat amount]'"
                )
            bound = None if parts[0] in ("*", "") else parts[0]
            try:
                tier = {"bound": int(bound) if bound is not None else None, "unit_amount": parts[1]}
                if len(parts) == 3 and parts[2]:
                    tier["flat_amount"] = int(parts[2])
            except ValueError:
                raise ValidationError(f"Line {number}: bounds and flat amounts are whole numbers")
            tiers.append(tier)
        try:
            return catalog.normalize_tiers({"type": kind, "tiers": tiers}, ("tiers",))
        except BillingError as exc:
            raise ValidationError(f"{' → '.join(map(str, exc.field))}: {exc.message}")


class PriceForm(forms.ModelForm):
    tiers = TiersField(required=False)

    class Meta:
        model = Price
        fields = (
            "amount_type",
            "price_amount",
            "meter",
            "unit_amount",
            "tiers",
            "cap_amount",
            "is_archived",
        )

    def clean(self):
        data = super().clean()
        kind = data.get("amount_type")
        if kind == PriceType.FIXED and data.get("price_amount") is None:
            self.add_error("price_amount", "A fixed price needs an amount.")
        if kind in (PriceType.METERED_UNIT, PriceType.METERED_TIERS) and not data.get("meter"):
            self.add_error("meter", "A metered price needs a meter.")
        if kind == PriceType.METERED_UNIT and data.get("unit_amount") is None:
            self.add_error("unit_amount", "A unit price needs a unit amount (cents).")
        if kind == PriceType.METERED_TIERS and not data.get("tiers"):
            self.add_error("tiers", "A tiered price needs tiers.")
        return data


class PriceInline(admin.TabularInline):
    model = Price
    form = PriceForm
    extra = 0
    autocomplete_fields = ("meter",)
    show_change_link = False


@admin.register(Product)
class ProductAdmin(MeterlineModelAdmin):
    list_display = ("name", "organization", "recurring_interval", "currency", "is_archived")
    list_filter = ("is_archived", "recurring_interval", "currency")
    list_select_related = ("organization",)
    search_fields = ("name",)
    show_full_result_count = False
    inlines = (PriceInline,)
    filter_horizontal = ("benefits",)
    readonly_fields = ("created_at", "modified_at")


@admin.register(Benefit)
class BenefitAdmin(MeterlineModelAdmin):
    list_display = ("description", "organization", "meter", "units", "rollover", "is_deleted")
    list_select_related = ("organization", "meter")
    autocomplete_fields = ("meter",)
    search_fields = ("description",)
    show_full_result_count = False


@admin.register(Discount)
class DiscountAdmin(MeterlineModelAdmin):
    list_display = ("name", "organization", "code", "type", "duration", "redemptions_count")
    list_filter = ("type", "duration")
    list_select_related = ("organization",)
    search_fields = ("name", "code")
    filter_horizontal = ("products",)
    readonly_fields = ("redemptions_count", "created_at", "modified_at")
    show_full_result_count = False


@admin.register(TaxRate)
class TaxRateAdmin(MeterlineModelAdmin):
    list_display = ("name", "organization", "country", "state", "basis_points", "inclusive")
    list_filter = ("country", "inclusive")
    list_select_related = ("organization",)
    show_full_result_count = False


class SubscriptionCreateForm(forms.ModelForm):
    started_at = forms.SplitDateTimeField(
        required=False,
        widget=AdminSplitDateTime,
        help_text="Leave empty for now; a past date backdates (periods since then are billed).",
    )

    class Meta:
        model = Subscription
        fields = ("customer", "product", "discount", "started_at", "metadata")


class ChangeProductForm(forms.Form):
    product = forms.ModelChoiceField(queryset=Product.objects.none())
    proration_behavior = forms.ChoiceField(
        choices=[(behavior, behavior) for behavior in plan_changes.BEHAVIORS],
        initial=plan_changes.DEFAULT_BEHAVIOR,
    )

    def __init__(self, *args, organization_ids=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["product"].queryset = Product.objects.filter(
            organization_id__in=organization_ids, is_archived=False
        ).order_by("name")


@admin.register(Subscription)
class SubscriptionAdmin(MeterlineModelAdmin):
    list_display = (
        "id",
        "customer",
        "product",
        "status",
        "current_period_start",
        "current_period_end",
        "cancel_at_period_end",
    )
    list_filter = ("status", "cancel_at_period_end")
    list_select_related = ("customer", "product", "organization")
    search_fields = ("=id", "customer__email", "=customer__external_id")
    autocomplete_fields = ("customer",)
    show_full_result_count = False
    ordering = ("-started_at",)
    actions = ("close_now", "change_product", "cancel_at_period_end", "revoke_now")
    readonly_fields = (
        "organization",
        "customer",
        "product",
        "currency",
        "status",
        "started_at",
        "current_period_start",
        "current_period_end",
        "trial_start",
        "trial_end",
        "cancel_at_period_end",
        "canceled_at",
        "ends_at",
        "ended_at",
        "discount",
        "discounted_invoices",
        "pending_product",
        "pending_requested_at",
        "current_usage",
        "upcoming_invoice",
        "recent_invoices",
    )

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = SubscriptionCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else ()

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("customer", "product", "discount", "started_at", "metadata")
        return (*self.readonly_fields, "metadata")

    def save_model(self, request, obj, form, change):
        if change:
            Subscription.objects.filter(pk=obj.pk).update(metadata=obj.metadata)
            return
        try:
            created = subscriptions.create_subscription(
                customer=form.cleaned_data["customer"],
                product=form.cleaned_data["product"],
                started_at=form.cleaned_data.get("started_at"),
                discount=form.cleaned_data.get("discount"),
                metadata=form.cleaned_data.get("metadata") or {},
            )
        except BillingError as exc:
            raise ValidationError(exc.message)
        obj.pk = created.pk

    @admin.display(description="Current period usage")
    def current_usage(self, obj):
        lines = subscriptions.current_meters([cycles.live_subscriptions().get(pk=obj.pk)])[obj.pk]
        if not lines:
            return "—"
        return format_html(
            "<table><tr><th>Meter</th><th>Consumed</th><th>Late</th><th>Credited</th>"
            "<th>Amount so far</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td></tr>",
                (
                    (
                        line.subscription_price.price.meter.name,
                        units(line.consumed),
                        units(line.late),
                        line.credited,
                        cents(line.amount),
                        obj.currency,
                    )
                    for line in lines
                ),
            ),
        )

    @admin.display(description="Upcoming invoice")
    def upcoming_invoice(self, obj):
        if not obj.is_live:
            return "—"
        draft = subscriptions.upcoming_invoice(obj)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (line.label, units(line.quantity), cents(line.amount), cents(line.tax_amount))
                for line in draft.lines
            ),
        )
        return format_html(
            "<table><tr><th>Line</th><th>Qty</th><th>Amount</th><th>Tax</th></tr>{}</table>"
            "<p>Subtotal {} · discount {} · tax {} · <strong>total {} {}</strong></p>",
            rows,
            cents(draft.subtotal),
            cents(draft.discount_amount),
            cents(draft.tax),
            cents(draft.total),
            obj.currency,
        )

    @admin.display(description="Recent invoices")
    def recent_invoices(self, obj):
        recent = obj.invoices.order_by("-sequence")[:10]
        return (
            format_html_join(
                ", ",
                '<a href="../../../invoice/{}/change/">{}</a> ({})',
                ((i.pk, i.number, i.status) for i in recent),
            )
            or "—"
        )

    def has_close_permission(self, request):
        return request.user.has_perm("billing.close_subscription")

    def has_cancel_permission(self, request):
        return request.user.has_perm("billing.cancel_subscription")

    @admin.action(description="Close due billing periods now", permissions=["close"])
    def close_now(self, request, queryset):
        report = cycles.close_batch(
            list(queryset.values_list("pk", flat=True)), as_of=timezone.now()
        )
        self.message_user(request, f"Closed {report.closed} period(s).")

    def has_switch_plan_permission(self, request):
        return request.user.has_perm("billing.switch_subscription_plan")

    @admin.action(description="Change product (plan change)", permissions=["switch_plan"])
    def change_product(self, request, queryset):
        selected = list(queryset.select_related("customer", "product"))
        form = ChangeProductForm(
            request.POST if "apply" in request.POST else None,
            organization_ids={s.organization_id for s in selected},
        )
        if "apply" in request.POST and form.is_valid():
            done = 0
            for subscription in selected:
                try:
                    plan_changes.change_product(
                        subscription,
                        form.cleaned_data["product"],
                        proration_behavior=form.cleaned_data["proration_behavior"],
                    )
                except BillingError as exc:
                    self.message_user(request, f"{subscription}: {exc.message}", messages.ERROR)
                else:
                    done += 1
            self.message_user(request, f"Changed the product of {done} subscription(s).")
            return None
        return TemplateResponse(
            request,
            "admin/billing/subscription/change_product.html",
            {
                **self.admin_site.each_context(request),
                "title": "Change product",
                "form": form,
                "subscriptions": selected,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Cancel at period end", permissions=["cancel"])
    def cancel_at_period_end(self, request, queryset):
        done = 0
        for subscription in queryset.filter(status__in=["trialing", "active", "past_due"]):
            subscriptions.set_cancel_at_period_end(subscription, True)
            done += 1
        self.message_user(request, f"{done} subscription(s) will end with their current period.")

    @admin.action(description="Revoke now (final invoice for usage so far)", permissions=["cancel"])
    def revoke_now(self, request, queryset):
        done = 0
        for subscription in queryset.filter(status__in=["trialing", "active", "past_due"]):
            subscriptions.revoke(subscription)
            done += 1
        self.message_user(request, f"Revoked {done} subscription(s).")


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
    inlines = (InvoiceLineInline,)
    actions = ("mark_paid", "void")

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

    @admin.action(description="Void", permissions=["void"])
    def void(self, request, queryset):
        self._apply(request, queryset, invoices.void, "Voided")

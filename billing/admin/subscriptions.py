"""Subscriptions in the admin: create (backdating), the current period's usage and upcoming
invoice on the page, why a subscription is flagged, and the actions (close due periods now,
change product, cancel at period end, revoke) — each through the subscription services."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from billing import cycles, plan_changes, subscriptions, thresholds
from billing.admin.display import (
    customer_cell,
    day,
    money,
    money_minor,
    number,
    short_id,
    span,
)
from billing.errors import BillingError
from billing.models import Product, Subscription
from core.admin import MeterlineModelAdmin, add_domain_errors
from customers.admin import register_activity_section


class FlaggedFilter(admin.SimpleListFilter):
    """Subscriptions whose last close failed (the reason is on their page)."""

    title = "billing problem"
    parameter_name = "flagged"

    def lookups(self, request, model_admin):
        return [("yes", "Flagged: not closed")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(billing_error__isnull=False)
        return queryset


class SubscriptionCreateForm(forms.ModelForm):
    started_at = forms.SplitDateTimeField(
        required=False,
        widget=AdminSplitDateTime,
        help_text="Leave empty for now; a past date backdates (periods since then are billed).",
    )

    class Meta:
        model = Subscription
        fields = ("customer", "product", "discount", "started_at", "metadata")


class SubscriptionChangeForm(forms.ModelForm):
    class Meta:
        model = Subscription
        fields = ("spend_threshold", "metadata")
        help_texts = {
            "spend_threshold": "Once the period's metered charges not yet invoiced reach it, they "
            "are invoiced and collected at once. Empty: the product's default.",
        }

    def clean(self):
        data = super().clean()
        try:
            thresholds.validate(data.get("spend_threshold"), self.instance.currency)
        except BillingError as exc:
            add_domain_errors(self, exc, {"spend_threshold_amount": "spend_threshold"})
        return data


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
        "id_display",
        "customer_display",
        "product",
        "status",
        "current_period",
        "cancels",
        "flagged",
    )
    list_filter = (FlaggedFilter, "organization", "status", "cancel_at_period_end")
    list_select_related = ("customer", "product", "organization")
    search_fields = ("=id", "customer__email", "=customer__external_id")
    autocomplete_fields = ("customer",)
    show_full_result_count = False
    ordering = ("-started_at",)
    actions = ("close_now", "change_product", "cancel_at_period_end", "revoke_now")
    readonly_fields = (
        "billing_error",
        "billing_error_at",
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
        kwargs["form"] = SubscriptionCreateForm if obj is None else SubscriptionChangeForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else ()

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("customer", "product", "discount", "started_at", "metadata")
        return (*self.readonly_fields, "spend_threshold", "metadata")

    @admin.display(description="Id", ordering="id")
    def id_display(self, obj):
        return short_id(obj.pk)

    @admin.display(description="Customer", ordering="customer__email")
    def customer_display(self, obj):
        return customer_cell(obj.customer, obj.organization)

    @admin.display(description="Current period", ordering="current_period_start")
    def current_period(self, obj):
        if obj.current_period_start is None or obj.current_period_end is None:
            return "—"
        return span(obj.current_period_start, obj.current_period_end)

    @admin.display(description="Cancels", boolean=True, ordering="cancel_at_period_end")
    def cancels(self, obj):
        return obj.cancel_at_period_end

    @admin.display(description="Flagged", boolean=True)
    def flagged(self, obj):
        return obj.billing_error is not None

    def save_model(self, request, obj, form, change):
        if change:
            subscriptions.set_metadata(obj, form.cleaned_data["metadata"])
            if "spend_threshold" in form.changed_data:
                thresholds.set_subscription_threshold(obj, form.cleaned_data["spend_threshold"])
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
                "<tr><td>{}</td><td class=ml-num>{}</td><td class=ml-num>{}</td>"
                "<td class=ml-num>{}</td><td class=ml-num>{}</td></tr>",
                (
                    (
                        line.price.meter.name,
                        number(line.consumed),
                        number(line.late),
                        number(line.credited),
                        money_minor(line.amount, obj.currency),
                    )
                    for line in lines
                ),
            ),
        )

    @admin.display(description="Upcoming invoice")
    def upcoming_invoice(self, obj):
        if not obj.is_live:
            return "—"
        try:
            draft = subscriptions.upcoming_invoice(obj)
        except BillingError as exc:
            return format_html("<strong>Can't be computed:</strong> {}", exc.message)
        currency = obj.currency
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td class=ml-num>{}</td><td class=ml-num>{}</td>"
            "<td class=ml-num>{}</td></tr>",
            (
                (
                    line.label,
                    number(line.quantity),
                    money_minor(line.amount, currency),
                    money_minor(line.tax_amount, currency),
                )
                for line in draft.lines
            ),
        )
        return format_html(
            "<table><tr><th>Line</th><th>Qty</th><th>Amount</th><th>Tax</th></tr>{}</table>"
            "<p>Subtotal {} · discount {} · tax {} · <strong>total {}</strong></p>",
            rows,
            money_minor(draft.subtotal, currency),
            money_minor(draft.discount_amount, currency),
            money_minor(draft.tax, currency),
            money_minor(draft.total, currency),
        )

    @admin.display(description="Recent invoices")
    def recent_invoices(self, obj):
        recent = obj.invoices.order_by("-sequence")[:10]
        return (
            format_html_join(
                ", ",
                '<a href="../../../invoice/{}/change/">{}</a> ({}, {})',
                ((i.pk, i.number, i.get_status_display().lower(), money(i.total)) for i in recent),
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


RECENT_SUBSCRIPTIONS = 10


def subscriptions_section(customer) -> str:
    """The customer's subscriptions, newest first (one query)."""
    rows = list(
        Subscription.objects.filter(customer=customer)
        .select_related("product")
        .order_by("-started_at")[:RECENT_SUBSCRIPTIONS]
    )
    if not rows:
        return format_html("<p>{}</p>", "No subscriptions.")
    return format_html(
        '<table class="ml-table"><thead><tr><th>Product</th><th>Status</th>'
        "<th>Current period</th><th>Since</th><th>Id</th></tr></thead><tbody>{}</tbody></table>",
        format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:billing_subscription_change", args=[s.pk]),
                    s.product.name,
                    s.get_status_display()
                    + (" · ends with its period" if s.cancel_at_period_end else ""),
                    span(s.current_period_start, s.current_period_end),
                    day(s.started_at),
                    short_id(s.pk),
                )
                for s in rows
            ),
        ),
    )


register_activity_section("Subscriptions", subscriptions_section, order=10)

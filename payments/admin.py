"""Payments in the admin: the payments and credit notes of an invoice (inlines on billing's
invoice page), staff's actions on it (retry now, record a manual payment, refund), the dunning
list, an organization's payment settings, and a customer's payment method (billing's admin shows the balance).

Billing's admin can't know payments (payments sits above billing), so this module replaces
billing's registered invoice admin with a subclass that adds them."""

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.db.models import Q
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from billing.admin.invoices import InvoiceAdmin as BillingInvoiceAdmin
from billing.models import Invoice, InvoiceStatus
from billing.money import format_amount, minor_factor, to_money
from core.admin import MeterlineModelAdmin, ReadOnlyAdminMixin, add_domain_errors
from core.errors import DomainError
from customers.admin import register_activity_section
from metering.admin.events import EstimatedCountPaginator
from payments import collection, manual, refunds
from payments.configuration import resolved
from payments.models import (
    BillingProfile,
    CollectionState,
    InvoiceCollection,
    OrganizationPayments,
    Payment,
    Provider,
    Refund,
    RefundReason,
)


def money(minor: int, currency: str) -> str:
    return format_amount(to_money(minor, currency).amount, currency)


# --- inlines on the invoice ----------------------------------------------------------------------


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class PaymentInline(ReadOnlyInline):
    model = Payment
    fields = ("attempt", "created_at", "trigger", "status", "amount_display", "method", "decline")
    readonly_fields = fields
    ordering = ("attempt",)

    @admin.display(description="Amount")
    def amount_display(self, obj):
        return money(obj.amount, obj.currency)

    @admin.display(description="Method")
    def method(self, obj):
        card = f" {obj.method_brand} •••• {obj.method_last4}" if obj.method_last4 else ""
        reference = f" ({obj.provider_payment_id})" if obj.provider_payment_id else ""
        return f"{obj.get_provider_display()}{card}{reference}"

    @admin.display(description="Decline")
    def decline(self, obj):
        if not obj.decline_reason:
            return "—"
        return f"{obj.decline_reason}: {obj.decline_message or ''}".rstrip(": ")


class RefundInline(ReadOnlyInline):
    """Refunds of the invoice; each succeeded one has its credit note (billing's inline)."""

    model = Refund
    fields = (
        "created_at",
        "status",
        "amount_display",
        "reason",
        "comment",
        "credit_note",
        "provider_refund_id",
        "failure_message",
    )
    readonly_fields = fields
    ordering = ("created_at",)

    @admin.display(description="Amount")
    def amount_display(self, obj):
        return f"{money(obj.amount, obj.currency)} (tax {money(obj.tax_amount, obj.currency)})"


# --- forms of the actions ------------------------------------------------------------------------


def places(currency: str) -> int:
    return len(str(minor_factor(currency))) - 1


class AmountField(forms.DecimalField):
    """An amount in the invoice's currency as staff write it (29.04), kept in minor units."""

    def __init__(self, currency: str, **kwargs):
        self.factor = minor_factor(currency)
        super().__init__(
            min_value=Decimal(0), decimal_places=places(currency), max_digits=17, **kwargs
        )

    def clean(self, value):
        amount = super().clean(value)
        return int(amount * self.factor)


class RecordPaymentForm(forms.Form):
    reference = forms.CharField(
        max_length=200, required=False, help_text="The bank transfer's or cheque's reference."
    )

    def __init__(self, *args, invoice, due, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["amount"] = AmountField(
            invoice.currency,
            initial=f"{to_money(due, invoice.currency).amount:.{places(invoice.currency)}f}",
            help_text=f"In {invoice.currency}: the whole amount due.",
        )


class RefundForm(forms.Form):
    reason = forms.ChoiceField(choices=RefundReason.choices)
    comment = forms.CharField(max_length=500, required=False, widget=forms.Textarea)

    def __init__(self, *args, invoice, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["amount"] = AmountField(invoice.currency, help_text=f"In {invoice.currency}.")
        self.order_fields(["amount", "reason", "comment"])


# --- the invoice page ----------------------------------------------------------------------------


admin.site.unregister(Invoice)


@admin.register(Invoice)
class InvoiceAdmin(BillingInvoiceAdmin):
    """Billing's invoice admin, with the invoice's payments and credit notes and the payment
    actions (each with its own permission)."""

    inlines = (*BillingInvoiceAdmin.inlines, PaymentInline, RefundInline)
    actions = (*BillingInvoiceAdmin.actions, "retry_payment", "record_payment", "refund")
    # the page's buttons (billing's InvoiceAdmin): the statuses the services accept
    page_actions = {
        **BillingInvoiceAdmin.page_actions,
        "record_payment": collection.COLLECTABLE,
        "retry_payment": collection.COLLECTABLE,
        "refund": (InvoiceStatus.PAID,),
    }
    page_action_notes = {
        **BillingInvoiceAdmin.page_action_notes,
        "retry_payment": "The customer's default payment method is charged the amount due now, "
        "whatever the retry schedule says.",
    }
    form_actions = ("record_payment", "refund")
    page_action_buttons = {
        **BillingInvoiceAdmin.page_action_buttons,
        "record_payment": "Record payment",
        "retry_payment": "Retry payment",
    }

    def page_action_applies(self, name, invoice):
        if not super().page_action_applies(name, invoice):
            return False
        if name == "retry_payment":  # refused by collection.retry_now: record it instead
            return resolved(invoice.organization_id)[0] != Provider.MANUAL
        if name == "refund":
            return refunds.left_to_refund(invoice) > 0
        return True

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "collection_display"]

    @admin.display(description="Collection")
    def collection_display(self, obj):
        row = InvoiceCollection.objects.filter(pk=obj.pk).first() if obj else None
        if row is None:
            return "not collected automatically"
        text = f"{row.get_state_display()}; {row.attempts} attempt(s), {row.failures} declined"
        if row.next_attempt_at:
            text += f"; next attempt {row.next_attempt_at:%Y-%m-%d %H:%M} UTC"
        return text

    def has_retry_payment_permission(self, request):
        return request.user.has_perm("payments.retry_payment")

    def has_record_payment_permission(self, request):
        return request.user.has_perm("payments.record_payment")

    def has_refund_permission(self, request):
        return request.user.has_perm("payments.refund_invoice")

    def _log(self, request, invoice, message: str) -> None:
        LogEntry.objects.log_actions(
            user_id=request.user.pk, queryset=[invoice], action_flag=CHANGE, change_message=message
        )

    @admin.action(description="Retry payment now", permissions=["retry_payment"])
    def retry_payment(self, request, queryset):
        for invoice in queryset:
            try:
                payment = collection.retry_now(invoice)
            except DomainError as exc:
                self.message_user(request, f"{invoice.number}: {exc.message}", messages.WARNING)
                continue
            outcome = payment.get_status_display().lower()
            if payment.decline_reason:
                outcome += f" ({payment.decline_reason})"
            self._log(request, invoice, f"Retried payment: attempt {payment.attempt} {outcome}")
            level = messages.SUCCESS if payment.status == "succeeded" else messages.WARNING
            self.message_user(
                request, f"{invoice.number}: attempt {payment.attempt} {outcome}.", level
            )

    def _one(self, request, queryset, title):
        invoices = list(queryset.select_related("customer")[:2])
        if len(invoices) != 1:
            self.message_user(request, f"{title}: select exactly one invoice.", messages.WARNING)
            return None
        return invoices[0]

    def _form_page(self, request, invoice, form, *, title, action, summary):
        return TemplateResponse(
            request,
            "admin/payments/invoice_action.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "form": form,
                "invoice": invoice,
                "action": action,
                "summary": summary,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Record payment (manual)", permissions=["record_payment"])
    def record_payment(self, request, queryset):
        title = "Record payment"
        invoice = self._one(request, queryset, title)
        if invoice is None:
            return None
        due = collection.amount_due(invoice)
        data = request.POST if "apply" in request.POST else None
        form = RecordPaymentForm(data, invoice=invoice, due=due)
        if data is not None and form.is_valid():
            try:
                payment = manual.record_manual_payment(
                    invoice,
                    form.cleaned_data["amount"],
                    form.cleaned_data["reference"],
                    request.user,
                )
            except DomainError as exc:
                add_domain_errors(form, exc)
            else:
                amount = money(payment.amount, payment.currency)
                self._log(request, invoice, f"Recorded a manual payment of {amount}")
                self.message_user(
                    request, f"{invoice.number}: payment of {amount} recorded.", messages.SUCCESS
                )
                return None
        return self._form_page(
            request,
            invoice,
            form,
            title=title,
            action="record_payment",
            summary=f"{invoice.get_status_display()}, due {money(due, invoice.currency)}",
        )

    @admin.action(description="Refund", permissions=["refund"])
    def refund(self, request, queryset):
        title = "Refund"
        invoice = self._one(request, queryset, title)
        if invoice is None:
            return None
        left = refunds.left_to_refund(invoice)
        data = request.POST if "apply" in request.POST else None
        form = RefundForm(data, invoice=invoice)
        if data is not None and form.is_valid():
            try:
                refund = refunds.create_refund(
                    invoice,
                    amount=form.cleaned_data["amount"],
                    reason=form.cleaned_data["reason"],
                    comment=form.cleaned_data["comment"],
                )
            except DomainError as exc:
                add_domain_errors(form, exc)
            else:
                amount = money(refund.amount, refund.currency)
                note = f", credit note {refund.credit_note.number}" if refund.credit_note else ""
                self._log(request, invoice, f"Refunded {amount} ({refund.reason}){note}")
                self.message_user(
                    request, f"{invoice.number}: refunded {amount}{note}.", messages.SUCCESS
                )
                return None
        return self._form_page(
            request,
            invoice,
            form,
            title=title,
            action="refund",
            summary=f"{invoice.get_status_display()}, {money(left, invoice.currency)} left to refund",
        )


# --- dunning -------------------------------------------------------------------------------------


class DunningFilter(admin.SimpleListFilter):
    """Failing collections first: the list opens on them."""

    title = "collection"
    parameter_name = "collection"

    def lookups(self, request, model_admin):
        return [("all", "All collections")]

    def choices(self, changelist):
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Failing",
        }
        yield {
            "selected": self.value() == "all",
            "query_string": changelist.get_query_string({self.parameter_name: "all"}),
            "display": "All collections",
        }

    def queryset(self, request, queryset):
        if self.value() == "all":
            return queryset
        return queryset.filter(
            Q(state=CollectionState.COLLECTING) | Q(state=CollectionState.EXHAUSTED),
            failures__gt=0,
            invoice__status__in=collection.COLLECTABLE,
        )


@admin.register(InvoiceCollection)
class DunningAdmin(ReadOnlyAdminMixin, MeterlineModelAdmin):
    """Dunning: the invoices whose collection is failing, the amount at risk and the next
    retry. The count under the list is bounded (no COUNT(*) over every collection)."""

    list_display = (
        "invoice_link",
        "customer",
        "amount_at_risk",
        "attempts",
        "failures",
        "first_failed_at",
        "next_attempt_at",
        "state",
        "subscription_status",
    )
    list_filter = (DunningFilter, "state")
    list_select_related = ("invoice", "invoice__customer", "invoice__subscription")
    ordering = ("next_attempt_at",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    search_fields = ("=invoice__number", "invoice__customer__email")
    readonly_fields = (
        "invoice",
        "state",
        "attempts",
        "failures",
        "first_failed_at",
        "next_attempt_at",
        "created_at",
        "modified_at",
    )
    fields = readonly_fields

    @admin.display(description="Invoice", ordering="invoice__number")
    def invoice_link(self, obj):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:billing_invoice_change", args=[obj.invoice_id]),
            obj.invoice.number,
        )

    @admin.display(description="Customer")
    def customer(self, obj):
        return obj.invoice.customer

    @admin.display(description="Amount at risk")
    def amount_at_risk(self, obj):
        return money(collection.amount_due(obj.invoice), obj.invoice.currency)

    @admin.display(description="Subscription")
    def subscription_status(self, obj):
        subscription = obj.invoice.subscription
        return subscription.status if subscription else "—"


# --- settings, payments list ---------------------------------------------------------------------


@admin.register(OrganizationPayments)
class OrganizationPaymentsAdmin(MeterlineModelAdmin):
    """How an organization collects; an empty field takes the installation's default."""

    list_display = ("organization", "provider", "collection", "days_until_due", "modified_at")
    list_select_related = ("organization",)
    fields = ("organization", "provider", "collection", "days_until_due")

    def get_readonly_fields(self, request, obj=None):
        return ("organization",) if obj else ()


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdminMixin, MeterlineModelAdmin):
    """Every attempt to collect (read-only: payments change through collection only)."""

    list_display = (
        "created_at",
        "invoice",
        "customer",
        "attempt",
        "trigger",
        "status",
        "amount_display",
        "provider",
        "decline_reason",
    )
    list_filter = ("status", "provider", "trigger")
    list_select_related = ("invoice", "customer")
    ordering = ("-created_at",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    search_fields = ("=provider_payment_id", "=invoice__number")

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Payment._meta.fields]

    @admin.display(description="Amount")
    def amount_display(self, obj):
        return money(obj.amount, obj.currency)


# --- the customer page ---------------------------------------------------------------------------


def customer_payments_section(customer) -> str:
    profile = BillingProfile.objects.filter(customer=customer).first()
    if profile is None or not profile.default_method_id:
        method = "No payment method."
    else:
        expiry = f", expires {profile.exp_month:02d}/{profile.exp_year}" if profile.exp_year else ""
        method = (
            f"Default method: {profile.brand} •••• {profile.last4}{expiry} "
            f"({profile.get_provider_display()} {profile.provider_customer_id})"
        )
    return format_html('<p class="payment-method">{}</p>', method)


register_activity_section("Payment method", customer_payments_section)

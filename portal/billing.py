"""What the portal shows of billing, read and changed through billing's own services.

This is the only portal module that imports billing. Every object is looked up among the
signed-in customer's own rows (an id of another customer or organization is simply not found),
and every number comes from billing's services — the subscription's current-period meters and
the upcoming invoice — so the portal shows exactly what the API answers and the close will bill.
"""

import decimal
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models import Prefetch, Q
from django.utils import timezone
from djmoney.money import Money

from billing import credits, cycles, documents, subscriptions, thresholds
from billing.documents import ADDRESS_FIELDS, tax_label
from billing.errors import SubscriptionStateError
from billing.invoices import InvoiceDraft, LineDraft
from billing.models import (
    LIVE_STATUSES,
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Subscription,
)
from billing.money import minor_factor, to_money
from customers.models import Customer
from portal.errors import SubscriptionNotChangeable
from portal.extensions import ChargeEstimate, Period


def _money(minor: int, currency: str) -> Money:
    """billing's minor units as django-money's Money, which formats like the stored amounts."""
    amount = to_money(minor, currency)
    return Money(amount.amount, currency)


def _live_subscriptions(customer: Customer):
    return cycles.live_subscriptions().filter(
        customer=customer, organization_id=customer.organization_id, status__in=LIVE_STATUSES
    )


# --- extension points (registered in PortalConfig.ready) --------------------------------------


def estimate_charges(*, customer: Customer, meters) -> ChargeEstimate | None:
    """Per meter, the amount its metered lines of the customer's live subscriptions bill so far
    (the subscription's current-period `meters`, before discount and tax); the total is their
    sum. None when no live subscription prices usage. With subscriptions in several currencies
    there is no single total (per-meter amounts in one currency are still shown)."""
    live = list(_live_subscriptions(customer).order_by("started_at"))
    if not live:
        return None
    currency_of = {subscription.pk: subscription.currency for subscription in live}
    # meter id -> currency -> minor units
    by_meter: dict[uuid.UUID, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for subscription_id, lines in subscriptions.current_meters(live).items():
        for line in lines:
            meter_id = line.meter_id
            by_meter[meter_id][currency_of[subscription_id]] += line.amount
    if not by_meter:
        return None
    charges = {
        meter_id: _money(amounts[currency], currency)
        for meter_id, amounts in by_meter.items()
        if len(amounts) == 1
        for currency in amounts
    }
    currencies = {currency for amounts in by_meter.values() for currency in amounts}
    total = None
    if len(currencies) == 1:
        (currency,) = currencies
        total = _money(sum(a[currency] for a in by_meter.values()), currency)
    return ChargeEstimate(by_meter=charges, total=total)


def current_periods(*, customer: Customer, meters) -> dict | None:
    """meter id → the current period of the customer's live subscription that prices the meter
    (the earliest-started one if several do), else of the customer's earliest-started live
    subscription, so that every meter of the page covers the same billing period. One query for
    any number of meters; None without a live subscription."""
    live = list(
        Subscription.objects.filter(customer=customer, status__in=LIVE_STATUSES)
        .order_by("started_at", "pk")
        .values_list("pk", "current_period_start", "current_period_end")
        .annotate(
            priced=ArrayAgg(
                "subscription_prices__price__meter_id",
                filter=Q(subscription_prices__ends_at__isnull=True),
                default=[],
            )
        )
    )
    if not live:
        return None
    _, first_start, first_end, _ = live[0]
    periods = {}
    for meter in meters:
        pricing = next((row for row in live if meter.pk in row[3]), None)
        if pricing is not None:
            periods[meter.pk] = Period(pricing[1], pricing[2], billed=True)
        else:
            periods[meter.pk] = Period(first_start, first_end)
    return periods


def credit_grants(*, customer: Customer, meters) -> dict | None:
    """meter id → the ledger's grants (packs, staff grants) of the customer's meters with units
    left, earliest expiry first (the order they are used in). What is left is net of what the
    current period's close would draw so far, as the meter's "credits left" is; that takes a
    measure of the current period, made only when some grant has something left."""
    now = timezone.now()
    meter_ids = [m.meter_id for m in meters]
    found = credits.grant_balances(customer.pk, meter_ids, now=now)
    if not found:
        return None
    live = list(_live_subscriptions(customer))
    planned = subscriptions.current_credit_draws(live) if live else {}
    return credits.net_of_draws(found, planned)


# --- subscriptions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpcomingLine:
    label: str
    consumed_units: object
    credited_units: int
    late_units: object
    corrected_events: int
    quantity: object
    metered: bool
    amount: Money
    discount_amount: Money
    tax_amount: Money


@dataclass(frozen=True)
class UpcomingInvoice:
    """Billing's upcoming-invoice draft with its minor-unit amounts as Money."""

    lines: list[UpcomingLine]
    subtotal: Money
    discount_amount: Money
    net: Money
    tax: Money
    tax_inclusive: bool
    total: Money
    discount_name: str | None

    @classmethod
    def from_draft(cls, draft: InvoiceDraft) -> "UpcomingInvoice":
        def money(minor: int) -> Money:
            return _money(minor, draft.currency)

        def line(item: LineDraft) -> UpcomingLine:
            return UpcomingLine(
                label=item.label,
                consumed_units=item.consumed_units,
                credited_units=item.credited_units,
                late_units=item.late_units,
                corrected_events=item.corrected_events,
                quantity=item.quantity,
                metered=item.meter_id is not None,
                amount=money(item.amount),
                discount_amount=money(item.discount_amount),
                tax_amount=money(item.tax_amount),
            )

        return cls(
            lines=[line(item) for item in draft.lines],
            subtotal=money(draft.subtotal),
            discount_amount=money(draft.discount_amount),
            net=money(draft.net),
            tax=money(draft.tax),
            tax_inclusive=bool(draft.tax_rate and draft.tax_rate.inclusive),
            total=money(draft.total),
            discount_name=draft.discount.name if draft.discount and draft.discount_amount else None,
        )


@dataclass(frozen=True)
class ThresholdView:
    """A subscription's spend threshold and where its current period stands against it."""

    threshold: Money
    uninvoiced: Money  # usage charges of the period no invoice billed yet (before discount, tax)
    invoices: list[Invoice]  # this period's threshold invoices, oldest first

    @property
    def invoiced(self) -> Money:
        """What this period's threshold invoices billed in all (their totals)."""
        total = sum((invoice.total for invoice in self.invoices), Money(0, self.threshold.currency))
        return Money(total.amount, self.threshold.currency)


@dataclass(frozen=True)
class SubscriptionView:
    subscription: Subscription
    upcoming: UpcomingInvoice
    threshold: ThresholdView | None = None


def _as_money(amount) -> Money:
    return Money(amount.amount, str(amount.currency))


def customer_subscriptions(customer: Customer) -> list[SubscriptionView]:
    """The customer's live subscriptions, each with its upcoming invoice and, when a spend
    threshold is in force, the period's charges not invoiced yet and its threshold invoices."""
    live = list(_live_subscriptions(customer).order_by("started_at"))
    progress = thresholds.progress(live)
    views = []
    for subscription in live:
        found = progress.get(subscription.pk)
        views.append(
            SubscriptionView(
                subscription,
                UpcomingInvoice.from_draft(subscriptions.upcoming_invoice(subscription)),
                None
                if found is None
                else ThresholdView(
                    _as_money(found.threshold),
                    _as_money(found.uninvoiced),
                    [_labelled(invoice) for invoice in found.invoices],
                ),
            )
        )
    return views


def set_cancel_at_period_end(
    customer: Customer, subscription_id: uuid.UUID, *, cancel: bool
) -> Subscription | None:
    """Cancel the customer's own subscription at the end of its period, or undo that. None when
    the id is not one of the customer's subscriptions."""
    subscription = Subscription.objects.filter(
        pk=subscription_id, customer=customer, organization_id=customer.organization_id
    ).first()
    if subscription is None:
        return None
    try:
        return subscriptions.set_cancel_at_period_end(subscription, cancel)
    except SubscriptionStateError as error:
        raise SubscriptionNotChangeable(error.message) from error


# --- invoices -------------------------------------------------------------------------------------

# an invoice the customer can still pay (an uncollectible one is still owed)
PAYABLE_STATUSES = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)


def _invoices(customer: Customer):
    # drafts are never shown: an invoice reaches the customer once it is finalized
    return (
        Invoice.objects.filter(customer=customer, organization_id=customer.organization_id)
        .exclude(status=InvoiceStatus.DRAFT)
        .select_related("product")
    )


def status_label(invoice: Invoice) -> str:
    """The status as the API's order status names it: a paid invoice with refunds is
    "Partially refunded" or "Refunded"."""
    if invoice.status == InvoiceStatus.PAID and invoice.refunded_amount.amount:
        return "Refunded" if invoice.is_refunded else "Partially refunded"
    return invoice.get_status_display()


# what an invoice is for, in the customer's words
REASON_LABELS = {
    "subscription_create": "first period",
    "subscription_cycle": "renewal and usage",
    "subscription_update": "plan change",
    "spend_threshold": "usage so far",
}


def _labelled(invoice: Invoice | None) -> Invoice | None:
    if invoice is not None:
        invoice.status_label = status_label(invoice)
        invoice.reason_label = REASON_LABELS.get(
            invoice.billing_reason, invoice.get_billing_reason_display()
        )
    return invoice


def customer_invoices(customer: Customer) -> list[Invoice]:
    return [_labelled(i) for i in _invoices(customer).order_by("-created_at", "-sequence")]


def own_invoice(customer: Customer, invoice_id: uuid.UUID) -> Invoice | None:
    return _labelled(
        _invoices(customer)
        .select_related("subscription", "organization", "customer")
        .prefetch_related(Prefetch("lines", queryset=InvoiceLine.objects.order_by("position")))
        .filter(pk=invoice_id)
        .first()
    )


def unit_price(unit_amount: decimal.Decimal | None, currency: str) -> str | None:
    """A metered line's rate (exact minor units per unit) in the currency, with the digits it
    has and at least the currency's: 0.5 US cents → "$0.005", 25 → "$0.25"."""
    if unit_amount is None:
        return None
    major = (decimal.Decimal(unit_amount) / minor_factor(currency)).normalize()
    return str(Money(major, currency, format_options={"decimal_quantization": False}))


@dataclass(frozen=True)
class DocumentLine:
    label: str
    period_start: datetime
    period_end: datetime
    proration: bool
    metered: bool
    quantity: decimal.Decimal
    consumed_units: decimal.Decimal
    credited_units: int
    late_units: decimal.Decimal
    corrected_events: int
    unit_price: str | None
    amount: Money


@dataclass(frozen=True)
class InvoiceDocument:
    """The invoice page: what the PDF says, from what the invoice copied when it was issued."""

    invoice: Invoice
    seller_name: str
    seller_address: list[str]
    bill_to: str
    bill_to_address: list[str]
    bill_to_email: str | None  # left out when it is already the bill-to name
    issued_at: datetime
    lines: list[DocumentLine]
    tax_label: str
    credit_notes: list[CreditNote]


def invoice_document(invoice: Invoice) -> InvoiceDocument:
    customer = invoice.customer
    address = invoice.billing_address or {}
    bill_to = invoice.billing_name or customer.name or customer.email
    return InvoiceDocument(
        invoice=invoice,
        seller_name=invoice.seller_name or invoice.organization.name,
        seller_address=[
            line.strip() for line in invoice.seller_address.splitlines() if line.strip()
        ],
        bill_to=bill_to,
        bill_to_address=[str(address[key]) for key in ADDRESS_FIELDS if address.get(key)],
        bill_to_email=customer.email if customer.email != bill_to else None,
        issued_at=invoice.finalized_at or invoice.created_at,
        lines=[
            DocumentLine(
                label=line.label,
                period_start=line.period_start,
                period_end=line.period_end,
                proration=line.proration,
                metered=line.meter_id is not None,
                quantity=line.quantity,
                consumed_units=line.consumed_units,
                credited_units=line.credited_units,
                late_units=line.late_units,
                corrected_events=line.corrected_events,
                unit_price=unit_price(line.unit_amount, invoice.currency),
                amount=line.amount,
            )
            for line in invoice.lines.all()
        ],
        tax_label=tax_label(invoice),
        credit_notes=list(invoice.credit_notes.order_by("created_at", "sequence")),
    )


def invoice_pdf(invoice: Invoice) -> tuple[str, bytes]:
    """(file name, bytes) of the invoice's PDF: the document billing stores once and emails."""
    return documents.filename(invoice), documents.invoice_pdf(invoice.pk)


# --- credit notes ---------------------------------------------------------------------------------


def _credit_notes(customer: Customer):
    return CreditNote.objects.filter(
        customer=customer, organization_id=customer.organization_id
    ).select_related("invoice")


def customer_credit_notes(customer: Customer) -> list[CreditNote]:
    return list(_credit_notes(customer).order_by("-created_at", "-sequence"))


def own_credit_note(customer: Customer, credit_note_id: uuid.UUID) -> CreditNote | None:
    return _credit_notes(customer).filter(pk=credit_note_id).first()


def credit_note_pdf(note: CreditNote) -> tuple[str, bytes]:
    """(file name, bytes) of the credit note's PDF, the document billing stores and emails."""
    return documents.credit_note_filename(note), documents.credit_note_pdf(note.pk)

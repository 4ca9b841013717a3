"""What the portal shows and does of payments, through the payments app's services.

This is the only portal module that imports payments. Invoices are looked up among the signed-in
customer's own (portal.billing), payments among that invoice's, and a setup session must be the
customer's at the provider: any other id is simply not found."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from djmoney.money import Money

from billing.models import Invoice
from billing.money import to_money
from payments import self_service
from payments.configuration import resolved
from payments.errors import PaymentError
from payments.models import (
    BillingProfile,
    InvoiceCollection,
    Payment,
    PaymentStatus,
    Provider,
    Refund,
)
from payments.self_service import NotPayable, SetupSessionNotFound

# the payments refusals the views handle
__all__ = ["NotPayable", "PaymentError", "SetupSessionNotFound"]

STRIPE_JS = "https://js.stripe.com/v3/"


def stripe_js_url() -> str:
    """Stripe.js, or localstripe's stand-in beside its API when the API is not Stripe's."""
    if settings.STRIPE_JS_URL:
        return settings.STRIPE_JS_URL
    if settings.STRIPE_API_BASE:
        return f"{settings.STRIPE_API_BASE.rstrip('/')}/js.stripe.com/v3/"
    return STRIPE_JS


def cards_accepted(organization) -> bool:
    provider, _, _ = resolved(organization.pk)
    return provider != Provider.MANUAL


def default_method(customer) -> BillingProfile | None:
    return self_service.default_method(customer)


@dataclass(frozen=True)
class CardSetup:
    client_secret: str
    publishable_key: str
    script_url: str


def start_card_setup(customer) -> CardSetup:
    session = self_service.start_card_setup(customer)
    return CardSetup(
        client_secret=session.client_secret,
        publishable_key=settings.STRIPE_PUBLISHABLE_KEY,
        script_url=stripe_js_url(),
    )


def save_card(customer, setup_session_id: str) -> tuple[BillingProfile, list[Payment]]:
    return self_service.save_confirmed_card(customer, setup_session_id)


def pay_now(invoice: Invoice) -> Payment:
    return self_service.pay_now(invoice)


def invoice_payment(invoice: Invoice, payment_id: str | None) -> Payment | None:
    """One payment of this invoice (the outcome shown after "Pay now"); None for anything else."""
    try:
        pk = uuid.UUID(payment_id or "")
    except ValueError:
        return None
    return Payment.objects.filter(pk=pk, invoice=invoice).first()


def payment_succeeded(payment: Payment) -> bool:
    return payment.status == PaymentStatus.SUCCEEDED


def due_dates(invoice_ids) -> dict[uuid.UUID, datetime]:
    """invoice id → the date it is due, for invoices sent to be paid by the customer
    (send_invoice collection); charged or manually collected invoices have none. One query."""
    return dict(
        InvoiceCollection.objects.filter(
            invoice_id__in=invoice_ids, due_at__isnull=False
        ).values_list("invoice_id", "due_at")
    )


@dataclass(frozen=True)
class PaymentRow:
    created_at: datetime
    amount: Money
    status: str
    method: str  # "Visa ending in 4242", "Manual (bank transfer, cheque)"
    message: str  # a decline's reason, shown to the customer


def invoice_payments(invoice: Invoice) -> list[PaymentRow]:
    """The invoice's payment attempts, oldest first (those never attempted left out)."""
    rows = []
    for payment in Payment.objects.filter(invoice=invoice, not_attempted=False).order_by(
        "created_at"
    ):
        if payment.method_last4:
            method = f"{payment.method_brand.title() or 'Card'} ending in {payment.method_last4}"
        else:
            method = payment.get_provider_display()
        rows.append(
            PaymentRow(
                created_at=payment.settled_at or payment.created_at,
                amount=Money(to_money(payment.amount, payment.currency).amount, payment.currency),
                status=payment.get_status_display(),
                method=method,
                message=(payment.decline_message or "")
                if payment.status == PaymentStatus.FAILED
                else "",
            )
        )
    return rows


@dataclass(frozen=True)
class RefundRow:
    created_at: datetime
    amount: Money
    status: str
    reason: str
    credit_note: object | None  # billing's CreditNote, once the refund succeeded


def invoice_refunds(invoice: Invoice) -> list[RefundRow]:
    """The invoice's refunds, oldest first, each with its credit note when it has one."""
    refunds = Refund.objects.filter(invoice=invoice).select_related("credit_note")
    return [
        RefundRow(
            created_at=refund.created_at,
            amount=Money(to_money(refund.amount, refund.currency).amount, refund.currency),
            status=refund.get_status_display(),
            reason=refund.get_reason_display(),
            credit_note=refund.credit_note,
        )
        for refund in refunds.order_by("created_at")
    ]


@dataclass(frozen=True)
class PastDueBanner:
    amounts: list[Money]
    next_retry_at: datetime | None
    invoice_id: uuid.UUID | None  # the oldest unpaid one, for the "Pay now" link


def past_due_banner(customer) -> PastDueBanner | None:
    state = self_service.past_due(customer)
    if state is None:
        return None
    amounts = [
        Money(to_money(minor, currency).amount, currency)
        for currency, minor in sorted(state.amounts.items())
    ]
    return PastDueBanner(
        amounts=amounts,
        next_retry_at=state.next_retry_at,
        invoice_id=state.invoice_ids[0] if state.invoice_ids else None,
    )

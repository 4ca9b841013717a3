"""What a customer does about paying, from the portal: save the card a setup session confirmed,
pay an open invoice now, and what is at risk while a subscription is past due.

Paying now goes through collection's own attempt (the invoice's collection row lock, the
pending payment recorded before the provider call, the per-attempt idempotency key), so a
click racing the scheduled job or a second click charges at most once.

A customer's attempt counts in the invoice's dunning schedule like any retry."""

from dataclasses import dataclass
from datetime import datetime

from billing.models import Invoice, SubscriptionStatus
from payments import collection, methods, providers
from payments.configuration import resolved
from payments.errors import PaymentError, PaymentMethodError, ProviderError
from payments.models import (
    BillingProfile,
    CollectionState,
    InvoiceCollection,
    Payment,
    PaymentTrigger,
    Provider,
)


class SetupSessionNotFound(PaymentError):
    """Not a setup session of this customer (another customer's id reads as unknown)."""

    type = "not_found"


class NotPayable(PaymentError):
    """The invoice can't be paid now: not open, no payment method, or an attempt under way."""

    def __init__(self, message: str, *, reason: str, **kw):
        super().__init__(message, **kw)
        self.reason = reason


def start_card_setup(customer):
    """A setup session for the provider's card element (creates the provider customer on first
    need)."""
    return methods.create_setup_session(customer)


def default_method(customer) -> BillingProfile | None:
    profile = BillingProfile.objects.filter(customer=customer).first()
    return profile if profile is not None and profile.default_method_id else None


def save_confirmed_card(customer, setup_session_id: str) -> tuple[BillingProfile, list[Payment]]:
    """The method of a setup session the customer's browser confirmed becomes the default, and
    the customer's failed invoices are retried at once. The session is read back from the
    provider: the browser's word for it is only its id."""
    profile = BillingProfile.objects.filter(customer=customer).first()
    if profile is None or not profile.provider_customer_id:
        raise SetupSessionNotFound("No card setup was started", field=("setup_intent",))
    provider = providers.get(profile.provider)
    try:
        session = provider.retrieve_setup_session(setup_session_id)
    except PaymentMethodError as error:
        raise SetupSessionNotFound(error.message, field=("setup_intent",)) from error
    if session.provider_customer_id != profile.provider_customer_id:
        raise SetupSessionNotFound(
            f"No such setup session: '{setup_session_id}'", field=("setup_intent",)
        )
    if not session.succeeded or not session.method_id:
        raise PaymentMethodError("The card was not confirmed", field=("setup_intent",))
    profile = methods.set_default_method(customer, session.method_id)
    return profile, collection.retry_after_new_method(customer)


def pay_now(invoice: Invoice) -> Payment:
    """Charge the customer's default method for the invoice at once: staff's "retry now"
    (collection's own attempt) with the customer's trigger. A provider that fails to answer is
    the provider's error; everything else that stops it is a `NotPayable` with its reason."""
    provider, _, _ = resolved(invoice.organization_id)
    if provider == Provider.MANUAL:
        raise NotPayable("Invoices are paid by bank transfer here", reason="no_cards")
    if invoice.status not in collection.COLLECTABLE:
        raise NotPayable("This invoice is not open", reason="not_open")
    if default_method(invoice.customer) is None:
        raise NotPayable("There is no payment method to charge", reason="no_method")
    try:
        return collection.retry_now(invoice, trigger=PaymentTrigger.RETRY_CUSTOMER)
    except ProviderError:
        raise
    except PaymentError as error:
        invoice.refresh_from_db(fields=["status"])
        reason = "not_open" if invoice.status not in collection.COLLECTABLE else "in_progress"
        raise NotPayable(error.message, reason=reason) from error


@dataclass(frozen=True)
class PastDue:
    """A customer's past-due subscriptions: what their unpaid invoices still owe (minor units
    per currency) and the next scheduled retry."""

    amounts: dict[str, int]
    next_retry_at: datetime | None
    invoice_ids: list


def past_due(customer) -> PastDue | None:
    """None unless a subscription of the customer is past due."""
    rows = list(
        InvoiceCollection.objects.filter(
            invoice__customer=customer,
            invoice__subscription__status=SubscriptionStatus.PAST_DUE,
            invoice__status__in=collection.COLLECTABLE,
            failures__gt=0,
        )
        .select_related("invoice")
        .order_by("invoice__created_at")
    )
    if not rows and not customer.subscriptions.filter(status=SubscriptionStatus.PAST_DUE).exists():
        return None
    amounts: dict[str, int] = {}
    for row in rows:
        currency = row.invoice.currency
        amounts[currency] = amounts.get(currency, 0) + collection.amount_due(row.invoice)
    retries = [
        row.next_attempt_at
        for row in rows
        if row.state == CollectionState.COLLECTING and row.next_attempt_at
    ]
    return PastDue(
        amounts=amounts,
        next_retry_at=min(retries) if retries else None,
        invoice_ids=[row.invoice_id for row in rows],
    )

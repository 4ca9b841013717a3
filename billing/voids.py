"""What voiding an invoice gives back, so that a void never silently drops usage:

- **count/sum** meters: the units its metered lines billed become unbilled again — the span's
  `billed_units` goes down by them — and the next close bills them with that period's usage
  (exactly those units: the close bills the value less what is billed).
- **avg/min/max/unique** meters: a value over one period's set can't be added to another
  period's, so each metered line is carried as it was priced, with its units, as a pending item
  of the subscription's next invoice.
- **fixed lines** (fixed prices, prorations, carried credits): only if staff choose so
  (`rebill_fixed`), as pending items too.
- the **customer balance** it spent goes back to the customer.
- a **spend-threshold invoice** of the subscription's still open period gives its usage back by
  not counting any more: the period's next threshold invoice, or its close, nets only the
  threshold invoices that are not void (`billing.metered.threshold_tallies`), so nothing is
  carried or unbilled; the subscription's `threshold_version` changes so that a close which
  measured the period before the void measures it again. Once that period is closed, such an
  invoice's usage is released like any other's.

Runs inside the void's transaction, under the invoice's row lock. The cycle close adds what it
bills to `billed_units` (not an absolute write), so a void committing while a close is running
keeps its release."""

from decimal import Decimal

from django.db.models import F

from billing import balance
from billing.metered import is_additive
from billing.models import (
    LIVE_STATUSES,
    BillingReason,
    Invoice,
    InvoiceLine,
    PendingInvoiceItem,
    Subscription,
    SubscriptionPrice,
)
from billing.money import to_minor


def release(invoice: Invoice, *, rebill_fixed: bool = False) -> None:
    # the subscription's row lock before the balance's lock, the order closes take them in
    netted = invoice.billing_reason == BillingReason.SPEND_THRESHOLD and _period_open(invoice)
    spent = to_minor(invoice.balance_applied)
    if spent:
        balance.credit(invoice.customer_id, invoice.currency, spent, invoice=invoice)
    if invoice.subscription_id is None or netted:
        return
    lines = InvoiceLine.objects.filter(invoice=invoice).select_related("meter", "price")
    for line in lines.order_by("position"):
        if line.meter_id is None:
            if rebill_fixed:
                _carry(invoice, line, label=f"{line.label} (re-billed from {invoice.number})")
        elif is_additive(line.meter):
            _unbill(invoice, line)
        elif line.quantity:
            _carry(invoice, line, label=f"{line.label} (usage of voided {invoice.number})")


def _period_open(invoice: Invoice) -> bool:
    """The invoice's period is still the subscription's current one (read under the
    subscription's row lock, which closes and threshold invoices take too); if so, the period's
    threshold invoices changed."""
    current = (
        Subscription.objects.select_for_update()
        .filter(pk=invoice.subscription_id)
        .values("status", "current_period_start")
        .first()
    )
    is_open = (
        current is not None
        and current["status"] in LIVE_STATUSES
        and current["current_period_start"] == invoice.period_start
    )
    if is_open:
        Subscription.objects.filter(pk=invoice.subscription_id).update(
            threshold_version=F("threshold_version") + 1
        )
    return is_open


def _unbill(invoice: Invoice, line: InvoiceLine) -> None:
    """The line's billable units (after the period's credits) go back to the price's span that
    covers the line's period, the latest that starts before it ends."""
    units = line.quantity
    if not units:
        return
    span = (
        SubscriptionPrice.objects.filter(
            subscription_id=invoice.subscription_id,
            price_id=line.price_id,
            starts_at__lt=line.period_end,
        )
        .order_by("-starts_at", "-pk")
        .first()
    )
    if span is not None:
        SubscriptionPrice.objects.filter(pk=span.pk).update(
            billed_units=F("billed_units") - Decimal(units)
        )


def _carry(invoice: Invoice, line: InvoiceLine, *, label: str) -> None:
    PendingInvoiceItem.objects.create(
        subscription_id=invoice.subscription_id,
        label=label[:300],
        price=line.price,
        meter=line.meter,
        quantity=line.quantity,
        period_start=line.period_start,
        period_end=line.period_end,
        amount=line.amount,
        proration=line.proration,
    )

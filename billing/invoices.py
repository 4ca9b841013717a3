"""Invoices: drafts computed from lines (discount spread, per-line tax, totals), finalization
with the organization's next gapless number, and the status transitions after it
(open → paid | void). A finalized invoice's lines and amounts never change, and it copies what
it shows — the seller, the tax rate's name and terms, each line's price terms — so editing the
organization, a tax rate or a price later never changes an issued invoice or its document."""

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from billing import balance, discounts, signals, taxes, voids
from billing.errors import InvoiceStateError
from billing.models import (
    CreditNote,
    Discount,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Price,
    TaxRate,
)
from billing.money import to_minor, to_money
from core import audit


@dataclass(frozen=True)
class LineDraft:
    label: str
    period_start: datetime
    period_end: datetime
    amount: int  # minor units, before discount and tax
    quantity: Decimal = Decimal(1)
    price: Price | None = None
    price_terms: dict | None = None  # what the line copies of its price (catalog.price_terms)
    meter_id: object = None
    unit_amount: Decimal | None = None
    consumed_units: Decimal = Decimal(0)
    credited_units: int = 0
    late_units: Decimal = Decimal(0)
    corrected_events: int = 0  # usage corrections of an invoiced period this line bills
    proration: bool = False
    discount_amount: int = 0
    tax_amount: int = 0


@dataclass
class InvoiceDraft:
    currency: str
    lines: list[LineDraft]
    discount: Discount | None = None
    tax_rate: TaxRate | None = None
    subtotal: int = 0
    discount_amount: int = 0
    net: int = 0
    tax: int = 0
    total: int = 0
    extra: dict = field(default_factory=dict)


def compute(
    *, currency: str, lines: list[LineDraft], discount: Discount | None, tax_rate: TaxRate | None
) -> InvoiceDraft:
    """subtotal − discount = net; net + exclusive tax = total. The discount is spread over the
    lines, tax is computed per line on its discounted amount."""
    subtotal = sum(line.amount for line in lines)
    discount_total = discounts.invoice_discount(discount, subtotal) if discount else 0
    shares = discounts.spread(discount_total, [line.amount for line in lines])
    done, tax_total, exclusive = [], 0, 0
    for line, share in zip(lines, shares, strict=True):
        tax = taxes.line_tax(line.amount - share, tax_rate)
        tax_total += tax
        if tax_rate is not None and not tax_rate.inclusive:
            exclusive += tax
        done.append(replace(line, discount_amount=share, tax_amount=tax))
    net = subtotal - discount_total
    return InvoiceDraft(
        currency=currency,
        lines=done,
        discount=discount,
        tax_rate=tax_rate,
        subtotal=subtotal,
        discount_amount=discount_total,
        net=net,
        tax=tax_total,
        total=net + exclusive,
    )


# One statement: creates the organization's counter or increments it, holding its row lock
# until the finalizing transaction ends (a rollback takes the number back: no gaps).
NEXT_NUMBER_SQL = """
INSERT INTO billing_invoicecounter AS c (organization_id, prefix, last_number) VALUES (%s, %s, 1)
ON CONFLICT (organization_id) DO UPDATE SET last_number = c.last_number + 1
RETURNING prefix, last_number
"""


def _prefix(organization) -> str:
    letters = re.sub(r"[^A-Za-z0-9]", "", organization.name).upper()
    return (letters[:6] or "INV").ljust(3, "X")


def next_number(organization) -> tuple[int, str]:
    """The next gapless number. Must run inside the finalizing transaction."""
    assert connection.in_atomic_block, "invoice numbers are taken inside the finalizing transaction"
    with connection.cursor() as cursor:
        cursor.execute(NEXT_NUMBER_SQL, [organization.pk, _prefix(organization)])
        prefix, number = cursor.fetchone()
    return number, f"{prefix}-{number:04d}"


def finalize(
    *,
    draft: InvoiceDraft,
    subscription,
    billing_reason: str,
    period_start: datetime,
    period_end: datetime,
    usage_read=None,
    late_since=None,
    customer=None,
    product=None,
) -> Invoice:
    """Write the invoice and its lines as `open` with the next number (caller's transaction).
    `usage_read` / `late_since`: the read boundaries of a cycle invoice's usage. Without a
    subscription (a one-time product bought), `customer` and `product` say whose and what."""
    assert connection.in_atomic_block
    customer = subscription.customer if subscription is not None else customer
    product = subscription.product if subscription is not None else product
    organization = customer.organization
    sequence, number = next_number(organization)
    currency = draft.currency
    rate = draft.tax_rate if draft.tax else None
    invoice = Invoice.objects.create(
        organization=organization,
        customer=customer,
        subscription=subscription,
        product=product,
        discount=draft.discount if draft.discount_amount else None,
        number=number,
        sequence=sequence,
        billing_reason=billing_reason,
        status=InvoiceStatus.OPEN,
        period_start=period_start,
        period_end=period_end,
        currency=currency,
        subtotal=to_money(draft.subtotal, currency),
        discount_amount=to_money(draft.discount_amount, currency),
        net=to_money(draft.net, currency),
        tax=to_money(draft.tax, currency),
        total=to_money(draft.total, currency),
        amount_due=to_money(draft.total, currency),
        balance_applied=to_money(0, currency),
        credited_amount=to_money(0, currency),
        credited_tax_amount=to_money(0, currency),
        refunded_amount=to_money(0, currency),
        refunded_tax_amount=to_money(0, currency),
        billing_name=customer.billing_name or customer.name,
        billing_address=customer.billing_address,
        seller_name=organization.name,
        seller_address=organization.invoice_address,
        tax_name=rate.name if rate else "",
        tax_basis_points=rate.basis_points if rate else None,
        tax_inclusive=rate.inclusive if rate else False,
        tax_country=rate.country if rate else "",
        tax_state=(rate.state or "") if rate else "",
        usage_snapshot=usage_read.token if usage_read else None,
        usage_read_at=usage_read.taken_at if usage_read else None,
        late_since_snapshot=late_since.token if late_since else None,
        late_since_at=late_since.taken_at if late_since else None,
        finalized_at=timezone.now(),
    )
    InvoiceLine.objects.bulk_create(
        [
            InvoiceLine(
                invoice=invoice,
                position=position,
                label=line.label,
                price=line.price,
                meter_id=line.meter_id,
                period_start=line.period_start,
                period_end=line.period_end,
                quantity=line.quantity,
                consumed_units=line.consumed_units,
                credited_units=line.credited_units,
                late_units=line.late_units,
                corrected_events=line.corrected_events,
                unit_amount=line.unit_amount,
                price_terms=line.price_terms,
                amount=to_money(line.amount, currency),
                discount_amount=to_money(line.discount_amount, currency),
                tax_amount=to_money(line.tax_amount, currency),
                tax_rate=draft.tax_rate if line.tax_amount else None,
                proration=line.proration,
            )
            for position, line in enumerate(draft.lines, start=1)
        ]
    )
    _apply_balance(invoice)
    signals.invoice_finalized.send(sender=Invoice, invoice=invoice)
    if invoice.balance_applied.amount and not invoice.amount_due.amount:
        # the balance covered all of it: nothing to collect
        invoice.status, invoice.paid_at = InvoiceStatus.PAID, timezone.now()
        invoice.save(update_fields=["status", "paid_at", "modified_at"])
        signals.invoice_status_changed.send(
            sender=Invoice, invoice=invoice, previous=InvoiceStatus.OPEN
        )
    return invoice


def _apply_balance(invoice: Invoice) -> None:
    """Spend the customer's balance on the new invoice: what is left is due (and collected)."""
    total = to_minor(invoice.total)
    applied = balance.spend(invoice.customer_id, invoice.currency, total, invoice=invoice)
    if applied:
        invoice.balance_applied = to_money(applied, invoice.currency)
        invoice.amount_due = to_money(total - applied, invoice.currency)
        invoice.save(update_fields=["balance_applied", "amount_due", "modified_at"])


TRANSITIONS = {
    InvoiceStatus.PAID: (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE),
    InvoiceStatus.VOID: (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE),
    InvoiceStatus.UNCOLLECTIBLE: (InvoiceStatus.OPEN,),
}


def _transition(invoice: Invoice, status: str, stamp: str | None) -> Invoice:
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if invoice.status not in TRANSITIONS[status]:
            raise InvoiceStateError(
                f"An invoice in status '{invoice.status}' cannot become '{status}'",
                field=("status",),
            )
        previous, invoice.status = invoice.status, status
        fields = ["status", "modified_at"]
        if stamp:
            setattr(invoice, stamp, timezone.now())
            fields.append(stamp)
        invoice.save(update_fields=fields)
        signals.invoice_status_changed.send(sender=Invoice, invoice=invoice, previous=previous)
    return invoice


def mark_paid(invoice: Invoice) -> Invoice:
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        previous = locked.status
        mark_many_paid([locked])
        audit.record(locked, action="mark paid", changes={"status": (previous, locked.status)})
    return locked


def mark_many_paid(locked: list[Invoice]) -> None:
    """mark_paid for invoices the caller has just locked and read (`select_for_update`), in its
    transaction: one update for all, billing's signal for each (a collector settling a batch)."""
    for invoice in locked:
        if invoice.status not in TRANSITIONS[InvoiceStatus.PAID]:
            raise InvoiceStateError(
                f"An invoice in status '{invoice.status}' cannot become 'paid'", field=("status",)
            )
    now = timezone.now()
    Invoice.objects.filter(pk__in=[invoice.pk for invoice in locked]).update(
        status=InvoiceStatus.PAID, paid_at=now, modified_at=now
    )
    for invoice in locked:
        previous = invoice.status
        invoice.status, invoice.paid_at, invoice.modified_at = InvoiceStatus.PAID, now, now
        signals.invoice_status_changed.send(sender=Invoice, invoice=invoice, previous=previous)


# Apps above billing that can hold an invoice where a void must not cut in (payments: a charge
# under way) say why, asked under the invoice's row lock.
_void_blockers: list[Callable[[Invoice], str | None]] = []


def register_void_blocker(blocker: Callable[[Invoice], str | None]) -> None:
    _void_blockers.append(blocker)


def void(invoice: Invoice, *, rebill_fixed: bool = False) -> Invoice:
    """A correction is a void plus a new invoice; the voided one keeps its number and lines.
    What it billed is released (billing.voids): its usage is billed by the subscription's next
    invoice, its fixed lines too with `rebill_fixed`, and the balance it spent goes back."""
    with transaction.atomic():
        # credit notes are issued under the invoice's row lock: none can appear after this check
        previous = (
            Invoice.objects.select_for_update().filter(pk=invoice.pk).values_list("status").first()
        )
        if CreditNote.objects.filter(invoice_id=invoice.pk).exists():
            raise InvoiceStateError(
                f"{invoice.number} has credit notes: it can't be voided", field=("status",)
            )
        for blocker in _void_blockers:
            if reason := blocker(invoice):
                raise InvoiceStateError(
                    f"{invoice.number} can't be voided now: {reason}", field=("status",)
                )
        invoice = _transition(invoice, InvoiceStatus.VOID, "voided_at")
        voids.release(invoice, rebill_fixed=rebill_fixed)
        audit.record(
            invoice,
            action="void",
            changes={
                "status": (previous[0] if previous else None, invoice.status),
                "rebill_fixed": (None, rebill_fixed),
            },
        )
    return invoice


def mark_uncollectible(invoice: Invoice) -> Invoice:
    """Collection gave up (the dunning's final action): still owed, no longer retried; it can
    be paid or voided later."""
    return _transition(invoice, InvoiceStatus.UNCOLLECTIBLE, None)

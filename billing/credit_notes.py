"""Credit notes: the corrections of a finalized invoice. A `refund` credit note records money paid
back (the payments app issues it with its refund), a `balance` credit note credits the customer's
balance, which later invoices spend before anything is collected (billing.balance).

Each has its own gapless number per organization (`<invoice prefix>-CN-0001`), taken under the
counter's row lock in the issuing transaction, like invoice numbers. Everything about one invoice
happens under its row lock, so two credit notes issued at once can't credit more than is left.

Amounts are integer minor units. The tax part of a credit note is the invoice's tax pro rata
(half away from zero); the credit note that completes the invoice takes exactly the tax left, so
an invoice's credit notes add up to its total and its tax to the cent."""

from collections.abc import Callable

from django.db import connection, transaction

from billing import balance, discounts, signals
from billing.errors import BillingError, InvoiceStateError
from billing.models import CreditNote, CreditNoteKind, Invoice, InvoiceStatus
from billing.money import EXACT, round_minor, to_minor, to_money

# Polar's refund reasons (a refund's credit note carries its refund's)
REASONS = (
    "duplicate",
    "fraudulent",
    "customer_request",
    "service_disruption",
    "satisfaction_guarantee",
    "dispute_prevention",
    "other",
)

NEXT_NUMBER_SQL = """
INSERT INTO billing_creditnotecounter AS c (organization_id, prefix, last_number) VALUES (%s, %s, 1)
ON CONFLICT (organization_id) DO UPDATE SET last_number = c.last_number + 1
RETURNING prefix, last_number
"""


class CreditNoteError(BillingError):
    """The credit note can't be issued: an amount beyond what is left, a wrong invoice status."""


def _prefix(invoice: Invoice) -> str:
    # the invoices' own prefix (ACME-0007 → ACME), as their counter first recorded it
    return f"{invoice.number.rsplit('-', 1)[0]}-CN"


def next_number(invoice: Invoice) -> tuple[int, str]:
    assert connection.in_atomic_block, (
        "credit note numbers are taken inside the issuing transaction"
    )
    with connection.cursor() as cursor:
        cursor.execute(NEXT_NUMBER_SQL, [invoice.organization_id, _prefix(invoice)])
        prefix, number = cursor.fetchone()
    return number, f"{prefix}-{number:04d}"


# Apps above billing that hold part of an invoice's credit in flight (payments: refunds sent
# to the provider and not yet settled) say how much, so a credit note of another kind can't
# take what a settling refund's own credit note will need.
_reservations: list[Callable[[Invoice], int]] = []


def register_reservation(reserved_by: Callable[[Invoice], int]) -> None:
    _reservations.append(reserved_by)


def reserved(invoice: Invoice) -> int:
    return sum(reserved_by(invoice) for reserved_by in _reservations)


def left_to_credit(invoice: Invoice) -> int:
    """What credit notes of any kind may still credit: the invoice's total, less its credit notes."""
    return to_minor(invoice.total) - to_minor(invoice.credited_amount)


def refundable(invoice: Invoice) -> int:
    """What is paid and not yet refunded or credited, in minor units: the money collected for a
    paid invoice (its amount due; the balance it spent is not money) less its refunds, and never
    more than is left to credit."""
    if invoice.status != InvoiceStatus.PAID:
        return 0
    paid = to_minor(invoice.amount_due) - to_minor(invoice.refunded_amount)
    return max(min(paid, left_to_credit(invoice)), 0)


def _limit(invoice: Invoice, kind: str) -> tuple[int, str]:
    if kind == CreditNoteKind.REFUND:
        if invoice.status != InvoiceStatus.PAID:
            raise InvoiceStateError(
                f"Only a paid invoice can be refunded; {invoice.number} is {invoice.status}",
                field=("order_id",),
            )
        return refundable(invoice), "left to refund"
    if invoice.status not in (InvoiceStatus.OPEN, InvoiceStatus.PAID):
        raise InvoiceStateError(
            f"Only an open or paid invoice can be credited; {invoice.number} is {invoice.status}",
            field=("order_id",),
        )
    return max(left_to_credit(invoice) - reserved(invoice), 0), "left to credit"


def tax_share(invoice: Invoice, amount: int) -> int:
    """The tax part of crediting `amount` more of the invoice."""
    total, tax = to_minor(invoice.total), to_minor(invoice.tax)
    credited, credited_tax = (
        to_minor(invoice.credited_amount),
        to_minor(invoice.credited_tax_amount),
    )
    if credited + amount == total:
        return tax - credited_tax
    return round_minor(EXACT.divide(EXACT.multiply(amount, tax), total))


def _lines(invoice: Invoice, amount: int, tax: int) -> list[dict]:
    """The credit spread over the invoice's lines by what each line charged (after discount,
    with exclusive tax), its tax part over their taxes: each adds up exactly."""
    lines = list(invoice.lines.order_by("position"))
    exclusive = invoice.tax_basis_points is not None and not invoice.tax_inclusive
    charged = [
        to_minor(line.amount)
        - to_minor(line.discount_amount)
        + (to_minor(line.tax_amount) if exclusive else 0)
        for line in lines
    ]
    amounts = discounts.spread(amount, charged)
    taxes = discounts.spread(tax, [to_minor(line.tax_amount) for line in lines])
    return [
        {"line_id": str(line.pk), "label": line.label, "amount": share, "tax_amount": tax_part}
        for line, share, tax_part in zip(lines, amounts, taxes, strict=True)
        if share or tax_part
    ]


def issue(
    invoice: Invoice,
    *,
    amount: int,
    kind: str,
    reason: str,
    comment: str = "",
    refund_id=None,
) -> CreditNote:
    """Issue a credit note of `amount` minor units on `invoice` (in its own transaction, or the
    caller's: a refund records its credit note with itself). Refuses with a CreditNoteError that
    says how much is left when `amount` is more than that."""
    if kind not in CreditNoteKind.values:
        raise CreditNoteError(f"Unknown credit note kind '{kind}'", field=("kind",))
    if reason not in REASONS:
        raise CreditNoteError(
            f"Unknown reason '{reason}': one of {', '.join(REASONS)}", field=("reason",)
        )
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise CreditNoteError("The amount must be a positive number of cents", field=("amount",))
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update(of=("self",)).get(pk=invoice.pk)
        left, what = _limit(invoice, kind)
        if amount > left:
            raise CreditNoteError(
                f"The amount {amount} is more than what is left: {left} {what}",
                field=("amount",),
            )
        currency = invoice.currency
        tax = tax_share(invoice, amount)
        sequence, number = next_number(invoice)
        note = CreditNote.objects.create(
            organization_id=invoice.organization_id,
            customer_id=invoice.customer_id,
            invoice=invoice,
            number=number,
            sequence=sequence,
            kind=kind,
            amount=to_money(amount, currency),
            tax_amount=to_money(tax, currency),
            currency=currency,
            reason=reason,
            comment=comment or "",
            refund_id=refund_id,
            lines=_lines(invoice, amount, tax),
        )
        invoice.credited_amount = to_money(to_minor(invoice.credited_amount) + amount, currency)
        invoice.credited_tax_amount = to_money(
            to_minor(invoice.credited_tax_amount) + tax, currency
        )
        fields = ["credited_amount", "credited_tax_amount", "modified_at"]
        if kind == CreditNoteKind.REFUND:
            invoice.refunded_amount = to_money(to_minor(invoice.refunded_amount) + amount, currency)
            invoice.refunded_tax_amount = to_money(
                to_minor(invoice.refunded_tax_amount) + tax, currency
            )
            fields += ["refunded_amount", "refunded_tax_amount"]
        else:
            balance.credit(invoice.customer_id, currency, amount, credit_note=note)
        invoice.save(update_fields=fields)
        signals.credit_note_issued.send(sender=CreditNote, credit_note=note)
        if kind == CreditNoteKind.REFUND:
            signals.invoice_refunded.send(sender=Invoice, invoice=invoice)
    return note

"""Invoice and credit note documents: the PDF of a finalized invoice or an issued credit note
(rendered once with WeasyPrint and stored), the signed link that downloads an invoice without an
API token, and the email that sends it to the customer — at most once per document."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMessage
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from billing.errors import InvoiceStateError
from billing.models import CreditNote, CreditNoteDocument, Invoice, InvoiceDocument, InvoiceStatus
from billing.money import format_amount as money
from billing.money import to_money
from core.display import unit_price

DOWNLOAD_SALT = "billing.invoice-document"
ADDRESS_FIELDS = ("line1", "line2", "postal_code", "city", "state", "country")


def units(value: Decimal) -> str:
    """Quantities without trailing zeros: 12.000000000000 → 12, 0.500 → 0.5."""
    normalized = value.normalize()
    return f"{normalized:f}" if normalized == normalized.to_integral() else str(normalized)


def period(start: datetime, end: datetime) -> str:
    return f"{start:%b %d, %Y %H:%M} – {end:%b %d, %Y %H:%M} UTC"


@dataclass(frozen=True)
class DocumentLine:
    label: str
    period: str
    quantity: str
    late_units: str | None
    corrected_events: int
    unit_amount: str | None
    amount: str
    proration: bool


def _load(invoice_id) -> Invoice:
    return Invoice.objects.select_related("customer").prefetch_related("lines").get(pk=invoice_id)


def tax_label(invoice: Invoice) -> str:
    """The tax rate as the invoice copied it when it was issued."""
    if invoice.tax_basis_points is None:
        return "Tax"
    label = f"{invoice.tax_name} {Decimal(invoice.tax_basis_points) / 100:g}%"
    return f"{label} (included)" if invoice.tax_inclusive else label


def document_context(invoice: Invoice) -> dict:
    """Everything from the invoice's own columns: what it copied when it was finalized."""
    currency = invoice.currency
    lines = list(invoice.lines.all())
    address = invoice.billing_address or {}
    return {
        "invoice": invoice,
        "organization": invoice.seller_name,
        "organization_address": [
            line.strip() for line in invoice.seller_address.splitlines() if line.strip()
        ],
        # a name when there is one; the email is on its own line below either way
        "bill_to": invoice.billing_name or invoice.customer.name or "",
        "email": invoice.customer.email,
        "address": [str(address[key]) for key in ADDRESS_FIELDS if address.get(key)],
        "issued": f"{invoice.finalized_at:%b %d, %Y}",
        "period": period(invoice.period_start, invoice.period_end),
        "lines": [
            DocumentLine(
                label=line.label,
                period=period(line.period_start, line.period_end),
                quantity=units(line.quantity),
                late_units=units(line.late_units) if line.late_units else None,
                corrected_events=line.corrected_events,
                # rates are stored in minor units ("0.5" = half a cent): the customer reads an
                # amount of the currency, with every significant digit ("0.005 USD")
                unit_amount=unit_price(line.unit_amount, currency)
                if line.unit_amount is not None
                else None,
                amount=money(line.amount.amount, currency),
                proration=line.proration,
            )
            for line in lines
        ],
        "subtotal": money(invoice.subtotal.amount, currency),
        "discount": money(-invoice.discount_amount.amount, currency)
        if invoice.discount_amount.amount
        else None,
        "net": money(invoice.net.amount, currency),
        "tax": money(invoice.tax.amount, currency),
        "tax_label": tax_label(invoice),
        "total": money(invoice.total.amount, currency),
        "balance_applied": money(-invoice.balance_applied.amount, currency)
        if invoice.balance_applied.amount
        else None,
        "amount_due": money(invoice.amount_due.amount, currency),
    }


def _pdf(html: str) -> bytes:
    # imported when a PDF is made: WeasyPrint's import takes ~0.5 s of CPU, and every process
    # (web, worker, beat, each management command) imports this module at start through the
    # admin's autodiscovery, while few of them ever render a PDF
    from weasyprint import HTML

    return HTML(string=html).write_pdf()


def render_pdf(invoice: Invoice) -> bytes:
    html = render_to_string("billing/invoice_document.html", document_context(invoice))
    return _pdf(html)


def invoice_pdf(invoice_id) -> bytes:
    """The invoice's stored PDF; rendered and stored by the first caller. Rendering twice
    concurrently is harmless: the first row stored wins and every caller returns that one (two
    renders differ in their embedded timestamps, so the document is read back, not returned)."""
    stored = InvoiceDocument.objects.filter(invoice_id=invoice_id).values_list("pdf", flat=True)
    for pdf in stored:
        return bytes(pdf)
    invoice = _load(invoice_id)
    if not invoice.is_finalized:
        raise InvoiceStateError("A draft invoice has no document", field=("id",))
    InvoiceDocument.objects.bulk_create(
        [InvoiceDocument(invoice=invoice, pdf=render_pdf(invoice))], ignore_conflicts=True
    )
    return bytes(InvoiceDocument.objects.values_list("pdf", flat=True).get(invoice_id=invoice_id))


def filename(invoice: Invoice) -> str:
    return f"{invoice.number}.pdf"


def download_token(invoice: Invoice) -> str:
    return signing.TimestampSigner(salt=DOWNLOAD_SALT).sign(str(invoice.pk))


def token_is_valid(invoice_id, token: str) -> bool:
    """A download link is valid for INVOICE_LINK_MAX_AGE seconds and for its invoice only."""
    try:
        signed_id = signing.TimestampSigner(salt=DOWNLOAD_SALT).unsign(
            token, max_age=settings.INVOICE_LINK_MAX_AGE
        )
    except signing.BadSignature:
        return False
    return signed_id == str(invoice_id)


def email_invoice(invoice_id) -> bool:
    """Email the invoice to its customer with the PDF attached; True if this call sent it.

    The invoice row is locked and `emailed_at` set in the transaction that hands the message
    to the mail backend, so a second run (a retried or duplicated task) finds it set and sends
    nothing. A failed send rolls the stamp back and the task's retry sends it."""
    pdf = invoice_pdf(invoice_id)  # before the lock: rendering takes a while
    with transaction.atomic():
        invoice = (
            Invoice.objects.select_for_update(of=("self",))
            .select_related("customer")
            .get(pk=invoice_id)
        )
        if invoice.emailed_at is not None or invoice.status == InvoiceStatus.VOID:
            return False
        if not invoice.customer.email:
            return False
        context = {
            "invoice": invoice,
            "organization": invoice.seller_name,
            "total": money(invoice.total.amount, invoice.currency),
            "period": period(invoice.period_start, invoice.period_end),
        }
        message = EmailMessage(
            subject=f"{invoice.seller_name} invoice {invoice.number}",
            body=render_to_string("billing/invoice_email.txt", context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[invoice.customer.email],
        )
        message.attach(filename(invoice), pdf, "application/pdf")
        message.send()
        invoice.emailed_at = timezone.now()
        invoice.save(update_fields=["emailed_at"])
    return True


def deliver(invoice_id) -> None:
    """After finalization: store the PDF and email it."""
    email_invoice(invoice_id)


# --- credit notes --------------------------------------------------------------------------------


def credit_note_context(note: CreditNote) -> dict:
    invoice = note.invoice
    currency = note.currency
    return {
        "note": note,
        "invoice": invoice,
        "organization": invoice.seller_name,
        "organization_address": [
            line.strip() for line in invoice.seller_address.splitlines() if line.strip()
        ],
        # a name when there is one; the email is on its own line below either way
        "bill_to": invoice.billing_name or invoice.customer.name or "",
        "email": invoice.customer.email,
        "issued": f"{note.created_at:%b %d, %Y}",
        "kind": "Refunded to the payment method"
        if note.kind == "refund"
        else "Credited to the customer balance",
        "lines": [
            (line["label"], money(to_money(line["amount"], currency).amount, currency))
            for line in note.lines
        ],
        "tax_label": tax_label(invoice),
        "tax": money(note.tax_amount.amount, currency),
        "amount": money(note.amount.amount, currency),
    }


def render_credit_note_pdf(note: CreditNote) -> bytes:
    html = render_to_string("billing/credit_note_document.html", credit_note_context(note))
    return _pdf(html)


def credit_note_pdf(credit_note_id) -> bytes:
    """The credit note's stored PDF, rendered and stored by the first caller (as invoice_pdf)."""
    stored = CreditNoteDocument.objects.filter(credit_note_id=credit_note_id)
    for pdf in stored.values_list("pdf", flat=True):
        return bytes(pdf)
    note = CreditNote.objects.select_related("invoice__customer").get(pk=credit_note_id)
    CreditNoteDocument.objects.bulk_create(
        [CreditNoteDocument(credit_note=note, pdf=render_credit_note_pdf(note))],
        ignore_conflicts=True,
    )
    return bytes(stored.values_list("pdf", flat=True).get())


def credit_note_filename(note: CreditNote) -> str:
    return f"{note.number}.pdf"


def email_credit_note(credit_note_id) -> bool:
    """Email the credit note with its PDF; at most once (`emailed_at`, as email_invoice)."""
    pdf = credit_note_pdf(credit_note_id)
    with transaction.atomic():
        note = (
            CreditNote.objects.select_for_update(of=("self",))
            .select_related("invoice", "customer")
            .get(pk=credit_note_id)
        )
        if note.emailed_at is not None or not note.customer.email:
            return False
        context = {
            "note": note,
            "organization": note.invoice.seller_name,
            "amount": money(note.amount.amount, note.currency),
            "kind": note.kind,
        }
        message = EmailMessage(
            subject=f"{note.invoice.seller_name} credit note {note.number}",
            body=render_to_string("billing/credit_note_email.txt", context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[note.customer.email],
        )
        message.attach(credit_note_filename(note), pdf, "application/pdf")
        message.send()
        note.emailed_at = timezone.now()
        note.save(update_fields=["emailed_at"])
    return True

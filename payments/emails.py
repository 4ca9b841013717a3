"""The customer's payment emails: a receipt, a failed payment with the portal link to pay or
replace the card, and with send_invoice the invoice's due date and reminders."""

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.formats import date_format

from billing.models import InvoiceStatus
from billing.money import format_amount, to_money
from payments.models import CollectionState, InvoiceCollection, Payment


def portal_invoice_url(payment: Payment) -> str:
    return invoice_url(payment.organization.slug, payment.invoice_id)


def invoice_url(organization_slug: str, invoice_id) -> str:
    path = f"/portal/{organization_slug}/invoices/{invoice_id}"
    return f"{settings.PORTAL_BASE_URL}{path}" if settings.PORTAL_BASE_URL else path


def _send(payment_id, subject, template: str, **context) -> bool:
    """At most once per payment (a receipt, or the failure email), as billing's invoice email:
    the payment row is locked and `emailed_at` set in the transaction that hands the message
    to the mail backend, so a task delivered twice sends one email; a failed send rolls the
    stamp back and the task's retry sends it."""
    with transaction.atomic():
        payment = (
            Payment.objects.select_for_update(of=("self",))
            .select_related("invoice", "customer", "organization")
            .get(pk=payment_id)
        )
        customer = payment.customer
        if payment.emailed_at is not None or not customer.email:
            return False
        context = {
            "payment": payment,
            "invoice": payment.invoice,
            "organization": payment.invoice.seller_name,
            "amount": format_amount(
                to_money(payment.amount, payment.currency).amount, payment.currency
            ),
            "portal_url": portal_invoice_url(payment),
            **context,
        }
        EmailMessage(
            subject=subject(payment.invoice),
            body=render_to_string(template, context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[customer.email],
        ).send()
        payment.emailed_at = timezone.now()
        payment.save(update_fields=["emailed_at"])
    return True


def send_receipt(payment_id) -> bool:
    return _send(
        payment_id,
        lambda invoice: f"{invoice.seller_name}: receipt for invoice {invoice.number}",
        "payments/receipt_email.txt",
    )


def send_payment_failed(payment_id, final: bool) -> bool:
    return _send(
        payment_id,
        lambda invoice: f"{invoice.seller_name}: payment for invoice {invoice.number} failed",
        "payments/payment_failed_email.txt",
        final=final,
    )


def send_invoice_notice(invoice_id, number: int) -> bool:
    """send_invoice: notice 1 says when the invoice is due and where to pay it, notice n > 1 is
    the reminder after the (n - 1)th dunning step. Each at most once (`notices_sent`, under the
    collection's row lock in the sending transaction), and none once the invoice is settled."""
    with transaction.atomic():
        row = (
            InvoiceCollection.objects.select_for_update(of=("self",))
            .select_related("invoice__customer", "invoice__organization")
            .get(pk=invoice_id)
        )
        invoice = row.invoice
        if row.notices_sent >= number or invoice.status not in (
            InvoiceStatus.OPEN,
            InvoiceStatus.UNCOLLECTIBLE,
        ):
            return False
        if not invoice.customer.email:
            return False
        overdue = number > 1
        context = {
            "invoice": invoice,
            "organization": invoice.seller_name,
            "amount": format_amount(invoice.amount_due.amount, invoice.currency),
            "due_date": date_format(row.due_at, "DATE_FORMAT"),
            "overdue": overdue,
            "final": row.state == CollectionState.EXHAUSTED,
            "portal_url": invoice_url(invoice.organization.slug, invoice.pk),
        }
        subject = (
            f"{invoice.seller_name}: invoice {invoice.number} is overdue"
            if overdue
            else f"{invoice.seller_name}: invoice {invoice.number} is due on {context['due_date']}"
        )
        EmailMessage(
            subject=subject,
            body=render_to_string("payments/invoice_notice_email.txt", context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[invoice.customer.email],
        ).send()
        row.notices_sent = number
        row.save(update_fields=["notices_sent", "modified_at"])
    return True

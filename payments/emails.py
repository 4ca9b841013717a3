"""The customer's payment emails: a receipt, and a failed payment with the portal link to pay
or replace the card."""

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from billing.money import format_amount, to_money
from payments.models import Payment


def portal_invoice_url(payment: Payment) -> str:
    organization = payment.organization
    path = f"/portal/{organization.slug}/invoices/{payment.invoice_id}"
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

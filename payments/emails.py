"""The customer's payment emails: a receipt, and a failed payment with the portal link to pay
or replace the card."""

from django.conf import settings
from django.core.mail import EmailMessage
from django.template.loader import render_to_string

from billing.money import format_amount, to_money
from payments.models import Payment


def portal_invoice_url(payment: Payment) -> str:
    organization = payment.organization
    path = f"/portal/{organization.slug}/invoices/{payment.invoice_id}"
    return f"{settings.PORTAL_BASE_URL}{path}" if settings.PORTAL_BASE_URL else path


def _send(payment: Payment, subject: str, template: str, **context) -> bool:
    customer = payment.customer
    if not customer.email:
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
        subject=subject,
        body=render_to_string(template, context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[customer.email],
    ).send()
    return True


def _payment(payment_id) -> Payment:
    return Payment.objects.select_related("invoice", "customer", "organization").get(pk=payment_id)


def send_receipt(payment_id) -> bool:
    payment = _payment(payment_id)
    return _send(
        payment,
        f"{payment.invoice.seller_name}: receipt for invoice {payment.invoice.number}",
        "payments/receipt_email.txt",
    )


def send_payment_failed(payment_id, final: bool) -> bool:
    payment = _payment(payment_id)
    return _send(
        payment,
        f"{payment.invoice.seller_name}: payment for invoice {payment.invoice.number} failed",
        "payments/payment_failed_email.txt",
        final=final,
    )

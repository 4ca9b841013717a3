"""Provider webhooks: verified by signature, recorded by event id and applied once. They only
confirm what the database already expects (a payment it has pending with that charge id); the
collector's own answer or reconciliation settles the rest."""

import logging

from django.db import IntegrityError, transaction

from payments import collection, providers
from payments.models import Payment, PaymentStatus, ProviderEvent
from payments.providers.base import ChargeResult, ChargeStatus

logger = logging.getLogger(__name__)

LOGGED_ONLY = ("charge.refunded", "charge.dispute.created")


def receive(
    provider_name: str, payload: bytes, signature: str | None
) -> tuple[ProviderEvent, bool]:
    """(the recorded event, whether this delivery applied it). WebhookSignatureError when the
    signature is not the provider's: nothing is recorded."""
    data = providers.get(provider_name).verify_webhook(payload, signature)
    try:
        with transaction.atomic():
            event = ProviderEvent.objects.create(
                provider=provider_name, event_id=data.id, type=data.type, payload=data.payload
            )
            event.outcome = _apply(provider_name, data)
            event.save(update_fields=["outcome"])
    except IntegrityError:
        # delivered before (or at this moment by a concurrent delivery): applied once there
        return ProviderEvent.objects.get(provider=provider_name, event_id=data.id), False
    return event, True


def _apply(provider_name: str, data) -> str:
    obj = data.payload.get("data", {}).get("object", {}) or {}
    if data.type in LOGGED_ONLY:
        logger.warning(
            "%s %s for %s (recorded; staff act on it)", provider_name, data.type, data.object_id
        )
        return "recorded"
    if data.type not in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        return "ignored"
    payment = Payment.objects.filter(
        provider=provider_name, provider_payment_id=data.object_id, status=PaymentStatus.PENDING
    ).first()
    if payment is None:
        return "no pending payment"
    if obj.get("amount") != payment.amount:
        logger.error(
            "%s %s: amount %s, payment %s expects %s",
            provider_name,
            data.type,
            obj.get("amount"),
            payment.pk,
            payment.amount,
        )
        return "amount mismatch"
    if data.type == "payment_intent.succeeded":
        result = ChargeResult(ChargeStatus.SUCCEEDED, data.object_id)
    else:
        error = obj.get("last_payment_error") or {}
        result = ChargeResult(
            ChargeStatus.FAILED,
            data.object_id,
            decline_code=error.get("decline_code") or error.get("code") or "card_declined",
            decline_message=error.get("message"),
        )
    payment = collection.settle(payment.pk, result)
    return f"payment {payment.pk} {payment.status}"

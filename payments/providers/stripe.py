"""Stripe through the official `stripe` library: one `StripeClient` per configuration (its key
and API address from settings), never the library's global key, so tests and several
installations in one process don't share state."""

import functools
import json

import stripe
from django.conf import settings

from payments.errors import (
    PaymentMethodError,
    ProviderError,
    ProviderUnavailable,
    WebhookSignatureError,
)
from payments.providers.base import (
    ChargeResult,
    ChargeStatus,
    MethodInfo,
    PaymentProvider,
    ProviderEventData,
    RefundResult,
    SetupResult,
    SetupSession,
)


@functools.lru_cache(maxsize=8)
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    addresses = {"api": api_base} if api_base else None
    # no library retries: a request whose answer was lost is settled by reconciliation, which
    # asks Stripe what happened instead of sending it again
    return stripe.StripeClient(api_key, base_addresses=addresses, max_network_retries=0)


def _domain_error(exc: stripe.StripeError) -> ProviderError:
    if isinstance(exc, stripe.APIConnectionError) or (exc.http_status or 0) >= 500:
        return ProviderUnavailable(f"Stripe did not answer: {exc.user_message or exc}")
    code = getattr(exc, "code", None)
    if isinstance(exc, stripe.CardError):
        error = exc.error
        decline = getattr(error, "decline_code", None) if error else None
        return ProviderError(
            exc.user_message or str(exc), code=decline or code or "card_declined", declined=True
        )
    return ProviderError(exc.user_message or str(exc), code=code)


def _result(intent) -> ChargeResult:
    intent = intent.to_dict()  # the library's objects are not dicts: read the plain data
    status, intent_id = intent["status"], intent["id"]
    if status == "succeeded":
        return ChargeResult(ChargeStatus.SUCCEEDED, intent_id)
    if status == "processing":
        return ChargeResult(ChargeStatus.PROCESSING, intent_id)
    error = intent.get("last_payment_error")
    if error:
        return ChargeResult(
            ChargeStatus.FAILED,
            intent_id,
            decline_code=error.get("decline_code") or error.get("code") or "card_declined",
            decline_message=error.get("message"),
        )
    # requires_confirmation / requires_payment_method without an error / canceled: never charged
    return ChargeResult(ChargeStatus.NOT_CONFIRMED, intent_id)


class StripeProvider(PaymentProvider):
    name = "stripe"

    def __init__(self, *, api_key: str, api_base: str = "", webhook_secret: str = ""):
        self.client = _client(api_key, api_base)
        self.webhook_secret = webhook_secret

    @classmethod
    def from_settings(cls) -> "StripeProvider":
        if not settings.STRIPE_SECRET_KEY:
            raise ProviderError("Stripe is not configured (STRIPE_SECRET_KEY)")
        return cls(
            api_key=settings.STRIPE_SECRET_KEY,
            api_base=settings.STRIPE_API_BASE,
            webhook_secret=settings.STRIPE_WEBHOOK_SECRET,
        )

    def create_customer(self, *, email: str, name: str | None, reference: str) -> str:
        params = {"email": email, "metadata": {"meterline_customer_id": reference}}
        if name:
            params["name"] = name
        try:
            customer = self.client.v1.customers.create(
                params=params, options={"idempotency_key": f"customer:{reference}"}
            )
        except stripe.StripeError as exc:
            raise _domain_error(exc)
        return customer.id

    def create_setup_session(self, *, provider_customer_id: str) -> SetupSession:
        try:
            intent = self.client.v1.setup_intents.create(
                params={
                    "customer": provider_customer_id,
                    "usage": "off_session",
                    "payment_method_types": ["card"],
                }
            )
        except stripe.StripeError as exc:
            raise _domain_error(exc)
        return SetupSession(id=intent.id, client_secret=intent.client_secret)

    def retrieve_setup_session(self, setup_session_id: str) -> SetupResult:
        try:
            intent = self.client.v1.setup_intents.retrieve(setup_session_id).to_dict()
        except stripe.StripeError as exc:
            error = _domain_error(exc)
            if (exc.http_status or 0) == 404:
                raise PaymentMethodError(
                    f"No such setup session: '{setup_session_id}'", field=("setup_intent",)
                )
            raise error
        method = intent.get("payment_method")
        if isinstance(method, dict):  # expanded
            method = method.get("id")
        return SetupResult(
            id=intent["id"],
            provider_customer_id=intent.get("customer"),
            succeeded=intent.get("status") == "succeeded",
            method_id=method,
        )

    def attach_default_method(self, *, provider_customer_id: str, method_id: str) -> MethodInfo:
        try:
            method = self.client.v1.payment_methods.retrieve(method_id).to_dict()
            if method.get("customer") != provider_customer_id:
                method = self.client.v1.payment_methods.attach(
                    method_id, params={"customer": provider_customer_id}
                ).to_dict()
            self.client.v1.customers.update(
                provider_customer_id,
                params={"invoice_settings": {"default_payment_method": method_id}},
            )
        except stripe.StripeError as exc:
            error = _domain_error(exc)
            if isinstance(error, ProviderUnavailable):
                raise error
            if (exc.http_status or 0) == 404:
                raise PaymentMethodError(
                    f"No such payment method: '{method_id}'", field=("payment_method_id",)
                )
            raise PaymentMethodError(
                f"The payment method was refused: {error.message}", field=("payment_method_id",)
            )
        card = method.get("card") or {}
        return MethodInfo(
            id=method["id"],
            brand=card.get("brand") or method["type"],
            last4=card.get("last4") or "",
            exp_month=card.get("exp_month"),
            exp_year=card.get("exp_year"),
        )

    def prepare_charge(
        self,
        *,
        amount: int,
        currency: str,
        provider_customer_id: str,
        method_id: str,
        idempotency_key: str,
        metadata: dict,
    ) -> str:
        try:
            intent = self.client.v1.payment_intents.create(
                params={
                    "amount": amount,
                    "currency": currency.lower(),
                    "customer": provider_customer_id,
                    "payment_method": method_id,
                    "metadata": metadata,
                },
                options={"idempotency_key": f"{idempotency_key}:create"},
            )
        except stripe.StripeError as exc:
            raise _domain_error(exc)
        return intent.id

    def confirm_charge(self, *, provider_payment_id: str, idempotency_key: str) -> ChargeResult:
        try:
            intent = self.client.v1.payment_intents.confirm(
                provider_payment_id,
                params={"off_session": True},
                options={"idempotency_key": f"{idempotency_key}:confirm"},
            )
        except stripe.CardError as exc:
            error = _domain_error(exc)
            return ChargeResult(
                ChargeStatus.FAILED,
                provider_payment_id,
                decline_code=error.code,
                decline_message=error.message,
            )
        except stripe.StripeError as exc:
            raise _domain_error(exc)
        return _result(intent)

    def retrieve_charge(self, provider_payment_id: str) -> ChargeResult:
        try:
            intent = self.client.v1.payment_intents.retrieve(provider_payment_id)
        except stripe.StripeError as exc:
            raise _domain_error(exc)
        return _result(intent)

    def cancel_charge(self, provider_payment_id: str) -> None:
        try:
            self.client.v1.payment_intents.cancel(provider_payment_id)
        except stripe.StripeError as exc:
            raise _domain_error(exc)

    def refund(
        self, *, provider_payment_id: str, amount: int, idempotency_key: str, metadata: dict
    ) -> RefundResult:
        try:
            refund = self.client.v1.refunds.create(
                params={
                    "payment_intent": provider_payment_id,
                    "amount": amount,
                    "metadata": metadata,
                },
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _domain_error(exc)
        return RefundResult(id=refund.id, status=refund.status)

    def find_refund(self, *, provider_payment_id: str, reference: str) -> RefundResult | None:
        try:
            refunds = self.client.v1.refunds.list(
                params={"payment_intent": provider_payment_id, "limit": 100}
            ).auto_paging_iter()
            for refund in refunds:
                data = refund.to_dict()
                if (data.get("metadata") or {}).get("meterline_refund_id") == reference:
                    return RefundResult(id=data["id"], status=data["status"])
        except stripe.StripeError as exc:
            raise _domain_error(exc)
        return None

    def verify_webhook(self, payload: bytes, signature: str | None) -> ProviderEventData:
        if not self.webhook_secret:
            raise WebhookSignatureError("No webhook secret is configured (STRIPE_WEBHOOK_SECRET)")
        try:
            event = stripe.Webhook.construct_event(payload, signature, self.webhook_secret)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise WebhookSignatureError(f"The signature does not match: {exc}")
        body = json.loads(payload)
        data_object = (body.get("data") or {}).get("object") or {}
        return ProviderEventData(
            id=event.id, type=event.type, object_id=data_object.get("id"), payload=body
        )

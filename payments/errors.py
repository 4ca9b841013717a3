"""Payments' refusals (`core.errors.DomainError`s) and the provider's answers as domain errors."""

from core.errors import DomainError


class PaymentError(DomainError):
    pass


class PaymentMethodError(PaymentError):
    """The provider refused the payment method (unknown id, declined on attach)."""

    type = "payment_method_error"


class ProviderError(PaymentError):
    """The provider answered with an error; `code` is its decline code when it declined."""

    def __init__(self, message: str, *, code: str | None = None, declined: bool = False, **kw):
        super().__init__(message, **kw)
        self.code = code
        self.declined = declined


class ProviderUnavailable(ProviderError):
    """No answer (network, timeout, 5xx): the outcome of the request is unknown."""


class WebhookSignatureError(PaymentError):
    type = "invalid_signature"


class RefundError(PaymentError):
    """The refund can't be made: the order isn't paid, or the amount is more than is left."""


class RefundFailed(PaymentError):
    """The provider refused the refund: it is recorded `failed` and nothing was credited."""

    type = "refund_failed"

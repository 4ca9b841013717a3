"""What collection needs from a payment provider. A provider is one module implementing
`PaymentProvider`; services get it from `payments.providers.get(name)` and never see the
provider's library. Every provider failure is a `payments.errors.ProviderError` (a decline
carries the provider's code and message) or `ProviderUnavailable` when the outcome is unknown."""

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    id: str
    brand: str
    last4: str
    exp_month: int | None
    exp_year: int | None


@dataclass(frozen=True)
class SetupSession:
    id: str
    client_secret: str


@dataclass(frozen=True)
class SetupResult:
    """A setup session as the provider sees it: whose it is and the method it saved, if any."""

    id: str
    provider_customer_id: str | None
    succeeded: bool
    method_id: str | None


class ChargeStatus:
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # declined: the attempt counts
    NOT_CONFIRMED = "not_confirmed"  # never sent for payment: nothing was charged
    PROCESSING = "processing"  # the provider has not decided yet


@dataclass(frozen=True)
class ChargeResult:
    status: str
    provider_payment_id: str
    decline_code: str | None = None
    decline_message: str | None = None


@dataclass(frozen=True)
class RefundResult:
    id: str
    status: str


@dataclass(frozen=True)
class ProviderEventData:
    id: str
    type: str
    object_id: str | None
    payload: dict


class PaymentProvider(ABC):
    name: str

    @abstractmethod
    def create_customer(self, *, email: str, name: str | None, reference: str) -> str:
        """A customer at the provider; `reference` (our customer id) keeps retries to one."""

    @abstractmethod
    def create_setup_session(self, *, provider_customer_id: str) -> SetupSession:
        """A session the provider's card element completes to save a method off-session."""

    @abstractmethod
    def retrieve_setup_session(self, setup_session_id: str) -> SetupResult:
        """The session a card element completed (the browser only reports its id)."""

    @abstractmethod
    def attach_default_method(self, *, provider_customer_id: str, method_id: str) -> MethodInfo:
        """Attach the method to the customer and make it the default; its card description."""

    @abstractmethod
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
        """Create the charge without confirming it; its provider id."""

    @abstractmethod
    def confirm_charge(self, *, provider_payment_id: str, idempotency_key: str) -> ChargeResult:
        """Charge it off-session. A decline is a result, not an error."""

    @abstractmethod
    def retrieve_charge(self, provider_payment_id: str) -> ChargeResult:
        """The provider's view of the charge (reconciliation)."""

    @abstractmethod
    def cancel_charge(self, provider_payment_id: str) -> None:
        """Make a charge that was never confirmed unusable."""

    @abstractmethod
    def refund(
        self, *, provider_payment_id: str, amount: int, idempotency_key: str, metadata: dict
    ) -> RefundResult:
        """Pay `amount` of the charge back. A refusal is a ProviderError (nothing refunded)."""

    @abstractmethod
    def find_refund(self, *, provider_payment_id: str, reference: str) -> RefundResult | None:
        """The charge's refund whose metadata names `reference` (our refund id), if the
        provider made one: how reconciliation learns the outcome of an unanswered request."""

    @abstractmethod
    def verify_webhook(self, payload: bytes, signature: str | None) -> ProviderEventData:
        """The event if the signature is the provider's (WebhookSignatureError otherwise)."""

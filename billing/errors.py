"""Billing's refusals: `core.errors.DomainError`s whose problems name the field at fault inside the
service's input (`("prices", 0, "unit_amount")`). Services raise them; the API layer adds the
location and Polar's shape, the admin shows the message on the form."""

from core.errors import DomainError


class BillingError(DomainError):
    pass


class InvalidPrice(BillingError):
    pass


class InvalidProduct(BillingError):
    """A product change its subscriptions forbid (interval, currency)."""


class InvalidDiscount(BillingError):
    pass


class DiscountNotApplicable(BillingError):
    """The discount exists but cannot be redeemed here (validity, limit, product)."""


class SubscriptionStateError(BillingError):
    """The requested transition is not allowed in the subscription's current status."""


class SubscriptionEnded(SubscriptionStateError):
    """Revoking a subscription that has already ended (Polar answers 403)."""


class PlanChangeError(BillingError):
    """The product change is not possible (currency, interval, discount, same product)."""


class InvoiceStateError(BillingError):
    """The invoice's status does not allow the requested change (immutable once finalized)."""


class AmountOutOfRange(BillingError):
    """An amount too large to be invoiced: the subscription is flagged, not billed."""

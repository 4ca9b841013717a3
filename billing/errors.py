"""Billing domain errors. Services raise these; only `billing.api` turns them into Polar's wire
errors."""


class BillingError(Exception):
    """Base class. `field` names the input at fault (a path), when there is one."""

    def __init__(self, message: str, *, field: tuple | list | None = None):
        super().__init__(message)
        self.message = message
        self.field = tuple(field) if field else ()


class InvalidPrice(BillingError):
    pass


class InvalidDiscount(BillingError):
    pass


class DiscountNotApplicable(BillingError):
    """The discount exists but cannot be redeemed here (validity, limit, product)."""


class SubscriptionStateError(BillingError):
    """The requested transition is not allowed in the subscription's current status."""


class PlanChangeError(BillingError):
    """The product change is not possible (currency, interval, discount, same product)."""


class InvoiceStateError(BillingError):
    """The invoice's status does not allow the requested change (immutable once finalized)."""


class MeterInUse(BillingError):
    pass

"""The one place where billing's domain errors become Polar wire errors."""

from contextlib import contextmanager

from rest_framework import exceptions

from billing.errors import BillingError, SubscriptionStateError
from core.api.errors import PolarValidationError


class AlreadyCanceledSubscription(exceptions.APIException):
    status_code = 403
    default_detail = "This subscription is already canceled or revoked."


@contextmanager
def wire_errors():
    try:
        yield
    except SubscriptionStateError as exc:
        if exc.field == ("path", "id"):
            raise AlreadyCanceledSubscription(exc.message)
        raise PolarValidationError.single(list(exc.field or ("body",)), exc.message)
    except BillingError as exc:
        raise PolarValidationError.single(list(exc.field or ("body",)), exc.message)

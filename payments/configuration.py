"""Which provider and collection mode apply to an organization: its own settings, else the
installation's."""

from django.conf import settings

from payments.models import Collection, OrganizationPayments, Provider

MANUAL = "manual"


def installation_provider() -> str:
    return Provider.STRIPE if settings.STRIPE_SECRET_KEY else Provider.MANUAL


def resolved(organization_id) -> tuple[str, str, int]:
    """(provider, collection, days until due); collection `manual` when nothing is collected
    automatically or by invoice (the manual provider)."""
    own = OrganizationPayments.objects.filter(organization_id=organization_id).first()
    provider = (own and own.provider) or installation_provider()
    collection = (own and own.collection) or settings.PAYMENTS_COLLECTION
    days = own.days_until_due if own and own.days_until_due is not None else None
    if provider == Provider.MANUAL or collection not in Collection.values:
        collection = MANUAL
    return provider, collection, days if days is not None else settings.PAYMENTS_DAYS_UNTIL_DUE

"""Tax rates, chosen by the customer's billing address (country + state first, then country; no
match, no tax). Managed through the services below by the API and the admin alike. Tax is computed per line on the discounted amount and rounded half away from zero
per line. Exclusive: added on top. Inclusive: contained in the amount (amount − amount/(1+rate))."""

from decimal import Decimal

from billing.errors import BillingError
from billing.models import TaxRate
from billing.money import round_minor


def rates_by_organization(organization_ids) -> dict:
    """organization id → its tax rates, for a batch of invoices (one query)."""
    found: dict = {pk: [] for pk in organization_ids}
    for rate in TaxRate.objects.filter(organization_id__in=list(found)):
        found[rate.organization_id].append(rate)
    return found


def rate_for(customer, rates: list[TaxRate] | None = None) -> TaxRate | None:
    """`rates`: the organization's rates when the caller has them (a batch), else read."""
    address = customer.billing_address or {}
    country = (address.get("country") or "").upper()
    if not country:
        return None
    state = (address.get("state") or "").upper() or None
    if rates is None:
        rates = TaxRate.objects.filter(organization_id=customer.organization_id, country=country)
    candidates = {(rate.state or None): rate for rate in rates if rate.country == country}
    return candidates.get(state) if state and state in candidates else candidates.get(None)


def line_tax(amount: int, rate: TaxRate | None) -> int:
    """Tax in minor units for one line's discounted amount. A credit line (negative: unused time
    of a plan change) carries negative tax, so a credit takes back the tax it was charged."""
    if rate is None or amount == 0:
        return 0
    fraction = Decimal(rate.basis_points) / 10_000
    if rate.inclusive:
        return round_minor(amount - Decimal(amount) / (1 + fraction))
    return round_minor(amount * fraction)


def check_rate(*, organization, country: str, state: str | None, basis_points: int, exclude=None):
    if not (len(country) == 2 and country.isascii() and country.isalpha()):
        raise BillingError("Input should be an ISO 3166 alpha-2 country code", field=("country",))
    if not 0 <= basis_points <= 10_000:
        raise BillingError("basis_points should be between 0 and 10000", field=("basis_points",))
    clash = TaxRate.objects.filter(organization=organization, country=country, state=state)
    if exclude is not None:
        clash = clash.exclude(pk=exclude.pk)
    if clash.exists():
        raise BillingError("A tax rate for this region already exists", field=("country",))


def create_tax_rate(
    *, organization, name: str, country: str, state: str | None, basis_points: int, inclusive: bool
) -> TaxRate:
    country, state = country.upper(), (state.upper() if state else None)
    check_rate(organization=organization, country=country, state=state, basis_points=basis_points)
    return TaxRate.objects.create(
        organization=organization,
        name=name,
        country=country,
        state=state,
        basis_points=basis_points,
        inclusive=inclusive,
    )


def update_tax_rate(rate: TaxRate, **changes) -> TaxRate:
    """Any field may change: invoices already issued copied the rate's terms (invoices.py), so
    the change only applies to invoices finalized from now on."""
    if "country" in changes:
        changes["country"] = changes["country"].upper()
    if "state" in changes:
        changes["state"] = changes["state"].upper() if changes["state"] else None
    for key, value in changes.items():
        setattr(rate, key, value)
    check_rate(
        organization=rate.organization_id,
        country=rate.country,
        state=rate.state,
        basis_points=rate.basis_points,
        exclude=rate,
    )
    rate.save()
    return rate


def delete_tax_rate(rate: TaxRate) -> None:
    """Issued invoices keep the terms they copied; their lines just lose the link."""
    rate.delete()

"""Extension points of the portal: what billing contributes to the pages once it exists.

The portal sits above billing (portal → billing is the allowed import direction), so billing
never imports this module. Instead, the portal registers billing's functions here from its own
`PortalConfig.ready()` when billing provides them; until then nothing is registered and the pages
show usage without prices. Four slots:

- **charge estimators** — `(customer=, meters=[MeterUsage]) -> ChargeEstimate | None`: the
  estimated charge so far per meter and in total (billing: the upcoming invoice's metered lines).
  The first estimator that returns an estimate is used.
- **period providers** — `(customer=, meters=[Meter]) -> {meter id: Period} | None`: the
  customer's current billing period of each meter, the one range the usage page shows it over
  (card and chart), for all the page's meters in one call (a page or poll looks periods up once,
  not per meter). Billing: the current period of the subscription that prices the meter
  (`billed`: the meter's numbers are then billing's), else of the customer's earliest live
  subscription. A meter no provider answers for is shown over the current calendar month (UTC).
- **credit grants** — `(customer=, meters=[MeterUsage]) -> {meter id: [grant]} | None`: the
  customer's prepaid credits of each meter (billing: the ledger's grants with what is left after
  what the current period would draw, earliest expiry first). Each grant has `units`, `left` and
  `expires_at`.
- **sections** — further pages linked from the portal's navigation (billing: subscriptions and
  invoices), as `Section(label, url_name)`; the URL name is reversed with the organization slug.
"""

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from djmoney.money import Money


@dataclass(frozen=True)
class Period:
    """A half-open range [start, end) in UTC: a billing period (`kind` "billing"), or the
    calendar month ("month") when the customer has none. `billed`: a subscription bills the
    meter over it."""

    start: datetime
    end: datetime
    kind: str = "billing"
    billed: bool = False


@dataclass(frozen=True)
class ChargeEstimate:
    by_meter: Mapping[uuid.UUID, Money]  # meter id -> estimated charge so far
    total: Money | None  # None when the meters are priced in more than one currency


@dataclass(frozen=True)
class Section:
    label: str
    url_name: str


@dataclass
class Registry:
    charge_estimators: list[Callable] = field(default_factory=list)
    period_providers: list[Callable] = field(default_factory=list)
    credit_grant_providers: list[Callable] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def estimate_charges(self, *, customer, meters) -> ChargeEstimate | None:
        return _first_answer(self.charge_estimators, customer=customer, meters=meters)

    def current_periods(self, *, customer, meters) -> dict:
        """meter id → Period of the first provider that answers for that meter."""
        found: dict = {}
        for provider in self.period_providers:
            wanted = [meter for meter in meters if meter.pk not in found]
            if not wanted:
                break
            answer = provider(customer=customer, meters=wanted) or {}
            found.update({meter.pk: answer[meter.pk] for meter in wanted if meter.pk in answer})
        return found

    def credit_grants(self, *, customer, meters) -> dict:
        return _first_answer(self.credit_grant_providers, customer=customer, meters=meters) or {}


def _first_answer(functions: list[Callable], **kwargs):
    for function in functions:
        answer = function(**kwargs)
        if answer is not None:
            return answer
    return None


registry = Registry()

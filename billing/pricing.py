"""The pricing math, one implementation shared by cycle close, the upcoming invoice, the admin and
the API: unit and tiered (graduated / volume, with Meterline's per-tier flat amount) prices, a
cap, and one rounding per line.

Amounts here are exact `Decimal` minor units (cents) until `metered_amount` rounds the line half
away from zero to a whole cent and then applies the cap."""

import decimal
from dataclasses import dataclass
from decimal import Decimal

from billing.money import EXACT, round_minor

GRADUATED = "graduated"
VOLUME = "volume"


@dataclass(frozen=True)
class Tier:
    bound: int | None  # inclusive upper bound; None on the last tier
    unit_amount: Decimal  # minor units per unit, up to 12 decimals
    flat_amount: Decimal = Decimal(0)  # minor units


def parse_tiers(data: dict) -> tuple[str, list[Tier]]:
    """The stored/wire shape {"type", "tiers": [{"bound", "unit_amount", "flat_amount"?}]}."""
    return data["type"], [
        Tier(
            bound=tier.get("bound"),
            unit_amount=Decimal(str(tier["unit_amount"])),
            flat_amount=Decimal(str(tier.get("flat_amount") or 0)),
        )
        for tier in data["tiers"]
    ]


def _lower_bounds(tiers: list[Tier]) -> list[Decimal]:
    return [Decimal(0)] + [Decimal(t.bound) for t in tiers[:-1]]


def graduated_amount(tiers: list[Tier], units: Decimal) -> Decimal:
    """Each unit at the rate of the tier it falls in; every reached tier adds its flat amount (a
    tier is reached when usage exceeds its lower bound; the first tier always is)."""
    total = Decimal(0)
    for index, (tier, lower) in enumerate(zip(tiers, _lower_bounds(tiers), strict=True)):
        if index and units <= lower:
            break
        upper = Decimal(tier.bound) if tier.bound is not None else None
        inside = units - lower if upper is None else min(units, upper) - lower
        total += max(inside, Decimal(0)) * tier.unit_amount + tier.flat_amount
    return total


def volume_amount(tiers: list[Tier], units: Decimal) -> Decimal:
    """All units at the rate of the tier the total falls in, plus that tier's flat amount."""
    for tier in tiers:
        if tier.bound is None or units <= tier.bound:
            return units * tier.unit_amount + tier.flat_amount
    last = tiers[-1]
    return units * last.unit_amount + last.flat_amount


def exact_amount(*, unit_amount: Decimal | None, tiers: dict | None, units: Decimal) -> Decimal:
    """The exact (unrounded) price of `units` in minor units. Negative usage bills nothing."""
    with decimal.localcontext(EXACT):
        units = max(Decimal(units), Decimal(0))
        if tiers is not None:
            kind, parsed = parse_tiers(tiers)
            if kind == GRADUATED:
                return graduated_amount(parsed, units)
            return volume_amount(parsed, units)
        return units * Decimal(unit_amount)


def metered_amount(
    *,
    unit_amount: Decimal | None = None,
    tiers: dict | None = None,
    units: Decimal,
    cap_amount: int | None = None,
) -> int:
    """A metered line: the exact price rounded once (half away from zero), then capped."""
    amount = round_minor(exact_amount(unit_amount=unit_amount, tiers=tiers, units=units))
    if cap_amount is not None:
        amount = min(amount, int(cap_amount))
    return amount


def billable_units(*, consumed: Decimal, credited: int) -> Decimal:
    """Credits first: billable = max(0, units − credited units of the period)."""
    return max(EXACT.subtract(Decimal(consumed), Decimal(credited)), Decimal(0))

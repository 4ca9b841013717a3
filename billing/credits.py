"""The credit ledger: grants of a meter's units to a customer (credit packs, staff grants) with an
optional expiry, drawn by the invoices of closed billing periods.

Where consumption is recorded: at invoicing. The close of a period draws the period's usage of a
meter from the ledger (`CreditDraw`, one row per grant and invoice); the open period shows the
draws its close would make so far (the same pure plan), so a balance is the grants' remainders
less what the open period would draw. Drawing at the close is exact and needs no cursor over
usage: each unit of a period is billed by exactly one invoice, so it burns at most one credit.

Which grants a period draws, and in what order (`walk`):

- a grant counts for a period that ends after it was granted (it also covers that period's
  usage from before the purchase: nothing of it was invoiced yet);
- it covers only usage *before* its expiry: the period is cut at every expiry inside it and the
  pieces are drawn in time order; usage that arrives late for an already closed period counts as
  of the end of the period that bills it. An expired remainder is never drawn;
- within a piece, earliest expiry first, then the subscription's own credits of the period
  (`meter.credited` events, which expire with the period), then purchased and staff grants,
  oldest first.

Only `count` and `sum` meters take ledger credits (a unit of usage is consumed once; a `max` or
`unique` value is not). Exactly once: the close writes its draws under the grants' row locks and
re-checks each remainder; a grant drawn meanwhile by another subscription's close makes this one
measure again (`CreditsChanged`)."""

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.errors import BillingError
from billing.models import (
    CreditDraw,
    CreditGrant,
    CreditSource,
    Invoice,
    InvoiceStatus,
)
from core import audit
from metering.queries import ADDITIVE, Window

SUBSCRIPTION_RANK, GRANT_RANK = 0, 1


class CreditsChanged(Exception):  # noqa: N818 - a signal to measure again, not a failure
    """A grant this close planned to draw was drawn meanwhile: measure again."""


@dataclass(frozen=True)
class Slice:
    """One source of credits as a period's close sees it. `grant_id` None: the subscription's
    own credits of the period."""

    grant_id: object
    source: str
    remaining: int
    expires_at: datetime | None
    created_at: datetime
    granted_at: datetime | None = None

    def order(self):
        rank = SUBSCRIPTION_RANK if self.grant_id is None else GRANT_RANK
        return (
            self.expires_at is None,
            self.expires_at or self.created_at,
            rank,
            self.created_at,
            str(self.grant_id),
        )

    def live_until(self, end: datetime) -> bool:
        """Covers usage of a piece ending at `end` (strictly before its expiry)."""
        return self.expires_at is None or self.expires_at >= end


@dataclass(frozen=True)
class MeterLedger:
    """A meter's ledger for one period: the grants it may draw and the period's usage before
    each expiry inside it (`cuts`: [(instant, units of the period before it)])."""

    grants: tuple  # Slice, without the subscription's credits
    cuts: tuple = ()
    read_at: datetime | None = None


@dataclass(frozen=True)
class Draws:
    """What a period draws of one meter's credits so far."""

    subscription: int  # of the subscription's own credits
    grants: dict = field(default_factory=dict)  # grant id → units
    left: int = 0  # the grants' remainders after these draws, unexpired at the read

    @property
    def drawn(self) -> int:
        return sum(self.grants.values())


NO_DRAWS = Draws(0)


def walk(slices: list[Slice], pieces: list[tuple[datetime, int]]) -> dict:
    """Draw `pieces` of usage ([(end of the piece, whole units)], in time order) from `slices`:
    {grant id (None: the subscription's credits): units drawn}."""
    left = {index: s.remaining for index, s in enumerate(slices)}
    ordered = sorted(range(len(slices)), key=lambda index: slices[index].order())
    drawn: dict = defaultdict(int)
    for end, units in pieces:
        need = units
        for index in ordered:
            if need <= 0:
                break
            if left[index] <= 0 or not slices[index].live_until(end):
                continue
            taken = min(left[index], need)
            left[index] -= taken
            need -= taken
            drawn[slices[index].grant_id] += taken
    return dict(drawn)


def _whole(units: Decimal) -> int:
    """Credits are whole units: a fraction of a unit is covered only by a whole credit."""
    units = max(Decimal(units), Decimal(0))
    return int(units.to_integral_value(rounding="ROUND_CEILING"))


def plan_draws(usage) -> dict:
    """meter id → Draws of a measured period (`billing.metered.PeriodUsage`): pure, the close
    and every preview compute the same figures."""
    consumed: dict = defaultdict(Decimal)
    for priced in usage.prices:
        if not priced.replaced:
            consumed[priced.price.meter_id] += max(priced.value, Decimal(0))
    result = {}
    for meter_id, total in consumed.items():
        ledger = usage.ledger.get(meter_id)
        own = usage.credits.get(meter_id, 0)
        if ledger is None:
            result[meter_id] = Draws(min(own, _whole(total)))
            continue
        slices = list(ledger.grants)
        if own:
            slices.append(Slice(None, CreditSource.SUBSCRIPTION, own, usage.end, usage.start))
        units = _whole(total)
        pieces, before = [], 0
        for instant, value in ledger.cuts:
            upto = min(_whole(value), units)
            pieces.append((instant, max(upto - before, 0)))
            before = max(before, upto)
        pieces.append((usage.end, max(units - before, 0)))
        drawn = walk(slices, pieces)
        grants = {gid: units for gid, units in drawn.items() if gid is not None and units}
        read_at = ledger.read_at or usage.end
        left = sum(
            s.remaining - grants.get(s.grant_id, 0)
            for s in ledger.grants
            if s.expires_at is None or s.expires_at > read_at
        )
        result[meter_id] = Draws(drawn.get(None, 0), grants, left)
    return result


# --- reads --------------------------------------------------------------------------------------


def remaining_grants(pairs, *, live_at: datetime | None = None, granted_before=None):
    """(customer id, meter id) pairs → {pair: [Slice]} with a remainder left (draws of void
    invoices given back), one query. `live_at`: only grants not expired by then."""
    pairs = set(pairs)
    if not pairs:
        return {}
    query = Q()
    for customer_id, meter_id in pairs:
        query |= Q(customer_id=customer_id, meter_id=meter_id)
    grants = CreditGrant.objects.filter(query)
    if live_at is not None:
        grants = grants.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=live_at))
    if granted_before is not None:
        grants = grants.filter(granted_at__lt=granted_before)
    rows = grants.annotate(
        drawn=Coalesce(Sum("draws__units", filter=~Q(draws__invoice__status=InvoiceStatus.VOID)), 0)
    )
    found: dict = defaultdict(list)
    for row in rows.values_list(
        "pk",
        "customer_id",
        "meter_id",
        "source",
        "units",
        "drawn",
        "expires_at",
        "created_at",
        "granted_at",
    ):
        pk, customer_id, meter_id, source, units, drawn, expires_at, created_at, granted_at = row
        if units - drawn > 0:
            found[customer_id, meter_id].append(
                Slice(pk, source, units - drawn, expires_at, created_at, granted_at)
            )
    return found


@dataclass(frozen=True)
class GrantBalance:
    """A grant as the customer sees it: its units and what is left of them."""

    grant_id: object
    source: str
    units: int
    left: int
    granted_at: datetime
    expires_at: datetime | None
    created_at: datetime

    def burn_order(self):
        """The order a period draws grants in (`Slice.order`): earliest expiry first, then the
        ones without expiry, oldest first."""
        return (self.expires_at is None, self.expires_at or self.created_at, self.created_at)


def grant_balances(customer_id, meter_ids, *, now: datetime) -> dict:
    """meter id → the customer's unexpired grants of that meter with something left after the
    closed periods' draws, in burn order. One query."""
    grants = (
        CreditGrant.objects.filter(customer_id=customer_id, meter_id__in=list(meter_ids))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .annotate(
            drawn=Coalesce(
                Sum("draws__units", filter=~Q(draws__invoice__status=InvoiceStatus.VOID)), 0
            )
        )
        .values_list(
            "pk", "meter_id", "source", "units", "drawn", "granted_at", "expires_at", "created_at"
        )
    )
    found: dict = defaultdict(list)
    for pk, meter_id, source, units, drawn, granted_at, expires_at, created_at in grants:
        if units - drawn > 0:
            found[meter_id].append(
                GrantBalance(pk, source, units, units - drawn, granted_at, expires_at, created_at)
            )
    return {meter_id: sorted(rows, key=GrantBalance.burn_order) for meter_id, rows in found.items()}


def net_of_draws(balances: dict, planned: dict) -> dict:
    """`grant_balances` less what the open periods' closes would draw so far (grant id → units,
    `subscriptions.current_credit_draws`), never below zero."""
    return {
        meter_id: [
            replace(row, left=max(row.left - planned.get(row.grant_id, 0), 0)) for row in rows
        ]
        for meter_id, rows in balances.items()
    }


def ledgers_for(periods: list[tuple]) -> tuple[dict, list[Window]]:
    """For (subscription, start, end, [meters priced in the period]) tuples: the grants each
    period may draw, and the windows that measure its usage before each expiry inside it (the
    caller reads them with the period's other windows). Returns ({(subscription id, meter id):
    (grants, [(instant, window key)])}, windows)."""
    wanted = []
    for subscription, start, end, meters in periods:
        for meter in meters:
            if meter.aggregation.get("func") in ADDITIVE:
                wanted.append((subscription, start, end, meter))
    if not wanted:
        return {}, []
    earliest = min(start for _, start, _, _ in wanted)
    latest = max(end for _, _, end, _ in wanted)
    grants = remaining_grants(
        {(s.customer_id, meter.pk) for s, _, _, meter in wanted},
        live_at=earliest,
        granted_before=latest,
    )
    ledgers, windows = {}, []
    for subscription, start, end, meter in wanted:
        mine = tuple(
            g
            for g in grants.get((subscription.customer_id, meter.pk), ())
            if (g.expires_at is None or g.expires_at > start) and g.granted_at < end
        )
        if not mine:
            continue
        cuts = sorted({g.expires_at for g in mine if g.expires_at and start < g.expires_at < end})
        keys = []
        for instant in cuts:
            key = ("credit-cut", subscription.pk, meter.pk, instant)
            windows.append(Window(key, meter, subscription.customer_id, ((start, instant),)))
            keys.append((instant, key))
        ledgers[subscription.pk, meter.pk] = (mine, keys)
    return ledgers, windows


def ledger_usage(ledgers: dict, values: dict, subscription_id, *, read_at: datetime) -> dict:
    """meter id → MeterLedger of one subscription, from `ledgers_for` and the window values."""
    result = {}
    for (sub_id, meter_id), (grants, keys) in ledgers.items():
        if sub_id != subscription_id:
            continue
        cuts = tuple((instant, values[key].value) for instant, key in keys)
        result[meter_id] = MeterLedger(grants, cuts, read_at)
    return result


# --- writes -------------------------------------------------------------------------------------


def record_draws(invoice: Invoice, draws: dict) -> None:
    """Write a closed period's draws (meter id → Draws) in the close's transaction, under the
    grants' row locks; CreditsChanged when a remainder no longer covers them."""
    planned = {gid: units for d in draws.values() for gid, units in d.grants.items() if units}
    if not planned:
        return
    list(CreditGrant.objects.select_for_update().filter(pk__in=planned).order_by("pk"))
    remaining = {
        pk: units - drawn
        for pk, units, drawn in CreditGrant.objects.filter(pk__in=planned)
        .annotate(
            drawn=Coalesce(
                Sum("draws__units", filter=~Q(draws__invoice__status=InvoiceStatus.VOID)), 0
            )
        )
        .values_list("pk", "units", "drawn")
    }
    if any(remaining.get(gid, 0) < units for gid, units in planned.items()):
        raise CreditsChanged(invoice.pk)
    CreditDraw.objects.bulk_create(
        CreditDraw(grant_id=gid, invoice=invoice, units=units) for gid, units in planned.items()
    )


def grant(
    *,
    customer,
    meter,
    units: int,
    source: str = CreditSource.STAFF,
    expires_at: datetime | None = None,
    granted_at: datetime | None = None,
    reason: str = "",
    invoice=None,
    benefit=None,
) -> CreditGrant:
    """Add a grant to the ledger (a pack paid, a staff grant)."""
    if meter.organization_id != customer.organization_id:
        raise BillingError("The meter belongs to another organization", field=("meter_id",))
    if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
        raise BillingError("Credits are a positive whole number of units", field=("units",))
    if meter.aggregation.get("func") not in ADDITIVE:
        raise BillingError("Credits are drawn from count and sum meters only", field=("meter_id",))
    granted_at = granted_at or timezone.now()
    if expires_at is not None and expires_at <= granted_at:
        raise BillingError("A grant expires after it is granted", field=("expires_at",))
    with transaction.atomic():
        made = CreditGrant.objects.create(
            organization_id=customer.organization_id,
            customer=customer,
            meter=meter,
            source=source,
            units=units,
            granted_at=granted_at,
            expires_at=expires_at,
            reason=reason[:280],
            invoice=invoice,
            benefit=benefit,
        )
        if source == CreditSource.STAFF:
            # credits are money given away: the staff user who granted them is on record
            audit.record(
                made,
                action="credit grant",
                created=True,
                changes={
                    "customer": (None, customer.email),
                    "meter": (None, meter.name),
                    "units": (None, units),
                    "expires_at": (None, expires_at.isoformat() if expires_at else None),
                    "reason": (None, made.reason),
                },
            )
    return made


def grant_pack(invoice: Invoice) -> list[CreditGrant]:
    """A paid pack order grants each meter-credit benefit of its product once (a second call,
    a replayed signal, grants nothing: one grant per order and benefit)."""
    product = invoice.product
    if invoice.billing_reason != "purchase" or product is None:
        return []
    paid_at = invoice.paid_at or timezone.now()
    made = []
    with transaction.atomic():
        done = set(CreditGrant.objects.filter(invoice=invoice).values_list("benefit_id", flat=True))
        for benefit in product.benefits.select_related("meter").filter(is_deleted=False):
            if benefit.pk in done:
                continue
            days = benefit.expires_after_days
            made.append(
                grant(
                    customer=invoice.customer,
                    meter=benefit.meter,
                    units=benefit.units,
                    source=CreditSource.PACK,
                    granted_at=paid_at,
                    expires_at=paid_at + timedelta(days=days) if days else None,
                    reason=f"{product.name} ({invoice.number})",
                    invoice=invoice,
                    benefit=benefit,
                )
            )
    return made


def on_invoice_status_changed(sender, invoice, previous, **kwargs) -> None:
    if invoice.status == InvoiceStatus.PAID and invoice.billing_reason == "purchase":
        grant_pack(invoice)

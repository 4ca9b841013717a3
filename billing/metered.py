"""Measuring a period's usage for its metered prices, for many subscriptions at once: the reads
behind an invoice plan (`billing.plan` prices what this module measures, without reading).

Usage is attributed by event timestamp, and read through metering's query API inside one
committed read boundary (`metering.queries.consistent_read`). Per price of a subscription — a
price may apply in several spans, e.g. A → B → A within a period, and is still **one** line —
a period bills:

- `count`/`sum`: `value over [span start, period end) − units already billed by the span`,
  summed over the price's spans. That is the period's own usage plus the late units of earlier,
  closed periods; over all closes it telescopes to the value over every event since the price
  started (exactly once, whatever the arrival order). Units billed are kept exactly.
- `avg`/`min`/`max`/`unique`: the value over the period's **set** — its own events plus the
  events of earlier spans of the price (back to BILLING_LATE_LOOKBACK) that arrived after the
  last close's read boundary. Each event is in exactly one period's set, whatever ingests run
  during a close: a boundary is a committed snapshot, not a clock.

A price that no longer applies (replaced by a plan change) still bills the late usage of its
spans, at the **marginal** cost it adds to the price's last period: the last period's value is
re-measured with the late usage, priced whole, and what that period's lines already charged is
subtracted (no flat amount or tier charged twice). What they charged is derived from the
invoice lines themselves (`Tally`)."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.utils import timezone
from moneyed import Money

from billing import credits as ledger
from billing.models import BillingReason, InvoiceLine, InvoiceStatus, Price, SubscriptionPrice
from billing.money import EXACT, to_minor
from metering import queries
from metering.queries import Arrivals, ReadBoundary, Window

Range = tuple[datetime, datetime]


@dataclass(frozen=True)
class Tally:
    """What the lines of one price attributed to one of its past periods billed so far."""

    period: Range
    consumed: Decimal = Decimal(0)
    quantity: Decimal = Decimal(0)
    amount: int = 0
    credited: int = 0
    late_since: ReadBoundary | None = None  # the boundary that period's late set began at
    late: Decimal = Decimal(0)


NOTHING_INVOICED = Tally(period=None)


@dataclass(frozen=True)
class PriceUsage:
    """One price's usage in a period. `ranges` is where it applied in the period; for a price
    that no longer applies (`tally` set), its part of its last period."""

    price: Price
    spans: tuple
    ranges: tuple
    value: Decimal  # the period's value (count/sum: own + late units)
    late: Decimal  # count/sum: late units; others: late events that joined the set
    billed_through: dict = field(default_factory=dict)  # span id → units billed after this
    tally: Tally | None = None

    @property
    def replaced(self) -> bool:
        return self.tally is not None


@dataclass(frozen=True)
class PeriodUsage:
    start: datetime
    end: datetime
    prices: list  # PriceUsage, in the order the prices first applied
    credits: dict  # meter id → credits granted in the period
    # price id → what the period's spend-threshold invoices billed of it so far
    invoiced: dict = field(default_factory=dict)
    # the subscription's `threshold_version` the invoiced figures go with
    threshold_version: int = 0
    # meter id → the credit ledger's grants the period may draw (billing.credits)
    ledger: dict = field(default_factory=dict)


def is_additive(meter) -> bool:
    return meter.aggregation.get("func") in queries.ADDITIVE


def metered_spans(subscription) -> list[SubscriptionPrice]:
    """Works with `subscription_prices` prefetched (with price, product and meter)."""
    return [sp for sp in subscription.subscription_prices.all() if sp.price.is_metered]


def _clip(sp: SubscriptionPrice, start: datetime, end: datetime) -> Range | None:
    lo = max(start, sp.starts_at)
    hi = min(end, sp.ends_at) if sp.ends_at else end
    return (lo, hi) if lo < hi else None


def _merged(ranges) -> tuple:
    out: list = []
    for lo, hi in sorted(r for r in ranges if r is not None):
        if out and out[-1][1] >= lo:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


@dataclass
class _Group:
    subscription: object
    price: Price
    spans: list
    ranges: tuple  # in the period
    start: datetime
    end: datetime

    @property
    def key(self):
        return (self.subscription.pk, self.price.pk, self.start)

    def earlier(self, before: datetime) -> tuple:
        """The price's spans before `before`, within the late look-back."""
        since = before - settings.BILLING_LATE_LOOKBACK
        return _merged(_clip(sp, since, before) for sp in self.spans)


def _groups(subscription, start: datetime, end: datetime) -> list[_Group]:
    by_price: dict = {}
    for sp in sorted(metered_spans(subscription), key=lambda sp: (sp.starts_at, sp.pk)):
        if sp.starts_at >= end:
            continue  # the price does not apply yet (e.g. during a trial)
        by_price.setdefault(sp.price_id, []).append(sp)
    groups = [
        _Group(
            subscription,
            spans[0].price,
            spans,
            _merged(_clip(sp, start, end) for sp in spans),
            start,
            end,
        )
        for spans in by_price.values()
    ]
    # replaced prices first (their usage is older), then in the order the prices first applied
    return sorted(
        groups,
        key=lambda g: (
            bool(g.ranges),
            g.ranges[0][0] if g.ranges else start,
            g.price.created_at,
            str(g.price.pk),
        ),
    )


def boundary_of(subscription) -> ReadBoundary | None:
    if subscription.closed_usage_snapshot is None and subscription.closed_usage_read_at is None:
        return None
    return ReadBoundary(subscription.closed_usage_snapshot, subscription.closed_usage_read_at)


def measure(periods: list[tuple[object, datetime, datetime]]) -> dict:
    """(subscription, period start, period end) triples → {subscription id: PeriodUsage}, read
    set-based: all windows in one `metering.queries.window_values` call (how many statements
    that takes is the event store's business). Call it inside
    `metering.queries.consistent_read()`."""
    all_groups = [(s, start, end, _groups(s, start, end)) for s, start, end in periods]
    windows, credit_windows, priced_meters = [], [], []
    for subscription, start, end, groups in all_groups:
        customer = subscription.customer_id
        since = boundary_of(subscription)
        meters = {}
        for group in groups:
            meter = group.price.meter
            if group.ranges:
                meters.setdefault(meter.pk, meter)
            if is_additive(meter):
                if group.ranges:
                    windows.append(Window((group.key, "period"), meter, customer, group.ranges))
                for sp in group.spans:
                    until = min(sp.ends_at, end) if sp.ends_at else end
                    windows.append(
                        Window((group.key, sp.pk), meter, customer, ((sp.starts_at, until),))
                    )
            elif group.ranges:
                earlier = group.earlier(start)
                late = Arrivals(earlier, since) if since and earlier else None
                windows.append(Window((group.key, "period"), meter, customer, group.ranges, late))
            elif since is not None:
                # a replaced price: did anything of its spans arrive since the last close?
                arrived = _merged(_clip(sp, sp.starts_at, sp.ends_at or end) for sp in group.spans)
                late = Arrivals(arrived, since)
                windows.append(Window((group.key, "arrived"), meter, customer, (), late))
        for meter in meters.values():
            whole = ((start, end),)
            credit_windows.append(Window((subscription.pk, meter.pk), meter, customer, whole))
        priced_meters.append((subscription, start, end, list(meters.values())))
    ledgers, ledger_windows = ledger.ledgers_for(priced_meters)
    read_at = timezone.now()
    values = queries.window_values(windows + ledger_windows)
    credits = queries.credited_in_windows(credit_windows)
    pending = _replaced(all_groups, values)
    tallies = _tallies([group for group, _ in pending])
    values.update(_remeasured(pending, tallies))
    invoiced = threshold_tallies([(s, start) for s, start, _end, _groups in all_groups])
    return {
        subscription.pk: PeriodUsage(
            start,
            end,
            [
                usage
                for group in groups
                if (usage := _usage(group, values, tallies)) is not None
            ],
            {
                meter_id: units
                for (subscription_id, meter_id), units in credits.items()
                if subscription_id == subscription.pk
            },
            invoiced.get(subscription.pk, {}),
            subscription.threshold_version,
            ledger.ledger_usage(ledgers, values, subscription.pk, read_at=read_at),
        )
        for subscription, start, end, groups in all_groups
    }


def threshold_tallies(periods: list[tuple[object, datetime]]) -> dict:
    """(subscription, period start) pairs → {subscription id: {price id: Tally}}: what the
    period's spend-threshold invoices (not void) billed per price. One query, and none when no
    subscription of the list ever had one (`threshold_version` 0)."""
    starts = {s.pk: start for s, start in periods if s.threshold_version}
    if not starts:
        return {}
    lines = (
        InvoiceLine.objects.filter(
            invoice__subscription_id__in=starts,
            invoice__billing_reason=BillingReason.SPEND_THRESHOLD,
            invoice__period_start__in=set(starts.values()),
            price__isnull=False,
        )
        .exclude(invoice__status=InvoiceStatus.VOID)
        .values_list(
            "invoice__subscription_id",
            "invoice__period_start",
            "invoice__period_end",
            "price_id",
            "consumed_units",
            "quantity",
            "amount",
            "amount_currency",
            "credited_units",
            "late_units",
        )
    )
    found: dict = defaultdict(dict)
    for sub_id, start, end, price_id, consumed, quantity, amount, currency, credited, late in lines:
        if starts[sub_id] != start:
            continue
        seen = found[sub_id].get(price_id) or Tally(period=(start, end))
        found[sub_id][price_id] = Tally(
            period=seen.period,
            consumed=EXACT.add(seen.consumed, consumed),
            quantity=EXACT.add(seen.quantity, quantity),
            amount=seen.amount + to_minor(Money(amount, currency)),
            credited=max(seen.credited, credited),
            late=EXACT.add(seen.late, late),
        )
    return found


def _cumulative(group: _Group, values: dict) -> tuple[Decimal, dict]:
    """count/sum: (units not yet billed by the price's spans, span id → value billed after)."""
    unbilled, through = Decimal(0), {}
    for sp in group.spans:
        value = values.get((group.key, sp.pk), queries.WindowValue(Decimal(0))).value
        through[sp.pk] = value
        unbilled = EXACT.add(unbilled, EXACT.subtract(value, sp.billed_units))
    return unbilled, through


def _replaced(all_groups, values: dict) -> list[tuple[_Group, Decimal]]:
    """Replaced prices with usage that arrived since the last close: (group, late)."""
    found = []
    for _subscription, _start, _end, groups in all_groups:
        for group in groups:
            if group.ranges:
                continue
            if is_additive(group.price.meter):
                late, _ = _cumulative(group, values)
            else:
                arrived = values.get((group.key, "arrived"))
                late = Decimal(arrived.late_events) if arrived else Decimal(0)
            if late:
                found.append((group, late))
    return found


def _tallies(groups: list[_Group]) -> dict:
    """group key → Tally of the price's last billed period (one query for all groups)."""
    if not groups:
        return {}
    lines = (
        InvoiceLine.objects.filter(
            invoice__subscription_id__in={g.subscription.pk for g in groups},
            price_id__in={g.price.pk for g in groups},
        )
        .exclude(invoice__status=InvoiceStatus.VOID)
        .select_related("invoice")
        .order_by("invoice__period_start", "position")
    )
    by_pair: dict = defaultdict(list)
    for line in lines:
        by_pair[line.invoice.subscription_id, line.price_id].append(line)
    tallies = {}
    for group in groups:
        found = by_pair.get((group.subscription.pk, group.price.pk), [])
        own = [
            line
            for line in found
            if line.invoice.billing_reason == BillingReason.SUBSCRIPTION_CYCLE
            and line.invoice.period_start <= line.period_start < line.invoice.period_end
        ]
        if not own:
            continue
        invoice = own[-1].invoice
        lo, hi = invoice.period_start, invoice.period_end
        mine = [line for line in found if lo <= line.period_start < hi]
        late_since = None
        if invoice.late_since_snapshot is not None or invoice.late_since_at is not None:
            late_since = ReadBoundary(invoice.late_since_snapshot, invoice.late_since_at)
        tallies[group.key] = Tally(
            period=(lo, hi),
            consumed=sum((line.consumed_units for line in mine), Decimal(0)),
            quantity=sum((line.quantity for line in mine), Decimal(0)),
            amount=sum(to_minor(line.amount) for line in mine),
            credited=max(line.credited_units for line in mine),
            late_since=late_since,
        )
    return tallies


def _remeasured(pending: list, tallies: dict) -> dict:
    """A replaced avg/min/max/unique price's last period, measured again: its own events (now
    all visible) and the late set it began with; what arrived since joins it."""
    windows = []
    for group, _late in pending:
        tally = tallies.get(group.key)
        if tally is None or is_additive(group.price.meter):
            continue
        lo, hi = tally.period
        ranges = _merged(_clip(sp, lo, hi) for sp in group.spans)
        earlier = group.earlier(lo)
        late = Arrivals(earlier, tally.late_since) if tally.late_since and earlier else None
        windows.append(
            Window(
                (group.key, "again"),
                group.price.meter,
                group.subscription.customer_id,
                ranges,
                late,
            )
        )
    return queries.window_values(windows) if windows else {}


def _usage(group: _Group, values: dict, tallies: dict) -> PriceUsage | None:
    additive = is_additive(group.price.meter)
    if group.ranges:
        period = values[(group.key, "period")]
        if additive:
            unbilled, through = _cumulative(group, values)
            return PriceUsage(
                group.price,
                tuple(group.spans),
                group.ranges,
                value=unbilled,
                late=EXACT.subtract(unbilled, period.value),
                billed_through=through,
            )
        return PriceUsage(
            group.price,
            tuple(group.spans),
            group.ranges,
            value=period.value,
            late=Decimal(period.late_events),
        )
    # a price that no longer applies: only what arrived since its last period closed
    if additive:
        unbilled, through = _cumulative(group, values)
        if not unbilled:
            return None
        last = group.spans[-1]
        # never billed (its invoices were voided): its late units are priced on their own
        tally = tallies.get(group.key) or Tally((last.starts_at, last.ends_at or group.start))
        lo, hi = tally.period
        ranges = _merged(_clip(sp, lo, hi) for sp in group.spans) or ((lo, hi),)
        return PriceUsage(
            group.price,
            tuple(group.spans),
            ranges,
            value=EXACT.add(tally.consumed, unbilled),
            late=unbilled,
            billed_through=through,
            tally=tally,
        )
    arrived = values.get((group.key, "arrived"))
    tally = tallies.get(group.key)
    if tally is None or arrived is None or not arrived.late_events:
        return None
    lo, hi = tally.period
    ranges = _merged(_clip(sp, lo, hi) for sp in group.spans) or ((lo, hi),)
    again = values.get((group.key, "again"))
    return PriceUsage(
        group.price,
        tuple(group.spans),
        ranges,
        value=again.value if again else tally.consumed,
        late=Decimal(arrived.late_events),
        tally=tally,
    )

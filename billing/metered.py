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
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone
from moneyed import Money

from billing import credits as ledger
from billing.models import BillingReason, InvoiceLine, InvoiceStatus, Price, SubscriptionPrice
from billing.money import EXACT, to_minor
from metering import queries
from metering.aggregation import exact_sum
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
    seen: ReadBoundary | None = None  # the boundary its close read the period's usage at


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
    corrections: int = 0  # usage corrections of the invoiced period `tally` this line bills
    correcting: bool = False  # only that: a correction line, not the price's usage of a period

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


@dataclass
class Fix:
    """What usage corrections change in one price's lines: correction lines for its invoiced
    periods, count/sum units they bill that the price's own line must not bill again, and
    whether a replaced price's marginal line takes them (its last period was corrected)."""

    lines: list = field(default_factory=list)  # PriceUsage
    units: Decimal = Decimal(0)
    merged: int = 0


NO_FIX = Fix()


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
    touched = _touched(all_groups, _corrections(all_groups))
    billed = _billed_periods([group for group, _ in pending] + [group for group, _ in touched])
    tallies = {key: periods[-1] for key, periods in billed.items() if periods}
    fixes = _fixes(touched, billed, tallies)
    # a replaced avg/min/max/unique price whose last period was corrected is measured again
    # (with its late arrivals, if any): one marginal line bills both
    pending += [
        (group, Decimal(0))
        for group, _ in touched
        if fixes[group.key].merged and group.key not in {g.key for g, _ in pending}
    ]
    values.update(_remeasured(pending, tallies))
    invoiced = threshold_tallies([(s, start) for s, start, _end, _groups in all_groups])
    return {
        subscription.pk: PeriodUsage(
            start,
            end,
            [
                *(
                    usage
                    for group in groups
                    if group.key in fixes
                    for usage in fixes[group.key].lines
                ),
                *(
                    usage
                    for group in groups
                    if (usage := _usage(group, values, tallies, fixes.get(group.key, NO_FIX)))
                    is not None
                ),
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


def _cumulative(group: _Group, values: dict, fix: Fix = NO_FIX) -> tuple[Decimal, dict]:
    """count/sum: (units not yet billed by the price's spans, span id → value billed after).
    Units that correction lines bill (`fix`) are left out: they are billed there."""
    unbilled, through = EXACT.subtract(Decimal(0), fix.units), {}
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


def _billed_periods(groups: list[_Group]) -> dict:
    """group key → Tally of every period the price billed on a cycle invoice (not void), oldest
    first; its last one is where a replaced price's late usage is priced (one query)."""
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
    billed = {}
    for group in groups:
        found = by_pair.get((group.subscription.pk, group.price.pk), [])
        invoices = {
            line.invoice.pk: line.invoice
            for line in found
            if line.invoice.billing_reason == BillingReason.SUBSCRIPTION_CYCLE
            and line.invoice.period_start <= line.period_start < line.invoice.period_end
        }
        billed[group.key] = [_tally(invoice, found) for invoice in invoices.values()]
    return billed


def _tally(invoice, lines: list) -> Tally:
    """What the lines attributed to the invoice's period billed (its own, its spend-threshold
    invoices', later marginal and correction lines)."""
    lo, hi = invoice.period_start, invoice.period_end
    mine = [line for line in lines if lo <= line.period_start < hi]
    return Tally(
        period=(lo, hi),
        # exactly: the built-in sum rounds at 28 digits (an average has 40)
        consumed=exact_sum(line.consumed_units for line in mine),
        quantity=exact_sum(line.quantity for line in mine),
        amount=sum(to_minor(line.amount) for line in mine),
        credited=max(line.credited_units for line in mine),
        late_since=_boundary(invoice.late_since_snapshot, invoice.late_since_at),
        seen=_boundary(invoice.usage_snapshot, invoice.usage_read_at),
    )


def _boundary(snapshot, taken_at) -> ReadBoundary | None:
    if snapshot is None and taken_at is None:
        return None
    return ReadBoundary(snapshot, taken_at)


# --- usage corrections --------------------------------------------------------------------------

# A correction is read by billing from when it was made; a transaction that made one can't have
# been open longer than this before the close boundary that must not see it was taken.
CORRECTION_SLACK = timedelta(hours=1)


def _corrections(all_groups) -> dict:
    """subscription id → the usage corrections of its customer that the current read boundary
    sees and its last close's did not: each is billed by exactly one close."""
    now = queries.current_boundary()
    if now is None:
        return {}
    last = {s.pk: boundary_of(s) for s, _start, _end, _groups in all_groups}
    closed = [b for b in last.values() if b is not None and b.token]
    if not closed:
        return {}  # nothing invoiced yet: the periods' own reads show every correction
    found = queries.corrections_since(
        [s.customer_id for s, *_ in all_groups if last[s.pk] is not None],
        min(b.taken_at for b in closed) - CORRECTION_SLACK,
    )
    by_customer = defaultdict(list)
    for correction in found:
        if now.sees(correction.txid):
            by_customer[correction.customer_id].append(correction)
    return {
        s.pk: [c for c in by_customer[s.customer_id] if not last[s.pk].sees(c.txid)]
        for s, *_ in all_groups
        if last[s.pk] is not None and last[s.pk].token
    }


def _touched(all_groups, corrections: dict) -> list[tuple[_Group, list]]:
    """(group, its corrections): those of an event its price applied to, on its meter."""
    touched = []
    for subscription, _start, _end, groups in all_groups:
        mine = corrections.get(subscription.pk)
        if not mine:
            continue
        for group in groups:
            found = [
                c
                for c in mine
                if c.touches(group.price.meter)
                and any(
                    sp.starts_at <= c.timestamp and (sp.ends_at is None or c.timestamp < sp.ends_at)
                    for sp in group.spans
                )
            ]
            if found:
                touched.append((group, found))
    return touched


def _holding_period(group: _Group, correction, periods: list[Tally]) -> Tally | None:
    """The invoiced period that billed the corrected event: the first close after its timestamp
    that saw it (count/sum late units are billed by the close that first sees them); for
    avg/min/max/unique the period whose set it joined — its own, or a later one as a late
    arrival within the look-back. None: not billed yet."""
    moment, arrival = correction.timestamp, correction.arrival_txid
    for tally in periods:
        lo, hi = tally.period
        if hi <= moment or tally.seen is None or not tally.seen.sees(arrival):
            continue
        if is_additive(group.price.meter) or moment >= lo:
            return tally
        if moment < lo - settings.BILLING_LATE_LOOKBACK:
            return None
        if tally.late_since is None or not tally.late_since.sees(arrival):
            return tally
    return None


def _fixes(touched: list, billed: dict, tallies: dict) -> dict:
    """group key → Fix. A corrected invoiced period is billed again whole with the corrected
    usage, less what its lines charged (`plan._marginal`): count/sum from the units the
    corrections add or take away, avg/min/max/unique measured again over the period's set."""
    fixes = {}
    for group, corrections in touched:
        meter = group.price.meter
        fix = fixes.setdefault(group.key, Fix())
        by_period: dict = defaultdict(list)
        for correction in corrections:
            tally = _holding_period(group, correction, billed.get(group.key, []))
            if tally is not None:
                by_period[tally.period].append((tally, correction))
        for period, found in sorted(by_period.items()):
            tally = found[0][0]
            units = exact_sum(
                EXACT.subtract(
                    c.contribution(meter, c.replacement), c.contribution(meter, c.original)
                )
                for _, c in found
            )
            if not group.ranges and tallies.get(group.key) is tally:
                fix.merged += len(found)  # the replaced price's marginal line takes it
                continue
            if is_additive(meter):
                fix.units = EXACT.add(fix.units, units)
                value = EXACT.add(tally.consumed, units)
            else:
                value = _measured_again(group, tally)
            lo, hi = period
            fix.lines.append(
                PriceUsage(
                    group.price,
                    tuple(group.spans),
                    _merged(_clip(sp, lo, hi) for sp in group.spans) or (period,),
                    value=value,
                    late=Decimal(0),
                    tally=tally,
                    corrections=len(found),
                    correcting=True,
                )
            )
    return fixes


def _measured_again(group: _Group, tally: Tally) -> Decimal:
    """An invoiced period's avg/min/max/unique value over its set as it is now: its own events
    that its close saw, and the earlier ones that joined it as late arrivals — read raw (rare:
    only corrected periods)."""
    lo, hi = tally.period
    meter, customer = group.price.meter, group.subscription.customer_id
    own = queries.Window(None, meter, customer, _merged(_clip(sp, lo, hi) for sp in group.spans))
    events = queries.window_events(own, seen_by=tally.seen)
    earlier = group.earlier(lo)
    if earlier and tally.late_since is not None:
        window = queries.Window(None, meter, customer, earlier)
        before = {e.id for e in queries.window_events(window, seen_by=tally.late_since)}
        events += [
            e for e in queries.window_events(window, seen_by=tally.seen) if e.id not in before
        ]
    return queries.set_value(meter, events)


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


def _usage(group: _Group, values: dict, tallies: dict, fix: Fix) -> PriceUsage | None:
    additive = is_additive(group.price.meter)
    if group.ranges:
        period = values[(group.key, "period")]
        if additive:
            unbilled, through = _cumulative(group, values, fix)
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
        unbilled, through = _cumulative(group, values, fix)
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
            corrections=fix.merged,
        )
    arrived = values.get((group.key, "arrived"))
    late_events = arrived.late_events if arrived else 0
    tally = tallies.get(group.key)
    if tally is None or not (late_events or fix.merged):
        return None
    lo, hi = tally.period
    ranges = _merged(_clip(sp, lo, hi) for sp in group.spans) or ((lo, hi),)
    again = values.get((group.key, "again"))
    return PriceUsage(
        group.price,
        tuple(group.spans),
        ranges,
        value=again.value if again else tally.consumed,
        late=Decimal(late_events),
        tally=tally,
        corrections=fix.merged,
    )

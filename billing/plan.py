"""The invoice plan: one pure function from (subscription, period, measured usage) to the
invoice's lines and totals. The cycle close finalizes it; the upcoming invoice, the
subscription's `meters`, the customer meters, the portal and usage alerts show it — so what
they show is what the close will bill (Kill Bill's "dry run" is the same generator).

Nothing here reads the database: the subscription comes loaded by `cycles.live_subscriptions()`
(prices, pending items, discount), the usage from `billing.metered.measure`.

Order of the lines: pending items (prorations, carried credits), the metered lines in the order
their prices first applied, the next period's fixed price (unless the subscription ends)."""

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal

from billing import catalog, credits, discounts, invoices, periods, pricing, taxes
from billing.invoices import InvoiceDraft, LineDraft
from billing.metered import NOTHING_INVOICED, PeriodUsage, PriceUsage, Tally
from billing.models import DiscountType, PriceType
from billing.money import EXACT, check_storable, to_minor


@dataclass(frozen=True)
class MeteredLine:
    """One price's line of a period. For a price that no longer applies, the difference its
    late usage makes to its last period (`marginal`).

    `consumed`, `billable` and `amount` are the whole period's so far (what the subscription's
    meters show); `invoiced` is what the period's spend-threshold invoices already billed of
    them, and the invoice line bills the difference (`due_*`): tiers, flat amounts and caps
    apply once to the whole period."""

    usage: PriceUsage
    consumed: Decimal
    late: Decimal
    credited: int
    billable: Decimal
    amount: int
    invoiced: Tally = NOTHING_INVOICED
    # the credit ledger's units left after this period's draws (not billed: shown in balances)
    credits_left: int = 0

    @property
    def due_consumed(self) -> Decimal:
        return EXACT.subtract(self.consumed, self.invoiced.consumed)

    @property
    def due_quantity(self) -> Decimal:
        return EXACT.subtract(self.billable, self.invoiced.quantity)

    @property
    def due_late(self) -> Decimal:
        return EXACT.subtract(self.late, self.invoiced.late)

    @property
    def due_amount(self) -> int:
        return self.amount - self.invoiced.amount

    @property
    def price(self):
        return self.usage.price

    @property
    def meter_id(self):
        return self.usage.price.meter_id

    @property
    def marginal(self) -> bool:
        return self.usage.replaced

    def draft(self, *, note: str = "") -> LineDraft:
        price = self.price
        ranges = self.usage.ranges
        if not note and self.usage.corrections:
            note = " — usage correction"
        if not note and self.invoiced is not NOTHING_INVOICED:
            note = " (the rest after the spend-threshold invoices)"
        return LineDraft(
            label=f"{price.product.name} — {price.meter.name}{note}",
            period_start=ranges[0][0],
            period_end=ranges[-1][1],
            amount=self.due_amount,
            quantity=self.due_quantity,
            price=price,
            price_terms=catalog.price_terms(price),
            meter_id=price.meter_id,
            unit_amount=price.unit_amount,
            consumed_units=self.due_consumed,
            credited_units=self.credited,
            late_units=self.due_late,
            corrected_events=self.usage.corrections,
        )


def line_amount(price, units: Decimal) -> int:
    """The price of `units` billable units: exact, rounded once, capped."""
    cap = price.cap_amount
    return pricing.metered_amount(
        unit_amount=price.unit_amount if price.amount_type == PriceType.METERED_UNIT else None,
        tiers=price.tiers if price.amount_type == PriceType.METERED_TIERS else None,
        units=units,
        cap_amount=to_minor(cap) if cap is not None else None,
    )


def metered_lines(usage: PeriodUsage) -> tuple[list[MeteredLine], dict]:
    """(the period's metered lines, meter id → credits left unused). A meter's credits of the
    period go to its prices in the order they applied."""
    pool = dict(usage.credits)
    # the credit ledger's draws join the pool: they cover only what the subscription's own
    # credits don't (credits.walk), so what the pool leaves is those credits' unused part
    draws = credits.plan_draws(usage)
    for meter_id, drawn in draws.items():
        if drawn.drawn:
            pool[meter_id] = pool.get(meter_id, 0) + drawn.drawn
    lines = []
    for priced in usage.prices:
        if priced.replaced:
            line = _marginal(priced)
            if line is not None:
                lines.append(line)
            continue
        meter_id = priced.price.meter_id
        credited = pool.get(meter_id, 0)
        billable = pricing.billable_units(consumed=priced.value, credited=credited)
        lines.append(
            MeteredLine(
                priced,
                consumed=priced.value,
                late=priced.late,
                credited=credited,
                billable=billable,
                amount=line_amount(priced.price, billable),
                invoiced=usage.invoiced.get(priced.price.pk, NOTHING_INVOICED),
                credits_left=draws.get(meter_id, credits.NO_DRAWS).left,
            )
        )
        pool[meter_id] = max(EXACT.subtract(credited, max(priced.value, Decimal(0))), 0)
    unused = {
        meter_id: int(Decimal(left).to_integral_value(ROUND_FLOOR))
        for meter_id, left in pool.items()
    }
    return lines, unused


def _marginal(priced: PriceUsage) -> MeteredLine | None:
    """Late usage of a price that no longer applies: its last period priced again with it, less
    what that period's lines charged (no flat amount or lower tier charged twice)."""
    tally = priced.tally
    billable = pricing.billable_units(consumed=priced.value, credited=tally.credited)
    consumed = EXACT.subtract(priced.value, tally.consumed)
    quantity = EXACT.subtract(billable, tally.quantity)
    amount = line_amount(priced.price, billable) - tally.amount
    if not (consumed or quantity or amount):
        return None
    return MeteredLine(priced, consumed, priced.late, tally.credited, quantity, amount)


# --- fixed prices -----------------------------------------------------------------------------


def next_period(subscription) -> tuple[datetime, datetime]:
    product = subscription.product
    return periods.period_bounds(
        subscription.anchor_at,
        product.recurring_interval,
        product.recurring_interval_count,
        subscription.period_index + 1,
    )


def fixed_price_at(subscription, at: datetime):
    """The fixed price in force at `at` (after plan changes, each has its own time span)."""
    for sp in subscription.subscription_prices.all():
        if sp.price.is_metered or sp.starts_at > at or (sp.ends_at and sp.ends_at <= at):
            continue
        return sp.price
    return None


def product_fixed_price(product):
    """The product's live fixed price, if it has one."""
    for price in product.prices.all():
        if not price.is_metered and not price.is_archived:
            return price
    return None


def fixed_line(product, price, start: datetime, end: datetime) -> LineDraft | None:
    """A fixed price billed in advance for [start, end); none when absent or zero."""
    amount = to_minor(price.price_amount) if price is not None else 0
    if amount <= 0:
        return None
    return LineDraft(
        label=f"{product.name} ({start:%b %d, %Y} – {end:%b %d, %Y})",
        period_start=start,
        period_end=end,
        amount=amount,
        price=price,
        price_terms=catalog.price_terms(price),
        unit_amount=None,
    )


def first_period_line(subscription) -> LineDraft | None:
    """The first period's fixed price, invoiced when the subscription is created."""
    start, end = subscription.current_period_start, subscription.current_period_end
    return fixed_line(subscription.product, fixed_price_at(subscription, start), start, end)


def renewal_line(subscription) -> LineDraft | None:
    """The next period's fixed price: the pending product's when a plan change waits for the
    period end, else the price the subscription has in force then."""
    start, end = next_period(subscription)
    product = subscription.pending_product
    if product is not None:
        return fixed_line(product, product_fixed_price(product), start, end)
    price = fixed_price_at(subscription, start)
    return fixed_line(subscription.product, price, start, end)


def item_line(item) -> LineDraft:
    return LineDraft(
        label=item.label,
        period_start=item.period_start,
        period_end=item.period_end,
        amount=to_minor(item.amount),
        price=item.price,
        price_terms=catalog.price_terms(item.price) if item.price is not None else None,
        unit_amount=None,
        proration=item.proration,
        quantity=item.quantity,
        meter_id=item.meter_id,
        consumed_units=item.quantity if item.meter_id else Decimal(0),
    )


def open_items(subscription) -> list:
    """The subscription's pending items (prefetched by `cycles.live_subscriptions`)."""
    return list(subscription.open_pending_items)


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodPlan:
    start: datetime
    end: datetime
    draft: InvoiceDraft  # lines with discount and tax, and the totals
    metered: list  # MeteredLine
    items: list  # the pending items it takes
    renews: bool  # False: the subscription ends with this period
    carried: int  # credit beyond the invoice, carried to the next one (≤ 0, minor units)
    unused_credits: dict  # meter id → credits the period left unused (rollover)
    credit_draws: dict = field(default_factory=dict)  # meter id → credits.Draws (ledger)


def plan_period(
    subscription, usage: PeriodUsage, *, tax_rates: list | None = None, final: bool = False
) -> PeriodPlan:
    """What closing the period [usage.start, usage.end) invoices. `final`: the subscription ends
    with it (revocation); so does a period canceled at its end."""
    items = open_items(subscription)
    metered, unused = metered_lines(usage)
    renews = not (final or subscription.cancel_at_period_end)
    lines = [item_line(item) for item in items] + [line.draft() for line in metered]
    renewal = renewal_line(subscription) if renews else None
    if renewal is not None:
        lines.append(renewal)
    for line in lines:
        check_storable(line.amount, subscription.currency, what=f"The line '{line.label}'")
    lines, carried = carry_excess_credit(lines)
    draft = draft_for(subscription, lines, tax_rates)
    check_amounts(draft)
    return PeriodPlan(
        usage.start,
        usage.end,
        draft,
        metered,
        items,
        renews,
        carried,
        unused,
        credits.plan_draws(usage),
    )


# --- spend thresholds -------------------------------------------------------------------------

# Meters whose period value only grows as usage arrives: what a threshold invoice bills of them
# never exceeds what the period's close would. avg and min can fall, so their prices are billed
# whole by the close and don't count toward the threshold.
THRESHOLD_FUNCS = ("count", "sum", "max", "unique")


def counts_toward_threshold(line: MeteredLine) -> bool:
    """A line of the period's own prices on a growing meter (late usage of a replaced price is
    priced against its own period, at the close)."""
    return not line.marginal and line.price.meter.aggregation.get("func") in THRESHOLD_FUNCS


def uninvoiced(lines: list[MeteredLine]) -> list[MeteredLine]:
    """The lines with charges the period's invoices have not billed yet."""
    return [line for line in lines if counts_toward_threshold(line) and line.due_amount > 0]


def uninvoiced_amount(usage: PeriodUsage) -> int:
    """The period's metered charges not invoiced yet, before discount and tax (minor units)."""
    return sum(line.due_amount for line in uninvoiced(metered_lines(usage)[0]))


@dataclass(frozen=True)
class ThresholdPlan:
    lines: list  # MeteredLine
    due: int  # the charges it bills, before discount and tax
    draft: InvoiceDraft


def plan_threshold(subscription, usage: PeriodUsage, *, tax_rates: list | None = None):
    """The spend-threshold invoice of the period so far: a line per price with charges not yet
    invoiced (the marginal amount of its units: the period's amount so far less what earlier
    threshold invoices billed), no fixed price, no pending items. A percentage discount applies
    as on any invoice of the period; a fixed-amount one only to the period's close (it is one
    amount per period)."""
    lines = uninvoiced(metered_lines(usage)[0])
    drafts = [line.draft(note=" (usage so far, spend threshold)") for line in lines]
    for line in drafts:
        check_storable(line.amount, subscription.currency, what=f"The line '{line.label}'")
    discount = subscription.discount
    if discount is not None and discount.type != DiscountType.PERCENTAGE:
        discount = None
    if not discounts.applies_to_next_invoice(discount, subscription.discounted_invoices):
        discount = None
    draft = invoices.compute(
        currency=subscription.currency,
        lines=drafts,
        discount=discount,
        tax_rate=taxes.rate_for(subscription.customer, tax_rates),
    )
    check_amounts(draft)
    return ThresholdPlan(lines, sum(line.due_amount for line in lines), draft)


def draft_for(subscription, lines: list[LineDraft], tax_rates: list | None = None) -> InvoiceDraft:
    discount = subscription.discount
    if not discounts.applies_to_next_invoice(discount, subscription.discounted_invoices):
        discount = None
    return invoices.compute(
        currency=subscription.currency,
        lines=lines,
        discount=discount,
        tax_rate=taxes.rate_for(subscription.customer, tax_rates),
    )


def check_amounts(draft: InvoiceDraft) -> None:
    """AmountOutOfRange (naming the line) unless every amount fits the invoice's columns."""
    for line in draft.lines:
        for value in (line.amount, line.tax_amount):
            check_storable(value, draft.currency, what=f"The line '{line.label}'")
    for value in (draft.subtotal, draft.tax, draft.total):
        check_storable(value, draft.currency, what="The invoice total")


def carry_excess_credit(lines: list[LineDraft]) -> tuple[list[LineDraft], int]:
    """(lines with their credits reduced so that they add up to at least zero, the credit left
    over (≤ 0, minor units)). The latest credits are the ones reduced."""
    excess = -sum(line.amount for line in lines)
    if excess <= 0:
        return lines, 0
    carried, reduced = -excess, list(lines)
    for index in range(len(reduced) - 1, -1, -1):
        line = reduced[index]
        if excess == 0:
            break
        if line.amount < 0:
            taken = min(excess, -line.amount)
            reduced[index] = replace(
                line, amount=line.amount + taken, label=f"{line.label} (partly carried forward)"
            )
            excess -= taken
    return reduced, carried


def merged_by_meter(lines: list[MeteredLine]) -> list[MeteredLine]:
    """One figure per meter (a customer meter, the subscription's `meters`): the lines of a
    meter's prices added up, the period's credits counted once. Usage corrections of invoiced
    periods are not this period's usage: they are on the upcoming invoice only."""
    merged: dict = {}
    for line in lines:
        if line.usage.correcting:
            continue
        seen = merged.get(line.meter_id)
        merged[line.meter_id] = (
            line
            if seen is None
            else replace(
                line,
                consumed=EXACT.add(seen.consumed, line.consumed),
                late=EXACT.add(seen.late, line.late),
                credited=seen.credited,
                billable=EXACT.add(seen.billable, line.billable),
                amount=seen.amount + line.amount,
                invoiced=_added(seen.invoiced, line.invoiced),
            )
        )
    return list(merged.values())


def _added(a: Tally, b: Tally) -> Tally:
    if b is NOTHING_INVOICED:
        return a
    if a is NOTHING_INVOICED:
        return b
    return Tally(
        period=a.period,
        consumed=EXACT.add(a.consumed, b.consumed),
        quantity=EXACT.add(a.quantity, b.quantity),
        amount=a.amount + b.amount,
        credited=a.credited,
        late=EXACT.add(a.late, b.late),
    )

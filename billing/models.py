"""Billing data: catalog (products, prices, meter-credit benefits), discounts, tax rates,
subscriptions, and invoices with their lines. Amounts are `Money` in the product's currency;
price *rates* (`unit_amount`, tiers) are exact decimals in minor units per unit."""

import uuid

from django.db import models
from django.db.models import Q
from djmoney.models.fields import MoneyField

from billing import periods
from billing.money import currency_choices
from core.db import ExactDecimalField

MONEY = {
    "max_digits": 19,
    "decimal_places": 2,
    "default_currency": None,
    "currency_choices": currency_choices,
}


class Interval(models.TextChoices):
    DAY = periods.DAY, "Day"
    WEEK = periods.WEEK, "Week"
    MONTH = periods.MONTH, "Month"
    YEAR = periods.YEAR, "Year"


class Product(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="products"
    )
    name = models.CharField(max_length=256)
    description = models.TextField(null=True, blank=True)
    # null: a one-time product (bought once, never subscribed to), e.g. a credit pack
    recurring_interval = models.CharField(
        max_length=8, choices=Interval.choices, default=Interval.MONTH, null=True, blank=True
    )
    recurring_interval_count = models.PositiveSmallIntegerField(default=1)
    trial_interval = models.CharField(max_length=8, choices=Interval.choices, null=True, blank=True)
    trial_interval_count = models.PositiveSmallIntegerField(null=True, blank=True)
    # One currency per product (several products for several currencies).
    currency = models.CharField(max_length=3, default="USD")
    is_archived = models.BooleanField(default=False)
    benefits = models.ManyToManyField("Benefit", blank=True, related_name="products")
    # The default spend threshold of its subscriptions (billing.thresholds): none when null.
    spend_threshold = MoneyField(null=True, blank=True, **MONEY)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "-created_at"], name="product_org_created")]
        constraints = [
            models.CheckConstraint(
                condition=Q(spend_threshold__isnull=True) | Q(spend_threshold__gt=0),
                name="product_spend_threshold_positive",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_recurring(self) -> bool:
        return self.recurring_interval is not None


class PriceType(models.TextChoices):
    FIXED = "fixed", "Fixed"
    METERED_UNIT = "metered_unit", "Metered (unit)"
    METERED_TIERS = "metered_tiers", "Metered (tiers)"


class Price(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="prices")
    amount_type = models.CharField(max_length=16, choices=PriceType.choices)
    # fixed: the amount billed in advance for each period
    price_amount = MoneyField(null=True, blank=True, **MONEY)
    meter = models.ForeignKey(
        "metering.Meter", null=True, blank=True, on_delete=models.PROTECT, related_name="prices"
    )
    # metered_unit: minor units (cents) per unit, 12 decimals ("0.5" = half a cent)
    unit_amount = models.DecimalField(max_digits=30, decimal_places=12, null=True, blank=True)
    # metered_tiers: {"type": "graduated"|"volume", "tiers": [{bound, unit_amount, flat_amount}]}
    tiers = models.JSONField(null=True, blank=True)
    cap_amount = MoneyField(null=True, blank=True, **MONEY)
    is_archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # each kind carries exactly its own terms (catalog.py validates the values)
            models.CheckConstraint(
                condition=(
                    Q(amount_type="fixed", price_amount__isnull=False, meter__isnull=True)
                    | Q(amount_type="metered_unit", meter__isnull=False, unit_amount__isnull=False)
                    | Q(amount_type="metered_tiers", meter__isnull=False, tiers__isnull=False)
                ),
                name="price_terms_match_kind",
            ),
            models.CheckConstraint(
                condition=(Q(price_amount__isnull=True) | Q(price_amount__gte=0))
                & (Q(unit_amount__isnull=True) | Q(unit_amount__gte=0))
                & (Q(cap_amount__isnull=True) | Q(cap_amount__gte=0)),
                name="price_amounts_not_negative",
            ),
            models.UniqueConstraint(
                fields=["product"],
                condition=Q(amount_type="fixed", is_archived=False),
                name="price_one_fixed_per_product",
            ),
            models.UniqueConstraint(
                fields=["product", "meter"],
                condition=Q(meter__isnull=False, is_archived=False),
                name="price_meter_once_per_product",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product} · {self.get_amount_type_display()}"

    @property
    def is_metered(self) -> bool:
        return self.amount_type != PriceType.FIXED


class Benefit(models.Model):
    """The meter-credit benefit: `units` of `meter` granted at the start of every period of a
    subscription to a product carrying it; with `rollover`, unused credits carry over."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="benefits"
    )
    type = models.CharField(max_length=16, default="meter_credit", editable=False)
    description = models.CharField(max_length=280)
    meter = models.ForeignKey("metering.Meter", on_delete=models.PROTECT, related_name="benefits")
    units = models.PositiveIntegerField()
    rollover = models.BooleanField(default=False)
    # On a one-time product (a credit pack): the units bought expire this many days after the
    # order is paid; null: never. Subscriptions' credits expire with their period instead.
    expires_after_days = models.PositiveIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    is_deleted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.description


class DiscountType(models.TextChoices):
    PERCENTAGE = "percentage", "Percentage"
    FIXED = "fixed", "Fixed amount"


class DiscountDuration(models.TextChoices):
    ONCE = "once", "Once"
    REPEATING = "repeating", "Repeating"
    FOREVER = "forever", "Forever"


class Discount(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="discounts"
    )
    name = models.CharField(max_length=256)
    code = models.CharField(max_length=64, null=True, blank=True)
    type = models.CharField(max_length=16, choices=DiscountType.choices)
    basis_points = models.PositiveIntegerField(null=True, blank=True)
    amount = MoneyField(null=True, blank=True, **MONEY)
    duration = models.CharField(max_length=16, choices=DiscountDuration.choices)
    # Polar's name; Meterline counts invoices (billing periods) of the subscription.
    duration_in_months = models.PositiveIntegerField(null=True, blank=True)
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    max_redemptions = models.PositiveIntegerField(null=True, blank=True)
    redemptions_count = models.PositiveIntegerField(default=0)
    products = models.ManyToManyField(Product, blank=True, related_name="discounts")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "code"],
                condition=Q(code__isnull=False, deleted_at__isnull=True),
                name="discount_code_unique_per_org",
            ),
            models.CheckConstraint(
                condition=Q(type="percentage", basis_points__gte=1, basis_points__lte=10_000)
                | Q(type="fixed", amount__gt=0),
                name="discount_terms_match_type",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class TaxRate(models.Model):
    """Chosen by the customer's billing address: country + state first, then country."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="tax_rates"
    )
    name = models.CharField(max_length=128)
    country = models.CharField(max_length=2)
    state = models.CharField(max_length=8, null=True, blank=True)
    basis_points = models.PositiveIntegerField()
    inclusive = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "country", "state"],
                name="tax_rate_unique_region",
                nulls_distinct=False,
            ),
            models.CheckConstraint(
                condition=Q(basis_points__lte=10_000), name="tax_rate_at_most_100_percent"
            ),
        ]

    def __str__(self) -> str:
        region = f"{self.country}-{self.state}" if self.state else self.country
        return f"{self.name} ({region}, {self.basis_points / 100:g}%)"


class SubscriptionStatus(models.TextChoices):
    TRIALING = "trialing", "Trialing"
    ACTIVE = "active", "Active"
    PAST_DUE = "past_due", "Past due"
    CANCELED = "canceled", "Canceled"


LIVE_STATUSES = (
    SubscriptionStatus.TRIALING,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.PAST_DUE,
)


class Subscription(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="subscriptions"
    )
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="subscriptions"
    )
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="subscriptions")
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=SubscriptionStatus.choices)
    started_at = models.DateTimeField()
    # Periods are computed from the anchor (the start, or the trial's end): periods.py.
    anchor_at = models.DateTimeField()
    # -1 while trialing (the trial is the period before the anchor), then 0, 1, …
    period_index = models.IntegerField(default=0)
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    trial_start = models.DateTimeField(null=True, blank=True)
    trial_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    canceled_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # when a failed payment made it past_due (cleared on recovery): the grace of its credits
    # (DUNNING_GRACE_DAYS) counts from here
    past_due_at = models.DateTimeField(null=True, blank=True)
    # the start of the current period when its credits were withheld (past due beyond the
    # grace); granted on recovery
    credits_withheld_for = models.DateTimeField(null=True, blank=True)
    discount = models.ForeignKey(
        Discount, null=True, blank=True, on_delete=models.PROTECT, related_name="subscriptions"
    )
    # invoices that carried the discount so far (once / repeating stop after 1 / N)
    discounted_invoices = models.PositiveIntegerField(default=0)
    # The read boundary of the last close (metering.queries.ReadBoundary: the snapshot and when
    # it was taken): events of earlier periods that arrived after it join the current period's
    # set for avg/min/max/unique meters (count/sum carry late units through
    # `SubscriptionPrice.billed_units`).
    closed_usage_read_at = models.DateTimeField(null=True, blank=True)
    closed_usage_snapshot = models.TextField(null=True, blank=True)
    # Why the last close of this subscription failed (an amount out of range, a broken price):
    # it is skipped and retried by every run, the others proceed; cleared by the next success.
    billing_error = models.TextField(null=True, blank=True)
    billing_error_at = models.DateTimeField(null=True, blank=True)
    # a plan change requested with `next_period`: applied by the close of the current period
    pending_product = models.ForeignKey(
        Product, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    pending_requested_at = models.DateTimeField(null=True, blank=True)
    # Its own spend threshold (billing.thresholds); null: the product's default.
    spend_threshold = MoneyField(null=True, blank=True, **MONEY)
    # Bumped whenever the current period's threshold invoices change (one issued, one voided):
    # a close that measured the period before must measure it again (billing.cycles).
    threshold_version = models.PositiveIntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [
            ("close_subscription", "Can close a subscription's due billing periods now"),
            ("cancel_subscription", "Can cancel or revoke a subscription"),
            ("switch_subscription_plan", "Can change the product of a subscription"),
        ]
        indexes = [
            models.Index(fields=["organization", "-started_at"], name="subscription_org_started"),
            models.Index(fields=["customer", "status"], name="subscription_customer"),
            # the cycle-close scan: live subscriptions by period end
            models.Index(
                fields=["current_period_end"],
                name="subscription_due",
                condition=Q(status__in=["trialing", "active", "past_due"]),
            ),
            models.Index(
                fields=["-billing_error_at"],
                name="subscription_flagged",
                condition=Q(billing_error__isnull=False),
            ),
            # does the organization use spend thresholds (asked after every ingest)
            models.Index(
                fields=["organization"],
                name="subscription_with_threshold",
                condition=Q(spend_threshold__isnull=False),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(spend_threshold__isnull=True) | Q(spend_threshold__gt=0),
                name="subscription_spend_threshold_positive",
            )
        ]

    def __str__(self) -> str:
        return f"{self.customer} · {self.product}"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES


class SubscriptionPrice(models.Model):
    """A price as it applies to one subscription, from `starts_at` (usage before that is never
    billed by it). `billed_units` is the meter's value over [starts_at, last closed period end)
    already put on invoices: a close bills the value now minus this, which makes every unit
    billed exactly once whatever the arrival order (see docs/billing.md)."""

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="subscription_prices"
    )
    price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="+")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    billed_units = ExactDecimalField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "price", "starts_at"], name="subscription_price_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.subscription_id} · {self.price_id}"


class PendingInvoiceItem(models.Model):
    """A line waiting for the subscription's next invoice: the proration of a plan change, or a
    credit carried forward because it exceeded the invoice it was on. Taken (`invoice` set) by
    exactly one invoice, in the transaction that finalizes it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="pending_items"
    )
    label = models.CharField(max_length=300)
    price = models.ForeignKey(
        Price, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    amount = MoneyField(**MONEY)
    proration = models.BooleanField(default=True)
    # the usage a voided invoice billed for an avg/min/max/unique meter, carried as it was priced
    meter = models.ForeignKey(
        "metering.Meter", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    quantity = ExactDecimalField(default=1)
    invoice = models.ForeignKey(
        "Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["subscription", "created_at"],
                name="pending_item_open",
                condition=Q(invoice__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return self.label


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPEN = "open", "Open"
    PAID = "paid", "Paid"
    VOID = "void", "Void"
    UNCOLLECTIBLE = "uncollectible", "Uncollectible"


class BillingReason(models.TextChoices):
    SUBSCRIPTION_CREATE = "subscription_create", "Subscription created"
    SUBSCRIPTION_CYCLE = "subscription_cycle", "Subscription cycle"
    SUBSCRIPTION_UPDATE = "subscription_update", "Subscription update"
    # the metered usage of the current period, invoiced early because it reached the
    # subscription's spend threshold (billing.thresholds)
    SPEND_THRESHOLD = "spend_threshold", "Spend threshold"
    # a one-time product bought (Polar's `purchase`): a credit pack
    PURCHASE = "purchase", "Purchase"


class InvoiceCounter(models.Model):
    """The organization's last invoice number. Incremented under a row lock in the transaction
    that finalizes the invoice, so a rolled-back close leaves no gap."""

    organization = models.OneToOneField(
        "customers.Organization", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    prefix = models.CharField(max_length=16)
    last_number = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.prefix}-{self.last_number:04d}"


class Invoice(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="invoices"
    )
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="invoices"
    )
    subscription = models.ForeignKey(
        Subscription, null=True, blank=True, on_delete=models.PROTECT, related_name="invoices"
    )
    product = models.ForeignKey(
        Product, null=True, blank=True, on_delete=models.PROTECT, related_name="invoices"
    )
    discount = models.ForeignKey(
        Discount, null=True, blank=True, on_delete=models.PROTECT, related_name="invoices"
    )
    number = models.CharField(max_length=32, null=True, blank=True)
    sequence = models.PositiveIntegerField(null=True, blank=True)
    billing_reason = models.CharField(max_length=24, choices=BillingReason.choices)
    status = models.CharField(max_length=16, choices=InvoiceStatus.choices)
    # the period the invoice closes (metered lines); renewal lines carry their own period
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    currency = models.CharField(max_length=3)
    subtotal = MoneyField(**MONEY)
    discount_amount = MoneyField(**MONEY)
    net = MoneyField(**MONEY)
    tax = MoneyField(**MONEY)
    total = MoneyField(**MONEY)
    billing_name = models.CharField(max_length=256, null=True, blank=True)
    billing_address = models.JSONField(null=True, blank=True)
    # Copied at finalization, so the document never changes when the organization or a tax rate
    # is edited later: the seller, and the tax rate applied (none: no tax).
    seller_name = models.CharField(max_length=256, default="", blank=True)
    seller_address = models.TextField(default="", blank=True)
    tax_name = models.CharField(max_length=128, default="", blank=True)
    tax_basis_points = models.PositiveIntegerField(null=True, blank=True)
    tax_inclusive = models.BooleanField(default=False)
    tax_country = models.CharField(max_length=2, default="", blank=True)
    tax_state = models.CharField(max_length=8, default="", blank=True)
    # The usage read of a cycle invoice: the boundary its close read at, and the boundary late
    # arrivals were counted from (the previous close's); metering.queries.ReadBoundary.
    usage_snapshot = models.TextField(null=True, blank=True)
    usage_read_at = models.DateTimeField(null=True, blank=True)
    late_since_snapshot = models.TextField(null=True, blank=True)
    late_since_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    # set in the same transaction that hands the invoice email to the mail backend: the email
    # goes out at most once per invoice, whoever runs the delivery task
    emailed_at = models.DateTimeField(null=True, blank=True)
    # The customer balance spent on it at finalization; what a provider collects is the rest.
    balance_applied = MoneyField(**MONEY)
    amount_due = MoneyField(**MONEY)
    # Running sums of its credit notes, kept under the invoice's row lock (the credit notes are
    # the history): all of them, and the ones that paid money back (refunds).
    credited_amount = MoneyField(**MONEY)
    credited_tax_amount = MoneyField(**MONEY)
    refunded_amount = MoneyField(**MONEY)
    refunded_tax_amount = MoneyField(**MONEY)

    class Meta:
        permissions = [
            ("mark_paid_invoice", "Can mark an invoice paid"),
            ("void_invoice", "Can void an invoice"),
        ]
        constraints = [
            # One invoice per closed period, whoever closes it (idempotent cycle close).
            models.UniqueConstraint(
                fields=["subscription", "period_start"],
                condition=Q(billing_reason="subscription_cycle"),
                name="invoice_one_per_subscription_period",
            ),
            models.UniqueConstraint(
                fields=["subscription"],
                condition=Q(billing_reason="subscription_create"),
                name="invoice_one_create_per_subscription",
            ),
            models.UniqueConstraint(
                fields=["organization", "sequence"], name="invoice_sequence_unique_per_org"
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="invoice_org_created"),
            models.Index(fields=["subscription", "-period_start"], name="invoice_subscription"),
            models.Index(fields=["customer", "-created_at"], name="invoice_customer"),
        ]

    def __str__(self) -> str:
        return self.number or f"draft {self.pk}"

    @property
    def is_refunded(self) -> bool:
        """Every unit of money collected for it was paid back."""
        return self.refunded_amount.amount > 0 and self.refunded_amount >= self.amount_due

    @property
    def is_finalized(self) -> bool:
        return self.status != InvoiceStatus.DRAFT


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    position = models.PositiveSmallIntegerField()
    label = models.CharField(max_length=300)
    price = models.ForeignKey(
        Price, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    meter = models.ForeignKey(
        "metering.Meter", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    # metered: billable units (after credits); fixed: 1. Exact, like everything billed.
    quantity = ExactDecimalField()
    consumed_units = ExactDecimalField(default=0)
    credited_units = models.BigIntegerField(default=0)
    # units of earlier (already closed) periods that arrived after their close
    late_units = ExactDecimalField(default=0)
    # a correction line: how many corrected events of its (invoiced) period it bills
    corrected_events = models.PositiveIntegerField(default=0)
    unit_amount = models.DecimalField(max_digits=30, decimal_places=12, null=True, blank=True)
    # the price's terms as billed (amount type, unit amount, tiers, cap, fixed amount): the line
    # explains itself after the catalog changes
    price_terms = models.JSONField(null=True, blank=True)
    amount = MoneyField(**MONEY)
    discount_amount = MoneyField(**MONEY)
    tax_amount = MoneyField(**MONEY)
    # reporting only: the invoice copies the rate's terms, so the rate may be edited or deleted
    tax_rate = models.ForeignKey(
        TaxRate, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    proration = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "position"], name="invoice_line_position")
        ]

    def __str__(self) -> str:
        return self.label


class InvoiceDocument(models.Model):
    """The PDF of a finalized invoice, rendered once and kept: the invoice never changes, so
    neither does its document. A bytes column (not a file on one host's disk) so the web and
    worker processes see the same document without shared storage."""

    invoice = models.OneToOneField(
        Invoice, primary_key=True, on_delete=models.CASCADE, related_name="document"
    )
    pdf = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"PDF of {self.invoice_id}"


class CreditNoteKind(models.TextChoices):
    REFUND = "refund", "Refund"
    BALANCE = "balance", "Customer balance"


class CreditNoteCounter(models.Model):
    """The organization's last credit note number: a sequence of its own, gapless like the
    invoices' (taken under the row lock in the issuing transaction)."""

    organization = models.OneToOneField(
        "customers.Organization", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    prefix = models.CharField(max_length=24)
    last_number = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.prefix}-{self.last_number:04d}"


class CreditNote(models.Model):
    """A correction of a finalized invoice: money paid back (`refund`, with the payments app's
    refund) or credited to the customer's balance (`balance`). Immutable once issued."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="credit_notes"
    )
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="credit_notes"
    )
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    number = models.CharField(max_length=40)
    sequence = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=CreditNoteKind.choices)
    amount = MoneyField(**MONEY)
    tax_amount = MoneyField(**MONEY)
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=64)
    comment = models.TextField(blank=True, default="")
    # the payments app's refund that paid it back (no foreign key: billing sits below payments)
    refund_id = models.UUIDField(null=True, blank=True, unique=True)
    # the invoice's lines, credited pro rata: [{line_id, label, amount, tax_amount}]
    lines = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "sequence"], name="credit_note_sequence_unique_per_org"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_note_amount_positive"),
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="credit_note_org_created"),
        ]

    def __str__(self) -> str:
        return self.number


class CreditNoteDocument(models.Model):
    """The PDF of a credit note, rendered once and kept (like `InvoiceDocument`)."""

    credit_note = models.OneToOneField(
        CreditNote, primary_key=True, on_delete=models.CASCADE, related_name="document"
    )
    pdf = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"PDF of {self.credit_note_id}"


class BalanceTransaction(models.Model):
    """One movement of a customer's balance in one currency: a credit note credits it (> 0), a
    finalized invoice spends it (< 0), a voided invoice gives back what it spent. The balance is
    the sum of the ledger, never a counter without history."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="balance_transactions"
    )
    currency = models.CharField(max_length=3)
    amount = MoneyField(**MONEY)
    credit_note = models.ForeignKey(
        CreditNote, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    invoice = models.ForeignKey(
        Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["customer", "currency"], name="balance_customer")]

    def __str__(self) -> str:
        return f"{self.amount} ({self.customer_id})"


class CreditSource(models.TextChoices):
    SUBSCRIPTION = "subscription", "Subscription benefit"
    PACK = "pack", "Credit pack"
    STAFF = "staff", "Staff grant"


class CreditGrant(models.Model):
    """Units of a meter a customer may use before they are billed (billing.credits). Packs and
    staff grants live here; a subscription's per-period credits stay `meter.credited` events
    and join the ledger's burn order at each close. The remainder is `units` less its draws."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="+"
    )
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="credit_grants"
    )
    meter = models.ForeignKey("metering.Meter", on_delete=models.PROTECT, related_name="+")
    source = models.CharField(max_length=16, choices=CreditSource.choices)
    units = models.PositiveBigIntegerField()
    granted_at = models.DateTimeField()
    # never drawn for usage at or after this instant; null: does not expire
    expires_at = models.DateTimeField(null=True, blank=True)
    # the pack's paid order (one grant per order and benefit: paying twice can't grant twice)
    invoice = models.ForeignKey(
        Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="credit_grants"
    )
    benefit = models.ForeignKey(
        Benefit, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.CharField(max_length=280, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["customer", "meter", "expires_at"], name="credit_grant_customer")
        ]
        constraints = [
            models.CheckConstraint(condition=Q(units__gt=0), name="credit_grant_units_positive"),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gt=models.F("granted_at")),
                name="credit_grant_expires_after_grant",
            ),
            models.UniqueConstraint(
                fields=["invoice", "benefit"],
                condition=Q(invoice__isnull=False),
                name="credit_grant_once_per_order",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.units} units ({self.get_source_display()})"


class CreditDraw(models.Model):
    """Units of a grant used by one closed period's invoice (drawn at the close, exactly once:
    one row per grant and invoice, written under the grants' row locks)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="draws")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_draws")
    units = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["grant", "invoice"], name="credit_draw_once"),
            models.CheckConstraint(condition=Q(units__gt=0), name="credit_draw_units_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.units} units of {self.grant_id}"


class AutoTopUp(models.Model):
    """When the customer's credit balance of the meter falls below `threshold_units`, the pack
    (a one-time product carrying a meter-credit benefit on that meter) is bought and charged."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="credit_top_ups"
    )
    meter = models.ForeignKey("metering.Meter", on_delete=models.PROTECT, related_name="+")
    pack = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    threshold_units = models.PositiveBigIntegerField()
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "meter"], name="auto_top_up_once")
        ]

    def __str__(self) -> str:
        return f"top up {self.meter_id} below {self.threshold_units}"

"""Response bodies in Polar's wire shapes. Each serializer both renders a body and documents it in
the OpenAPI schema (as customers' `CustomerSerializer` does), so what the schema says is what is
sent. Amounts are integer minor units, timestamps ISO 8601, currencies lower case; Meterline
extensions are extra fields. Request bodies: `billing.api.serializers`.

Two helpers shape the rest:
- `Always`: a Polar field Meterline does not model, sent with the same value on every object
  (documented with Polar's type, or as that single value).
- `OneOfKinds`: objects of several kinds (prices by `amount_type`, discounts by `type` and
  `duration`) render with the serializer of their kind and are documented as the `oneOf` of
  those serializers, so the schema says which fields each kind has.

Lists render the rows the views prefetched (`MethodList` picks among them in Python), so a page
of up to 100 objects costs the same queries as a page of one."""

import copy
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from drf_spectacular.extensions import OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from billing import credit_notes, thresholds
from billing.models import (
    BillingReason,
    CreditNoteKind,
    DiscountDuration,
    DiscountType,
    Interval,
    InvoiceStatus,
    PriceType,
    SubscriptionStatus,
)
from billing.money import to_minor
from customers.api.serializers import AddressSerializer, CustomerSerializer
from metering.api.meter_serializers import MeterSerializer, meter_payload
from metering.models import MeterUnit

# ids of objects that are not rows (a subscription's meter lines, its pending plan change, the
# upcoming invoice) are derived from the rows they describe, so they are stable between reads
SUBSCRIPTION_METER_NAMESPACE = uuid.UUID("6f1c62a6-2f5e-4c1f-9a52-6f0d1b3c9e10")

ORDER_STATUS = {
    InvoiceStatus.DRAFT: "draft",
    InvoiceStatus.OPEN: "pending",
    InvoiceStatus.PAID: "paid",
    InvoiceStatus.VOID: "void",
    InvoiceStatus.UNCOLLECTIBLE: "pending",
}
# a paid order that was refunded in part or in full shows it (Polar's statuses)
ORDER_STATUSES = [*dict.fromkeys(ORDER_STATUS.values()), "partially_refunded", "refunded"]
# Polar's name for each billing reason (its enum is closed): a spend-threshold invoice is an
# invoice of metered usage within the cycle
POLAR_BILLING_REASON = {BillingReason.SPEND_THRESHOLD: "subscription_meter_cycle"}
POLAR_BILLING_REASONS = [
    "subscription_create",
    "subscription_cycle",
    "subscription_update",
    "subscription_meter_cycle",
]


# --- fields --------------------------------------------------------------------------------------


class Always(serializers.Field):
    """The same value on every object: a Polar field Meterline does not model. Documented as
    `documented_as` (a field: Polar's type), else as the value itself."""

    def __init__(self, value, documented_as: serializers.Field | None = None, **kwargs):
        self.value = value
        self.documented_as = documented_as
        super().__init__(source="*", **kwargs)

    def to_representation(self, _):
        return copy.copy(self.value)  # a fresh {} or [] for each object


class AlwaysExtension(OpenApiSerializerFieldExtension):
    target_class = Always

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        if field.documented_as is not None:
            return auto_schema._map_serializer_field(field.documented_as, direction)
        value = field.value
        if isinstance(value, bool):
            return {"type": "boolean"}
        if isinstance(value, int):
            return {"type": "integer"}
        return {"type": "string", "enum": [value]}


def always_null(field_class=serializers.CharField) -> Always:
    """A Polar field Meterline always sends as null, documented with Polar's type."""
    return Always(None, field_class(allow_null=True))


class NamedEnum(serializers.ChoiceField):
    """A choice documented as the enum component `enum_name`: a stable name for a set of values
    that several objects carry (drf-spectacular would name it after a hash of its values)."""

    def __init__(self, choices, *, enum_name: str, **kwargs):
        self.enum_name = enum_name
        super().__init__(choices=choices, **kwargs)


class NamedEnumExtension(OpenApiSerializerFieldExtension):
    target_class = NamedEnum

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        component = ResolvedComponent(
            name=field.enum_name,
            type=ResolvedComponent.SCHEMA,
            object=field.enum_name,
            schema={"type": "string", "enum": list(field.choices)},
        )
        auto_schema.registry.register_on_missing(component)
        return component.ref


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {
            "anyOf": [
                {"type": "string"},
                {"type": "integer"},
                {"type": "number"},
                {"type": "boolean"},
            ]
        },
    }
)
class Metadata(serializers.JSONField):
    """Flat metadata as stored (keys to strings, integers, numbers or booleans)."""


class MinorUnits(serializers.IntegerField):
    """Money (or an amount already in minor units) as integer minor units (cents)."""

    def to_representation(self, value):
        return value if isinstance(value, int) else to_minor(value)


@extend_schema_field(OpenApiTypes.NUMBER)
class Units(serializers.Field):
    """Exact units as a JSON number: integers stay integers."""

    def to_representation(self, value):
        return number(value)


@extend_schema_field({"type": "string", "format": "decimal"})
class DecimalText(serializers.Field):
    """An exact rate (minor units per unit) as a decimal string: "0.5"."""

    def to_representation(self, value):
        return format(Decimal(value).normalize(), "f")


class LowerCase(serializers.CharField):
    def to_representation(self, value):
        return str(value).lower()


def number(value) -> int | float:
    value = Decimal(value)
    return int(value) if value == value.to_integral_value() else float(value)


class MethodList(serializers.ListSerializer):
    """A list of `child` over the objects the parent's `get_<field name>(obj)` returns: a
    SerializerMethodField whose items are documented by `child`. It picks among prefetched
    rows (unarchived prices …) without a query."""

    def __init__(self, child, **kwargs):
        super().__init__(child=child, source="*", **kwargs)

    def to_representation(self, obj):
        items = getattr(self.parent, f"get_{self.field_name}")(obj)
        return [self.child.to_representation(item) for item in items]


class OneOfKinds(serializers.Serializer):
    """Renders each object with the serializer of its kind (`kinds[kind_of(obj)]`); documented
    as the `oneOf` of the kinds, with `discriminator` when one field names the kind."""

    component_name: str
    kinds: dict
    discriminator: str | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._by_kind = {}  # kind → its serializer, made once per rendering

    def kind_of(self, obj):
        raise NotImplementedError

    def to_representation(self, obj):
        kind = self.kind_of(obj)
        if kind not in self._by_kind:
            self._by_kind[kind] = self.kinds[kind](context=self.context)
        return self._by_kind[kind].to_representation(obj)


class OneOfKindsExtension(OpenApiSerializerExtension):
    target_class = OneOfKinds
    match_subclasses = True

    def get_name(self, auto_schema, direction):
        return self.target.component_name

    def map_serializer(self, auto_schema, direction):
        union = PolymorphicProxySerializer(
            component_name=self.target.component_name,
            serializers=list(self.target.kinds.values()),
            resource_type_field_name=self.target.discriminator,
        )
        return auto_schema._map_serializer(union, direction)


# --- catalog -------------------------------------------------------------------------------------


class PriceMeterSerializer(serializers.Serializer):
    """Polar's `ProductPriceMeter` (id, name) with the meter's unit."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    unit = serializers.ChoiceField(choices=MeterUnit.choices)  # as on the meter
    custom_label = serializers.CharField(allow_null=True)
    custom_multiplier = serializers.IntegerField(allow_null=True)


class PriceTierSerializer(serializers.Serializer):
    bound = serializers.IntegerField(allow_null=True, help_text="null: the last, unbounded tier")
    unit_amount = serializers.CharField(help_text="minor units per unit, a decimal string")
    flat_amount = serializers.IntegerField(required=False)


class PriceTiersSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["graduated", "volume"])
    tiers = PriceTierSerializer(many=True)


@extend_schema_field(PriceTiersSerializer)
class TiersField(serializers.JSONField):
    """The tiers as stored (`billing.catalog.normalize_tiers` wrote them in this shape)."""


class PriceFieldsSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    source = Always("catalog")
    amount_type = serializers.ChoiceField(choices=PriceType.values)  # each kind: its own value
    price_currency = LowerCase(source="product.currency")
    tax_behavior = Always(
        None, serializers.ChoiceField(choices=["inclusive", "exclusive"], allow_null=True)
    )
    is_archived = serializers.BooleanField()
    product_id = serializers.UUIDField()


def amount_type_enum(kind: PriceType) -> NamedEnum:
    return NamedEnum([kind.value], enum_name=f"AmountType{kind.value.title().replace('_', '')}Enum")


class ProductPriceFixedSerializer(PriceFieldsSerializer):
    amount_type = Always(PriceType.FIXED.value, amount_type_enum(PriceType.FIXED))
    price_amount = MinorUnits()


class MeteredPriceFieldsSerializer(PriceFieldsSerializer):
    cap_amount = MinorUnits(allow_null=True)
    meter_id = serializers.UUIDField()
    meter = PriceMeterSerializer()


class ProductPriceMeteredUnitSerializer(MeteredPriceFieldsSerializer):
    amount_type = Always(PriceType.METERED_UNIT.value, amount_type_enum(PriceType.METERED_UNIT))
    unit_amount = DecimalText()


class ProductPriceMeteredTiersSerializer(MeteredPriceFieldsSerializer):
    """Meterline extension: graduated or volume tiers."""

    amount_type = Always(PriceType.METERED_TIERS.value, amount_type_enum(PriceType.METERED_TIERS))
    tiers = TiersField()


class PriceSerializer(OneOfKinds):
    component_name = "ProductPrice"
    discriminator = "amount_type"
    kinds = {
        PriceType.FIXED: ProductPriceFixedSerializer,
        PriceType.METERED_UNIT: ProductPriceMeteredUnitSerializer,
        PriceType.METERED_TIERS: ProductPriceMeteredTiersSerializer,
    }

    def kind_of(self, price) -> str:
        return price.amount_type


class BenefitPropertiesSerializer(serializers.Serializer):
    """Polar's `BenefitMeterCreditProperties`."""

    units = serializers.IntegerField()
    rollover = serializers.BooleanField()
    meter_id = serializers.UUIDField()


class BenefitPropertiesWithExpirySerializer(BenefitPropertiesSerializer):
    """A benefit's properties as the benefits and products endpoints show them (Polar's client
    skips the extra key); the customer state's granted benefits keep Polar's three."""

    expires_after_days = serializers.IntegerField(
        allow_null=True,
        help_text="Meterline extension: on a one-time product (a credit pack), the units bought "
        "expire this many days after the order is paid; null: never",
    )


class BenefitSerializer(serializers.Serializer):
    """Polar's `BenefitMeterCredit` (the one benefit type Meterline has)."""

    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    type = Always("meter_credit")
    description = serializers.CharField()
    selectable = Always(True)
    deletable = Always(True)
    is_deleted = serializers.BooleanField()
    organization_id = serializers.UUIDField()
    metadata = Metadata()
    visibility = Always("public")
    visibility_configurable = Always(False)
    properties = BenefitPropertiesWithExpirySerializer(source="*")


class ProductBaseSerializer(serializers.Serializer):
    """Polar's `ProductBase`: a product without its prices and benefits (on orders and
    discounts), plus its currency."""

    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    trial_interval = serializers.ChoiceField(choices=Interval.values, allow_null=True)
    trial_interval_count = serializers.IntegerField(allow_null=True)
    name = serializers.CharField()
    description = serializers.CharField(allow_null=True)
    visibility = Always("public")
    # null: a one-time product (a credit pack)
    recurring_interval = serializers.ChoiceField(choices=Interval.values, allow_null=True)
    recurring_interval_count = serializers.IntegerField(allow_null=True)
    meter_interval = Always(None, serializers.ChoiceField(choices=Interval.values, allow_null=True))
    meter_interval_count = always_null(serializers.IntegerField)
    is_recurring = serializers.BooleanField()
    is_archived = serializers.BooleanField()
    organization_id = serializers.UUIDField()
    metadata = Metadata()
    currency = LowerCase(help_text="Meterline extension: a product's one currency")


class ProductSerializer(ProductBaseSerializer):
    """Polar's `Product`: its prices in force and its benefits. Needs `prices` (with their
    meter) and `benefits` prefetched."""

    is_deletable = Always(False)
    spend_threshold_amount = MinorUnits(
        source="spend_threshold",
        allow_null=True,
        help_text="Meterline extension: its subscriptions' default spend threshold (cents)",
    )
    prices = MethodList(PriceSerializer())
    benefits = MethodList(BenefitSerializer())
    medias = Always([], serializers.ListField(child=serializers.DictField(), max_length=0))
    attached_custom_fields = Always(
        [], serializers.ListField(child=serializers.DictField(), max_length=0)
    )

    def get_prices(self, product):
        return [price for price in product.prices.all() if not price.is_archived]

    def get_benefits(self, product):
        return [benefit for benefit in product.benefits.all() if not benefit.is_deleted]


# --- discounts -----------------------------------------------------------------------------------


class DiscountFieldsSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    duration = serializers.ChoiceField(choices=DiscountDuration.values)  # each kind: its own
    type = serializers.ChoiceField(choices=DiscountType.values)  # each kind: its own
    metadata = Metadata()
    name = serializers.CharField()
    code = serializers.CharField(allow_null=True)
    starts_at = serializers.DateTimeField(allow_null=True)
    ends_at = serializers.DateTimeField(allow_null=True)
    max_redemptions = serializers.IntegerField(allow_null=True)
    max_redemptions_per_customer = always_null(serializers.IntegerField)
    redemptions_count = serializers.IntegerField()
    organization_id = serializers.UUIDField()
    products = ProductBaseSerializer(many=True)


def once_or_forever_duration():
    once_forever = [DiscountDuration.ONCE.value, DiscountDuration.FOREVER.value]
    return NamedEnum(once_forever, enum_name="DiscountDurationOnceForeverEnum")


def repeating_duration():
    return NamedEnum([DiscountDuration.REPEATING.value], enum_name="DiscountDurationRepeatingEnum")


def percentage_type():
    return NamedEnum([DiscountType.PERCENTAGE.value], enum_name="DiscountTypePercentageEnum")


def fixed_type():
    return NamedEnum([DiscountType.FIXED.value], enum_name="DiscountTypeFixedEnum")


class FixedAmounts:
    """`amounts` of a fixed discount: {currency: amount}, as Polar sends it."""

    def get_amounts(self, discount) -> dict[str, int]:
        return {str(discount.amount.currency).lower(): to_minor(discount.amount)}


class DiscountPercentageOnceForeverDurationSerializer(DiscountFieldsSerializer):
    duration = once_or_forever_duration()
    type = percentage_type()
    basis_points = serializers.IntegerField()


class DiscountPercentageRepeatingDurationSerializer(DiscountFieldsSerializer):
    duration = repeating_duration()
    type = percentage_type()
    duration_in_months = serializers.IntegerField()
    basis_points = serializers.IntegerField()


class DiscountFixedOnceForeverDurationSerializer(FixedAmounts, DiscountFieldsSerializer):
    duration = once_or_forever_duration()
    type = fixed_type()
    amount = MinorUnits()
    currency = LowerCase(source="amount.currency")
    amounts = serializers.SerializerMethodField()


class DiscountFixedRepeatingDurationSerializer(FixedAmounts, DiscountFieldsSerializer):
    duration = repeating_duration()
    type = fixed_type()
    duration_in_months = serializers.IntegerField()
    amount = MinorUnits()
    currency = LowerCase(source="amount.currency")
    amounts = serializers.SerializerMethodField()


class DiscountSerializer(OneOfKinds):
    """Polar's `Discount`: percentage or fixed, repeating (with `duration_in_months`) or once /
    forever. Needs `products` prefetched."""

    component_name = "Discount"
    kinds = {
        (DiscountType.PERCENTAGE, False): DiscountPercentageOnceForeverDurationSerializer,
        (DiscountType.PERCENTAGE, True): DiscountPercentageRepeatingDurationSerializer,
        (DiscountType.FIXED, False): DiscountFixedOnceForeverDurationSerializer,
        (DiscountType.FIXED, True): DiscountFixedRepeatingDurationSerializer,
    }

    def kind_of(self, discount):
        return discount.type, discount.duration == DiscountDuration.REPEATING


# --- subscriptions -------------------------------------------------------------------------------


class MeterLine(NamedTuple):
    """One meter's figures of a subscription's current period (`billing.plan.MeteredLine`)."""

    subscription: object
    line: object


class CustomerStateSubscriptionMeterSerializer(serializers.Serializer):
    """Polar's `CustomerStateSubscriptionMeter`, plus `late_units`."""

    id = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(source="subscription.created_at")
    modified_at = serializers.DateTimeField(source="subscription.modified_at", allow_null=True)
    consumed_units = serializers.FloatField(source="line.consumed")
    credited_units = serializers.IntegerField(source="line.credited")
    amount = serializers.IntegerField(source="line.amount")
    meter_id = serializers.UUIDField(source="line.meter_id")
    late_units = Units(
        source="line.late",
        help_text="Meterline extension: units of earlier periods that arrived after their close",
    )
    invoiced_amount = serializers.IntegerField(
        source="line.invoiced.amount",
        help_text="Meterline extension: cents of `amount` already billed this period by "
        "spend-threshold invoices",
    )

    def get_id(self, meter_line) -> uuid.UUID:
        subscription, line = meter_line
        return str(uuid.uuid5(SUBSCRIPTION_METER_NAMESPACE, f"{subscription.pk}:{line.price.pk}"))


class SubscriptionMeterSerializer(CustomerStateSubscriptionMeterSerializer):
    """Polar's `SubscriptionMeter`: with the whole meter."""

    meter = serializers.SerializerMethodField()

    @extend_schema_field(MeterSerializer)
    def get_meter(self, meter_line):
        return meter_payload(meter_line.line.price.meter)


class PendingSubscriptionUpdateSerializer(serializers.Serializer):
    """Polar's `PendingSubscriptionUpdate`: a `next_period` plan change (null: none)."""

    id = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(source="pending_requested_at")
    modified_at = always_null(serializers.DateTimeField)
    applies_at = serializers.DateTimeField(source="current_period_end")
    product_id = serializers.UUIDField(source="pending_product_id")
    seats = always_null(serializers.IntegerField)
    units = always_null(serializers.IntegerField)

    def to_representation(self, subscription):
        if subscription.pending_product_id is None:
            return None
        return super().to_representation(subscription)

    def get_id(self, subscription) -> uuid.UUID:
        requested = subscription.pending_requested_at
        return str(
            uuid.uuid5(SUBSCRIPTION_METER_NAMESPACE, f"{subscription.pk}:pending:{requested}")
        )


class SubscriptionBaseSerializer(serializers.Serializer):
    """Polar's `SubscriptionBase` (on orders; the customer state picks some of its keys).
    Needs `product` and `subscription_prices` (with their price) loaded."""

    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    amount = serializers.SerializerMethodField()
    currency = LowerCase()
    recurring_interval = serializers.ChoiceField(
        choices=Interval.values, source="product.recurring_interval"
    )
    recurring_interval_count = serializers.IntegerField(source="product.recurring_interval_count")
    status = NamedEnum(SubscriptionStatus.values, enum_name="SubscriptionStatusEnum")
    current_period_start = serializers.DateTimeField()
    current_period_end = serializers.DateTimeField()
    current_meter_period_start = serializers.DateTimeField(source="current_period_start")
    current_meter_period_end = serializers.DateTimeField(source="current_period_end")
    trial_start = serializers.DateTimeField(allow_null=True)
    trial_end = serializers.DateTimeField(allow_null=True)
    cancel_at_period_end = serializers.BooleanField()
    canceled_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    past_due_at = always_null(serializers.DateTimeField)
    pause_at_period_end = Always(False)
    paused_at = always_null(serializers.DateTimeField)
    resumes_at = always_null(serializers.DateTimeField)
    customer_id = serializers.UUIDField()
    product_id = serializers.UUIDField()
    discount_id = serializers.UUIDField(allow_null=True)
    checkout_id = always_null(serializers.UUIDField)
    seats = always_null(serializers.IntegerField)
    units = always_null(serializers.IntegerField)
    customer_cancellation_reason = always_null()
    customer_cancellation_comment = always_null()
    metadata = Metadata()

    def get_amount(self, subscription) -> int:
        """The fixed price in force, per period (0 without one)."""
        for held in subscription.subscription_prices.all():
            if held.price.amount_type == PriceType.FIXED and not held.ends_at:
                return to_minor(held.price.price_amount)
        return 0


class SubscriptionSerializer(SubscriptionBaseSerializer):
    """Polar's `Subscription`. `context["meters"]`: subscription id → its current meter lines
    (`billing.subscriptions.current_meters`, one read for a page)."""

    customer = CustomerSerializer()
    product = ProductSerializer()
    discount = DiscountSerializer(allow_null=True)
    prices = MethodList(PriceSerializer())
    meters = MethodList(SubscriptionMeterSerializer())
    pending_update = PendingSubscriptionUpdateSerializer(source="*", allow_null=True)
    spend_threshold_amount = serializers.SerializerMethodField(
        help_text="Meterline extension: the spend threshold in force (cents): its own, else "
        "its product's; null: none"
    )

    def get_spend_threshold_amount(self, subscription) -> int | None:
        threshold = thresholds.threshold_of(subscription)
        return None if threshold is None else to_minor(threshold)

    def get_prices(self, subscription):
        """The product's prices in force (a plan change leaves the old ones on the
        subscription), each once."""
        product_id = subscription.product.pk
        held = subscription.subscription_prices.all()
        return list(
            {h.price_id: h.price for h in held if h.price.product_id == product_id}.values()
        )

    def get_meters(self, subscription):
        return [MeterLine(subscription, line) for line in self.context["meters"][subscription.pk]]


# --- orders (invoices) ---------------------------------------------------------------------------


class OrderLine:
    """An order item: a stored `InvoiceLine` or an upcoming `LineDraft`, dated by its order."""

    __slots__ = ("line", "created_at")

    def __init__(self, line, created_at):
        self.line = line
        self.created_at = created_at

    def __getattr__(self, name):
        return getattr(self.line, name)


class OrderItemSerializer(serializers.Serializer):
    """Polar's `OrderItemSchema`, plus the line's units and rate."""

    id = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    modified_at = always_null(serializers.DateTimeField)
    label = serializers.CharField()
    amount = MinorUnits()
    tax_amount = MinorUnits()
    proration = serializers.BooleanField()
    product_price_id = serializers.SerializerMethodField()
    start_timestamp = serializers.DateTimeField(source="period_start")
    end_timestamp = serializers.DateTimeField(source="period_end")
    # extensions
    quantity = Units(help_text="billable units (after credits); 1 for a fixed price")
    unit_amount = DecimalText(allow_null=True)
    meter_id = serializers.UUIDField(allow_null=True)
    consumed_units = Units()
    credited_units = serializers.IntegerField()
    late_units = Units()
    corrected_events = serializers.IntegerField(
        help_text="a usage-correction line: how many corrected events of its period it bills"
    )
    discount_amount = MinorUnits()

    def get_id(self, item) -> uuid.UUID:
        return str(getattr(item, "pk", None) or uuid.uuid4())

    def get_product_price_id(self, item) -> uuid.UUID | None:
        price_id = getattr(item, "price_id", None) or (item.price.pk if item.price else None)
        return str(price_id) if price_id else None


class OrderFieldsSerializer(serializers.Serializer):
    """The order shape shared by stored invoices and the upcoming one."""

    id = serializers.UUIDField(source="pk")
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    status = serializers.SerializerMethodField()
    paid = serializers.SerializerMethodField()
    subtotal_amount = MinorUnits(source="subtotal")
    discount_amount = MinorUnits()
    net_amount = MinorUnits(source="net")
    tax_amount = MinorUnits(source="tax")
    total_amount = MinorUnits(source="total")
    applied_balance_amount = Always(0)
    due_amount = serializers.SerializerMethodField()
    refunded_amount = Always(0)
    refundable_amount = Always(0)
    refunded_tax_amount = Always(0)
    refundable_tax_amount = Always(0)
    currency = LowerCase()
    billing_reason = serializers.SerializerMethodField()
    billing_name = serializers.CharField(allow_null=True)
    billing_address = serializers.SerializerMethodField()
    invoice_number = serializers.CharField(source="number", allow_null=True)
    is_invoice_generated = Always(False)
    receipt_number = always_null()
    seats = always_null(serializers.IntegerField)
    units = always_null(serializers.IntegerField)
    customer_id = serializers.UUIDField()
    product_id = serializers.UUIDField(allow_null=True)
    discount_id = serializers.UUIDField(allow_null=True)
    subscription_id = serializers.UUIDField(allow_null=True)
    checkout_id = always_null(serializers.UUIDField)
    metadata = Always({}, Metadata())
    platform_fee_amount = Always(0)
    platform_fee_currency = always_null()
    customer = CustomerSerializer()
    product = ProductBaseSerializer(allow_null=True)
    discount = DiscountSerializer(allow_null=True)
    subscription = SubscriptionBaseSerializer(allow_null=True)
    items = MethodList(OrderItemSerializer())
    description = serializers.SerializerMethodField()
    # extensions
    invoice_status = serializers.ChoiceField(choices=InvoiceStatus.values, source="status")
    invoice_reason = serializers.ChoiceField(
        choices=BillingReason.values,
        source="billing_reason",
        help_text="Meterline's own billing reason: `spend_threshold` for an invoice of usage "
        "that reached the subscription's spend threshold (Polar's `subscription_meter_cycle`)",
    )
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()

    @extend_schema_field(NamedEnum(ORDER_STATUSES, enum_name="OrderStatusEnum"))
    def get_status(self, order):
        return ORDER_STATUS[order.status]

    @extend_schema_field(NamedEnum(POLAR_BILLING_REASONS, enum_name="OrderBillingReasonEnum"))
    def get_billing_reason(self, order):
        return POLAR_BILLING_REASON.get(order.billing_reason, order.billing_reason)

    def get_paid(self, order) -> bool:
        return order.status == InvoiceStatus.PAID

    def get_due_amount(self, order) -> int:
        raise NotImplementedError

    @extend_schema_field(AddressSerializer(allow_null=True))
    def get_billing_address(self, order):
        address = order.billing_address
        return address if isinstance(address, dict) and address.get("country") else None

    def get_items(self, order):
        return [OrderLine(line, order.created_at) for line in self.lines(order)]

    def lines(self, order):
        raise NotImplementedError

    def get_description(self, order) -> str:
        return order.product.name if order.product else "Invoice"


class OrderSerializer(OrderFieldsSerializer):
    """An invoice as Polar's `Order` (open → `pending`), with Meterline's invoice status and
    dates. Needs customer, product, subscription (with its product and prices), discount (with
    its products) and lines loaded."""

    applied_balance_amount = MinorUnits(source="balance_applied")
    refunded_amount = MinorUnits()
    refunded_tax_amount = MinorUnits()
    refundable_amount = serializers.SerializerMethodField()
    refundable_tax_amount = serializers.SerializerMethodField()
    finalized_at = serializers.DateTimeField(allow_null=True)
    paid_at = serializers.DateTimeField(allow_null=True)
    voided_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(NamedEnum(ORDER_STATUSES, enum_name="OrderStatusEnum"))
    def get_status(self, invoice):
        if invoice.status == InvoiceStatus.PAID and invoice.refunded_amount.amount:
            return "refunded" if invoice.is_refunded else "partially_refunded"
        return ORDER_STATUS[invoice.status]

    def get_due_amount(self, invoice) -> int:
        return to_minor(invoice.amount_due) if invoice.status == InvoiceStatus.OPEN else 0

    def get_refundable_amount(self, invoice) -> int:
        return credit_notes.refundable(invoice)

    def get_refundable_tax_amount(self, invoice) -> int:
        if not credit_notes.refundable(invoice):
            return 0
        return to_minor(invoice.tax) - to_minor(invoice.credited_tax_amount)

    def lines(self, invoice):
        return invoice.lines.all()


@dataclass(frozen=True)
class UpcomingInvoice:
    """What closing the current period now would invoice, with the attributes of an `Invoice`
    that the order shape reads (nothing is stored: a draft without a number)."""

    subscription: object
    draft: object  # billing.invoices.InvoiceDraft
    now: object

    status = InvoiceStatus.DRAFT
    modified_at = None
    billing_reason = BillingReason.SUBSCRIPTION_CYCLE
    number = None

    @property
    def pk(self):
        return uuid.uuid5(SUBSCRIPTION_METER_NAMESPACE, f"upcoming:{self.subscription.pk}")

    @property
    def created_at(self):
        return self.now

    @property
    def subtotal(self):
        return self.draft.subtotal

    @property
    def discount_amount(self):
        return self.draft.discount_amount

    @property
    def net(self):
        return self.draft.net

    @property
    def tax(self):
        return self.draft.tax

    @property
    def total(self):
        return self.draft.total

    @property
    def currency(self):
        return self.draft.currency

    @property
    def customer(self):
        return self.subscription.customer

    @property
    def customer_id(self):
        return self.subscription.customer_id

    @property
    def billing_name(self):
        return self.customer.billing_name or self.customer.name

    @property
    def billing_address(self):
        return self.customer.billing_address

    @property
    def product(self):
        return self.subscription.product

    @property
    def product_id(self):
        return self.subscription.product_id

    @property
    def subscription_id(self):
        return self.subscription.pk

    @property
    def discount(self):
        return self.draft.discount if self.draft.discount_amount else None

    @property
    def discount_id(self):
        return self.discount.pk if self.discount else None

    @property
    def period_start(self):
        return self.subscription.current_period_start

    @property
    def period_end(self):
        return self.subscription.current_period_end


class UpcomingOrderSerializer(OrderFieldsSerializer):
    """Meterline's upcoming invoice of a subscription (`UpcomingInvoice`) in the order shape:
    a draft without a number, due in full."""

    def get_due_amount(self, upcoming) -> int:
        return upcoming.total

    def lines(self, upcoming):
        return upcoming.draft.lines


class OrderInvoiceSerializer(serializers.Serializer):
    """Polar's `OrderInvoice`: a signed link to the invoice PDF."""

    url = serializers.URLField()


class AcceptedSerializer(serializers.Serializer):
    """An accepted request: an empty object."""


class AcceptedExtension(OpenApiSerializerExtension):
    target_class = AcceptedSerializer

    def map_serializer(self, auto_schema, direction):
        return {"type": "object", "properties": {}, "additionalProperties": False}


# --- tax rates (Meterline extension) -------------------------------------------------------------


class TaxRateSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    organization_id = serializers.UUIDField()
    name = serializers.CharField()
    country = serializers.CharField()
    state = serializers.CharField(allow_null=True)
    basis_points = serializers.IntegerField()
    inclusive = serializers.BooleanField()


# --- credit notes (Meterline extension) ----------------------------------------------------------


class CreditNoteLineSerializer(serializers.Serializer):
    line_id = serializers.UUIDField(help_text="the credited order item")
    label = serializers.CharField()
    amount = serializers.IntegerField()
    tax_amount = serializers.IntegerField()


class CreditNoteSerializer(serializers.Serializer):
    """A credit note of an order: money refunded (`refund_id` set) or credited to the customer's
    balance. Amounts in minor units, tax included in `amount`."""

    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    number = serializers.CharField()
    order_id = serializers.UUIDField(source="invoice_id")
    customer_id = serializers.UUIDField()
    refund_id = serializers.UUIDField(allow_null=True)
    kind = NamedEnum(CreditNoteKind.values, enum_name="CreditNoteKind")
    amount = MinorUnits()
    tax_amount = MinorUnits()
    currency = LowerCase()
    reason = serializers.CharField()
    comment = serializers.CharField()
    lines = CreditNoteLineSerializer(many=True)

"""Billing objects in Polar's wire shapes (integer cents, ISO timestamps, lowercase currency).
Meterline extensions are extra fields only."""

import uuid
from decimal import Decimal

from rest_framework.fields import DateTimeField

from billing.models import DiscountDuration, DiscountType, InvoiceStatus, PriceType
from billing.money import to_minor
from customers.api.serializers import CustomerSerializer
from metering.api.meter_serializers import meter_payload

_datetime = DateTimeField()
SUBSCRIPTION_METER_NAMESPACE = uuid.UUID("6f1c62a6-2f5e-4c1f-9a52-6f0d1b3c9e10")


def iso(moment) -> str | None:
    return _datetime.to_representation(moment) if moment else None


def number(value: Decimal) -> int | float:
    """Units on the wire: a JSON number (integers stay integers)."""
    value = Decimal(value)
    return int(value) if value == value.to_integral_value() else float(value)


def decimal_text(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return format(Decimal(value).normalize(), "f")


def customer_payload(customer) -> dict:
    return dict(CustomerSerializer(customer).data)


def _meter_brief(meter) -> dict:
    return {
        "id": str(meter.pk),
        "name": meter.name,
        "unit": meter.unit,
        "custom_label": meter.custom_label,
        "custom_multiplier": meter.custom_multiplier,
    }


def price_payload(price, product) -> dict:
    data = {
        "id": str(price.pk),
        "created_at": iso(price.created_at),
        "modified_at": iso(price.modified_at),
        "source": "catalog",
        "amount_type": price.amount_type,
        "price_currency": product.currency.lower(),
        "tax_behavior": None,
        "is_archived": price.is_archived,
        "product_id": str(product.pk),
    }
    if price.amount_type == PriceType.FIXED:
        data["price_amount"] = to_minor(price.price_amount)
        return data
    data.update(
        {
            "cap_amount": to_minor(price.cap_amount) if price.cap_amount is not None else None,
            "meter_id": str(price.meter_id),
            "meter": _meter_brief(price.meter),
        }
    )
    if price.amount_type == PriceType.METERED_UNIT:
        data["unit_amount"] = decimal_text(price.unit_amount)
    else:
        data["tiers"] = price.tiers
    return data


def benefit_payload(benefit) -> dict:
    return {
        "id": str(benefit.pk),
        "created_at": iso(benefit.created_at),
        "modified_at": iso(benefit.modified_at),
        "type": "meter_credit",
        "description": benefit.description,
        "selectable": True,
        "deletable": True,
        "is_deleted": benefit.is_deleted,
        "organization_id": str(benefit.organization_id),
        "metadata": benefit.metadata,
        "visibility": "public",
        "visibility_configurable": False,
        "properties": benefit_properties(benefit),
    }


def benefit_properties(benefit) -> dict:
    return {"units": benefit.units, "rollover": benefit.rollover, "meter_id": str(benefit.meter_id)}


def product_base(product) -> dict:
    return {
        "id": str(product.pk),
        "created_at": iso(product.created_at),
        "modified_at": iso(product.modified_at),
        "trial_interval": product.trial_interval,
        "trial_interval_count": product.trial_interval_count,
        "name": product.name,
        "description": product.description,
        "visibility": "public",
        "recurring_interval": product.recurring_interval,
        "recurring_interval_count": product.recurring_interval_count,
        "meter_interval": None,
        "meter_interval_count": None,
        "is_recurring": True,
        "is_archived": product.is_archived,
        "organization_id": str(product.organization_id),
        "metadata": product.metadata,
        "currency": product.currency.lower(),  # extension: one currency per product
    }


def product_payload(product) -> dict:
    """Needs `prices` (with meter) and `benefits` prefetched to stay at a fixed query count."""
    return {
        **product_base(product),
        "is_deletable": False,
        "prices": [
            price_payload(price, product) for price in product.prices.all() if not price.is_archived
        ],
        "benefits": [benefit_payload(b) for b in product.benefits.all() if not b.is_deleted],
        "medias": [],
        "attached_custom_fields": [],
    }


def discount_payload(discount) -> dict:
    data = {
        "id": str(discount.pk),
        "created_at": iso(discount.created_at),
        "modified_at": iso(discount.modified_at),
        "duration": discount.duration,
        "type": discount.type,
        "metadata": discount.metadata,
        "name": discount.name,
        "code": discount.code,
        "starts_at": iso(discount.starts_at),
        "ends_at": iso(discount.ends_at),
        "max_redemptions": discount.max_redemptions,
        "max_redemptions_per_customer": None,
        "redemptions_count": discount.redemptions_count,
        "organization_id": str(discount.organization_id),
        "products": [product_base(p) for p in discount.products.all()],
    }
    if discount.duration == DiscountDuration.REPEATING:
        data["duration_in_months"] = discount.duration_in_months
    if discount.type == DiscountType.PERCENTAGE:
        data["basis_points"] = discount.basis_points
    else:
        currency = str(discount.amount.currency).lower()
        data.update(
            amount=to_minor(discount.amount),
            currency=currency,
            amounts={currency: to_minor(discount.amount)},
        )
    return data


def _fixed_amount(subscription) -> int:
    for sp in subscription.subscription_prices.all():
        if sp.price.amount_type == PriceType.FIXED and not sp.ends_at:
            return to_minor(sp.price.price_amount)
    return 0


def subscription_base(subscription) -> dict:
    return {
        "id": str(subscription.pk),
        "created_at": iso(subscription.created_at),
        "modified_at": iso(subscription.modified_at),
        "amount": _fixed_amount(subscription),
        "currency": subscription.currency.lower(),
        "recurring_interval": subscription.product.recurring_interval,
        "recurring_interval_count": subscription.product.recurring_interval_count,
        "status": subscription.status,
        "current_period_start": iso(subscription.current_period_start),
        "current_period_end": iso(subscription.current_period_end),
        "current_meter_period_start": iso(subscription.current_period_start),
        "current_meter_period_end": iso(subscription.current_period_end),
        "trial_start": iso(subscription.trial_start),
        "trial_end": iso(subscription.trial_end),
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "canceled_at": iso(subscription.canceled_at),
        "started_at": iso(subscription.started_at),
        "ends_at": iso(subscription.ends_at),
        "ended_at": iso(subscription.ended_at),
        "past_due_at": None,
        "pause_at_period_end": False,
        "paused_at": None,
        "resumes_at": None,
        "customer_id": str(subscription.customer_id),
        "product_id": str(subscription.product_id),
        "discount_id": str(subscription.discount_id) if subscription.discount_id else None,
        "checkout_id": None,
        "seats": None,
        "units": None,
        "customer_cancellation_reason": None,
        "customer_cancellation_comment": None,
        "metadata": subscription.metadata,
    }


def meter_line_payload(subscription, priced, *, full_meter: bool) -> dict:
    price = priced.price
    data = {
        "id": str(uuid.uuid5(SUBSCRIPTION_METER_NAMESPACE, f"{subscription.pk}:{price.pk}")),
        "created_at": iso(subscription.created_at),
        "modified_at": iso(subscription.modified_at),
        "consumed_units": float(priced.consumed),
        "credited_units": priced.credited,
        "amount": priced.amount,
        "meter_id": str(price.meter_id),
        "late_units": number(priced.late),  # extension
    }
    if full_meter:
        data["meter"] = meter_payload(price.meter)
    return data


def subscription_payload(subscription, meter_lines: list) -> dict:
    product = subscription.product
    return {
        **subscription_base(subscription),
        "customer": customer_payload(subscription.customer),
        "product": product_payload(product),
        "discount": discount_payload(subscription.discount) if subscription.discount else None,
        # the product's prices in force (a plan change leaves the old ones on the subscription)
        "prices": list(
            {
                sp.price_id: price_payload(sp.price, product)
                for sp in subscription.subscription_prices.all()
                if sp.price.product_id == product.pk
            }.values()
        ),
        "meters": [meter_line_payload(subscription, m, full_meter=True) for m in meter_lines],
        "pending_update": pending_update_payload(subscription),
    }


def pending_update_payload(subscription) -> dict | None:
    """A `next_period` plan change, in Polar's PendingSubscriptionUpdate shape."""
    if subscription.pending_product_id is None:
        return None
    requested = subscription.pending_requested_at
    return {
        "id": str(
            uuid.uuid5(SUBSCRIPTION_METER_NAMESPACE, f"{subscription.pk}:pending:{requested}")
        ),
        "created_at": iso(requested),
        "modified_at": None,
        "applies_at": iso(subscription.current_period_end),
        "product_id": str(subscription.pending_product_id),
        "seats": None,
        "units": None,
    }


ORDER_STATUS = {
    InvoiceStatus.DRAFT: "draft",
    InvoiceStatus.OPEN: "pending",
    InvoiceStatus.PAID: "paid",
    InvoiceStatus.VOID: "void",
    InvoiceStatus.UNCOLLECTIBLE: "pending",
}


def _address(address):
    return address if isinstance(address, dict) and address.get("country") else None


def item_payload(line, created_at) -> dict:
    """A stored InvoiceLine or an upcoming LineDraft as a Polar order item (+ extensions)."""
    line_id = getattr(line, "pk", None) or uuid.uuid4()
    price_id = getattr(line, "price_id", None) or (line.price.pk if line.price else None)
    return {
        "id": str(line_id),
        "created_at": iso(created_at),
        "modified_at": None,
        "label": line.label,
        "amount": _minor(line.amount),
        "tax_amount": _minor(line.tax_amount),
        "proration": line.proration,
        "product_price_id": str(price_id) if price_id else None,
        "start_timestamp": iso(line.period_start),
        "end_timestamp": iso(line.period_end),
        # extensions
        "quantity": number(line.quantity),
        "unit_amount": decimal_text(line.unit_amount),
        "meter_id": str(line.meter_id) if line.meter_id else None,
        "consumed_units": number(line.consumed_units),
        "credited_units": line.credited_units,
        "late_units": number(line.late_units),
        "discount_amount": _minor(line.discount_amount),
    }


def _minor(value) -> int:
    return value if isinstance(value, int) else to_minor(value)


def _order(
    *,
    id,
    created_at,
    modified_at,
    status: str,
    invoice_status: str,
    amounts: dict,
    due: int,
    currency: str,
    billing_reason: str,
    billing_name,
    billing_address,
    number,
    customer,
    product,
    subscription,
    discount,
    items: list,
    period_start,
    period_end,
) -> dict:
    """The order shape shared by stored invoices and the upcoming one."""
    return {
        "id": str(id),
        "created_at": iso(created_at),
        "modified_at": iso(modified_at),
        "status": status,
        "paid": invoice_status == InvoiceStatus.PAID,
        **amounts,
        "applied_balance_amount": 0,
        "due_amount": due,
        "refunded_amount": 0,
        "refundable_amount": 0,
        "refunded_tax_amount": 0,
        "refundable_tax_amount": 0,
        "currency": currency.lower(),
        "billing_reason": billing_reason,
        "billing_name": billing_name,
        "billing_address": _address(billing_address),
        "invoice_number": number,
        "is_invoice_generated": False,
        "receipt_number": None,
        "seats": None,
        "units": None,
        "customer_id": str(customer.pk),
        "product_id": str(product.pk) if product else None,
        "discount_id": str(discount.pk) if discount else None,
        "subscription_id": str(subscription.pk) if subscription else None,
        "checkout_id": None,
        "metadata": {},
        "platform_fee_amount": 0,
        "platform_fee_currency": None,
        "customer": customer_payload(customer),
        "product": product_base(product) if product else None,
        "discount": discount_payload(discount) if discount else None,
        "subscription": subscription_base(subscription) if subscription else None,
        "items": items,
        "description": product.name if product else "Invoice",
        # extensions
        "invoice_status": invoice_status,
        "period_start": iso(period_start),
        "period_end": iso(period_end),
    }


def order_payload(invoice) -> dict:
    """An invoice as a Polar order (open → `pending`); needs customer, product, subscription,
    discount and lines loaded."""
    total = to_minor(invoice.total)
    return {
        **_order(
            id=invoice.pk,
            created_at=invoice.created_at,
            modified_at=invoice.modified_at,
            status=ORDER_STATUS[invoice.status],
            invoice_status=invoice.status,
            amounts={
                "subtotal_amount": to_minor(invoice.subtotal),
                "discount_amount": to_minor(invoice.discount_amount),
                "net_amount": to_minor(invoice.net),
                "tax_amount": to_minor(invoice.tax),
                "total_amount": total,
            },
            due=total if invoice.status == InvoiceStatus.OPEN else 0,
            currency=invoice.currency,
            billing_reason=invoice.billing_reason,
            billing_name=invoice.billing_name,
            billing_address=invoice.billing_address,
            number=invoice.number,
            customer=invoice.customer,
            product=invoice.product,
            subscription=invoice.subscription,
            discount=invoice.discount,
            items=[item_payload(line, invoice.created_at) for line in invoice.lines.all()],
            period_start=invoice.period_start,
            period_end=invoice.period_end,
        ),
        "finalized_at": iso(invoice.finalized_at),
        "paid_at": iso(invoice.paid_at),
        "voided_at": iso(invoice.voided_at),
    }


def upcoming_payload(subscription, draft, now) -> dict:
    """The upcoming invoice in the order shape: nothing is stored, so no number."""
    customer = subscription.customer
    return _order(
        id=uuid.uuid5(SUBSCRIPTION_METER_NAMESPACE, f"upcoming:{subscription.pk}"),
        created_at=now,
        modified_at=None,
        status="draft",
        invoice_status=InvoiceStatus.DRAFT,
        amounts={
            "subtotal_amount": draft.subtotal,
            "discount_amount": draft.discount_amount,
            "net_amount": draft.net,
            "tax_amount": draft.tax,
            "total_amount": draft.total,
        },
        due=draft.total,
        currency=draft.currency,
        billing_reason="subscription_cycle",
        billing_name=customer.billing_name or customer.name,
        billing_address=customer.billing_address,
        number=None,
        customer=customer,
        product=subscription.product,
        subscription=subscription,
        discount=draft.discount if draft.discount_amount else None,
        items=[item_payload(line, now) for line in draft.lines],
        period_start=subscription.current_period_start,
        period_end=subscription.current_period_end,
    )


def tax_rate_payload(rate) -> dict:
    return {
        "id": str(rate.pk),
        "created_at": iso(rate.created_at),
        "modified_at": iso(rate.modified_at),
        "organization_id": str(rate.organization_id),
        "name": rate.name,
        "country": rate.country,
        "state": rate.state,
        "basis_points": rate.basis_points,
        "inclusive": rate.inclusive,
    }

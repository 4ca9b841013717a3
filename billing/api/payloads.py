"""Billing bodies as plain data for the modules that send them outside a view (webhooks, the
customer state): rendered by the response serializers the API uses
(`billing.api.response_serializers`), so a webhook and a GET of the same object agree."""

from rest_framework.fields import DateTimeField

from billing.api.response_serializers import (
    BenefitPropertiesSerializer,
    CustomerStateSubscriptionMeterSerializer,
    MeterLine,
    OrderSerializer,
    SubscriptionBaseSerializer,
    SubscriptionMeterSerializer,
    SubscriptionSerializer,
)

_datetime = DateTimeField()


def iso(moment) -> str | None:
    """A timestamp as every API body writes it (UTC as `Z`)."""
    return _datetime.to_representation(moment) if moment else None


def subscription_payload(subscription, meter_lines: list) -> dict:
    """Polar's `Subscription`; `meter_lines`: its current meter lines
    (`billing.subscriptions.current_meters`)."""
    context = {"meters": {subscription.pk: meter_lines}}
    return dict(SubscriptionSerializer(subscription, context=context).data)


def subscription_base(subscription) -> dict:
    return dict(SubscriptionBaseSerializer(subscription).data)


def meter_line_payload(subscription, line, *, full_meter: bool) -> dict:
    serializer = (
        SubscriptionMeterSerializer if full_meter else CustomerStateSubscriptionMeterSerializer
    )
    return dict(serializer(MeterLine(subscription, line)).data)


def benefit_properties(benefit) -> dict:
    return dict(BenefitPropertiesSerializer(benefit).data)


def order_payload(invoice) -> dict:
    """An invoice as Polar's `Order`."""
    return dict(OrderSerializer(invoice).data)

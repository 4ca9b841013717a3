"""Billing's part of the customer state: `active_subscriptions` (with current-period `meters`),
`granted_benefits` and the customer's `balances`, registered into the customers API's state
sections."""

from billing import balance, subscriptions
from billing.api import payloads
from billing.models import LIVE_STATUSES, Subscription


def customer_state_section(customer) -> dict:
    live = list(
        Subscription.objects.filter(customer=customer, status__in=LIVE_STATUSES)
        .select_related("customer", "product", "discount")
        .prefetch_related(
            "subscription_prices__price__meter",
            "subscription_prices__price__product",
            "product__benefits__meter",
        )
        .order_by("started_at", "id")
    )
    meters = subscriptions.current_meters(live)
    active, granted = [], {}
    for subscription in live:
        base = payloads.subscription_base(subscription)
        active.append(
            {
                **{key: base[key] for key in STATE_SUBSCRIPTION_KEYS},
                # the client's CustomerStateSubscription.status admits only granted/disabled
                "status": "granted",
                "subscription_status": subscription.status,  # extension: the real status
                "meters": [
                    payloads.meter_line_payload(subscription, line, full_meter=False)
                    for line in meters[subscription.pk]
                ],
            }
        )
        for benefit in subscription.product.benefits.all():
            if benefit.is_deleted or benefit.pk in granted:
                continue
            granted[benefit.pk] = {
                "id": str(benefit.pk),
                "created_at": payloads.iso(subscription.created_at),
                "modified_at": payloads.iso(subscription.modified_at),
                "granted_at": payloads.iso(subscription.current_period_start),
                "benefit_id": str(benefit.pk),
                "benefit_type": "meter_credit",
                "benefit_metadata": benefit.metadata,
                "properties": payloads.benefit_properties(benefit),
                "subscription_id": str(subscription.pk),  # extension
            }
    return {
        "active_subscriptions": active,
        "granted_benefits": list(granted.values()),
        # extension: what the customer's next invoices spend before anything is collected
        "balances": [
            {"currency": currency.lower(), "amount": amount}
            for currency, amount in balance.balances(customer.pk).items()
            if amount
        ],
    }


STATE_SUBSCRIPTION_KEYS = (
    "id",
    "created_at",
    "modified_at",
    "metadata",
    "amount",
    "currency",
    "recurring_interval",
    "current_period_start",
    "current_period_end",
    "trial_start",
    "trial_end",
    "cancel_at_period_end",
    "canceled_at",
    "started_at",
    "ends_at",
    "product_id",
    "discount_id",
    "seats",
    "units",
)

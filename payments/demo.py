"""The demo's payments (`seed_demo`, after billing's catalog and subscriptions): every subscribed
demo customer gets a test card, one of them the card that is declined, and what is due is
collected at once — so the demo shows paid invoices and one `past_due` subscription.

Only against Stripe's test mode or localstripe (`./dev run` starts it): the cards are Stripe's
test card numbers, sent the way Stripe.js would (only a test-mode key may create a method from a
card number). With manual collection there is nothing to do."""

from django.conf import settings

from payments import collection, methods
from payments.configuration import resolved
from payments.models import BillingProfile, Collection, Provider

GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"  # attaches, then every charge is declined
# the subscribed demo customer whose card fails (billing's demo subscribes the first 18)
DECLINED_INDEX = 4
SUBSCRIBED = 18


def _test_card(number: str) -> str:
    # here, not at the top: this module is imported by every process at start (the seed's
    # receiver), and the stripe library's import takes ~0.3 s of CPU
    import stripe

    if not settings.STRIPE_SECRET_KEY.startswith("sk_test_"):
        raise RuntimeError("The demo adds test cards: it needs a Stripe test key or localstripe")
    client = stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None,
    )
    card = {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}
    return client.v1.payment_methods.create(params={"type": "card", "card": card}).id


def seed(organization, customers) -> str:
    provider, mode, _ = resolved(organization.pk)
    if provider != Provider.STRIPE or mode != Collection.AUTOMATIC:
        return "Payments: manual collection (no Stripe configured), no cards added."
    with_card = set(
        BillingProfile.objects.filter(
            customer__in=customers, default_method_id__isnull=False
        ).values_list("customer_id", flat=True)
    )
    added = 0
    for index, customer in enumerate(customers[:SUBSCRIBED]):
        if customer.pk in with_card:
            continue
        number = DECLINED_CARD if index == DECLINED_INDEX else GOOD_CARD
        methods.set_default_method(customer, _test_card(number))
        added += 1
    report = collection.collect_due()
    return (
        f"Payments: {added} test cards added; {report.succeeded} invoices paid, "
        f"{report.failed} declined (customer #{DECLINED_INDEX + 1} is past due)."
    )


def on_demo_seeded(sender, organization, customers, **kwargs) -> str:
    return seed(organization, customers)

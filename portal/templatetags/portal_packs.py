import uuid

from django import template

from portal import packs, payments

register = template.Library()


@register.simple_tag(takes_context=True)
def pack_offers(context) -> dict:
    """The credit packs of the usage page's meters, and how they would be paid: {"offers",
    "card"}; no offers where the organization takes no cards (nothing to charge)."""
    customer = context.get("customer")
    usage = context.get("usage")
    if customer is None or usage is None or not payments.cards_accepted(customer.organization):
        return {"offers": [], "card": None}
    offers = packs.offers(customer, [meter.meter_id for meter in usage.meters])
    return {
        "offers": offers,
        "card": payments.default_method(customer) if offers else None,
        # one per page shown: sent back with "Buy", so a double click or a resent form buys once
        "purchase_key": uuid.uuid4(),
    }

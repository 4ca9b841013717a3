"""The portal's "Buy" of a credit pack (portal.packs): one POST, then the pack's order page with
the outcome of the charge, as after "Pay now"."""

from django.http import Http404, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from portal import auth, packs, payments
from portal.views import _payment_error, _payment_rate_limited


@never_cache
@require_POST
@auth.portal_fragment
def buy_pack(request, product_id):
    limited = _payment_rate_limited(request)
    if limited is not None:
        return limited
    try:
        purchase = packs.buy(
            request.customer, product_id, purchase_key=request.POST.get("purchase_key") or None
        )
    except payments.PaymentError as error:
        return _payment_error(request, error)
    if purchase is None:
        raise Http404("No such pack")
    target = reverse(
        "portal:invoice",
        kwargs={"org_slug": request.organization.slug, "invoice_id": purchase.order.pk},
    )
    if purchase.payment is not None:
        return HttpResponseRedirect(f"{target}?payment={purchase.payment.pk}")
    if purchase.refusal is not None and purchase.refusal != "unpaid_order":
        return HttpResponseRedirect(f"{target}?refused={purchase.refusal}")
    return HttpResponseRedirect(target)

"""Customer portal pages. Every page under /portal/<slug>/ that shows data goes through
`portal_page` / `portal_fragment`, which resolve the signed-in customer from the portal's own
session cookie; objects are then looked up within that customer only (404 otherwise)."""

from datetime import timedelta

from django import forms
from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.functional import SimpleLazyObject
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.clients import client_address
from customers.models import Organization
from portal import auth, billing, charts, payments, ratelimit, sign_in, tasks, usage
from portal.branding import palette
from portal.errors import InvalidSignInToken, SubscriptionNotChangeable
from portal.extensions import registry
from portal.models import SignInTokenKind


def home(request):
    return HttpResponse(
        "<!doctype html><title>Meterline</title><h1>Meterline</h1>"
        '<p><a href="/admin/">Admin</a> · <a href="/v1/openapi.json">API schema</a></p>',
        content_type="text/html",
    )


def _context(request, organization: Organization, **extra) -> dict:
    customer = getattr(request, "customer", None)
    session = getattr(request, "portal_session", None)
    token = session.sign_in_token if session is not None else None
    return {
        "organization": organization,
        "palette": palette(organization.accent_color),
        "customer": customer,
        "return_url": token.return_url if token is not None else None,
        "sections": registry.sections if customer is not None else [],
        # read only by the pages that show the banner (every full page, no fragment)
        "past_due": SimpleLazyObject(lambda: payments.past_due_banner(customer))
        if customer is not None
        else None,
        **extra,
    }


def _safe_next(organization: Organization, candidate: str | None) -> str:
    """Only paths inside this organization's portal; anything else goes to the usage page."""
    home_path = reverse("portal:usage", kwargs={"org_slug": organization.slug})
    if (
        candidate
        and candidate.startswith(home_path)
        and url_has_allowed_host_and_scheme(candidate, allowed_hosts=None)
    ):
        return candidate
    return home_path


def _signed_in_redirect(request, organization, session, next_path: str | None):
    # A previous session in this browser (perhaps another customer's) ends here.
    previous = auth.session_from_request(request, organization)
    if previous is not None and previous.pk != session.pk:
        sign_in.end_session(previous)
    response = HttpResponseRedirect(_safe_next(organization, next_path))
    auth.set_session_cookie(response, session, organization)
    return response


def _invalid_link(request, organization):
    return render(
        request,
        "portal/link_invalid.html",
        _context(request, organization),
        status=404,
    )


# --- sign-in --------------------------------------------------------------------------------


@never_cache
@require_GET
def open_customer_session(request, org_slug):
    """The `customer_portal_url` of an API customer session: redeem the token, set the cookie,
    and redirect (which also takes the token out of the address bar and history)."""
    organization = get_object_or_404(Organization, slug=org_slug)
    token = request.GET.get("customer_session_token", "")
    try:
        session = sign_in.redeem(
            organization=organization, token=token, kind=SignInTokenKind.API_SESSION
        )
    except InvalidSignInToken:
        return _invalid_link(request, organization)
    return _signed_in_redirect(request, organization, session, None)


class SignInForm(forms.Form):
    email = forms.EmailField(label="Email address", max_length=320)
    next = forms.CharField(required=False, widget=forms.HiddenInput, max_length=2048)


def _rate_limited(request, email: str) -> int | None:
    per_ip = ratelimit.Rate.parse(settings.PORTAL_SIGN_IN_RATE_PER_IP)
    per_email = ratelimit.Rate.parse(settings.PORTAL_SIGN_IN_RATE_PER_EMAIL)
    ip = client_address(request)
    return ratelimit.hit("portal-sign-in-ip", ip, per_ip) or ratelimit.hit(
        "portal-sign-in-email", email.strip().lower(), per_email
    )


@never_cache
@require_http_methods(["GET", "POST"])
def sign_in_page(request, org_slug):
    organization = get_object_or_404(Organization, slug=org_slug)
    if request.method == "GET":
        form = SignInForm(initial={"next": request.GET.get("next", "")})
        return render(request, "portal/sign_in.html", _context(request, organization, form=form))
    form = SignInForm(request.POST)
    if not form.is_valid():
        return render(
            request,
            "portal/sign_in.html",
            _context(request, organization, form=form),
            status=400,
        )
    email = form.cleaned_data["email"]
    retry_after = _rate_limited(request, email)
    if retry_after is not None:
        response = render(
            request,
            "portal/sign_in.html",
            _context(request, organization, form=form, retry_minutes=-(-retry_after // 60)),
            status=429,
        )
        response["Retry-After"] = str(retry_after)
        return response
    # The answer (and its timing) must not depend on whether the address is a customer's: the
    # lookup and the email happen in the task.
    tasks.send_sign_in_link.delay_on_commit(
        str(organization.pk),
        email,
        request.build_absolute_uri("/"),
        _safe_next(organization, form.cleaned_data["next"]) if form.cleaned_data["next"] else "",
    )
    return render(request, "portal/sign_in_sent.html", _context(request, organization, email=email))


@never_cache
@require_http_methods(["GET", "POST"])
def sign_in_link(request, org_slug):
    """The emailed link. Opening it shows a button; only the POST signs in, so that mail
    scanners that fetch links do not use up the single-use token."""
    organization = get_object_or_404(Organization, slug=org_slug)
    if request.method == "GET":
        return render(
            request,
            "portal/sign_in_link.html",
            _context(
                request,
                organization,
                token=request.GET.get("token", ""),
                next=_safe_next(organization, request.GET.get("next")),
            ),
        )
    try:
        session = sign_in.redeem(
            organization=organization,
            token=request.POST.get("token", ""),
            kind=SignInTokenKind.EMAIL_LINK,
        )
    except InvalidSignInToken:
        return _invalid_link(request, organization)
    return _signed_in_redirect(request, organization, session, request.POST.get("next"))


@never_cache
@require_POST
def sign_out(request, org_slug):
    organization = get_object_or_404(Organization, slug=org_slug)
    session = auth.session_from_request(request, organization)
    if session is not None:
        sign_in.end_session(session)
    response = HttpResponseRedirect(auth.sign_in_url(organization) + "?signed_out=1")
    auth.delete_session_cookie(response, organization)
    return response


# --- usage ----------------------------------------------------------------------------------


def _chart_context(customer_meter, *, period=None) -> dict:
    daily = usage.daily_usage(customer_meter, period=period)
    places = usage.places(customer_meter.meter.aggregation.get("func", "count"))
    return {
        "customer_meter": customer_meter,
        "unit_label": usage.unit_label(customer_meter.meter),
        "daily_label": usage.daily_label(customer_meter.meter),
        "first_day": daily.period.start.date(),
        "last_day": (daily.period.end - timedelta(microseconds=1)).date(),
        "days": [(day, value, charts.format_number(value, places)) for day, value in daily.days],
        "places": places,
        "chart": charts.bar_chart(daily.days, slots=daily.period_days),
    }


def _usage_context(request) -> dict:
    return _context(
        request,
        request.organization,
        usage=usage.customer_usage(request.customer),
        poll_seconds=settings.PORTAL_POLL_SECONDS,
        chart_poll_seconds=settings.PORTAL_POLL_SECONDS * 6,
    )


@never_cache
@require_GET
@auth.portal_page
def usage_page(request):
    context = _usage_context(request)
    context["charts"] = [
        _chart_context(m.customer_meter, period=m.period) for m in context["usage"].meters
    ]
    return render(request, "portal/usage.html", context)


@never_cache
@require_GET
@auth.portal_fragment
def meters_fragment(request):
    return render(request, "portal/_meters.html", _usage_context(request))


@never_cache
@require_GET
@auth.portal_fragment
def chart_fragment(request, customer_meter_id):
    customer_meter = usage.own_customer_meter(request.customer, customer_meter_id)
    if customer_meter is None:
        raise Http404("No such meter")
    context = _context(
        request,
        request.organization,
        item=_chart_context(customer_meter),
        chart_poll_seconds=settings.PORTAL_POLL_SECONDS * 6,
    )
    return render(request, "portal/_chart.html", context)


# --- billing --------------------------------------------------------------------------------


@never_cache
@require_GET
@auth.portal_page
def subscriptions_page(request):
    return render(
        request,
        "portal/subscriptions.html",
        _context(
            request,
            request.organization,
            subscriptions=billing.customer_subscriptions(request.customer),
            refused=request.GET.get("refused") == "1",
        ),
    )


class CancelForm(forms.Form):
    cancel = forms.TypedChoiceField(
        choices=[("1", "cancel"), ("0", "undo")], coerce=lambda v: v == "1"
    )


@never_cache
@require_POST
@auth.portal_fragment
def cancel_subscription(request, subscription_id):
    """Cancel at period end (cancel=1) or undo it (cancel=0); back to the subscriptions page."""
    form = CancelForm(request.POST)
    if not form.is_valid():
        return HttpResponse("cancel must be 1 or 0", status=400, content_type="text/plain")
    target = reverse("portal:subscriptions", kwargs={"org_slug": request.organization.slug})
    try:
        changed = billing.set_cancel_at_period_end(
            request.customer, subscription_id, cancel=form.cleaned_data["cancel"]
        )
    except SubscriptionNotChangeable:
        return HttpResponseRedirect(f"{target}?refused=1")
    if changed is None:
        raise Http404("No such subscription")
    return HttpResponseRedirect(target)


def _card_context(request) -> dict:
    """How the customer pays: whether cards are taken at all, and the default card."""
    accepted = payments.cards_accepted(request.organization)
    return {
        "cards_accepted": accepted,
        "card": payments.default_method(request.customer) if accepted else None,
    }


@never_cache
@require_GET
@auth.portal_page
def invoices_page(request):
    invoices = billing.customer_invoices(request.customer)
    due = payments.due_dates([invoice.pk for invoice in invoices])
    for invoice in invoices:
        invoice.due_at = due.get(invoice.pk)
    return render(
        request,
        "portal/invoices.html",
        _context(
            request,
            request.organization,
            invoices=invoices,
            credit_notes=billing.customer_credit_notes(request.customer),
            **_card_context(request),
        ),
    )


PAY_NOW_REFUSALS = {
    "no_method": "There is no card to charge: add one first.",
    "not_open": "This invoice is not open any more.",
    "in_progress": "A payment of this invoice is already under way; reload in a moment.",
    "no_cards": "Invoices are paid by bank transfer here.",
}


def _invoice_document(request, invoice_id):
    """The customer's own invoice as its HTML document; another's is a 404."""
    invoice = billing.own_invoice(request.customer, invoice_id)
    if invoice is None:
        raise Http404("No such invoice")
    context = _context(
        request,
        request.organization,
        invoice=invoice,
        document=billing.invoice_document(invoice),
        due_at=payments.due_dates([invoice.pk]).get(invoice.pk),
        payments=payments.invoice_payments(invoice),
        payable=invoice.status in billing.PAYABLE_STATUSES,
        payment=payments.invoice_payment(invoice, request.GET.get("payment")),
        refusal=PAY_NOW_REFUSALS.get(request.GET.get("refused", "")),
        refunds=payments.invoice_refunds(invoice),
        **_card_context(request),
    )
    return invoice, render(request, "portal/invoice.html", context)


@never_cache
@require_GET
@auth.portal_page
def invoice_page(request, invoice_id):
    """The invoice as a page (seller and bill-to, lines, totals, payments, refunds and credit
    notes) with its PDF download, "Pay now" while it is open and the outcome of the last
    click."""
    _invoice, response = _invoice_document(request, invoice_id)
    return response


@never_cache
@require_GET
@auth.portal_fragment
def credit_note_download(request, credit_note_id):
    """The credit note's PDF; another customer's is a 404."""
    note = billing.own_credit_note(request.customer, credit_note_id)
    if note is None:
        raise Http404("No such credit note")
    return _pdf_attachment(*billing.credit_note_pdf(note))


def _payment_rate_limited(request) -> HttpResponse | None:
    rate = ratelimit.Rate.parse(settings.PORTAL_PAYMENT_RATE_PER_CUSTOMER)
    retry_after = ratelimit.hit("portal-payment", str(request.customer.pk), rate)
    if retry_after is None:
        return None
    response = render(
        request,
        "portal/payment_refused.html",
        _context(
            request,
            request.organization,
            message=f"Too many payment requests: try again in {-(-retry_after // 60)} minutes.",
        ),
        status=429,
    )
    response["Retry-After"] = str(retry_after)
    return response


@never_cache
@require_POST
@auth.portal_fragment
def pay_invoice(request, invoice_id):
    """Charge the default card for one of the customer's open invoices, then show the invoice
    with the outcome (paid, or the decline and a link to the payment method page)."""
    invoice = billing.own_invoice(request.customer, invoice_id)
    if invoice is None:
        raise Http404("No such invoice")
    limited = _payment_rate_limited(request)
    if limited is not None:
        return limited
    target = reverse(
        "portal:invoice", kwargs={"org_slug": request.organization.slug, "invoice_id": invoice.pk}
    )
    try:
        payment = payments.pay_now(invoice)
    except payments.NotPayable as refusal:
        return HttpResponseRedirect(f"{target}?refused={refusal.reason}")
    except payments.PaymentError as error:
        return _payment_error(request, error)
    return HttpResponseRedirect(f"{target}?payment={payment.pk}")


def _payment_error(request, error, status: int = 502):
    """The provider could not be reached or refused the request: say so, nothing was saved."""
    return render(
        request,
        "portal/payment_refused.html",
        _context(request, request.organization, message=error.message),
        status=status,
    )


# --- payment method -------------------------------------------------------------------------


class SaveCardForm(forms.Form):
    # the provider's setup session id (Stripe: seti_…), reported by the card element
    setup_intent = forms.RegexField(regex=r"^[A-Za-z0-9_]{3,255}\Z", max_length=255)


@never_cache
@require_http_methods(["GET", "POST"])
@auth.portal_page
def payment_method_page(request):
    """The default card (brand, last 4, expiry) or none; POST saves the card a setup session
    confirmed in the browser as the new default (and retries the failed invoices at once)."""
    context = _card_context(request)
    if request.method == "GET":
        return render(
            request,
            "portal/payment_method.html",
            _context(
                request, request.organization, saved=request.GET.get("saved") == "1", **context
            ),
        )
    form = SaveCardForm(request.POST)
    if not form.is_valid():
        return HttpResponse(
            "setup_intent must be a provider's id", status=400, content_type="text/plain"
        )
    limited = _payment_rate_limited(request)
    if limited is not None:
        return limited
    try:
        payments.save_card(request.customer, form.cleaned_data["setup_intent"])
    except payments.SetupSessionNotFound:
        raise Http404("No such setup session")
    except payments.PaymentError as error:
        return _payment_error(request, error, status=400 if error.field else 502)
    target = reverse("portal:payment-method", kwargs={"org_slug": request.organization.slug})
    return HttpResponseRedirect(f"{target}?saved=1")


@never_cache
@require_GET
@auth.portal_page
def add_card_page(request):
    """The card form: a setup session created for this customer, completed by the provider's
    card element in the browser (Stripe.js, or localstripe's stand-in)."""
    if not payments.cards_accepted(request.organization):
        raise Http404("Card payments are not set up")
    limited = _payment_rate_limited(request)
    if limited is not None:
        return limited
    try:
        setup = payments.start_card_setup(request.customer)
    except payments.PaymentError as error:
        return _payment_error(request, error)
    return render(
        request,
        "portal/add_card.html",
        _context(
            request,
            request.organization,
            setup=setup,
            replacing=payments.default_method(request.customer) is not None,
        ),
    )


@never_cache
@require_GET
@auth.portal_fragment
def invoice_download(request, invoice_id):
    """The invoice's PDF, the same document billing emailed; another customer's is a 404."""
    invoice = billing.own_invoice(request.customer, invoice_id)
    if invoice is None:
        raise Http404("No such invoice")
    return _pdf_attachment(*billing.invoice_pdf(invoice))


def _pdf_attachment(name: str, pdf: bytes) -> HttpResponse:
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response

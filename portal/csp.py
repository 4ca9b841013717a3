"""The Content-Security-Policy (django-csp) with the payment provider's origins added.

The card form loads Stripe.js, which frames Stripe's pages and calls Stripe's API; where the
API is another server (localstripe in development and tests) its stand-in script comes from
there. The origins are read per request, from the same settings the card form uses."""

from urllib.parse import urlsplit

from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings

from portal.payments import stripe_js_url

STRIPE_FRAMES = ("https://js.stripe.com", "https://hooks.stripe.com")
STRIPE_API = "https://api.stripe.com"


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return None


def payment_sources() -> dict[str, list[str]]:
    script = _origin(stripe_js_url())
    api = _origin(settings.STRIPE_API_BASE) if settings.STRIPE_API_BASE else STRIPE_API
    frames = [*STRIPE_FRAMES, *([script] if script not in STRIPE_FRAMES and script else [])]
    return {
        "script-src": [script] if script else [],
        "frame-src": frames,
        "connect-src": [origin for origin in (api, script) if origin],
    }


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    def process_response(self, request, response):
        # the API answers JSON that no browser renders as a page: no policy to build per request
        if request.path_info.startswith("/v1/"):
            return response
        return super().process_response(request, response)

    def get_policy_parts(self, request, response, report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if report_only:
            return parts
        update = {key: list(values) for key, values in (parts.update or {}).items()}
        for directive, sources in payment_sources().items():
            update[directive] = [*update.get(directive, []), *sources]
        # the policy's own connect-src/frame-src fall back to default-src ('self') only when absent
        for directive in ("connect-src", "frame-src"):
            update[directive] = ["'self'", *update[directive]]
        parts.update = update
        return parts

"""The portal's session cookie: a signed portal-session id, scoped to one organization's portal.

The cookie's path is `/portal/<slug>/`, so a browser never sends one organization's session to
another organization's portal, and one browser can be signed in to several portals at once. It is
independent of Django's session (used by the admin): signing in to one never signs in to the
other."""

import functools
import uuid

from django.conf import settings
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.http import urlencode
from django_htmx.http import HttpResponseClientRedirect

from customers.models import Organization
from portal import sign_in
from portal.models import PortalSession

COOKIE_NAME = "meterline_portal"
COOKIE_SALT = "portal.session"


def cookie_path(organization: Organization) -> str:
    return reverse("portal:usage", kwargs={"org_slug": organization.slug})


def set_session_cookie(response, session: PortalSession, organization: Organization) -> None:
    response.set_signed_cookie(
        COOKIE_NAME,
        str(session.pk),
        salt=COOKIE_SALT,
        max_age=settings.PORTAL_SESSION_TTL_SECONDS,
        path=cookie_path(organization),
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )


def delete_session_cookie(response, organization: Organization) -> None:
    response.delete_cookie(COOKIE_NAME, path=cookie_path(organization), samesite="Lax")


def session_from_request(request, organization: Organization) -> PortalSession | None:
    raw = request.get_signed_cookie(
        COOKIE_NAME, default=None, salt=COOKIE_SALT, max_age=settings.PORTAL_SESSION_TTL_SECONDS
    )
    if raw is None:
        return None
    try:
        session_id = uuid.UUID(raw)
    except ValueError:
        return None
    return sign_in.live_session(organization=organization, session_id=session_id)


def sign_in_url(organization: Organization, next_path: str | None = None) -> str:
    url = reverse("portal:sign-in", kwargs={"org_slug": organization.slug})
    return f"{url}?{urlencode({'next': next_path})}" if next_path else url


def _require_session(view, *, redirect_to_sign_in: bool):
    @functools.wraps(view)
    def wrapper(request, org_slug, *args, **kwargs):
        organization = get_object_or_404(Organization, slug=org_slug)
        session = session_from_request(request, organization)
        if session is None:
            if request.htmx:
                # a polling page whose session ended follows this to the sign-in page
                response = HttpResponseClientRedirect(sign_in_url(organization))
                response.status_code = 404
                return response
            if redirect_to_sign_in:
                return HttpResponseRedirect(sign_in_url(organization, request.get_full_path()))
            raise Http404("No portal session")
        request.organization = organization
        request.portal_session = session
        request.customer = session.customer
        return view(request, *args, **kwargs)

    return wrapper


def portal_page(view):
    """A page for the signed-in customer; sets `request.organization`, `.portal_session` and
    `.customer`. Without a valid session it redirects to the sign-in page."""
    return _require_session(view, redirect_to_sign_in=True)


def portal_fragment(view):
    """A URL only the page itself fetches (fragments, downloads): without a valid session it is
    a 404, like any object of another customer."""
    return _require_session(view, redirect_to_sign_in=False)

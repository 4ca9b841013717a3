"""Portal sign-in: single-use tokens (API customer sessions and emailed links) redeemed for a
portal session, sign-out, and the clean-up of expired rows.

Tokens are 256-bit random secrets; only their SHA-256 digest is stored (a plain hash suffices for
secrets of that entropy), and they are compared by digest lookup, never in clear."""

import hashlib
import logging
import secrets
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from customers.models import Customer, Organization
from portal.errors import InvalidSignInToken
from portal.models import PortalSession, SignInToken, SignInTokenKind

logger = logging.getLogger(__name__)

API_SESSION_PREFIX = "ml_cst_"
EMAIL_LINK_PREFIX = "ml_csl_"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _issue(
    *, customer: Customer, kind: str, ttl_seconds: int, prefix: str, return_url: str | None = None
) -> tuple[SignInToken, str]:
    token = prefix + secrets.token_urlsafe(32)
    now = timezone.now()
    sign_in_token = SignInToken.objects.create(
        customer=customer,
        kind=kind,
        token_digest=token_digest(token),
        return_url=return_url,
        created_at=now,
        modified_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    return sign_in_token, token


def portal_url(organization: Organization, path: str = "", *, base_url: str) -> str:
    """Absolute URL of a page of the organization's portal."""
    base = settings.PORTAL_BASE_URL or base_url.rstrip("/")
    return base + reverse("portal:usage", kwargs={"org_slug": organization.slug}) + path


def create_api_session(
    *, customer: Customer, return_url: str | None, base_url: str
) -> tuple[SignInToken, str, str]:
    """A customer session for the organization's application: (row, token, customer_portal_url).
    Opening the URL within the token's lifetime signs the customer in, once."""
    sign_in_token, token = _issue(
        customer=customer,
        kind=SignInTokenKind.API_SESSION,
        ttl_seconds=settings.PORTAL_API_TOKEN_TTL_SECONDS,
        prefix=API_SESSION_PREFIX,
        return_url=return_url,
    )
    url = portal_url(
        customer.organization,
        "session?" + urlencode({"customer_session_token": token}),
        base_url=base_url,
    )
    return sign_in_token, token, url


def send_sign_in_link(*, organization_id, email: str, base_url: str, next_path: str = "") -> bool:
    """Email a single-use sign-in link if `email` belongs to a customer of the organization.
    Runs in a Celery task so that the page answers the same, in the same time, either way.
    `next_path` rides along in the link (the page the customer wanted; checked when used).
    Returns whether a link was sent (for logs and tests only, never shown to the requester)."""
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:
        return False
    # Emails are stored lower-case (customers.services), which the unique index relies on too.
    customer = (
        Customer.objects.active()
        .filter(organization=organization, email=email.strip().lower())
        .first()
    )
    if customer is None:
        return False
    _, token = _issue(
        customer=customer,
        kind=SignInTokenKind.EMAIL_LINK,
        ttl_seconds=settings.PORTAL_MAGIC_LINK_TTL_SECONDS,
        prefix=EMAIL_LINK_PREFIX,
    )
    query = {"token": token, **({"next": next_path} if next_path else {})}
    link = portal_url(organization, "sign-in/link?" + urlencode(query), base_url=base_url)
    context = {
        "organization": organization,
        "customer": customer,
        "link": link,
        "minutes": settings.PORTAL_MAGIC_LINK_TTL_SECONDS // 60,
    }
    send_mail(
        subject=f"Your sign-in link for {organization.name}",
        message=render_to_string("portal/email/sign_in_link.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[customer.email],
    )
    return True


def redeem(*, organization: Organization, token: str, kind: str) -> PortalSession:
    """Exchange a sign-in token for a new portal session, exactly once. Raises
    InvalidSignInToken when the token is unknown, used, expired, of another kind, or for a
    customer of another organization (or a deleted one) — all indistinguishable to the caller."""
    now = timezone.now()
    with transaction.atomic():
        # Two concurrent redemptions: the second waits for the row lock, then no longer matches
        # `used_at IS NULL` and finds nothing.
        sign_in_token = (
            SignInToken.objects.select_for_update(of=("self",))
            .select_related("customer")
            .filter(
                token_digest=token_digest(token),
                kind=kind,
                used_at__isnull=True,
                expires_at__gt=now,
                customer__organization=organization,
                customer__deleted_at__isnull=True,
            )
            .first()
        )
        if sign_in_token is None:
            raise InvalidSignInToken()
        sign_in_token.used_at = now
        sign_in_token.modified_at = now
        sign_in_token.save(update_fields=["used_at", "modified_at"])
        session = PortalSession.objects.create(
            customer=sign_in_token.customer,
            sign_in_token=sign_in_token,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.PORTAL_SESSION_TTL_SECONDS),
        )
    logger.info(
        "portal sign-in: customer %s, %s, session %s",
        session.customer_id,
        sign_in_token.kind,
        session.pk,
    )
    return session


def live_session(*, organization: Organization, session_id) -> PortalSession | None:
    """The portal session if it is still valid for this organization's portal."""
    return (
        PortalSession.objects.select_related("customer", "customer__organization")
        .filter(
            pk=session_id,
            ended_at__isnull=True,
            expires_at__gt=timezone.now(),
            customer__organization=organization,
            customer__deleted_at__isnull=True,
        )
        .first()
    )


def end_session(session: PortalSession) -> None:
    PortalSession.objects.filter(pk=session.pk, ended_at__isnull=True).update(
        ended_at=timezone.now()
    )
    logger.info("portal sign-out: customer %s, session %s", session.customer_id, session.pk)


def clear_expired(*, now: datetime | None = None) -> tuple[int, int]:
    """Delete sign-in tokens and sessions that can no longer be used; returns (tokens, sessions).
    Used tokens stay while their session lives (the session points at them)."""
    now = now or timezone.now()
    sessions, _ = PortalSession.objects.filter(expires_at__lte=now).delete()
    tokens, _ = SignInToken.objects.filter(expires_at__lte=now, session__isnull=True).delete()
    return tokens, sessions

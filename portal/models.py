import uuid

from django.db import models
from django.utils import timezone


class SignInTokenKind(models.TextChoices):
    # Created by the organization's application through POST /v1/customer-sessions/.
    API_SESSION = "api_session", "API customer session"
    # Requested by the customer on the portal's sign-in page and sent by email.
    EMAIL_LINK = "email_link", "Email sign-in link"


class SignInToken(models.Model):
    """A single-use secret that signs one customer into the portal when redeemed. Only a SHA-256
    digest of the secret is stored; the secret itself is shown once (API response or email)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="portal_sign_in_tokens"
    )
    kind = models.CharField(max_length=16, choices=SignInTokenKind.choices)
    token_digest = models.CharField(max_length=64, unique=True)
    return_url = models.URLField(max_length=2048, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    modified_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="portal_token_expires")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.customer_id}"


class PortalSession(models.Model):
    """A signed-in customer. The browser holds this id in a signed cookie scoped to the
    organization's portal path; the row makes sessions expire and lets sign-out end them."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.CASCADE, related_name="portal_sessions"
    )
    sign_in_token = models.OneToOneField(
        SignInToken, on_delete=models.SET_NULL, null=True, blank=True, related_name="session"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="portal_session_expires")]

    def __str__(self) -> str:
        return f"Portal session of {self.customer_id}"

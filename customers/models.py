import uuid

from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils.text import slugify
from rest_framework_api_key.models import AbstractAPIKey

hex_colour = RegexValidator(r"^#[0-9a-fA-F]{6}\Z", "Enter a colour as #rrggbb, e.g. #2563eb.")


class Organization(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    # The customer portal lives under /portal/<slug>/; filled from the name when left blank.
    slug = models.SlugField(max_length=64, unique=True, blank=True)
    # Brand colour of the customer portal (the portal derives readable text colours from it).
    accent_color = models.CharField(max_length=7, default="#2563eb", validators=[hex_colour])
    # Printed under the name on invoices (the seller's postal address, tax number …).
    invoice_address = models.TextField(
        blank=True, help_text="Lines printed under the organization's name on every invoice."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if not self.slug:
            self.slug = self.free_slug(self.name)
        super().save(*args, **kwargs)

    @classmethod
    def free_slug(cls, name: str) -> str:
        base = slugify(name)[:56] or "organization"
        slug, n = base, 1
        while cls.objects.filter(slug=slug).exists():
            n += 1
            slug = f"{base}-{n}"
        return slug


class APIToken(AbstractAPIKey):
    """An organization access token. Only a hash is stored; the token is shown once."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_tokens"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API token"
        verbose_name_plural = "API tokens"


class CustomerQuerySet(models.QuerySet):
    def active(self):
        return self.filter(deleted_at__isnull=True)


class Customer(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="customers"
    )
    external_id = models.CharField(max_length=256, null=True, blank=True)
    email = models.EmailField(max_length=320)
    email_verified = models.BooleanField(default=False)
    name = models.CharField(max_length=256, null=True, blank=True)
    billing_name = models.CharField(max_length=256, null=True, blank=True)
    billing_address = models.JSONField(null=True, blank=True)
    # Polar's shape: [value, format], e.g. ["FR61954506077", "eu_vat"]
    tax_id = models.JSONField(null=True, blank=True)
    locale = models.CharField(max_length=16, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    first_user_event_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = CustomerQuerySet.as_manager()

    class Meta:
        constraints = [
            # Uniqueness holds among live customers: a soft-deleted customer frees its email and
            # external id (documented in docs/polar-compatibility.md).
            models.UniqueConstraint(
                "organization",
                Lower("email"),
                condition=models.Q(deleted_at__isnull=True),
                name="customer_email_unique_per_org",
            ),
            models.UniqueConstraint(
                fields=["organization", "external_id"],
                condition=models.Q(deleted_at__isnull=True, external_id__isnull=False),
                name="customer_external_id_unique_per_org",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="customer_org_created"),
        ]

    def __str__(self) -> str:
        return self.email if not self.external_id else f"{self.email} ({self.external_id})"

"""Collecting invoices: the organization's payment settings, a customer's provider customer and
default method, every payment attempt, the dunning state of an invoice, and the provider events
received (each applied once)."""

import uuid

from django.db import models
from django.db.models import Q


class Provider(models.TextChoices):
    STRIPE = "stripe", "Stripe"
    MANUAL = "manual", "Manual (bank transfer, cheque)"


class Collection(models.TextChoices):
    AUTOMATIC = "automatic", "Charge the default method"
    SEND_INVOICE = "send_invoice", "Email the invoice, paid from the portal"


class OrganizationPayments(models.Model):
    """How an organization collects. Empty fields take the installation's defaults
    (settings PAYMENTS_COLLECTION, PAYMENTS_DAYS_UNTIL_DUE; Stripe when it is configured)."""

    organization = models.OneToOneField(
        "customers.Organization",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="payment_settings",
    )
    provider = models.CharField(max_length=16, choices=Provider.choices, null=True, blank=True)
    collection = models.CharField(max_length=16, choices=Collection.choices, null=True, blank=True)
    days_until_due = models.PositiveSmallIntegerField(null=True, blank=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "organization payment settings"
        verbose_name_plural = "organization payment settings"

    def __str__(self) -> str:
        return f"payments of {self.organization_id}"


class BillingProfile(models.Model):
    """The customer at the provider and the method charged off-session (its card's description
    only: card data stays at the provider)."""

    customer = models.OneToOneField(
        "customers.Customer",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="billing_profile",
    )
    provider = models.CharField(max_length=16, choices=Provider.choices)
    provider_customer_id = models.CharField(max_length=255, null=True, blank=True)
    default_method_id = models.CharField(max_length=255, null=True, blank=True)
    brand = models.CharField(max_length=32, default="", blank=True)
    last4 = models.CharField(max_length=4, default="", blank=True)
    exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_customer_id"],
                condition=Q(provider_customer_id__isnull=False),
                name="billing_profile_provider_customer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.brand} •••• {self.last4}" if self.last4 else "no payment method"


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class PaymentTrigger(models.TextChoices):
    """Polar's names for what started an attempt."""

    PURCHASE = "purchase", "Subscription created"
    SUBSCRIPTION_CYCLE = "subscription_cycle", "Renewal"
    RETRY_DUNNING = "retry_dunning", "Dunning retry"
    RETRY_CUSTOMER = "retry_customer", "Paid by the customer in the portal"
    RETRY_PAYMENT_METHOD_UPDATE = "retry_payment_method_update", "New payment method"
    RETRY_ADMIN = "retry_admin", "Retried by staff"


class Payment(models.Model):
    """One attempt to collect an invoice. Recorded `pending` before the provider is called, so
    a process that dies after the call leaves a row that reconciliation settles."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="payments"
    )
    invoice = models.ForeignKey(
        "billing.Invoice", on_delete=models.PROTECT, related_name="payments"
    )
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="payments"
    )
    attempt = models.PositiveSmallIntegerField()
    trigger = models.CharField(max_length=32, choices=PaymentTrigger.choices)
    status = models.CharField(max_length=16, choices=PaymentStatus.choices)
    amount = models.BigIntegerField()  # minor units of `currency`
    currency = models.CharField(max_length=3)
    provider = models.CharField(max_length=16, choices=Provider.choices)
    provider_payment_id = models.CharField(max_length=255, null=True, blank=True)
    # sent to the provider with the attempt's requests: `<invoice id>:<attempt>`
    idempotency_key = models.CharField(max_length=100, unique=True)
    decline_reason = models.CharField(max_length=100, null=True, blank=True)
    decline_message = models.TextField(null=True, blank=True)
    method_brand = models.CharField(max_length=32, default="", blank=True)
    method_last4 = models.CharField(max_length=4, default="", blank=True)
    # true when the provider never charged (not confirmed, no method): not a decline
    not_attempted = models.BooleanField(default=False)
    settled_at = models.DateTimeField(null=True, blank=True)
    # the receipt or the failure email was handed to the mail backend (at most once)
    emailed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [
            ("retry_payment", "Can retry collecting an invoice now"),
            ("record_payment", "Can record a manual payment of an invoice"),
            # apart from the operators' actions: money leaves the business
            ("refund_invoice", "Can refund a paid invoice"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "attempt"], name="payment_invoice_attempt"),
            # one attempt at a time, and never two successes, whatever runs concurrently
            models.UniqueConstraint(
                fields=["invoice"],
                condition=Q(status="pending"),
                name="payment_one_pending_per_invoice",
            ),
            models.UniqueConstraint(
                fields=["invoice"],
                condition=Q(status="succeeded"),
                name="payment_one_success_per_invoice",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="payment_org_created"),
            models.Index(fields=["provider", "provider_payment_id"], name="payment_provider_id"),
            models.Index(
                fields=["created_at"],
                condition=Q(status="pending"),
                name="payment_pending_created",
            ),
        ]

    def __str__(self) -> str:
        return f"payment {self.attempt} of {self.invoice_id}: {self.status}"


class CollectionState(models.TextChoices):
    COLLECTING = "collecting", "Collecting"
    PAID = "paid", "Paid"
    EXHAUSTED = "exhausted", "Retries exhausted"
    STOPPED = "stopped", "Stopped (invoice no longer open)"


class InvoiceCollection(models.Model):
    """The dunning state of one collected invoice: when the next attempt is due. With
    `send_invoice` the invoice is emailed and paid by the customer: nothing is charged on
    schedule, the due date and the dunning steps after it only send reminders."""

    invoice = models.OneToOneField(
        "billing.Invoice", on_delete=models.CASCADE, primary_key=True, related_name="collection"
    )
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.CASCADE, related_name="+"
    )
    state = models.CharField(
        max_length=16, choices=CollectionState.choices, default=CollectionState.COLLECTING
    )
    mode = models.CharField(max_length=16, choices=Collection.choices, default=Collection.AUTOMATIC)
    # send_invoice: finalized + the organization's days until due
    due_at = models.DateTimeField(null=True, blank=True)
    # send_invoice: emails handed to the mail backend (1: the invoice due, n: reminder n - 1)
    notices_sent = models.PositiveSmallIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    # declined attempts, or send_invoice's due date and reminders passed unpaid (the dunning
    # schedule counts these; an attempt never made doesn't)
    failures = models.PositiveSmallIntegerField(default=0)
    first_failed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(state="collecting"),
                name="collection_due",
            )
        ]

    def __str__(self) -> str:
        return f"collection of {self.invoice_id}: {self.state}"


class ProviderEvent(models.Model):
    """A webhook received from a provider, kept by its event id: a redelivery finds it and
    changes nothing."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.CharField(max_length=16, choices=Provider.choices)
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    # what applying it did (for the log and the admin)
    outcome = models.CharField(max_length=200, default="", blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="provider_event_once")
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.type} {self.event_id}"


class RefundStatus(models.TextChoices):
    """Polar's refund statuses (`canceled` is never set here: a refund is not withdrawn)."""

    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


class RefundReason(models.TextChoices):
    """Polar's refund reasons."""

    DUPLICATE = "duplicate", "Duplicate"
    FRAUDULENT = "fraudulent", "Fraudulent"
    CUSTOMER_REQUEST = "customer_request", "Customer request"
    SERVICE_DISRUPTION = "service_disruption", "Service disruption"
    SATISFACTION_GUARANTEE = "satisfaction_guarantee", "Satisfaction guarantee"
    DISPUTE_PREVENTION = "dispute_prevention", "Dispute prevention"
    OTHER = "other", "Other"


class Refund(models.Model):
    """Money paid back on a paid invoice. Recorded `pending` (its amount reserved under the
    invoice's row lock) before the provider is asked, settled once: `succeeded` with its credit
    note, or `failed` with nothing credited. Its id is the provider's idempotency key."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        "customers.Organization", on_delete=models.PROTECT, related_name="refunds"
    )
    invoice = models.ForeignKey("billing.Invoice", on_delete=models.PROTECT, related_name="refunds")
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="refunds"
    )
    # the succeeded payment the money goes back to; none when the invoice was paid manually
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="refunds"
    )
    status = models.CharField(max_length=16, choices=RefundStatus.choices)
    reason = models.CharField(max_length=32, choices=RefundReason.choices)
    amount = models.BigIntegerField()  # minor units of `currency`
    # the tax part: estimated pro rata when recorded, the credit note's once it succeeds
    tax_amount = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3)
    comment = models.TextField(default="", blank=True)
    revoke_benefits = models.BooleanField(default=False)
    metadata = models.JSONField(default=dict, blank=True)
    provider = models.CharField(max_length=16, choices=Provider.choices)
    provider_refund_id = models.CharField(max_length=255, null=True, blank=True)
    failure_message = models.TextField(null=True, blank=True)
    credit_note = models.OneToOneField(
        "billing.CreditNote",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="refund",
    )
    settled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="refund_org_created"),
            models.Index(
                fields=["created_at"], condition=Q(status="pending"), name="refund_pending_created"
            ),
        ]

    def __str__(self) -> str:
        return f"refund of {self.amount} on {self.invoice_id}: {self.status}"

"""Customer verbs. Views, admin and importers call these; they own the invariants."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from customers.errors import CustomerConflict, InvalidCustomerChange
from customers.hooks import (
    customer_created,
    customer_deleted,
    customer_updated,
    external_id_assigned,
)
from customers.models import Customer, Organization


def _conflict_error(exc: IntegrityError) -> CustomerConflict:
    text = str(exc)
    if "customer_email_unique_per_org" in text:
        return CustomerConflict.single(
            ["email"],
            "A customer with this email address already exists.",
            "value_error",
        )
    if "customer_external_id_unique_per_org" in text:
        return CustomerConflict.single(
            ["external_id"],
            "A customer with this external ID already exists.",
            "value_error",
        )
    raise exc


def create_customer(*, organization: Organization, email: str, **fields) -> Customer:
    """Create a customer; the apps above link what was already sent under its external id."""
    customer = Customer(organization=organization, email=email.strip().lower(), **fields)
    try:
        with transaction.atomic():
            customer.save()
            if customer.external_id:
                external_id_assigned.send(sender=Customer, customer=customer)
            customer_created.send(sender=Customer, customer=customer)
    except IntegrityError as exc:
        raise _conflict_error(exc)
    return customer


def update_customer(*, customer: Customer, changes: dict) -> Customer:
    """Apply `changes` and write only those columns: columns maintained by ingestion
    (`first_user_event_at`) are never written back from a stale copy."""
    if "external_id" in changes:
        new = changes["external_id"]
        if customer.external_id and new != customer.external_id:
            raise InvalidCustomerChange.single(
                ["external_id"],
                "The external ID can't be changed once set.",
                "value_error",
            )
    gains_external_id = not customer.external_id and bool(changes.get("external_id"))
    if "email" in changes and changes["email"] is not None:
        changes["email"] = changes["email"].strip().lower()
    written = []
    for field, value in changes.items():
        if field == "email" and value is None:
            continue  # email can't be removed from an individual customer
        setattr(customer, field, value)
        written.append(field)
    customer.modified_at = timezone.now()
    try:
        with transaction.atomic():
            if gains_external_id:
                # before the row update: linking's row locks come first in the global order
                external_id_assigned.send(sender=Customer, customer=customer)
            customer.save(update_fields=[*written, "modified_at"])
            customer_updated.send(sender=Customer, customer=customer, fields=written)
    except IntegrityError as exc:
        raise _conflict_error(exc)
    return customer


def delete_customer(*, customer: Customer) -> None:
    """Soft delete: events stay attached for history; email and external id are freed."""
    now = timezone.now()
    with transaction.atomic():
        deleted = Customer.objects.filter(pk=customer.pk, deleted_at__isnull=True).update(
            deleted_at=now, modified_at=now
        )
        if deleted:
            customer.deleted_at = customer.modified_at = now
            customer_deleted.send(sender=Customer, customer=customer)

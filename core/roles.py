"""Staff roles as Django groups, kept in step with the installed models after every migrate.

- **Support** (read-only): may view everything in the Meterline apps and run nothing.
- **Billing operator**: Support, plus adding and changing customers and billing objects and the
  custom actions of customer meters, billing and payments (credits, resets, closing cycles,
  marking invoices paid, retrying a payment, recording a manual one …). Deleting stays with
  superusers, and so does refunding (`payments.refund_invoice`: money leaves the business, so it
  is granted to a person on purpose).

Permissions are named by app label and codename, so this module imports no app; an app's new
models and custom permissions join the roles by these rules."""

from django.contrib.auth.models import Group, Permission
from django.db.models import Q

SUPPORT = "Support"
BILLING_OPERATOR = "Billing operator"
APPS = ("customers", "metering", "billing", "payments", "portal", "webhooks")
STANDARD_VERBS = ("add_", "change_", "delete_", "view_")


def _support_permissions():
    return Permission.objects.filter(content_type__app_label__in=APPS, codename__startswith="view_")


def _operator_permissions():
    custom = (
        Q(content_type__app_label__in=("metering", "billing", "payments"))
        & ~Q(codename__regex=r"^(add|change|delete|view)_")
        & ~Q(content_type__app_label="payments", codename="refund_invoice")
    )
    editable = Q(content_type__app_label__in=("billing", "payments")) & Q(
        codename__regex=r"^(add|change)_"
    )
    customers = Q(
        content_type__app_label="customers", codename__in=("add_customer", "change_customer")
    )
    views = Q(content_type__app_label__in=APPS, codename__startswith="view_")
    return Permission.objects.filter(custom | editable | customers | views)


def ensure_staff_roles(**kwargs) -> None:
    """Create or update the groups (idempotent; connected to post_migrate)."""
    support, _ = Group.objects.get_or_create(name=SUPPORT)
    support.permissions.set(_support_permissions())
    operator, _ = Group.objects.get_or_create(name=BILLING_OPERATOR)
    operator.permissions.set(_operator_permissions())

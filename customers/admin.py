"""Admin for organizations, API tokens and customers.

- API tokens: the secret is generated on save, rendered once in the response to the add form
  (never stored, never put in a message/cookie/session), and only its hash is kept. Revoking is an
  action with a confirmation page, logged in the admin log.
- Customers: add/change/delete go through customers.services (creation links earlier events;
  deletion is a soft delete); apps above add sections to a customer's page
  (`register_activity_section`), e.g. metering's recent events.
"""

from collections.abc import Callable

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import model_ngettext
from django.db import models
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from rest_framework_api_key.models import APIKey

from core.admin import MeterlineModelAdmin
from core.display import day
from core.forms import OptionalJSONField
from customers.models import APIToken, Customer, Organization
from customers.services import create_customer, delete_customer, update_customer

# Sections the apps above customers add to a customer's admin page (order, title,
# render(customer) -> safe HTML), shown by order: billing's subscriptions, invoices and balance,
# metering's meters and credits, payments' method, then metering's recent events.
ACTIVITY_SECTIONS: list[tuple[int, str, Callable]] = []


def register_activity_section(title: str, render: Callable, *, order: int = 50) -> None:
    ACTIVITY_SECTIONS.append((order, title, render))
    ACTIVITY_SECTIONS.sort(key=lambda section: section[0])


# djangorestframework-api-key registers its own concrete APIKey model; Meterline uses APIToken
# (organization-scoped) only, so the stock page would just be confusing.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


@admin.register(Organization)
class OrganizationAdmin(MeterlineModelAdmin):
    list_display = ("name", "slug", "created_at", "id", "links")
    search_fields = ("name", "=slug", "=id")
    ordering = ("name",)
    readonly_fields = ("id", "created_at", "links")

    @admin.display(description="Browse")
    def links(self, obj):
        if obj.pk is None:
            return "—"
        org = {"organization__id__exact": obj.pk}
        return format_html(
            '<a href="{}?{}">customers</a> · <a href="{}?{}">events</a> · <a href="{}?{}">tokens</a>',
            reverse("admin:customers_customer_changelist"),
            urlencode(org),
            reverse("admin:metering_event_changelist"),
            urlencode({"organization": obj.pk}),
            reverse("admin:customers_apitoken_changelist"),
            urlencode(org),
        )


# --- API tokens --------------------------------------------------------------------------------


@admin.register(APIToken)
class APITokenAdmin(MeterlineModelAdmin):
    list_display = (
        "prefix",
        "name",
        "organization",
        "created",
        "last_used_at",
        "revoked",
        "expiry_date",
        "expired",
    )
    list_filter = ("revoked", "organization", "created")
    list_select_related = ("organization",)
    search_fields = ("name", "=prefix")
    ordering = ("-created",)
    actions = ("revoke_tokens",)
    # Neither the hash nor the primary key (prefix.hash) is ever shown as a field.
    exclude = ("hashed_key",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "organization", "expiry_date")
        return (
            "prefix",
            "name",
            "organization",
            "created",
            "last_used_at",
            "expiry_date",
            "revoked",
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        # Revocation happens through the confirmed, logged action only.
        readonly = ["prefix", "organization", "created", "last_used_at", "revoked"]
        if obj.revoked:
            readonly += ["name", "expiry_date"]
        return readonly

    @admin.display(boolean=True, description="Expired")
    def expired(self, obj):
        return obj.has_expired

    def save_model(self, request, obj, form, change):
        if change:
            obj.save()
            return
        secret = APIToken.objects.assign_key(obj)
        obj.save()
        # Kept on this request object only, for response_add below; never persisted.
        request._meterline_token_secret = secret

    def response_add(self, request, obj, post_url_continue=None):
        secret = getattr(request, "_meterline_token_secret", None)
        if secret is None:  # pragma: no cover - save_model always sets it on add
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API token created",
            "token": obj,
            "secret": secret,
            "changelist_url": reverse("admin:customers_apitoken_changelist"),
            "add_url": reverse("admin:customers_apitoken_add"),
        }
        response = TemplateResponse(request, "admin/customers/apitoken/created.html", context)
        # The page holds the only copy of the secret: keep it out of caches and history restores.
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected API tokens", permissions=["change"])
    def revoke_tokens(self, request, queryset):
        queryset = queryset.select_related("organization")
        if request.POST.get("post") == "yes":
            revoked = 0
            for token in queryset.filter(revoked=False):
                token.revoked = True
                token.save(update_fields=["revoked"])
                self.log_change(request, token, [{"changed": {"fields": ["Revoked"]}}])
                revoked += 1
            self.message_user(
                request,
                f"Revoked {revoked} {model_ngettext(self.opts, revoked)}.",
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Revoke API tokens?",
            "opts": self.opts,
            "queryset": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action": "revoke_tokens",
        }
        return TemplateResponse(
            request, "admin/customers/apitoken/revoke_confirmation.html", context
        )


# --- customers ---------------------------------------------------------------------------------


def stamped_day(moment) -> str:
    """A list cell: the day on one line, the exact time in the tooltip."""
    if moment is None:
        return "—"
    return format_html(
        '<span class="ml-nowrap" title="{}">{}</span>',
        f"{moment:%Y-%m-%d %H:%M:%S} UTC",
        day(moment),
    )


class DeletedFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return (("active", "Active"), ("deleted", "Deleted"))

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


@admin.register(Customer)
class CustomerAdmin(MeterlineModelAdmin):
    # columns that fit beside the sidebar and the filters at 1440 px: the name and organization
    # under the email, dates without their time (in the tooltip)
    list_display = (
        "customer_display",
        "external_id_display",
        "created",
        "first_event",
        "is_active",
    )
    list_filter = ("organization", DeletedFilter, "created_at")
    list_select_related = ("organization",)
    search_fields = ("email", "name", "external_id")
    ordering = ("-created_at",)
    show_full_result_count = False
    formfield_overrides = {models.JSONField: {"form_class": OptionalJSONField}}
    readonly_fields = (
        "id",
        "first_user_event_at",
        "created_at",
        "modified_at",
        "deleted_at",
        "activity",
    )
    fieldsets = (
        ("Overview", {"fields": ("activity",)}),
        (None, {"fields": ("id", "organization", "external_id", "email", "email_verified")}),
        ("Profile", {"fields": ("name", "locale", "metadata")}),
        ("Billing", {"fields": ("billing_name", "billing_address", "tax_id")}),
        (
            "Activity",
            {
                "fields": (
                    "first_user_event_at",
                    "created_at",
                    "modified_at",
                    "deleted_at",
                )
            },
        ),
    )

    def get_readonly_fields(self, request, obj=None):
        readonly = list(self.readonly_fields)
        if obj is not None:
            readonly.append("organization")
            if obj.external_id:
                readonly.append("external_id")  # can't be changed once set (services)
        return readonly

    def get_fieldsets(self, request, obj=None):
        if obj is None:  # nothing to show yet in the overview and activity parts
            return self.fieldsets[1:4]
        return self.fieldsets

    @admin.display(boolean=True, description="Active", ordering="deleted_at")
    def is_active(self, obj):
        return obj.deleted_at is None

    @admin.display(description="Customer", ordering="email")
    def customer_display(self, obj):
        sub = " · ".join(part for part in (obj.name, obj.organization.name) if part)
        return format_html(
            '<div class="ml-ellipsis" title="{}">{}</div><div class="ml-sub ml-ellipsis" '
            'title="{}">{}</div>',
            obj.email,
            obj.email,
            sub,
            sub,
        )

    @admin.display(description="External id", ordering="external_id")
    def external_id_display(self, obj):
        if not obj.external_id:
            return "—"
        return format_html(
            '<div class="ml-ellipsis ml-narrow" title="{}">{}</div>',
            obj.external_id,
            obj.external_id,
        )

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj):
        return stamped_day(obj.created_at)

    @admin.display(description="First event", ordering="first_user_event_at")
    def first_event(self, obj):
        return stamped_day(obj.first_user_event_at)

    @admin.display(description="Overview")
    def activity(self, obj):
        """Like a billing tool's customer page: subscriptions, invoices, balance, credits,
        payment method, latest events — each section a bounded query or two."""
        if obj is None or obj.pk is None:
            return "—"
        return (
            format_html_join(
                "",
                '<section class="ml-section"><h3>{}</h3>{}</section>',
                ((title, render(obj)) for _order, title, render in ACTIVITY_SECTIONS),
            )
            or "—"
        )

    # -- writes go through customers.services --------------------------------------------------

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in form.changed_data}
        if not change:
            fields = {
                name: value
                for name, value in form.cleaned_data.items()
                if name not in ("organization", "email")
            }
            saved = create_customer(
                organization=form.cleaned_data["organization"],
                email=form.cleaned_data["email"],
                **fields,
            )
        else:
            current = Customer.objects.get(pk=obj.pk)
            saved = update_customer(customer=current, changes=data)
        # The admin goes on with `obj` (log entry, redirect): give it the saved state.
        obj.__dict__.update(saved.__dict__)

    def delete_model(self, request, obj):
        delete_customer(customer=obj)

    def delete_queryset(self, request, queryset):
        for customer in queryset.filter(deleted_at__isnull=True):
            delete_customer(customer=customer)

    def get_deleted_objects(self, objs, request):
        """A soft delete touches the customer row only: don't walk its (possibly millions of)
        events the way the default cascade preview would."""
        customers = list(objs)
        if not self.has_delete_permission(request):
            perms_needed = {self.opts.verbose_name}
        else:
            perms_needed = set()
        summary = [
            f"{customer} — soft delete: the customer is marked deleted, its events are kept"
            for customer in customers
        ]
        return summary, {self.opts.verbose_name_plural: len(customers)}, perms_needed, []

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.deleted_at is not None:
            return False  # deleted customers are history: view only
        return super().has_change_permission(request, obj)

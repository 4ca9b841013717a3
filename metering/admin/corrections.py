"""Admin for usage corrections (EventCorrection): read-only, like the events it points to.
Made from an event's page ("Correct usage") or the API; never edited or deleted here — billing
reads these rows to settle invoiced periods.

Built like the other big-table admins: no exact count (EstimatedCountPaginator, no full result
count), the organization and customer columns joined in the list's one query, an event id
searched through the unique (organization, event_id) index. Words of a reason are a scan of the
corrections (far fewer rows than events), bounded like every count here."""

import uuid

from django.contrib import admin
from django.db.models import Q
from django.urls import reverse
from django.utils.html import format_html

from core.admin import MeterlineModelAdmin, ReadOnlyAdminMixin
from customers.models import Organization
from metering.admin.events import EstimatedCountPaginator, OrganizationFilter, pretty_json
from metering.models import EventCorrection


def _event_link(event_id) -> str:
    if event_id is None:
        return "—"
    url = reverse("admin:metering_event_change", args=[event_id])
    return format_html('<a href="{}" class="ml-id">{}</a>', url, event_id)


def _json(value) -> str:
    return "—" if value is None else pretty_json(value)


@admin.register(EventCorrection)
class EventCorrectionAdmin(ReadOnlyAdminMixin, MeterlineModelAdmin):
    list_display = ("created_at", "action", "event_display", "customer_display", "actor")
    list_display_links = ("created_at",)
    list_filter = (OrganizationFilter, "action", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("organization", "customer")
    list_per_page = 50
    list_max_show_all = 200
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    search_fields = ("=actor", "reason")
    search_help_text = (
        "Exact event id (original or replacement), exact actor, or words of the reason."
    )
    actions = None
    fields = (
        "id",
        "organization",
        "action",
        "reason",
        "original_link",
        "replacement_link",
        "customer",
        "event_timestamp",
        "original_pretty",
        "replacement_pretty",
        "actor",
        "created_by",
        "created_at",
        "txid",
        "event_arrival_txid",
    )
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            event_id = uuid.UUID(term)
        except ValueError:
            event_id = None
        if event_id is not None:
            # organizations named so the (organization, event_id) unique index applies
            organizations = list(Organization.objects.values_list("pk", flat=True))
            return queryset.filter(
                Q(organization_id__in=organizations, event_id=event_id) | Q(replacement_id=event_id)
            ), False
        return queryset.filter(Q(actor=term) | Q(reason__icontains=term)), False

    @admin.display(description="event")
    def event_display(self, obj):
        name = (obj.original or {}).get("name", "")
        return format_html(
            '<div class="ml-ellipsis" title="{}">{}</div><div class="ml-sub">{}</div>',
            obj.reason,
            name,
            _event_link(obj.event_id),
        )

    @admin.display(description="customer")
    def customer_display(self, obj):
        external = (obj.original or {}).get("external_customer_id") or ""
        email = obj.customer.email if obj.customer_id else external or "—"
        return format_html(
            '<div class="ml-ellipsis" title="{}">{}</div><div class="ml-sub ml-ellipsis">{}</div>',
            email,
            email,
            obj.organization.name,
        )

    @admin.display(description="original event")
    def original_link(self, obj):
        return _event_link(obj.event_id)

    @admin.display(description="replacement")
    def replacement_link(self, obj):
        return _event_link(obj.replacement_id)

    @admin.display(description="original")
    def original_pretty(self, obj):
        return _json(obj.original)

    @admin.display(description="replacement (name, metadata)")
    def replacement_pretty(self, obj):
        return _json(obj.replacement)

"""Admin for events: strictly read-only and built for tables with tens of millions of rows.

- No exact `COUNT(*)` over the events table: unfiltered, the paginator reads PostgreSQL's
  `reltuples` estimate; filtered, it counts at most `CAP + 1` rows (so at most CAP / per-page
  pages are reachable; narrow the filter to go further back).
- Every filter offered is backed by an index: organization, name (choices from the EventName
  summary table, not a DISTINCT scan), source, time period, customer (from its page).
- Search is exact (external id, external customer id, event id), never `icontains`.
- Only the timestamp column is sortable (the indexes are ordered by timestamp).

With a store that keeps the user events outside PostgreSQL (ClickHouse), the same pages list
PostgreSQL's system events merged with the store's user events under the same filters
(`StoreEventChangeList`), look an event up in both, and the store's rows are shown as unsaved
`Event` instances. The count is capped there too (never a full count in either store).

Usage corrections (metering.corrections): a user event's page offers "Correct usage" to staff
holding `metering.correct_event`; a canceled event is listed with a badge and its page says
why, by whom and when, with links between an original and its replacement.
"""

import uuid
from datetime import timedelta

import msgspec
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from core.admin import MeterlineModelAdmin, ReadOnlyAdminMixin, add_domain_errors
from customers.admin import register_activity_section
from customers.models import Customer, Organization
from metering import corrections, filters, jsonio, stores
from metering.admin.correction_form import EventCorrectionForm
from metering.errors import InvalidCorrection
from metering.event_lists import MergedEvents
from metering.models import CorrectionAction, Event, EventCorrection, EventName, EventSource, Meter

COUNT_CAP = 10_000
CHILDREN_SHOWN = 20

ESTIMATE_SQL = """
SELECT GREATEST(c.reltuples, 0) + COALESCE((
    SELECT sum(GREATEST(p.reltuples, 0)) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
    WHERE i.inhparent = c.oid), 0)
FROM pg_class c WHERE c.oid = %s::regclass
"""


def estimated_rows(table: str) -> int:
    """PostgreSQL's planner estimate (kept fresh by autovacuum/ANALYZE); partitions included.
    -1 (never analyzed) counts as 0."""
    with connection.cursor() as cursor:
        cursor.execute(ESTIMATE_SQL, [connection.ops.quote_name(table)])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class EstimatedCountPaginator(Paginator):
    """Never an exact COUNT(*) over the whole table: an estimate when unfiltered and large, a
    count capped at COUNT_CAP + 1 rows otherwise."""

    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, MergedEvents):
            return queryset[: self.cap + 1].count()
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        if not queryset.query.where:
            estimate = estimated_rows(queryset.model._meta.db_table)
            if estimate > self.cap:
                return estimate
        # SELECT count(*) FROM (SELECT ... LIMIT cap + 1): bounded work whatever the filter.
        return queryset.order_by()[: self.cap + 1].count()


# --- filters (each one backed by an index) ----------------------------------------------------


def _uuid_or_none(value):
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


class OrganizationFilter(admin.SimpleListFilter):
    title = "organization"
    parameter_name = "organization"

    def lookups(self, request, model_admin):
        return [(str(pk), name) for pk, name in Organization.objects.values_list("pk", "name")]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        pk = _uuid_or_none(self.value())
        return queryset.filter(organization_id=pk) if pk else queryset.none()


class EventNameFilter(admin.SimpleListFilter):
    """Choices from the EventName summary table (maintained by ingestion)."""

    title = "name"
    parameter_name = "name"

    def lookups(self, request, model_admin):
        names = EventName.objects.all()
        organization = _uuid_or_none(request.GET.get(OrganizationFilter.parameter_name))
        if organization:
            names = names.filter(organization_id=organization)
        return [(n, n) for n in names.order_by("name").values_list("name", flat=True).distinct()]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(name=self.value())


class SourceFilter(admin.SimpleListFilter):
    title = "source"
    parameter_name = "source"

    def lookups(self, request, model_admin):
        return EventSource.choices

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(source=self.value())


class PeriodFilter(admin.SimpleListFilter):
    """Time ranges on `timestamp` (also `?timestamp__gte=...&timestamp__lt=...` in the URL)."""

    title = "timestamp"
    parameter_name = "period"
    PERIODS = {
        "1h": ("Last hour", timedelta(hours=1)),
        "24h": ("Last 24 hours", timedelta(days=1)),
        "7d": ("Last 7 days", timedelta(days=7)),
        "30d": ("Last 30 days", timedelta(days=30)),
        "90d": ("Last 90 days", timedelta(days=90)),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _) in self.PERIODS.items()]

    def queryset(self, request, queryset):
        period = self.PERIODS.get(self.value() or "")
        if period is None:
            return queryset
        return queryset.filter(timestamp__gte=timezone.now() - period[1])


class CustomerFilter(admin.SimpleListFilter):
    """Set from a customer's page; lists only the selected customer (no scan for choices)."""

    title = "customer"
    parameter_name = "customer"

    def lookups(self, request, model_admin):
        pk = _uuid_or_none(self.value())
        if pk is None:
            return []
        return [(str(c.pk), str(c)) for c in Customer.objects.filter(pk=pk)]

    def has_output(self):
        return self.value() is not None

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        pk = _uuid_or_none(self.value())
        return queryset.filter(customer_id=pk) if pk else queryset.none()


# --- events in another store -----------------------------------------------------------------


def user_events_elsewhere() -> bool:
    return not stores.current().user_events_in_postgres


def as_events(found: list) -> list:
    """Events of the store as unsaved `Event` instances (what the admin's columns, links and
    fields read), their organization and customer already attached; PostgreSQL's rows as
    they are."""
    stored = [e for e in found if not isinstance(e, Event)]
    organizations = Organization.objects.in_bulk(list({e.organization_id for e in stored}))
    out = []
    for item in found:
        if isinstance(item, Event):
            out.append(item)
            continue
        event = Event(
            id=item.id,
            organization_id=item.organization_id,
            name=item.name,
            source=item.source,
            timestamp=item.timestamp,
            ingested_at=item.ingested_at,
            customer_id=item.customer_id,
            external_customer_id=item.external_customer_id,
            external_id=item.external_id,
            parent_id=item.parent_id,
            parent_reference=item.parent_reference,
            metadata=item.metadata,
        )
        if item.organization_id in organizations:
            event.organization = organizations[item.organization_id]
        if item.customer is not None:
            event.customer = item.customer
        out.append(event)
    return out


# the admin shows corrected originals too (marked); the store leaves them out unless asked
ALL_SOURCES = {"include_canceled": True}


def store_event(organization_id, event_id) -> Event | None:
    found = stores.current().list_events(
        organization_id, {"ids": [event_id], **ALL_SOURCES}, descending=False, limit=1
    )
    return as_events(found)[0] if found else None


class _ListedEvents(MergedEvents):
    def _clone(self):  # the whole (short) list: the admin shows it on one page
        return self[0 : COUNT_CAP + 1]

    def __getitem__(self, window: slice):
        page = super().__getitem__(window)
        return page if window.start is None else as_events(page)


# the changelist's own parameters and the filters' (see EventAdmin.list_filter)
CHANGELIST_PARAMS = {"q", "o", "p", "all", "e", "_facets", "_to_field", "_popup"}
PARENT_PARAMS = ("parent", "parent_id", "parent__id__exact")


class StoreEventChangeList(ChangeList):
    """The events changelist when the user events live in the store: the filters, search and
    ordering applied to PostgreSQL's system events as usual, and as criteria to the store's
    user events; the two merged by timestamp."""

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        if exclude_parameters is not None:  # facet counts: PostgreSQL's rows only
            return queryset
        organization_id, criteria = self.store_criteria(request)
        descending = self.get_ordering(request, queryset)[0].startswith("-")
        return _ListedEvents(
            queryset.filter(source=EventSource.SYSTEM), organization_id, criteria, descending
        )

    def store_criteria(self, request) -> tuple:
        values = {spec.parameter_name: spec.value() for spec in self.filter_specs}
        criteria: dict = {**ALL_SOURCES}
        organization_id = None
        if values.get(OrganizationFilter.parameter_name) is not None:
            organization_id = _uuid_or_none(values[OrganizationFilter.parameter_name])
            if organization_id is None:
                criteria["ids"] = []  # an organization that cannot exist: nothing
        if values.get(EventNameFilter.parameter_name) is not None:
            criteria["names"] = [values[EventNameFilter.parameter_name]]
        if values.get(SourceFilter.parameter_name) is not None:
            criteria["sources"] = [values[SourceFilter.parameter_name]]
        period = PeriodFilter.PERIODS.get(values.get(PeriodFilter.parameter_name) or "")
        if period is not None:
            criteria["start"] = timezone.now() - period[1]
        if values.get(CustomerFilter.parameter_name) is not None:
            customer = _uuid_or_none(values[CustomerFilter.parameter_name])
            criteria["customer_ids"] = [customer] if customer else []
            if customer is None:
                criteria["ids"] = []
        if self.query.strip():
            criteria["search"] = self.query.strip()
        known = CHANGELIST_PARAMS | set(values) | set(PARENT_PARAMS)
        known |= {"timestamp__gte", "timestamp__lt"}
        unknown = set(request.GET) - known
        if unknown:  # a lookup the store's criteria cannot express
            raise IncorrectLookupParameters(f"Not with this event store: {sorted(unknown)}")
        for name, key in (("timestamp__gte", "start"), ("timestamp__lt", "before")):
            if name in request.GET:
                moment = _datetime_or_none(request.GET[name])
                if moment is None:
                    raise IncorrectLookupParameters(f"{name}: not a time")
                criteria[key] = max(moment, criteria.get(key, moment))
        for name in PARENT_PARAMS:
            if name in request.GET:
                parent = _uuid_or_none(request.GET[name])
                criteria["parent_ids"] = [parent] if parent else []
                if parent is None:
                    criteria["ids"] = []
        return organization_id, criteria


def _datetime_or_none(text):
    try:
        moment = parse_datetime(text)
    except ValueError:
        return None
    if moment is not None and timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


# --- events ---------------------------------------------------------------------------------


def pretty_json(value) -> str:
    """Indented JSON in a <pre>, from jsonio's text: a Decimal (the ClickHouse store's and the
    corrections' numbers) prints as the exact number it is."""
    text = msgspec.json.format(jsonio.dumps(value).encode(), indent=2).decode()
    return format_html('<pre class="ml-pre">{}</pre>', text)


def _admin_link(obj, label=None) -> str:
    if obj is None:
        return "—"
    opts = obj._meta
    try:
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return str(label or obj)
    return format_html('<a href="{}">{}</a>', url, label or obj)


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, MeterlineModelAdmin):
    # four columns that fit beside the sidebar and the filters at 1440 px: the event's external
    # id under its name, the external customer id and organization under the customer
    list_display = ("timestamp", "event_display", "customer_display", "source_display")
    list_display_links = ("timestamp",)
    list_select_related = ("organization", "customer")
    list_filter = (OrganizationFilter, EventNameFilter, SourceFilter, PeriodFilter, CustomerFilter)
    list_per_page = 50
    list_max_show_all = 200
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ("-timestamp",)
    sortable_by = ("timestamp",)
    # Enables the search box; get_search_results below does exact, index-backed matching.
    search_fields = ("=external_id", "=external_customer_id")
    search_help_text = "Exact event id, external id or external customer id."
    actions = None
    fieldsets = (
        (None, {"fields": ("id", "organization", "name", "source", "timestamp", "ingested_at")}),
        ("Customer", {"fields": ("customer_link", "external_customer_id")}),
        (
            "Idempotency and hierarchy",
            {"fields": ("external_id", "parent_link", "parent_reference", "children_links")},
        ),
        ("Metadata", {"fields": ("metadata_pretty",)}),
        ("Meters", {"fields": ("matched_meters",)}),
    )
    correction_fieldset = ("Correction", {"fields": ("correction_info",)})
    readonly_fields = (
        "id",
        "organization",
        "name",
        "source",
        "timestamp",
        "ingested_at",
        "customer_link",
        "external_customer_id",
        "external_id",
        "parent_link",
        "parent_reference",
        "children_links",
        "metadata_pretty",
        "matched_meters",
        "correction_info",
    )
    change_form_template = "admin/metering/event/change_form.html"

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and self.corrections_of(obj):
            return [fieldsets[0], self.correction_fieldset, *fieldsets[1:]]
        return fieldsets

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = dict(extra_context or {})
        event = self.get_object(request, object_id)
        if event is not None and self.may_correct(request, event):
            extra["correct_url"] = reverse("admin:metering_event_correct", args=[event.pk])
        return super().change_view(request, object_id, form_url, extra)

    def get_urls(self):
        correct = path(
            "<uuid:event_id>/correct/",
            self.admin_site.admin_view(self.correct_view),
            name="metering_event_correct",
        )
        return [correct, *super().get_urls()]

    # -- usage corrections ---------------------------------------------------------------------

    def may_correct(self, request, event) -> bool:
        # a corrected original is `canceled`; a replacement is a user event and may be corrected
        return event.source == EventSource.USER and request.user.has_perm("metering.correct_event")

    def correct_view(self, request, event_id):
        """The "Correct usage" form: cancel or replace this one event through the service (which
        validates, writes the EventCorrection and the audit entry); its refusals go back on the
        form, nothing written."""
        if not request.user.has_perm("metering.correct_event"):
            raise PermissionDenied
        event = self.get_object(request, str(event_id))
        if event is None:
            raise Http404
        page = reverse("admin:metering_event_change", args=[event.pk])
        if event.source != EventSource.USER:
            self.message_user(
                request,
                f"Only user events can be corrected; this one is {event.get_source_display()}.",
                messages.WARNING,
            )
            return redirect(page)
        # the stored event with exact numbers (the model's JSONField would read floats)
        found = stores.current().find_events(event.organization_id, ids=[event.pk], external_ids=[])
        original = found[0] if found else event
        if request.method == "POST":
            form = EventCorrectionForm(request.POST, event=original)
            if form.is_valid():
                try:
                    (made,) = corrections.correct_events(
                        organization=event.organization,
                        corrections=[form.correction(event.pk)],
                        actor=f"staff:{request.user.get_username()}",
                        user=request.user,
                    )
                except InvalidCorrection as exc:
                    add_domain_errors(form, exc)
                else:
                    if made.replacement_id:
                        self.message_user(
                            request,
                            f"Event replaced; the replacement is {made.replacement_id}.",
                            messages.SUCCESS,
                        )
                        return redirect(
                            reverse("admin:metering_event_change", args=[made.replacement_id])
                        )
                    self.message_user(request, "Event canceled.", messages.SUCCESS)
                    return redirect(page)
        else:
            form = EventCorrectionForm(event=original)
        return TemplateResponse(
            request,
            "admin/metering/event/correct.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Correct usage: {event.name}",
                "event": event,
                "event_url": page,
                "form": form,
                "opts": self.model._meta,
                "media": self.media + form.media,
            },
        )

    def corrections_of(self, obj) -> dict:
        """{"made": the correction that canceled this event, "replaces": the one this event is
        the replacement of} — either may be absent; read once per event page."""
        cached = getattr(obj, "_corrections", None)
        if cached is not None:
            return cached
        # (organization, event_id) is the unique constraint's index; a replacement is found
        # among its customer's corrections (correction_customer index), a customer that was
        # unlinked when corrected among those without one
        match = Q(replacement_id=obj.pk) & (
            Q(customer_id=obj.customer_id) | Q(customer_id__isnull=True)
            if obj.customer_id
            else Q(customer_id__isnull=True)
        )
        if obj.source == EventSource.CANCELED:
            match |= Q(event_id=obj.pk)
        found = {}
        for correction in EventCorrection.objects.filter(
            match, organization_id=obj.organization_id
        ):
            found["made" if correction.event_id == obj.pk else "replaces"] = correction
        obj._corrections = found
        return found

    def get_changelist(self, request, **kwargs):
        return StoreEventChangeList if user_events_elsewhere() else super().get_changelist(request)

    def get_object(self, request, object_id, from_field=None):
        pk = _uuid_or_none(object_id)
        if pk is None:
            return None
        found = (
            self.get_queryset(request)
            .select_related("organization", "customer", "parent")
            .filter(pk=pk)
            .first()
        )
        if found is not None or not user_events_elsewhere():
            return found
        event = store_event(None, pk)
        if event is not None and event.parent_id is not None:
            # a parent that no event is stays unresolved, as PostgreSQL leaves it
            parent = store_event(event.organization_id, event.parent_id)
            if parent is None:
                event.parent_id = None
            else:
                event.parent = parent
        return event

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        # The unique (organization, external_id) and the partial unlinked-customer indexes lead
        # with organization: name the organizations so they apply. Linked events sent with
        # this external customer id belong to the customer holding it (found below).
        organizations = list(Organization.objects.values_list("pk", flat=True))
        match = Q(external_id=term) | Q(customer_id__isnull=True, external_customer_id=term)
        customers = list(
            Customer.objects.filter(external_id=term).values_list("pk", flat=True)[:100]
        )
        if customers:  # events sent with customer_id, found through (customer, -timestamp)
            match |= Q(customer_id__in=customers)
        event_id = _uuid_or_none(term)
        if event_id:
            match |= Q(pk=event_id)
        return queryset.filter(Q(organization_id__in=organizations) & match), False

    # -- columns and fields --------------------------------------------------------------------

    @admin.display(description="customer", ordering=None)
    def customer_link(self, obj):
        if obj.customer_id is None:
            return "— (not linked)" if obj.external_customer_id else "—"
        return _admin_link(obj.customer, obj.customer.email)

    @admin.display(description="event")
    def event_display(self, obj):
        return format_html(
            '<div class="ml-ellipsis" title="{}">{}</div><div class="ml-sub ml-ellipsis" '
            'title="{}">{}</div>',
            obj.name,
            obj.name,
            obj.external_id or "",
            obj.external_id or "",
        )

    @admin.display(description="customer")
    def customer_display(self, obj):
        sub = " · ".join(part for part in (obj.external_customer_id, obj.organization.name) if part)
        email = obj.customer.email if obj.customer_id else ""
        return format_html(
            '<div class="ml-ellipsis" title="{}">{}</div><div class="ml-sub ml-ellipsis" '
            'title="{}">{}</div>',
            email,
            self.customer_link(obj),
            sub,
            sub,
        )

    @admin.display(description="source")
    def source_display(self, obj):
        if obj.source == EventSource.CANCELED:
            return format_html(
                '<span class="ml-status ml-status-void" title="{}">{}</span>',
                "Corrected: counts in no meter",
                obj.get_source_display(),
            )
        return obj.get_source_display()

    @admin.display(description="correction")
    def correction_info(self, obj):
        found = self.corrections_of(obj)
        parts = []
        made = found.get("made")
        if made is not None:
            verb = "Replaced" if made.action == CorrectionAction.REPLACE else "Canceled"
            parts.append(
                format_html(
                    "<p><strong>{}</strong> {} by {}: counts in no meter.</p><p>Reason: {}</p>",
                    verb,
                    timezone.localtime(made.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                    made.actor,
                    made.reason,
                )
            )
            if made.replacement_id:
                parts.append(
                    format_html(
                        '<p>Replacement: <a href="{}">{}</a></p>',
                        reverse("admin:metering_event_change", args=[made.replacement_id]),
                        made.replacement_id,
                    )
                )
            parts.append(_admin_link(made, "The correction's record →"))
        replaces = found.get("replaces")
        if replaces is not None:
            parts.append(
                format_html(
                    '<p>Replaces <a href="{}">{}</a> (reason: {})</p>',
                    reverse("admin:metering_event_change", args=[replaces.event_id]),
                    replaces.event_id,
                    replaces.reason,
                )
            )
        return format_html_join("", "{}", ((part,) for part in parts)) if parts else "—"

    @admin.display(description="parent")
    def parent_link(self, obj):
        if obj.parent_id is None:
            return "—"
        return _admin_link(obj.parent, f"{obj.parent} ({obj.parent_id})")

    @admin.display(description="children")
    def children_links(self, obj):
        if user_events_elsewhere():
            children = as_events(
                stores.current().list_events(
                    obj.organization_id,
                    {"parent_ids": [obj.pk], **ALL_SOURCES},
                    descending=False,
                    limit=CHILDREN_SHOWN + 1,
                )
            )
        else:
            # event_parent partial index: (parent_id) WHERE parent_id IS NOT NULL
            children = list(
                Event.objects.filter(parent=obj)
                .order_by("timestamp")
                .only("id", "name", "timestamp")[: CHILDREN_SHOWN + 1]
            )
        if not children:
            return "—"
        items = format_html_join(
            "", "<li>{}</li>", ((_admin_link(c),) for c in children[:CHILDREN_SHOWN])
        )
        more = ""
        if len(children) > CHILDREN_SHOWN:
            url = reverse("admin:metering_event_changelist") + "?" + urlencode({"parent": obj.pk})
            more = format_html('<li><a href="{}">all children →</a></li>', url)
        return format_html("<ul>{}{}</ul>", items, more)

    @admin.display(description="metadata")
    def metadata_pretty(self, obj):
        return pretty_json(dict(sorted((obj.metadata or {}).items())))

    # ------------------------------------------------------------------------------------------
    # MATCHED METERS: which meters this event matched, and with what value. Uses the meter
    # filter language of metering.filters (the same rule as the SQL compiler and the rollups).
    # ------------------------------------------------------------------------------------------
    @admin.display(description="matched meters")
    def matched_meters(self, obj):
        if obj is None:
            return "—"
        event = {
            "name": obj.name,
            "source": obj.source,
            "timestamp": obj.timestamp,
            "metadata": obj.metadata or {},
        }
        meters = Meter.objects.filter(organization_id=obj.organization_id).order_by("name")
        rows = []
        for meter in meters:
            if not filters.evaluate(meter.filter or {}, event):
                continue
            aggregation = meter.aggregation or {}
            func = aggregation.get("func", "count")
            if func == "count":
                value = "1"
            elif func == "unique":
                key = filters.value_key(aggregation.get("property", ""), event)
                value = key.split(":", 1)[1] if key else "no value (not counted)"
            else:
                number = filters.numeric_value(aggregation.get("property", ""), event)
                value = str(number) if number is not None else "no numeric value (ignored)"
            archived = " (archived)" if meter.archived_at else ""
            rows.append((_admin_link(meter), func, value, archived))
        if not rows:
            return "No meter matches this event."
        note = ""
        if obj.source == EventSource.CANCELED:
            note = format_html("<p>{}</p>", "Corrected: counts in none of these any more.")
        return format_html(
            "{}<table><thead><tr><th>meter</th><th>aggregation</th><th>value</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            note,
            format_html_join(
                "",
                "<tr><td>{}{}</td><td>{}</td><td>{}</td></tr>",
                ((link, archived, func, value) for link, func, value, archived in rows),
            ),
        )


@admin.register(EventName)
class EventNameAdmin(ReadOnlyAdminMixin, MeterlineModelAdmin):
    """The per-organization summary of event names (read-only; maintained by ingestion)."""

    list_display = ("name", "organization", "source", "occurrences", "first_seen", "last_seen")
    list_filter = ("organization", "source")
    list_select_related = ("organization",)
    search_fields = ("name",)
    ordering = ("organization", "name")


RECENT_EVENTS = 20


def _short_metadata(metadata: dict, limit: int = 80) -> str:
    text = ", ".join(f"{k}={v}" for k, v in (metadata or {}).items() if not k.startswith("_"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def recent_events_section(customer: Customer) -> str:
    """The customer's newest events, for the customer's admin page: one short range scan of the
    (customer_id, -timestamp) index."""
    if user_events_elsewhere():
        events = _ListedEvents(
            Event.objects.filter(customer=customer, source=EventSource.SYSTEM).order_by(
                "-timestamp", "-id"
            ),
            customer.organization_id,
            {"customer_ids": [customer.pk], **ALL_SOURCES},
            descending=True,
        )[0:RECENT_EVENTS]
    else:
        events = list(
            Event.objects.filter(customer=customer)
            .order_by("-timestamp")
            .only("id", "name", "source", "timestamp", "external_id", "metadata")[:RECENT_EVENTS]
        )
    if not events:
        return format_html("<p>{}</p>", "No events yet.")
    rows = format_html_join(
        "",
        '<tr><td class="ml-nowrap"><a href="{}">{}</a></td><td>{}</td><td>{}</td>'
        "<td><code>{}</code></td></tr>",
        (
            (
                reverse("admin:metering_event_change", args=[event.pk]),
                timezone.localtime(event.timestamp).strftime("%Y-%m-%d %H:%M:%S"),
                f"{event.name} (canceled)" if event.source == EventSource.CANCELED else event.name,
                event.external_id or "—",
                _short_metadata(event.metadata),
            )
            for event in events
        ),
    )
    all_url = (
        reverse("admin:metering_event_changelist") + "?" + urlencode({"customer": customer.pk})
    )
    return format_html(
        "<table><thead><tr><th>timestamp</th><th>name</th><th>external id</th>"
        "<th>metadata</th></tr></thead><tbody>{}</tbody></table>"
        '<p><a href="{}">All events of this customer →</a></p>',
        rows,
        all_url,
    )


register_activity_section(f"Recent events (last {RECENT_EVENTS})", recent_events_section, order=90)

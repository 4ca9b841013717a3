"""Admin meter editor: the filter shown readably,
validated with the meters validator (errors on the field, with the clause's path), and a preview
before saving — matching events in the last 30 days, the aggregated value for the top customers
and a daily chart (inline SVG, no JavaScript needed; htmx refreshes it in place when loaded).
Saving goes through the meters services (create → backfill, update → rebuild); backfill progress
shows on the list and the change page.

`MeterEditorMixin` holds the editor; `MeterAdmin` registers it for `Meter`.
"""

from __future__ import annotations

import decimal
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin import MeterlineModelAdmin, add_domain_errors
from core.errors import DomainError, ErrorList
from customers.models import Customer
from metering import aggregation, filters, meters, stores
from metering.models import CustomerMeter, Meter, MeterState, MeterUnit
from metering.stores.base import ReadTimedOut

PREVIEW_DAYS = 30
PREVIEW_TOP = 10
PREVIEW_TIMEOUT_MS = 20_000
EXAMPLE_FILTER = {
    "conjunction": "and",
    "clauses": [{"property": "name", "operator": "eq", "value": "llm.completion"}],
}

# --- readable filters ----------------------------------------------------------------------------

OPERATOR_SYMBOLS = {
    "eq": "=",
    "ne": "≠",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "like": "contains",
    "not_like": "does not contain",
}


def _readable_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def readable_filter(filter_: dict | None, *, nested: bool = False) -> str:
    """`name = "llm.completion" AND (model = "gpt-4o" OR _llm.total_tokens ≥ 1000)`."""
    if not isinstance(filter_, dict):
        return ""
    clauses = filter_.get("clauses") or []
    if not clauses:
        return "every event"
    joiner = " AND " if filter_.get("conjunction") == "and" else " OR "
    parts = []
    for clause in clauses:
        if not isinstance(clause, dict):
            parts.append("?")
        elif "clauses" in clause:
            parts.append(readable_filter(clause, nested=len(clauses) > 1))
        else:
            operator = OPERATOR_SYMBOLS.get(clause.get("operator"), str(clause.get("operator")))
            parts.append(
                f"{clause.get('property')} {operator} {_readable_value(clause.get('value'))}"
            )
    text = joiner.join(parts)
    return f"({text})" if nested and len(parts) > 1 else text


def readable_aggregation(aggregation: dict | None) -> str:
    if not isinstance(aggregation, dict) or not aggregation.get("func"):
        return ""
    func = aggregation["func"]
    return func if func == "count" else f"{func}({aggregation.get('property')})"


def readable_location(loc: list) -> str:
    """["clauses", 1, "clauses", 0, "operator"] → "clauses[1].clauses[0].operator"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --- preview -------------------------------------------------------------------------------------

def _value(func: str, count, numeric_count, total, low, high, distinct) -> decimal.Decimal:
    """One preview group's value, by the same arithmetic as every other read path."""
    partial = aggregation.Partial(
        event_count=count,
        numeric_count=numeric_count,
        numeric_sum=total if total is not None else decimal.Decimal(0),
        numeric_min=low,
        numeric_max=high,
        distinct=distinct,
    )
    return aggregation.final_value(func, partial)


def format_number(value: decimal.Decimal) -> str:
    if value == value.to_integral_value():
        return f"{int(value):,}"
    rounded = value.quantize(decimal.Decimal("0.000001"), rounding=decimal.ROUND_HALF_EVEN)
    text = format(rounded.normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{int(whole):,}.{fraction}" if fraction else f"{int(whole):,}"


@dataclass
class Preview:
    start: datetime
    end: datetime
    readable_filter: str
    readable_aggregation: str
    matching_events: int = 0
    linked_events: int = 0
    top_customers: list = field(default_factory=list)  # (customer, events, value, label)
    customers_with_usage: int = 0
    days: list = field(default_factory=list)  # (date, events, value)
    error: str = ""

    @property
    def unlinked_events(self) -> int:
        return self.matching_events - self.linked_events

    def chart_svg(self) -> str:
        return daily_chart_svg(self.days)


def compute_preview(
    *,
    organization_id,
    filter_: dict,
    aggregation: dict,
    now: datetime | None = None,
    days: int = PREVIEW_DAYS,
    top: int = PREVIEW_TOP,
) -> Preview:
    """The meter's numbers over the last `days` calendar days (UTC, today included) computed
    from raw events by the event store in one read: the matching events, per customer and per
    day."""
    now = now or timezone.now()
    first_day = now.astimezone(UTC).date() - timedelta(days=days - 1)
    start = datetime.combine(first_day, time.min, tzinfo=UTC)
    preview = Preview(start, now, readable_filter(filter_), readable_aggregation(aggregation))
    func = aggregation["func"]
    try:
        figures = stores.current().preview(
            organization_id,
            filter_=filter_,
            aggregation=aggregation,
            start=start,
            end=now,
            timeout_ms=PREVIEW_TIMEOUT_MS,
        )
    except ReadTimedOut as exc:
        preview.error = f"The preview did not finish within {PREVIEW_TIMEOUT_MS // 1000} s ({exc})."
        return preview
    if figures.total is not None:
        preview.matching_events = figures.total[0]
    per_customer = []
    for customer_id, numbers in figures.customers.items():
        if customer_id is not None:
            per_customer.append((customer_id, numbers[0], _value(func, *numbers)))
            preview.linked_events += numbers[0]
    per_day = {day: (numbers[0], _value(func, *numbers)) for day, numbers in figures.days.items()}
    per_customer.sort(key=lambda item: (-item[2], -item[1], str(item[0])))
    preview.customers_with_usage = len(per_customer)
    chosen = per_customer[:top]
    customers = Customer.objects.in_bulk([c for c, _, _ in chosen])
    preview.top_customers = [
        (customers.get(customer_id), events, value, format_number(value))
        for customer_id, events, value in chosen
    ]
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        events, value = per_day.get(day, (0, decimal.Decimal(0)))
        preview.days.append((day, events, value))
    return preview


# half the width of a "Dec 01" label at font-size 10, slightly over-estimated
LABEL_HALF_WIDTH = 20


def daily_chart_svg(days: list, *, width: int = 620, height: int = 140) -> str:
    """Bars of the daily value, server-rendered; each bar's tooltip gives the date and figures."""
    if not days:
        return ""
    peak = max((value for _, _, value in days), default=0) or 1
    gap = 2
    bar = (width - 40) / len(days) - gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="meter-preview-chart" width="{width}" '
        f'height="{height + 24}" role="img" aria-label="Daily value, last {len(days)} days">',
        f'<line x1="40" y1="{height}" x2="{width}" y2="{height}" stroke="#999" />',
        f'<text x="36" y="10" text-anchor="end" font-size="10">{format_number(peak)}</text>',
        f'<text x="36" y="{height}" text-anchor="end" font-size="10">0</text>',
    ]
    for index, (day, events, value) in enumerate(days):
        x = 40 + index * (bar + gap)
        h = 0 if value <= 0 else max(1.0, float(value / peak) * (height - 12))
        parts.append(
            f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
            f'fill="#417690"><title>{day.isoformat()}: {format_number(value)} '
            f"({events:,} events)</title></rect>"
        )
        if index % 5 == 0 or index == len(days) - 1:
            # centred under its bar, except where centring would cross the right edge: the
            # last label ends at the edge (centred, "Dec 01" was cut to "Dec 0")
            centre, anchor = x + bar / 2, "middle"
            if centre + LABEL_HALF_WIDTH > width:
                centre, anchor = width, "end"
            parts.append(
                f'<text x="{centre:.1f}" y="{height + 14}" text-anchor="{anchor}" '
                f'font-size="10">{day:%b %d}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


# --- form ----------------------------------------------------------------------------------------


OPERATOR_LABELS = {
    "eq": "equals (=)",
    "ne": "differs from (≠)",
    "gt": "greater than (>)",
    "gte": "at least (≥)",
    "lt": "less than (<)",
    "lte": "at most (≤)",
    "like": "contains (like)",
    "not_like": "does not contain",
}
BLANK_ROWS = 2


def _clause_value(text: str):
    """A row's value as the filter holds it: numbers and booleans typed, anything else text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def _row_value(value) -> str:
    if isinstance(value, str):
        # text that would read as a number or a boolean keeps its quotes
        return json.dumps(value) if _clause_value(value) != value else value
    return json.dumps(value)


class FilterEditorWidget(forms.Widget):
    """The filter as rows of clauses (property, operator, value) under one conjunction, the
    JSON as an advanced field for nested groups. Both are checked by the same server-side
    validation (metering.filters) when the form is cleaned.

    A submission without the rows (an API-style post of `filter` alone) is read as JSON."""

    template_name = "admin/metering/filter_widget.html"

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        raw = value if isinstance(value, str) else json.dumps(value or {})
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        clauses = parsed.get("clauses") if isinstance(parsed, dict) else None
        flat = isinstance(clauses, list) and all(
            isinstance(c, dict) and "property" in c and "clauses" not in c for c in clauses
        )
        rows = (
            [
                {
                    "property": c.get("property", ""),
                    "operator": c.get("operator", "eq"),
                    "value": _row_value(c.get("value", "")),
                }
                for c in clauses
            ]
            if flat
            else []
        )
        rows += [{"property": "", "operator": "eq", "value": ""}] * BLANK_ROWS
        context.update(
            rows=rows,
            operators=[(op, OPERATOR_LABELS.get(op, op)) for op in filters.OPERATORS],
            conjunction=parsed.get("conjunction", "and") if isinstance(parsed, dict) else "and",
            nested=parsed is not None and not flat,
            use_raw=not flat,
            raw=json.dumps(parsed, indent=2) if parsed is not None else raw,
        )
        return context

    def value_from_datadict(self, data, files, name):
        raw = data.get(name)
        if not data.get(f"{name}_structured") or data.get(f"{name}_use_raw"):
            return raw
        clauses = []
        index = 0
        while f"{name}_property_{index}" in data:
            prop = (data.get(f"{name}_property_{index}") or "").strip()
            if prop:
                clauses.append(
                    {
                        "property": prop,
                        "operator": data.get(f"{name}_operator_{index}") or "eq",
                        "value": _clause_value(data.get(f"{name}_value_{index}") or ""),
                    }
                )
            index += 1
        return json.dumps(
            {"conjunction": data.get(f"{name}_conjunction") or "and", "clauses": clauses}
        )


class MeterEditorForm(forms.ModelForm):
    filter = forms.JSONField(
        help_text=(
            "Events the meter counts: each clause compares a property (name, source, timestamp "
            "or a metadata path such as _llm.total_tokens) with a value."
        ),
        widget=FilterEditorWidget,
    )
    aggregation_func = forms.ChoiceField(
        label="Aggregation", choices=[(f, f) for f in filters.AGGREGATION_FUNCS]
    )
    aggregation_property = forms.CharField(
        label="Aggregated property",
        required=False,
        help_text="Required except for count, e.g. _llm.total_tokens",
    )

    # set by the admin's get_form
    preview_requested = False
    preview: Preview | None = None

    class Meta:
        model = Meter
        fields = ["organization", "name", "filter", "unit", "custom_label", "custom_multiplier"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        if self.editing and instance.aggregation:
            self.initial.setdefault("aggregation_func", instance.aggregation.get("func"))
            self.initial.setdefault(
                "aggregation_property", instance.aggregation.get("property", "")
            )
        elif "filter" in self.fields and not self.is_bound:
            self.initial.setdefault("filter", EXAMPLE_FILTER)

    @property
    def editing(self) -> bool:
        # a new Meter already has its uuid pk: `adding` tells creation from change
        return self.instance is not None and not self.instance._state.adding

    def clean_name(self):
        name = self.cleaned_data["name"]
        if not 3 <= len(name.strip()) <= 256:
            raise forms.ValidationError("Name must have 3 to 256 characters.")
        return name

    def clean_filter(self):
        raw = self.cleaned_data["filter"]
        errors = ErrorList()
        cleaned = filters.validate_filter(raw, [], errors)
        if errors:
            raise forms.ValidationError(
                [
                    f"{readable_location(item['loc']) or 'filter'}: {item['msg']}"
                    for item in errors.items
                ]
            )
        return cleaned

    def clean(self):
        data = super().clean()
        func = data.get("aggregation_func")
        if func:
            raw = {"func": func}
            if func != "count":
                raw["property"] = data.get("aggregation_property") or None
                if raw["property"] is None:
                    raw.pop("property")
            errors = ErrorList()
            cleaned = filters.validate_aggregation(raw, [], errors)
            for item in errors.items:
                target = "aggregation_property" if "property" in item["loc"] else "aggregation_func"
                self.add_error(target, item["msg"])
            self.aggregation = cleaned
        # the meter service's own rules (what it would refuse on save)
        changes = {"unit": data.get("unit"), "custom_label": data.get("custom_label")}
        if self.editing and data.get("filter") is not None:
            changes["filter"] = data["filter"]
        if self.editing and getattr(self, "aggregation", None):
            changes["aggregation"] = self.aggregation
        original = Meter.objects.get(pk=self.instance.pk) if self.editing else Meter()
        try:
            meters.check_change(original, changes)
        except DomainError as exc:
            add_domain_errors(self, exc)
        return data

    def organization_for_preview(self):
        if self.editing:
            return self.instance.organization_id
        organization = self.cleaned_data.get("organization")
        return organization.pk if organization else None

    def is_valid(self) -> bool:
        """In preview mode a valid form computes the preview and reports "not valid", so the
        admin shows the form again (with the preview) instead of saving it."""
        valid = super().is_valid()
        if valid and self.preview_requested:
            self.preview = compute_preview(
                organization_id=self.organization_for_preview(),
                filter_=self.cleaned_data["filter"],
                aggregation=self.aggregation,
            )
            return False
        return valid


# --- admin ---------------------------------------------------------------------------------------


def backfill_status(meter: Meter) -> str:
    if meter.state == MeterState.READY:
        if meter.backfill_finished_at:
            return format_html(
                'Ready <span class="quiet">(backfilled {})</span>',
                timezone.localtime(meter.backfill_finished_at).strftime("%Y-%m-%d %H:%M"),
            )
        return "Ready"
    percent = int(meter.backfill_progress * 100)
    html = format_html(
        '<progress value="{}" max="100" style="width: 8em"></progress> Backfilling {}% '
        '<span class="quiet">({} / {} events)</span>',
        percent,
        percent,
        f"{meter.backfill_events_done:,}",
        f"{meter.backfill_events_total:,}" if meter.backfill_events_total else "?",
    )
    if meter.backfill_error:
        html += format_html('<br><span class="errornote">{}</span>', meter.backfill_error)
    return html


class MeterEditorMixin:
    form = MeterEditorForm
    change_form_template = "admin/metering/meter/change_form.html"
    list_display = ("name", "organization", "aggregation_display", "filter_display", "rollups")
    list_filter = ("state",)
    list_select_related = ("organization",)
    search_fields = ("name",)
    ordering = ("organization__name", "name")

    @admin.display(description="Aggregation")
    def aggregation_display(self, obj):
        return readable_aggregation(obj.aggregation)

    @admin.display(description="Filter")
    def filter_display(self, obj):
        text = readable_filter(obj.filter)
        return text if len(text) <= 90 else text[:89] + "…"

    @admin.display(description="Rollups / backfill")
    def rollups(self, obj):
        return backfill_status(obj)

    @admin.display(description="Current filter")
    def current_filter(self, obj):
        return format_html("<code>{}</code>", readable_filter(obj.filter)) if obj else ""

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ("organization", "name")}),
            ("Filter", {"fields": ("filter",) if obj is None else ("current_filter", "filter")}),
            ("Aggregation", {"fields": ("aggregation_func", "aggregation_property")}),
            ("Display unit", {"fields": ("unit", "custom_label", "custom_multiplier")}),
        ]
        if obj is not None:
            fieldsets.append(("Rollups", {"fields": ("rollups", "archived_at")}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("organization", "current_filter", "rollups", "archived_at")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        wants_preview = request.method == "POST" and "_preview" in request.POST
        return type(form.__name__, (form,), {"preview_requested": wants_preview})

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        form = context["adminform"].form
        context["preview"] = getattr(form, "preview", None)
        context["preview_days"] = PREVIEW_DAYS
        context["preview_top"] = PREVIEW_TOP
        if obj is not None and obj.pk:
            context["preview_url"] = reverse("admin:metering_meter_preview_change", args=[obj.pk])
        else:
            context["preview_url"] = reverse("admin:metering_meter_preview_add")
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        view = self.admin_site.admin_view(self.preview_view)
        return [
            path("preview/", view, name="metering_meter_preview_add"),
            path("<path:object_id>/preview/", view, name="metering_meter_preview_change"),
            *super().get_urls(),
        ]

    def preview_view(self, request, object_id=None):
        """htmx: the preview panel alone for the posted form (nothing is saved)."""
        obj = self.get_object(request, object_id) if object_id else None
        if request.method != "POST" or (
            not self.has_change_permission(request, obj)
            if obj
            else not self.has_add_permission(request)
        ):
            raise PermissionDenied
        Form = self.get_form(request, obj, change=obj is not None)
        form = Form(request.POST, instance=obj)
        form.preview_requested = True
        form.is_valid()
        return TemplateResponse(
            request,
            "admin/metering/meter/preview.html",
            {
                "preview": form.preview,
                "preview_errors": form.errors,
                "preview_days": PREVIEW_DAYS,
                "preview_top": PREVIEW_TOP,
            },
        )

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fields = {
            "name": data["name"],
            "filter": data["filter"],
            "aggregation": form.aggregation,
            "unit": data.get("unit") or MeterUnit.SCALAR,
            "custom_label": data.get("custom_label") or None,
            "custom_multiplier": data.get("custom_multiplier"),
        }
        if change:
            original = Meter.objects.get(pk=obj.pk)
            changes = {k: v for k, v in fields.items() if getattr(original, k) != v}
            meter = meters.update_meter(meter=original, **changes) if changes else original
        else:
            meter = meters.create_meter(organization=data["organization"], **fields)
        for model_field in Meter._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(meter, model_field.attname))
        obj._state.adding = False
        obj._state.db = meter._state.db

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        # Customer meters are derived from the meter and go with it; nobody deletes them alone
        # (their admin refuses it), which must not forbid deleting the meter.
        perms_needed.discard(CustomerMeter._meta.verbose_name)
        return deleted, counts, perms_needed, protected

    # Deleting goes through the service: rollup rows carry no foreign key to the meter.
    def delete_model(self, request, obj):
        meters.delete_meter(meter=obj)

    def delete_queryset(self, request, queryset):
        for meter in queryset:
            meters.delete_meter(meter=meter)


@admin.register(Meter)
class MeterAdmin(MeterEditorMixin, MeterlineModelAdmin):
    pass

"""The credit ledger in the admin: grants (staff add them here; packs add theirs when paid) with
what is left of each, their draws, auto top-ups, and a "Credits" section on the customer's
page. Grants are history: never edited or deleted (a mistaken grant is answered by none more)."""

from django import forms
from django.contrib import admin
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from billing import credits
from billing.admin.display import day
from billing.errors import BillingError
from billing.models import AutoTopUp, CreditDraw, CreditGrant, CreditSource, InvoiceStatus
from core.admin import MeterlineModelAdmin
from core.display import number
from customers.admin import register_activity_section

NOT_VOID = ~Q(draws__invoice__status=InvoiceStatus.VOID)


def with_drawn(queryset):
    return queryset.annotate(drawn=Coalesce(Sum("draws__units", filter=NOT_VOID), 0))


class CreditDrawInline(admin.TabularInline):
    model = CreditDraw
    extra = 0
    can_delete = False
    fields = ("invoice", "units", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class StaffGrantForm(forms.ModelForm):
    class Meta:
        model = CreditGrant
        fields = ("customer", "meter", "units", "expires_at", "reason")


@admin.register(CreditGrant)
class CreditGrantAdmin(MeterlineModelAdmin):
    list_display = ("customer", "meter", "source", "units", "left", "expires_at", "granted_at")
    list_filter = ("source",)
    search_fields = ("=customer__id", "customer__email", "=customer__external_id", "reason")
    raw_id_fields = ("customer", "invoice")
    inlines = [CreditDrawInline]
    ordering = ("-granted_at",)
    readonly_fields = (
        "organization",
        "customer",
        "meter",
        "source",
        "units",
        "left",
        "granted_at",
        "expires_at",
        "invoice",
        "benefit",
        "reason",
    )

    def get_queryset(self, request):
        return with_drawn(super().get_queryset(request).select_related("customer", "meter"))

    @admin.display(description="Left")
    def left(self, obj):
        drawn = getattr(obj, "drawn", None)
        if drawn is None:
            return "—"
        if obj.expires_at is not None and obj.expires_at <= timezone.now():
            return f"{number(obj.units - drawn)} (expired)"
        return number(obj.units - drawn)

    def get_inline_instances(self, request, obj=None):
        return super().get_inline_instances(request, obj) if obj is not None else []

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = StaffGrantForm
            kwargs["fields"] = StaffGrantForm.Meta.fields
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        return StaffGrantForm.Meta.fields if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        # a staff grant goes through the ledger's service (its checks), never a bare save
        try:
            made = credits.grant(
                customer=obj.customer,
                meter=obj.meter,
                units=obj.units,
                source=CreditSource.STAFF,
                expires_at=obj.expires_at,
                reason=obj.reason or f"granted by {request.user}",
            )
        except BillingError as exc:
            raise forms.ValidationError(str(exc)) from exc
        obj.pk = made.pk

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False


class AutoTopUpForm(forms.ModelForm):
    class Meta:
        model = AutoTopUp
        fields = ("customer", "meter", "pack", "threshold_units", "is_active")

    def clean(self):
        data = super().clean()
        pack, meter = data.get("pack"), data.get("meter")
        if pack is not None and meter is not None:
            if pack.recurring_interval is not None:
                raise forms.ValidationError("The pack must be a one-time product")
            if not pack.benefits.filter(meter=meter, is_deleted=False).exists():
                raise forms.ValidationError("The pack carries no credits of this meter")
        return data


@admin.register(AutoTopUp)
class AutoTopUpAdmin(MeterlineModelAdmin):
    form = AutoTopUpForm
    list_display = ("customer", "meter", "pack", "threshold_units", "is_active")
    list_filter = ("is_active",)
    raw_id_fields = ("customer",)


def credits_section(customer) -> str:
    """Each meter's grants on the customer's page: source, units, left, expiry."""
    grants = list(
        with_drawn(CreditGrant.objects.filter(customer=customer))
        .select_related("meter")
        .order_by("meter__name", "expires_at", "granted_at")
    )
    if not grants:
        return ""
    now = timezone.now()
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td class='ml-num'>{}</td><td class='ml-num'>{}</td>"
        "<td class='ml-nowrap'>{}</td></tr>",
        (
            (
                grant.meter.name,
                grant.get_source_display(),
                number(grant.units),
                number(grant.units - grant.drawn)
                if grant.expires_at is None or grant.expires_at > now
                else "expired",
                day(grant.expires_at) if grant.expires_at else "never",
            )
            for grant in grants
        ),
    )
    return format_html(
        "<table><thead><tr><th>meter</th><th>source</th><th>units</th><th>left</th>"
        "<th>expires</th></tr></thead><tbody>{}</tbody></table>",
        rows,
    )


register_activity_section("Credits", credits_section, order=35)

from django import forms
from django.contrib import admin

from core.admin import MeterlineModelAdmin
from webhooks import delivery, endpoints
from webhooks.errors import UnsafeWebhookURL
from webhooks.models import (
    AlertFiring,
    AlertRule,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from webhooks.tasks import enqueue


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2048, assume_scheme="https")

    class Meta:
        model = WebhookEndpoint
        fields = ("organization", "url", "name", "events", "enabled")

    def clean(self):
        data = super().clean()
        try:
            # the address rule holds for staff-entered URLs too
            endpoints.check(url=data.get("url"), events=data.get("events"))
        except UnsafeWebhookURL as exc:
            raise forms.ValidationError([item["msg"] for item in exc.items])
        return data


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(MeterlineModelAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "organization", "enabled", "disabled_reason", "created_at")
    list_filter = ("enabled",)
    list_select_related = ("organization",)
    search_fields = ("url", "name")
    readonly_fields = ("secret", "disabled_reason", "disabled_at", "created_at", "modified_at")
    actions = ("enable_endpoints",)
    show_full_result_count = False

    @admin.action(description="Enable again (clears the disabled reason)", permissions=["change"])
    def enable_endpoints(self, request, queryset):
        organizations = set(queryset.values_list("organization_id", flat=True))
        done = queryset.filter(enabled=False).update(
            enabled=True, disabled_reason="", disabled_at=None
        )
        for organization_id in organizations:
            delivery.forget_endpoints(organization_id)
        self.message_user(request, f"{done} endpoint(s) enabled.")


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    fields = ("attempt", "succeeded", "http_code", "duration_ms", "response", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(MeterlineModelAdmin):
    list_display = (
        "type",
        "endpoint",
        "status",
        "attempts",
        "last_http_code",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("status", "type")
    list_select_related = ("endpoint",)
    readonly_fields = [f.name for f in WebhookEvent._meta.fields]
    inlines = (WebhookDeliveryInline,)
    actions = ("redeliver",)
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    @admin.action(description="Redeliver now", permissions=["change"])
    def redeliver(self, request, queryset):
        events = [delivery.redeliver(event) for event in queryset]
        enqueue(events)
        self.message_user(request, f"{len(events)} event(s) queued for redelivery.")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(MeterlineModelAdmin):
    """The delivery log: every attempt with its status, response code and duration."""

    list_display = ("event", "attempt", "succeeded", "http_code", "duration_ms", "created_at")
    list_filter = ("succeeded",)
    list_select_related = ("event__endpoint",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AlertRule)
class AlertRuleAdmin(MeterlineModelAdmin):
    list_display = ("name", "organization", "meter", "customer", "metric", "threshold", "is_active")
    list_filter = ("is_active", "metric")
    list_select_related = ("organization", "meter", "customer")
    raw_id_fields = ("customer",)
    search_fields = ("name",)
    show_full_result_count = False


@admin.register(AlertFiring)
class AlertFiringAdmin(MeterlineModelAdmin):
    """Every alert that fired: one per rule, customer and period."""

    list_display = ("rule", "customer", "period_start", "value", "fired_at")
    list_select_related = ("rule", "customer")
    readonly_fields = [f.name for f in AlertFiring._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

"""Admin plumbing shared by the apps' admins."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import models
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from djmoney.models.fields import MoneyField

from core import outbox
from core.errors import DomainError
from core.forms import CurrencyMoneyField, SignificantDecimalField
from core.models import PendingTask

admin.site.site_header = "Meterline"
admin.site.site_title = "Meterline admin"
admin.site.index_title = "Back office"

# celery-beat's schedules are written by `setup_schedules`, not by staff: its five models on the
# index were noise. The periodic tasks stay reachable for superusers (pause one, run it now);
# the schedules they point to show on each task's page.
for model in (ClockedSchedule, CrontabSchedule, IntervalSchedule, SolarSchedule, PeriodicTask):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(beat_admin.PeriodicTaskAdmin):
    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


class GuardedActionsMixin:
    """Posting an action the user may not run is a 403, not Django's silent "No action selected"
    (which renders the list again with a 200): permissions on actions are a security boundary
    and should look like one, in the response and in tests."""

    def changelist_view(self, request, extra_context=None):
        name = request.POST.get("action") if request.method == "POST" else None
        if name and name not in self.get_actions(request):
            raise PermissionDenied
        return super().changelist_view(request, extra_context)


# form fields show stored numbers as staff write them (core.display): a rate "0.2", not
# "0.200000000000"; an amount to its currency's places
NUMBER_FIELDS = {
    MoneyField: {"form_class": CurrencyMoneyField},
    models.DecimalField: {"form_class": SignificantDecimalField},
}


class ReadOnlyAdminMixin:
    """A record nobody adds, edits or deletes in the admin (events, payments, corrections, credit
    notes): its pages are views, and its changes go through services."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MeterlineModelAdmin(GuardedActionsMixin, admin.ModelAdmin):
    """Base class of every Meterline ModelAdmin."""

    formfield_overrides = NUMBER_FIELDS


@admin.register(PendingTask)
class PendingTaskAdmin(MeterlineModelAdmin):
    """Tasks recorded until a worker finishes them (core.outbox): normally empty or short-lived;
    a row with attempts and an error is work that keeps failing."""

    list_display = ("name", "created_at", "attempts", "next_attempt_at", "last_error")
    list_filter = ("name",)
    ordering = ("created_at",)
    readonly_fields = ("id", "name", "args", "kwargs", "created_at", "attempts", "last_error")
    fields = (*readonly_fields, "next_attempt_at")
    actions = ["send_now"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Send the selected tasks now")
    def send_now(self, request, queryset):
        sent = sum(outbox.publish(p.pk, p.name, p.args, p.kwargs) for p in queryset)
        self.message_user(request, f"{sent} of {queryset.count()} sent.")


def add_domain_errors(form, exc: DomainError, aliases: dict | None = None) -> None:
    """A service's refusal shown on the form: each problem on the field it names (through
    `aliases` where the service and the form name it differently), else on the whole form."""
    aliases = aliases or {}
    for item in exc.items:
        name = next((str(part) for part in item["loc"] if isinstance(part, str)), None)
        name = aliases.get(name, name)
        form.add_error(name if name in form.fields else None, item["msg"])

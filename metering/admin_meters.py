"""Admin for customer meters: consumed / credited / balance, and staff actions to grant or revoke
credits and reset meters (recorded as `meter.credited` / `meter.reset` system events with a
reason; each action is confirmed on an intermediate page and logged in the admin log)."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.template.response import TemplateResponse

from metering import meters
from metering.models import CustomerMeter

MAX_UNITS = 10**12


class CreditForm(forms.Form):
    units = forms.IntegerField(
        min_value=-MAX_UNITS, max_value=MAX_UNITS, help_text="Negative to revoke credits."
    )
    rollover = forms.BooleanField(required=False)
    reason = forms.CharField(max_length=200)


class ResetForm(forms.Form):
    reason = forms.CharField(max_length=200)


def _log(request, customer_meter, message: str) -> None:
    LogEntry.objects.log_actions(
        user_id=request.user.pk,
        queryset=[customer_meter],
        action_flag=CHANGE,
        change_message=message,
    )


def _action(modeladmin, request, queryset, *, form_class, title, action, apply):
    customer_meters = list(queryset.select_related("customer", "meter"))
    form = form_class(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        for customer_meter in customer_meters:
            message = apply(customer_meter, form.cleaned_data)
            _log(request, customer_meter, message)
        modeladmin.message_user(
            request, f"{title}: {len(customer_meters)} customer meter(s).", messages.SUCCESS
        )
        return None
    return TemplateResponse(
        request,
        "admin/metering/customer_meter_action.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": title,
            "form": form,
            "customer_meters": customer_meters,
            "action": action,
            "opts": modeladmin.model._meta,
        },
    )


@admin.register(CustomerMeter)
class CustomerMeterAdmin(admin.ModelAdmin):
    list_display = ("customer", "meter", "consumed", "credited", "balance", "modified_at")
    list_select_related = ("customer", "meter")
    list_filter = ("meter__organization",)
    search_fields = ("customer__external_id", "customer__email", "meter__name")
    raw_id_fields = ("customer", "meter")
    readonly_fields = ("customer", "meter", "created_at", "modified_at")
    actions = ("grant_credits", "reset_meters")
    ordering = ("-modified_at",)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _numbers(self, obj):
        cache = getattr(self, "_cache", None)
        if cache is None or cache[0] is not obj:
            self._cache = (obj, meters.numbers_for(obj.meter, obj.customer))
        return self._cache[1]

    @admin.display(description="consumed")
    def consumed(self, obj):
        return self._numbers(obj).consumed_units

    @admin.display(description="credited")
    def credited(self, obj):
        return self._numbers(obj).credited_units

    @admin.display(description="balance")
    def balance(self, obj):
        return self._numbers(obj).balance

    @admin.action(description="Grant or revoke credits (with a reason)")
    def grant_credits(self, request, queryset):
        def apply(customer_meter, data):
            meters.grant_credits(
                customer=customer_meter.customer,
                meter=customer_meter.meter,
                units=data["units"],
                rollover=data["rollover"],
                reason=data["reason"],
            )
            return f"Credited {data['units']} units: {data['reason']}"

        return _action(
            self,
            request,
            queryset,
            form_class=CreditForm,
            title="Grant credits",
            action="grant_credits",
            apply=apply,
        )

    @admin.action(description="Reset meters (with a reason)")
    def reset_meters(self, request, queryset):
        def apply(customer_meter, data):
            meters.reset_meter(
                customer=customer_meter.customer,
                meter=customer_meter.meter,
                reason=data["reason"],
            )
            return f"Reset: {data['reason']}"

        return _action(
            self,
            request,
            queryset,
            form_class=ResetForm,
            title="Reset meters",
            action="reset_meters",
            apply=apply,
        )


# The Meter admin (filter editor with preview, backfill progress) lives in its own module.
from metering import admin_meter_editor  # noqa: E402,F401

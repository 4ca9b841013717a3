"""Admin for customer meters: consumed / credited / balance, and staff actions to grant or revoke
credits and reset meters (recorded as `meter.credited` / `meter.reset` system events with a
reason; each action is confirmed on an intermediate page and logged in the admin log)."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.views.main import ChangeList
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from core.admin import MeterlineModelAdmin
from core.display import number
from customers.admin import register_activity_section
from metering import customer_meters
from metering.models import CustomerMeter

MAX_UNITS = 10**12


def balance_cell(numbers) -> str:
    """The balance (credited − consumed) only where there are credits: for a meter without any
    it would be minus the usage — "−82.42" for an average latency — which is no balance at all.
    With credits it is exact and may be negative (the units beyond them)."""
    if not numbers.credited_units:
        return format_html('<span title="{}">—</span>', "no credits")
    return exact_title(numbers.balance)


def exact_title(value) -> str:
    """A meter value rounded for reading (averages have long fractions), exact in the tooltip."""
    exact = f"{value.normalize():f}" if hasattr(value, "normalize") else str(value)
    return format_html('<span class="ml-num" title="{}">{}</span>', exact, number(value))


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


class NumbersChangeList(ChangeList):
    """Computes the page's numbers in one batch and keeps them on the page's objects (per
    request; the ModelAdmin instance is shared by every request of the process)."""

    def get_results(self, request):
        super().get_results(request)
        for customer_meter, numbers in customer_meters.customer_meters_with_numbers(
            self.result_list
        ):
            customer_meter.numbers = numbers


@admin.register(CustomerMeter)
class CustomerMeterAdmin(MeterlineModelAdmin):
    list_display = ("customer", "meter", "consumed", "credited", "balance", "modified")
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

    def get_changelist(self, request, **kwargs):
        return NumbersChangeList

    def has_grant_credits_permission(self, request):
        return request.user.has_perm("metering.grant_credits")

    def has_reset_customer_meter_permission(self, request):
        return request.user.has_perm("metering.reset_customer_meter")

    @staticmethod
    def _numbers(obj):
        numbers = getattr(obj, "numbers", None)
        if numbers is None:  # the change page: one object
            numbers = obj.numbers = customer_meters.numbers_for(obj.meter, obj.customer)
        return numbers

    @admin.display(description="modified", ordering="modified_at")
    def modified(self, obj):
        return format_html('<span class="ml-nowrap">{}</span>', f"{obj.modified_at:%Y-%m-%d %H:%M}")

    @admin.display(description="consumed")
    def consumed(self, obj):
        return exact_title(self._numbers(obj).consumed_units)

    @admin.display(description="credited")
    def credited(self, obj):
        return exact_title(self._numbers(obj).credited_units)

    @admin.display(description="balance")
    def balance(self, obj):
        return balance_cell(self._numbers(obj))

    @admin.action(
        description="Grant or revoke credits (with a reason)", permissions=["grant_credits"]
    )
    def grant_credits(self, request, queryset):
        def apply(customer_meter, data):
            customer_meters.grant_credits(
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

    @admin.action(description="Reset meters (with a reason)", permissions=["reset_customer_meter"])
    def reset_meters(self, request, queryset):
        def apply(customer_meter, data):
            customer_meters.reset_meter(
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


def meters_section(customer) -> str:
    """The customer's meters with what was consumed, credited (benefits, grants) and the balance
    left — numbers computed in one batch for all of them."""
    rows = customer_meters.customer_meters_with_numbers(
        CustomerMeter.objects.filter(customer=customer)
        .select_related("customer", "meter")
        .order_by("meter__name")
    )
    if not rows:
        return format_html("<p>{}</p>", "No meters yet.")
    return format_html(
        '<table class="ml-table"><thead><tr><th>Meter</th><th class="ml-right">Consumed</th>'
        '<th class="ml-right">Credited</th><th class="ml-right">Balance</th></tr></thead>'
        "<tbody>{}</tbody></table>",
        format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td class="ml-right">{}</td>'
            '<td class="ml-right">{}</td><td class="ml-right">{}</td></tr>',
            (
                (
                    reverse("admin:metering_customermeter_change", args=[cm.pk]),
                    cm.meter.name,
                    exact_title(numbers.consumed_units),
                    exact_title(numbers.credited_units),
                    balance_cell(numbers),
                )
                for cm, numbers in rows
            ),
        ),
    )


register_activity_section("Meters and credits", meters_section, order=40)

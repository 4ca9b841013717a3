from django.contrib import admin

from core.models import PendingTask


@admin.register(PendingTask)
class PendingTaskAdmin(admin.ModelAdmin):
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
        from core.outbox import publish

        sent = sum(publish(p.pk, p.name, p.args, p.kwargs) for p in queryset)
        self.message_user(request, f"{sent} of {queryset.count()} sent.")

"""Portal sessions in the admin: who is signed in, and a logged action to end sessions (e.g. a
customer reports a lost device). Sign-in tokens are not listed: they are short-lived secrets of
which only a digest exists, and nothing useful can be done with them."""

from django.contrib import admin, messages
from django.utils import timezone

from portal.models import PortalSession


@admin.register(PortalSession)
class PortalSessionAdmin(admin.ModelAdmin):
    list_display = ("customer", "organization", "created_at", "expires_at", "ended_at", "how")
    list_select_related = ("customer__organization", "sign_in_token")
    list_filter = ("ended_at", "customer__organization")
    search_fields = ("=customer__email", "=customer__external_id", "=id")
    ordering = ("-created_at",)
    actions = ("end_sessions",)
    # A session is created only by signing in; the admin can look and end, nothing else.
    readonly_fields = ("id", "customer", "sign_in_token", "created_at", "expires_at", "ended_at")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    @admin.display(description="Organization", ordering="customer__organization__name")
    def organization(self, obj):
        return obj.customer.organization

    @admin.display(description="Signed in by")
    def how(self, obj):
        return obj.sign_in_token.get_kind_display() if obj.sign_in_token else "—"

    @admin.action(
        description="End selected sessions (sign the customers out)", permissions=["change"]
    )
    def end_sessions(self, request, queryset):
        ended = 0
        for session in queryset.filter(ended_at__isnull=True).select_related("customer"):
            session.ended_at = timezone.now()
            session.save(update_fields=["ended_at"])
            self.log_change(request, session, [{"changed": {"fields": ["Ended at"]}}])
            ended += 1
        self.message_user(request, f"Ended {ended} session(s).", messages.SUCCESS)

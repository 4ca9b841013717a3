"""Admin plumbing shared by the apps' admins."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied


class GuardedActionsMixin:
    """Posting an action the user may not run is a 403, not Django's silent "No action selected"
    (which renders the list again with a 200): permissions on actions are a security boundary
    and should look like one, in the response and in tests."""

    def changelist_view(self, request, extra_context=None):
        name = request.POST.get("action") if request.method == "POST" else None
        if name and name not in self.get_actions(request):
            raise PermissionDenied
        return super().changelist_view(request, extra_context)


class MeterlineModelAdmin(GuardedActionsMixin, admin.ModelAdmin):
    """Base class of every Meterline ModelAdmin."""

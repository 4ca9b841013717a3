"""The audit log of staff actions on money (django-auditlog's LogEntry, read-only in the admin).

A service that changes money on a person's say-so — void, mark paid, refund, a payment recorded
by hand, a plan change — calls `record` inside its transaction, so the entry commits or rolls
back with the change. Who: the signed-in staff user of the request being served (the middleware
below), with the client address; calls outside such a request (the API's tokens, workers,
commands) record nothing — their trail is the objects and webhooks themselves — unless the
service names the caller (`caller`, e.g. "api:<token name>"): usage corrections are audited
whoever makes them.
What: `changes` as {field: [before, after]}, and the verb in `additional_data["action"]`."""

from contextvars import ContextVar

from auditlog.middleware import AuditlogMiddleware
from auditlog.models import LogEntry

from core.clients import client_address

# the request being served; auditlog's own context keeps its last actor after the request ends,
# so the actor is read from here, which is cleared when the request is done
_request: ContextVar = ContextVar("meterline_audit_request", default=None)


class StaffActorMiddleware(AuditlogMiddleware):
    """auditlog's middleware (the client address for the entries), plus the request whose staff
    user `record` names. Not on the API: a token is not a person, and ingestion's hot path skips
    the per-request signal wiring."""

    @staticmethod
    def _get_remote_addr(request):
        # auditlog's own takes the first X-Forwarded-For entry, which the client writes
        return client_address(request)

    def __call__(self, request):
        if request.path_info.startswith("/v1/"):
            return self.get_response(request)
        token = _request.set(request)
        try:
            return super().__call__(request)
        finally:
            _request.reset(token)


def staff_actor():
    """The signed-in staff user of the request being served, or None."""
    request = _request.get()
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_staff:
        return None
    return user


def record(
    instance, *, action: str, changes: dict, created: bool = False, caller: str | None = None
) -> LogEntry | None:
    """An entry for `instance` naming the staff user; outside a staff request, one naming
    `caller` when given, else None."""
    actor = staff_actor()
    if actor is None and caller is None:
        return None
    extra = {"action": action}
    if actor is None:
        extra["caller"] = caller
    return LogEntry.objects.log_create(
        instance,
        force_log=True,
        action=LogEntry.Action.CREATE if created else LogEntry.Action.UPDATE,
        changes={field: [_text(old), _text(new)] for field, (old, new) in changes.items()},
        actor=actor,
        actor_email=getattr(actor, "email", None) or None,
        additional_data=extra,
    )


def _text(value) -> str | None:
    return None if value is None else str(value)

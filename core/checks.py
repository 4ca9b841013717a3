"""System checks for a production deployment (`manage.py check --deploy`)."""

from django.conf import settings
from django.core.checks import Error, Tags, register

# backends that deliver nothing: a sign-in link "sent" through them only reaches a log or memory
UNDELIVERED_EMAIL_BACKENDS = {
    "core.mail.ConsoleSummaryBackend",
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
    "django.core.mail.backends.locmem.EmailBackend",
    "django.core.mail.backends.dummy.EmailBackend",
}


@register(Tags.security, deploy=True)
def email_is_delivered(app_configs, **kwargs):
    """Portal sign-in links are emailed; without a mail server they are printed to the worker's
    log, where anyone who reads the log can sign in as the customer."""
    if settings.EMAIL_BACKEND not in UNDELIVERED_EMAIL_BACKENDS:
        return []
    return [
        Error(
            f"Email is not delivered (EMAIL_BACKEND is {settings.EMAIL_BACKEND}): portal sign-in "
            "links and invoices would be printed to the worker's log.",
            hint="Set EMAIL_URL, e.g. smtp+tls://user:password@smtp.example.com:587 "
            "(docs/security.md).",
            id="meterline.E001",
        )
    ]

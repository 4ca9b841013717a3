from core.errors import ValidationFailed


class UnsafeWebhookURL(ValidationFailed):
    """The URL resolves to an address Meterline must not call (private, loopback, …)."""

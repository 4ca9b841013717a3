from core.errors import DomainError


class UnsafeWebhookURL(DomainError):
    """The URL resolves to an address Meterline must not call (private, loopback, …)."""

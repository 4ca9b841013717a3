"""Domain errors of the customer portal; views and the API layer turn them into responses."""


class PortalError(Exception):
    pass


class InvalidSignInToken(PortalError):
    """The token is unknown, already used, expired, or belongs to another portal."""

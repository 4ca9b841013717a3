from customers.models import APIToken, Organization


def create_token(*, organization_name: str, label: str) -> tuple[APIToken, str]:
    """Create an organization token (and the organization if missing); returns (token, secret)."""
    organization, _ = Organization.objects.get_or_create(name=organization_name)
    return APIToken.objects.create_key(name=label, organization=organization)

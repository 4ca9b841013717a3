"""Organization access tokens: `Authorization: Bearer <token>`, hashed at rest."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from customers.models import APIToken


class BearerTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise exceptions.AuthenticationFailed('Expected "Authorization: Bearer <token>".')
        try:
            api_token = APIToken.objects.get_from_key(token)
        except (APIToken.DoesNotExist, ValueError):
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        if api_token.has_expired:
            raise exceptions.AuthenticationFailed("Token has expired.")
        self._touch(api_token)
        return (None, api_token)

    @staticmethod
    def _touch(api_token: APIToken) -> None:
        # Recording use on every request would turn each read into a write; once per interval is
        # enough for "last used" and costs one conditional UPDATE that usually matches nothing.
        now = timezone.now()
        interval = timedelta(seconds=settings.API_TOKEN_TOUCH_INTERVAL_SECONDS)
        if api_token.last_used_at is None or api_token.last_used_at < now - interval:
            APIToken.objects.filter(pk=api_token.pk).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - interval)
            ).update(last_used_at=now)

    def authenticate_header(self, request):
        return "Bearer"


class HasOrganizationToken(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.auth, APIToken)


def request_organization(request):
    return request.auth.organization

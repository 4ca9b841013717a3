from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView

from billing.admin.margins import margins_view
from core.views import healthz
from portal import views as portal_views

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/billing/margins/", admin.site.admin_view(margins_view), name="billing_margins"),
    path("admin/", admin.site.urls),
    path(
        "v1/openapi.json",
        SpectacularJSONAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="openapi-schema",
    ),
    path("v1/", include("customers.api.urls")),
    path("v1/", include("metering.api.urls")),
    path("v1/", include("portal.api.urls")),
    path("v1/", include("billing.api.urls")),
    path("v1/", include("payments.api.urls")),
    path("v1/", include("webhooks.api.urls")),
    path("", include("portal.urls")),
    path("", portal_views.home, name="home"),
]

handler400 = "core.api.errors.json_bad_request"
handler404 = "core.api.errors.json_not_found"
handler500 = "core.api.errors.json_server_error"

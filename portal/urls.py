from django.urls import include, path

from portal import views

app_name = "portal"

portal_patterns = [
    path("", views.usage_page, name="usage"),
    path("usage/meters", views.meters_fragment, name="meters"),
    path("meters/<uuid:customer_meter_id>/chart", views.chart_fragment, name="chart"),
    path("session", views.open_customer_session, name="session"),
    path("sign-in", views.sign_in_page, name="sign-in"),
    path("sign-in/link", views.sign_in_link, name="sign-in-link"),
    path("sign-out", views.sign_out, name="sign-out"),
]

urlpatterns = [path("portal/<slug:org_slug>/", include(portal_patterns))]

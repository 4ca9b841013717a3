from django.urls import include, path

from portal import pack_views, views

app_name = "portal"

portal_patterns = [
    path("", views.usage_page, name="usage"),
    path("usage/meters", views.meters_fragment, name="meters"),
    path("meters/<uuid:customer_meter_id>/chart", views.chart_fragment, name="chart"),
    path("subscriptions", views.subscriptions_page, name="subscriptions"),
    path(
        "subscriptions/<uuid:subscription_id>/cancel",
        views.cancel_subscription,
        name="subscription-cancel",
    ),
    path("invoices", views.invoices_page, name="invoices"),
    path("invoices/<uuid:invoice_id>", views.invoice_page, name="invoice"),
    path("invoices/<uuid:invoice_id>/download", views.invoice_download, name="invoice-download"),
    path("invoices/<uuid:invoice_id>/pay", views.pay_invoice, name="invoice-pay"),
    path("credit-packs/<uuid:product_id>/buy", pack_views.buy_pack, name="credit-pack-buy"),
    path(
        "credit-notes/<uuid:credit_note_id>/download",
        views.credit_note_download,
        name="credit-note-download",
    ),
    path("payment-method", views.payment_method_page, name="payment-method"),
    path("payment-method/new", views.add_card_page, name="payment-method-new"),
    path("session", views.open_customer_session, name="session"),
    path("sign-in", views.sign_in_page, name="sign-in"),
    path("sign-in/link", views.sign_in_link, name="sign-in-link"),
    path("sign-out", views.sign_out, name="sign-out"),
]

urlpatterns = [path("portal/<slug:org_slug>/", include(portal_patterns))]

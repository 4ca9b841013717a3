from django.urls import path

from payments.api import refunds, views

urlpatterns = [
    path("payments/", views.PaymentListView.as_view()),
    path("payments/<uuid:id>", views.PaymentDetailView.as_view()),
    path("refunds/", refunds.RefundListView.as_view()),
    path("refunds/<uuid:id>", refunds.RefundDetailView.as_view()),
    path("customers/<uuid:key>/payment-methods", views.CustomerPaymentMethodView.as_view()),
    path(
        "payments/providers/stripe/webhook",
        views.ProviderWebhookView.as_view(),
        {"provider": "stripe"},
        name="payments-provider-webhook",
    ),
]

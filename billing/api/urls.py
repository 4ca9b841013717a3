from django.urls import path

from billing.api import margins, packs, views

urlpatterns = [
    path("products/", views.ProductListView.as_view()),
    path("products/<uuid:id>", views.ProductDetailView.as_view()),
    path("products/<uuid:id>/benefits", views.ProductBenefitsView.as_view()),
    path("benefits/", views.BenefitListView.as_view()),
    path("benefits/<uuid:id>", views.BenefitDetailView.as_view()),
    path("discounts/", views.DiscountListView.as_view()),
    path("discounts/<uuid:id>", views.DiscountDetailView.as_view()),
    path("subscriptions/", views.SubscriptionListView.as_view()),
    path("subscriptions/<uuid:id>", views.SubscriptionDetailView.as_view()),
    path("subscriptions/<uuid:id>/upcoming", views.SubscriptionUpcomingView.as_view()),
    path("orders/", views.OrderListView.as_view()),
    path("orders/<uuid:id>", views.OrderDetailView.as_view()),
    path("orders/<uuid:id>/invoice", views.OrderInvoiceView.as_view()),
    path(
        "orders/<uuid:id>/invoice.pdf",
        views.OrderInvoicePdfView.as_view(),
        name="order-invoice-pdf",
    ),
    path("orders/<uuid:id>/mark-paid", views.OrderMarkPaidView.as_view()),
    path("orders/<uuid:id>/void", views.OrderVoidView.as_view()),
    path("credit-notes/", views.CreditNoteListView.as_view()),
    path("credit-notes/<uuid:id>", views.CreditNoteDetailView.as_view()),
    path("credit-notes/<uuid:id>/pdf", views.CreditNotePdfView.as_view()),
    path("tax-rates/", views.TaxRateListView.as_view()),
    path("tax-rates/<uuid:id>", views.TaxRateDetailView.as_view()),
    path("metrics/margins", margins.MarginReportView.as_view()),
    path("customers/<uuid:id>/credit-packs", packs.CustomerCreditPacksView.as_view()),
]

from django.urls import path

from webhooks.api import views

urlpatterns = [
    path("webhooks/endpoints", views.EndpointListView.as_view()),
    path("webhooks/endpoints/<uuid:id>", views.EndpointDetailView.as_view()),
    path("webhooks/endpoints/<uuid:id>/secret", views.EndpointSecretView.as_view()),
    path("webhooks/deliveries", views.DeliveryListView.as_view()),
    path("webhooks/events/<uuid:id>/redeliver", views.RedeliverView.as_view()),
]

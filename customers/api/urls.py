from django.urls import path

from customers.api import views

urlpatterns = [
    path("customers/", views.CustomerListView.as_view()),
    path("customers/external/<str:key>", views.CustomerExternalDetailView.as_view()),
    path("customers/external/<str:key>/state", views.CustomerExternalStateView.as_view()),
    path("customers/<uuid:key>", views.CustomerDetailView.as_view()),
    path("customers/<uuid:key>/state", views.CustomerStateView.as_view()),
]

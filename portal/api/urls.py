from django.urls import path

from portal.api import views

urlpatterns = [
    path("customer-sessions/", views.CustomerSessionCreateView.as_view()),
]

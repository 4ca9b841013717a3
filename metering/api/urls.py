from django.urls import path

from metering.api import views

urlpatterns = [
    path("events/ingest", views.EventIngestView.as_view()),
    path("events/", views.EventListView.as_view()),
    path("events/names", views.EventNameListView.as_view()),
    path("events/<uuid:id>", views.EventDetailView.as_view()),
]

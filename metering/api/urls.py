from django.urls import path

from metering.api import meter_views, views

urlpatterns = [
    path("events/ingest", views.EventIngestView.as_view()),
    path("events/", views.EventListView.as_view()),
    path("events/names", views.EventNameListView.as_view()),
    path("events/corrections", views.EventCorrectionsView.as_view()),
    path("events/<uuid:id>", views.EventDetailView.as_view()),
    path("meters/", meter_views.MeterListView.as_view()),
    path("meters/<str:id>", meter_views.MeterDetailView.as_view()),
    path("meters/<str:id>/quantities", meter_views.MeterQuantitiesView.as_view()),
    path("customer-meters/", meter_views.CustomerMeterListView.as_view()),
    path("customer-meters/<str:id>", meter_views.CustomerMeterDetailView.as_view()),
]

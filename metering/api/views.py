from collections import deque

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db.models import Count, OuterRef, Subquery, Value
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from core.api import params
from core.api.errors import PolarValidationError
from core.errors import ErrorList
from core.strict_json import loads
from metering import corrections, ingest, stores
from metering.api import events_clickhouse
from metering.api.event_filters import filter_events
from metering.api.serializers import (
    CorrectionsRequestSerializer,
    CorrectionsResponseSerializer,
    EventCorrectionSerializer,
    EventNameSerializer,
    EventSerializer,
    EventsIngestResponseSerializer,
    EventsIngestSerializer,
)
from metering.errors import InvalidCorrection
from metering.models import Event, EventCorrection, EventName, EventSource

EVENT_SOURCES = ("user", "system")


def read_json_body(request, max_bytes: int):
    content_type = request.META.get("CONTENT_TYPE", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise exceptions.UnsupportedMediaType(content_type or "none")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > max_bytes:
        raise RequestDataTooBig()
    body = request.body  # RequestDataTooBig past DATA_UPLOAD_MAX_MEMORY_SIZE: a 413
    if len(body) > max_bytes:
        raise RequestDataTooBig()
    try:
        return loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise exceptions.ParseError(f"Malformed JSON: {exc}")
    except RecursionError:
        raise exceptions.ParseError("Malformed JSON: nested too deeply")


class EventIngestView(GenericAPIView):
    serializer_class = EventsIngestSerializer

    @extend_schema(
        operation_id="events_ingest",
        request=EventsIngestSerializer,
        responses={200: EventsIngestResponseSerializer},
    )
    def post(self, request):
        payload = read_json_body(request, settings.INGEST_MAX_BODY_BYTES)
        if not isinstance(payload, dict):
            raise PolarValidationError.single(
                ["body"], "Expected an object with an `events` list", "dict_type"
            )
        unknown = set(payload) - {"events"}
        events = payload.get("events")
        errors = ErrorList()
        for key in sorted(unknown):
            errors.add(["body", key], "Extra inputs are not permitted", "extra_forbidden")
        if events is None:
            errors.add(["body", "events"], "Field required", "missing")
        elif not isinstance(events, list):
            errors.add(["body", "events"], "Input should be a valid list", "list_type")
        elif len(events) > settings.INGEST_MAX_EVENTS:
            errors.add(
                ["body", "events"],
                f"At most {settings.INGEST_MAX_EVENTS} events per request (got {len(events)})",
                "too_long",
            )
        errors.raise_if_any(PolarValidationError)
        result = ingest.ingest_events(organization=request.auth.organization, events=events)
        return Response({"inserted": result.inserted, "duplicates": result.duplicates})


def organization_events(request, *, include_canceled: bool = True):
    child_counts = (
        Event.objects.filter(parent=OuterRef("pk"))
        .order_by()
        .values("parent")
        .annotate(n=Count("*"))
        .values("n")
    )
    events = Event.objects.filter(organization=request.auth.organization)
    if not include_canceled:
        events = events.exclude(source=EventSource.CANCELED)
    return events.select_related("customer").annotate(
        child_count=Coalesce(Subquery(child_counts), Value(0)),
        # the cost as PostgreSQL holds it (exact); the JSON decoder would make it a float
        cost_amount=KeyTextTransform("amount", KeyTransform("_cost", "metadata")),
    )


EVENT_LIST_PARAMETERS = [
    OpenApiParameter("customer_id", str, many=True),
    OpenApiParameter("external_customer_id", str, many=True),
    OpenApiParameter("name", str, many=True),
    OpenApiParameter("source", str, many=True, enum=EVENT_SOURCES),
    OpenApiParameter("start_timestamp", str),
    OpenApiParameter("end_timestamp", str),
    OpenApiParameter("meter_id", str),
    OpenApiParameter("filter", str),
    OpenApiParameter("query", str),
    OpenApiParameter("parent_id", str),
    OpenApiParameter("depth", int),
    OpenApiParameter("page", int),
    OpenApiParameter("limit", int),
    OpenApiParameter("sorting", str, many=True, enum=("timestamp", "-timestamp")),
    OpenApiParameter(
        "include_canceled",
        bool,
        description=(
            "Meterline extension: also list the events that usage corrections canceled "
            "(they carry `correction`)."
        ),
    ),
]


class EventListView(GenericAPIView):
    serializer_class = EventSerializer
    capped_count = True

    @extend_schema(operation_id="events_list", parameters=EVENT_LIST_PARAMETERS)
    def get(self, request):

        errors = ErrorList()
        order = params.sorting(request, {"timestamp": "timestamp"}, ["-timestamp"], errors)
        include_canceled = bool(params.parse_bool(request, "include_canceled", errors))
        events = organization_events(request, include_canceled=include_canceled)
        if stores.current().name == "clickhouse":
            descending = order[0].startswith("-")
            merged = events_clickhouse.merged_events(
                request, events, errors, descending, include_canceled=include_canceled
            )
            errors.raise_if_any(PolarValidationError)
            page = self.paginate_queryset(merged)
            return self.get_paginated_response(EventSerializer(page, many=True).data)
        queryset = filter_events(request, events, errors, include_canceled=include_canceled)
        errors.raise_if_any(PolarValidationError)
        queryset = queryset.order_by(*order, "-id" if order[0].startswith("-") else "id")
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(EventSerializer(page, many=True).data)


class EventDetailView(GenericAPIView):
    serializer_class = EventSerializer

    @extend_schema(operation_id="events_get")
    def get(self, request, id):
        if stores.current().name == "clickhouse":
            event = events_clickhouse.lookup(request, organization_events(request), id)
            return Response(EventSerializer(event).data)
        return Response(
            EventSerializer(get_object_or_404(organization_events(request), pk=id)).data
        )


class _Rows(list):
    """A computed list the pagination counts like a queryset."""

    def count(self):
        return len(self)

    def order_by(self, *fields):
        return self


def sort_rows(rows: list[dict], order: list[str]) -> list[dict]:
    """`order` as the ORM spells it ("-last_seen", "name"), on dicts: stable sorts, last key
    first."""
    for key in reversed(order):
        rows = sorted(rows, key=lambda row: row[key.lstrip("-")], reverse=key.startswith("-"))
    return rows


NAME_SORTING = {
    "name": "name",
    "occurrences": "occurrences",
    "first_seen": "first_seen",
    "last_seen": "last_seen",
}


class EventNameListView(GenericAPIView):
    serializer_class = EventNameSerializer

    @extend_schema(
        operation_id="events_list_names",
        parameters=[
            OpenApiParameter("customer_id", str, many=True),
            OpenApiParameter("external_customer_id", str, many=True),
            OpenApiParameter("source", str, many=True, enum=EVENT_SOURCES),
            OpenApiParameter("query", str),
            OpenApiParameter("page", int),
            OpenApiParameter("limit", int),
            OpenApiParameter("sorting", str, many=True),
        ],
    )
    def get(self, request):
        errors = ErrorList()
        organization = request.auth.organization
        customer_ids = params.uuid_list(request, "customer_id", errors)
        external_ids = params.string_list(request, "external_customer_id", errors)
        # canceled events are no usage, and polar-sdk's names are "user" or "system" only
        sources = params.enum_list(request, "source", EVENT_SOURCES, errors) or list(EVENT_SOURCES)
        query = request.query_params.get("query")
        order = params.sorting(request, NAME_SORTING, ["-last_seen"], errors)
        errors.raise_if_any(PolarValidationError)
        if customer_ids or external_ids:
            # per-customer names come from the customer's own events, wherever the store keeps
            # them; a customer's names are few, so they sort here
            names = stores.current().customer_event_names(
                organization.pk,
                customer_ids=customer_ids,
                external_ids=external_ids,
                sources=sources,
                query=query,
            )
            page = self.paginate_queryset(_Rows(sort_rows(names, [*order, "name", "source"])))
            return self.get_paginated_response(EventNameSerializer(page, many=True).data)
        queryset = EventName.objects.filter(organization=organization, source__in=sources)
        if query:
            queryset = queryset.filter(name__icontains=query)
        queryset = queryset.values("name", "source", "occurrences", "first_seen", "last_seen")
        queryset = queryset.order_by(*order, "name")
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(EventNameSerializer(page, many=True).data)


def _nul_problems(value, loc: list, errors: ErrorList) -> None:
    """NUL characters anywhere in the corrections: PostgreSQL's text can't hold one, so the
    service's lookups and writes would fail on it. Iterative: the body may nest deeply."""
    queue = deque([(loc, value)])
    while queue:
        where, item = queue.popleft()
        if isinstance(item, str):
            if "\x00" in item:
                errors.add(where, "NUL characters are not allowed", "string_nul")
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    errors.add([*where, key], "NUL characters are not allowed", "string_nul")
                else:
                    queue.append(([*where, key], child))
        elif isinstance(item, list):
            queue.extend(([*where, index], child) for index, child in enumerate(item))


class EventCorrectionsView(GenericAPIView):
    """Usage corrections (Meterline extension): cancel events or replace them with corrected
    ones, all or nothing; and the corrections made so far, newest first."""

    serializer_class = EventCorrectionSerializer

    @extend_schema(
        operation_id="events_corrections_list",
        parameters=[
            OpenApiParameter("customer_id", str, many=True),
            OpenApiParameter("event_id", str, many=True, description="The corrected event"),
            OpenApiParameter("page", int),
            OpenApiParameter("limit", int),
        ],
        responses={200: EventCorrectionSerializer(many=True)},
    )
    def get(self, request):
        errors = ErrorList()
        customer_ids = params.uuid_list(request, "customer_id", errors)
        event_ids = params.uuid_list(request, "event_id", errors)
        errors.raise_if_any(PolarValidationError)
        queryset = EventCorrection.objects.filter(organization=request.auth.organization)
        if customer_ids:
            queryset = queryset.filter(customer_id__in=customer_ids)
        if event_ids:
            queryset = queryset.filter(event_id__in=event_ids)
        page = self.paginate_queryset(queryset.order_by("-created_at", "-id"))
        return self.get_paginated_response(EventCorrectionSerializer(page, many=True).data)

    @extend_schema(
        operation_id="events_corrections_create",
        request=CorrectionsRequestSerializer,
        responses={200: CorrectionsResponseSerializer},
        parameters=[],
    )
    def post(self, request):
        payload = read_json_body(request, settings.INGEST_MAX_BODY_BYTES)
        if not isinstance(payload, dict):
            raise PolarValidationError.single(
                ["body"], "Expected an object with a `corrections` list", "dict_type"
            )
        errors = ErrorList()
        for key in sorted(set(payload) - {"corrections"}):
            errors.add(["body", key], "Extra inputs are not permitted", "extra_forbidden")
        if "corrections" not in payload:
            errors.add(["body", "corrections"], "Field required", "missing")
        _nul_problems(payload.get("corrections"), ["body", "corrections"], errors)
        errors.raise_if_any(PolarValidationError)
        try:
            rows = corrections.correct_events(
                organization=request.auth.organization,
                corrections=payload["corrections"],
                actor=f"api:{request.auth.name}",
            )
        except InvalidCorrection as exc:
            # the service names fields inside the list it was given
            raise PolarValidationError(
                [{**item, "loc": ["body", "corrections", *item["loc"]]} for item in exc.items]
            ) from exc
        return Response({"corrections": EventCorrectionSerializer(rows, many=True).data})

"""Meters, quantities and customer meters in Polar's wire format."""

import uuid
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django.db import transaction
from django.db.models import Q
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from core.api import params
from core.api.errors import PolarValidationError
from core.api.pagination import read_page_params
from core.errors import ErrorList
from customers.models import Customer
from metering import customer_meters, filters, meters, quantities
from metering.api.meter_serializers import (
    CustomerMeterSerializer,
    MeterCreateSerializer,
    MeterQuantitiesSerializer,
    MeterSerializer,
    MeterUpdateSerializer,
    customer_meter_payload,
    meter_payload,
)
from metering.models import CustomerMeter, Meter


def _uuid_or_404(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Http404("Meter not found.")


def organization_meter(request, id) -> Meter:
    meter = Meter.objects.filter(
        organization=request.auth.organization, pk=_uuid_or_404(id)
    ).first()
    if meter is None:
        raise Http404("Meter not found.")
    return meter


METER_SORTING = {"created_at": "created_at", "name": "name"}


class MeterListView(GenericAPIView):
    serializer_class = MeterSerializer

    @extend_schema(
        operation_id="meters_list",
        parameters=[
            OpenApiParameter("organization_id", str, many=True),
            OpenApiParameter("query", str),
            OpenApiParameter("is_archived", bool),
            OpenApiParameter("page", int),
            OpenApiParameter("limit", int),
            OpenApiParameter("sorting", str, many=True),
        ],
        responses={200: MeterSerializer(many=True)},
    )
    def get(self, request):
        errors = ErrorList()
        organization = request.auth.organization
        organization_ids = params.uuid_list(request, "organization_id", errors)
        archived = params.parse_bool(request, "is_archived", errors)
        query = request.query_params.get("query")
        metadata = params.metadata_filters(request, errors)
        order = params.sorting(request, METER_SORTING, ["name"], errors)
        errors.raise_if_any(PolarValidationError)
        queryset = Meter.objects.filter(organization=organization)
        if organization_ids and organization.pk not in organization_ids:
            queryset = queryset.none()
        if archived is not None:
            queryset = queryset.filter(archived_at__isnull=not archived)
        if query:
            queryset = queryset.filter(name__icontains=query)
        if metadata:
            queryset = queryset.filter(params.metadata_q("metadata", metadata))
        queryset = queryset.order_by(*order, "id")
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response([meter_payload(m) for m in page])

    @extend_schema(
        operation_id="meters_create",
        request=MeterCreateSerializer,
        responses={201: MeterSerializer},
    )
    def post(self, request):
        body = MeterCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        meter = meters.create_meter(organization=request.auth.organization, **body.validated_data)
        return Response(meter_payload(meter), status=201)


class MeterDetailView(GenericAPIView):
    serializer_class = MeterSerializer

    @extend_schema(operation_id="meters_get", responses={200: MeterSerializer})
    def get(self, request, id):
        return Response(meter_payload(organization_meter(request, id)))

    @extend_schema(
        operation_id="meters_update",
        request=MeterUpdateSerializer,
        responses={200: MeterSerializer},
    )
    def patch(self, request, id):
        meter = organization_meter(request, id)
        body = MeterUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        clean = dict(body.validated_data)
        archived = clean.pop("is_archived", None)
        meters.check_change(meter, clean)
        with transaction.atomic():  # one body, one outcome
            if archived is not None and archived != (meter.archived_at is not None):
                meters.set_archived(meter=meter, archived=archived)
            if clean:
                meters.update_meter(meter=meter, **clean)
        return Response(meter_payload(Meter.objects.get(pk=meter.pk)))


def _timezone(raw: str, errors: ErrorList):
    if not raw or len(raw) > 64 or raw not in _zones():
        errors.add(["query", "timezone"], "Input should be a valid IANA timezone", "timezone", raw)
        return None
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        errors.add(["query", "timezone"], "Input should be a valid IANA timezone", "timezone", raw)
        return None


_ZONES: set[str] = set()


def _zones() -> set[str]:
    if not _ZONES:
        _ZONES.update(available_timezones())
        _ZONES.add("UTC")
    return _ZONES


def _timestamp(request, name: str, errors: ErrorList):
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        errors.add(["query", name], "Field required", "missing")
        return None
    return params.parse_datetime(raw, name, errors)


class MeterQuantitiesView(GenericAPIView):
    serializer_class = MeterQuantitiesSerializer

    @extend_schema(
        operation_id="meters_quantities",
        parameters=[
            OpenApiParameter("start_timestamp", str, required=True),
            OpenApiParameter("end_timestamp", str, required=True),
            OpenApiParameter("interval", str, required=True, enum=quantities.INTERVALS),
            OpenApiParameter("timezone", str),
            OpenApiParameter("customer_id", str, many=True),
            OpenApiParameter("external_customer_id", str, many=True),
            OpenApiParameter(
                "customer_aggregation_function",
                str,
                enum=("count", "sum", "avg", "min", "max", "unique"),
            ),
        ],
        responses={200: MeterQuantitiesSerializer},
    )
    def get(self, request, id):
        meter = organization_meter(request, id)
        errors = ErrorList()
        start = _timestamp(request, "start_timestamp", errors)
        end = _timestamp(request, "end_timestamp", errors)
        interval = request.query_params.get("interval")
        if interval not in quantities.INTERVALS:
            errors.add(
                ["query", "interval"],
                f"Input should be one of {', '.join(quantities.INTERVALS)}",
                "enum" if interval else "missing",
            )
        zone = _timezone(request.query_params.get("timezone", "UTC"), errors)
        customer_ids = params.uuid_list(request, "customer_id", errors)
        external_ids = params.string_list(request, "external_customer_id", errors)
        function = request.query_params.get("customer_aggregation_function")
        if function is not None and function not in filters.AGGREGATION_FUNCS:
            errors.add(
                ["query", "customer_aggregation_function"],
                f"Input should be one of {', '.join(filters.AGGREGATION_FUNCS)}",
                "enum",
            )
        metadata = params.metadata_filters(request, errors)
        if start and end and end < start:
            errors.add(
                ["query", "end_timestamp"], "end_timestamp must be after start_timestamp", "range"
            )
        errors.raise_if_any(PolarValidationError)
        selected = None
        if customer_ids or external_ids:
            selected = list(
                Customer.objects.filter(organization=meter.organization_id)
                .filter(Q(pk__in=customer_ids) | Q(external_id__in=external_ids, deleted_at=None))
                .values_list("pk", flat=True)
            )
        try:
            result = quantities.quantities(
                meter,
                start=start,
                end=end,
                interval=interval,
                zone=zone,
                customer_ids=selected,
                customer_aggregation_function=function,
                metadata=metadata,
            )
        except quantities.TooManyBuckets:
            raise PolarValidationError.single(
                ["query", "interval"],
                f"Too many buckets: at most {quantities.MAX_BUCKETS} per request; "
                "use a larger interval or a shorter range",
                "too_many_buckets",
            )
        except OverflowError:
            raise PolarValidationError.single(
                ["query", "end_timestamp"], "Range out of bounds", "datetime_range"
            )
        return Response(MeterQuantitiesSerializer(result).data)


CUSTOMER_METER_SORTING = {
    "created_at": "created_at",
    "modified_at": "modified_at",
    "customer_id": "customer_id",
    "customer_name": "customer__name",
    "meter_id": "meter_id",
    "meter_name": "meter__name",
    "consumed_units": None,
    "credited_units": None,
    "balance": None,
}


SORT_BY_NUMBERS_LIMIT = 10_000


def organization_customer_meters(request):
    return CustomerMeter.objects.filter(
        meter__organization=request.auth.organization, customer__deleted_at__isnull=True
    ).select_related("customer", "meter")


class CustomerMeterListView(GenericAPIView):
    serializer_class = CustomerMeterSerializer

    @extend_schema(
        operation_id="customer_meters_list",
        parameters=[
            OpenApiParameter("organization_id", str, many=True),
            OpenApiParameter("customer_id", str, many=True),
            OpenApiParameter("external_customer_id", str, many=True),
            OpenApiParameter("meter_id", str, many=True),
            OpenApiParameter("page", int),
            OpenApiParameter("limit", int),
            OpenApiParameter("sorting", str, many=True),
        ],
        responses={200: CustomerMeterSerializer(many=True)},
    )
    def get(self, request):
        errors = ErrorList()
        organization = request.auth.organization
        organization_ids = params.uuid_list(request, "organization_id", errors)
        customer_ids = params.uuid_list(request, "customer_id", errors)
        external_ids = params.string_list(request, "external_customer_id", errors)
        meter_ids = params.uuid_list(request, "meter_id", errors)
        requested = request.query_params.getlist("sorting") or ["-modified_at"]
        for key in requested:
            if key.removeprefix("-") not in CUSTOMER_METER_SORTING:
                errors.add(["query", "sorting"], f"Unknown sorting criterion {key!r}", "enum", key)
        errors.raise_if_any(PolarValidationError)
        page, limit = read_page_params(request)
        queryset = organization_customer_meters(request)
        if organization_ids and organization.pk not in organization_ids:
            queryset = queryset.none()
        if customer_ids:
            queryset = queryset.filter(customer_id__in=customer_ids)
        if external_ids:
            queryset = queryset.filter(customer__external_id__in=external_ids)
        if meter_ids:
            queryset = queryset.filter(meter_id__in=meter_ids)
        computed = [k for k in requested if CUSTOMER_METER_SORTING[k.removeprefix("-")] is None]
        offset = (page - 1) * limit
        if computed:
            # Numbers are computed from rollups, not stored: sorting by them computes every
            # matching row first (in a constant number of statements), so it is bounded.
            bounded = list(queryset.order_by("id")[: SORT_BY_NUMBERS_LIMIT + 1])
            if len(bounded) > SORT_BY_NUMBERS_LIMIT:
                raise PolarValidationError.single(
                    ["query", "sorting"],
                    f"Sorting by {', '.join(computed)} is limited to "
                    f"{SORT_BY_NUMBERS_LIMIT:,} customer meters; narrow the list with meter_id "
                    "or customer_id.",
                    "sorting_too_broad",
                )
            rows = customer_meters.customer_meters_with_numbers(bounded)
            for key in reversed(requested):
                bare = key.removeprefix("-")
                rows.sort(key=_sort_key(bare), reverse=key.startswith("-"))
            total = len(rows)
            rows = rows[offset : offset + limit]
        else:
            order = [
                ("-" if k.startswith("-") else "") + CUSTOMER_METER_SORTING[k.removeprefix("-")]
                for k in requested
            ]
            total = queryset.count()
            rows = customer_meters.customer_meters_with_numbers(
                queryset.order_by(*order, "id")[offset : offset + limit]
            )
        items = [customer_meter_payload(cm, numbers) for cm, numbers in rows]
        return Response(
            {
                "items": items,
                "pagination": {
                    "total_count": total,
                    "max_page": (total + limit - 1) // limit if total else 0,
                },
            }
        )


def _sort_key(bare: str):
    def key(row):
        customer_meter, numbers = row
        if bare in ("consumed_units", "credited_units", "balance"):
            return getattr(numbers, bare)
        value = getattr(customer_meter, CUSTOMER_METER_SORTING[bare].replace("__", "."), None)
        if bare == "customer_name":
            value = customer_meter.customer.name or ""
        elif bare == "meter_name":
            value = customer_meter.meter.name
        return str(value) if value is not None else ""

    return key


class CustomerMeterDetailView(GenericAPIView):
    serializer_class = CustomerMeterSerializer

    @extend_schema(operation_id="customer_meters_get", responses={200: CustomerMeterSerializer})
    def get(self, request, id):
        customer_meter = organization_customer_meters(request).filter(pk=_uuid_or_404(id)).first()
        if customer_meter is None:
            raise Http404("Customer meter not found.")
        ((cm, numbers),) = customer_meters.customer_meters_with_numbers([customer_meter])
        return Response(customer_meter_payload(cm, numbers))

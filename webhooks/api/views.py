"""`/v1/webhooks/…` in Polar's wire format: endpoints, the delivery log, redelivery."""

from django.db.models import Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from core.api import params
from core.api.errors import PolarValidationError
from core.errors import ErrorList
from webhooks import delivery, endpoints
from webhooks.api import payloads
from webhooks.api.serializers import EndpointUpdateSerializer, EndpointWriteSerializer
from webhooks.models import ALL_EVENT_TYPES, WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.tasks import enqueue

HTTP_CODE_CLASSES = {"2xx": 200, "3xx": 300, "4xx": 400, "5xx": 500}
PAGE_PARAMS = [OpenApiParameter("page", int), OpenApiParameter("limit", int)]


class Payload(serializers.Serializer):
    id = serializers.UUIDField()


def _endpoints(request):
    return WebhookEndpoint.objects.filter(organization=request.auth.organization)


class EndpointListView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(
        operation_id="webhooks_list_webhook_endpoints",
        parameters=PAGE_PARAMS,
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        page = self.paginate_queryset(_endpoints(request).order_by("-created_at", "id"))
        return self.get_paginated_response([payloads.endpoint_payload(e) for e in page])

    @extend_schema(
        operation_id="webhooks_create_webhook_endpoint",
        request=EndpointWriteSerializer,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        body = EndpointWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        endpoint = endpoints.create_endpoint(
            organization=request.auth.organization,
            url=data["url"],
            events=data["events"],
            name=data.get("name") or "",
        )
        return Response(payloads.endpoint_payload(endpoint), status=status.HTTP_201_CREATED)


class EndpointDetailView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(
        operation_id="webhooks_get_webhook_endpoint", responses={200: OpenApiTypes.OBJECT}
    )
    def get(self, request, id):
        return Response(payloads.endpoint_payload(get_object_or_404(_endpoints(request), pk=id)))

    @extend_schema(
        operation_id="webhooks_update_webhook_endpoint",
        request=EndpointUpdateSerializer,
        responses={200: OpenApiTypes.OBJECT},
    )
    def patch(self, request, id):
        endpoint = get_object_or_404(_endpoints(request), pk=id)
        body = EndpointUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = endpoints.update_endpoint(endpoint, dict(body.validated_data))
        return Response(payloads.endpoint_payload(endpoint))

    @extend_schema(operation_id="webhooks_delete_webhook_endpoint", responses={204: None})
    def delete(self, request, id):
        get_object_or_404(_endpoints(request), pk=id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointSecretView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(
        operation_id="webhooks_reset_webhook_endpoint_secret",
        request=None,
        responses={200: OpenApiTypes.OBJECT},
    )
    def patch(self, request, id):
        endpoint = endpoints.reset_secret(get_object_or_404(_endpoints(request), pk=id))
        return Response(payloads.endpoint_payload(endpoint))


class DeliveryListView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(
        operation_id="webhooks_list_webhook_deliveries",
        parameters=[
            *PAGE_PARAMS,
            OpenApiParameter("endpoint_id", str, many=True),
            OpenApiParameter("succeeded", bool),
            OpenApiParameter("event_type", str, many=True),
            OpenApiParameter("http_code_class", str, many=True),
            OpenApiParameter("start_timestamp", OpenApiTypes.DATETIME),
            OpenApiParameter("end_timestamp", OpenApiTypes.DATETIME),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        errors = ErrorList()
        endpoint_ids = params.uuid_list(request, "endpoint_id", errors)
        succeeded = params.parse_bool(request, "succeeded", errors)
        types = params.enum_list(request, "event_type", ALL_EVENT_TYPES, errors)
        code_classes = params.enum_list(request, "http_code_class", HTTP_CODE_CLASSES, errors)
        start = params.parse_datetime(
            request.query_params.get("start_timestamp"), "start_timestamp", errors
        )
        end = params.parse_datetime(
            request.query_params.get("end_timestamp"), "end_timestamp", errors
        )
        errors.raise_if_any(PolarValidationError)
        queryset = WebhookDelivery.objects.filter(
            event__organization=request.auth.organization
        ).select_related("event")
        if endpoint_ids:
            queryset = queryset.filter(event__endpoint_id__in=endpoint_ids)
        if succeeded is not None:
            queryset = queryset.filter(succeeded=succeeded)
        if types:
            queryset = queryset.filter(event__type__in=types)
        if code_classes:
            hundreds = [HTTP_CODE_CLASSES[c] for c in code_classes]
            queryset = queryset.filter(
                Q.create([("http_code__range", (h, h + 99)) for h in hundreds], connector=Q.OR)
            )
        if start:
            queryset = queryset.filter(created_at__gte=start)
        if end:
            queryset = queryset.filter(created_at__lte=end)
        page = self.paginate_queryset(queryset.order_by("-created_at", "id"))
        return self.get_paginated_response([payloads.delivery_payload(d) for d in page])


class RedeliverView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(
        operation_id="webhooks_redeliver_webhook_event",
        request=None,
        responses={202: OpenApiTypes.OBJECT},
    )
    def post(self, request, id):
        event = get_object_or_404(
            WebhookEvent.objects.filter(organization=request.auth.organization), pk=id
        )
        event = delivery.redeliver(event)
        enqueue([event])
        return Response(payloads.event_payload(event), status=status.HTTP_202_ACCEPTED)

"""Payments endpoints: Polar's `GET /v1/payments/`, Meterline's payment-method extension, and the
provider's webhook (no organization token: the provider's signature authenticates it).

Views parse the request, call one payments service and render with the serializer that also
documents the body; refusals (`core.errors.DomainError`) become Polar's errors in
`core.api.errors`."""

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from core.api import params
from core.api.errors import PolarValidationError, register_domain_error
from core.errors import ErrorList
from customers.api.views import customer_by_lookup
from payments import collection, methods, provider_events
from payments.api.response_serializers import (
    PaymentMethodSerializer,
    PaymentSerializer,
    ProviderWebhookAckSerializer,
)
from payments.api.serializers import PaymentMethodAttachSerializer
from payments.errors import ProviderUnavailable, WebhookSignatureError
from payments.models import Payment, PaymentStatus, Provider

register_domain_error(WebhookSignatureError, status_code=400, error="InvalidSignature")
register_domain_error(ProviderUnavailable, status_code=502, error="PaymentProviderUnavailable")

SORTING = {
    "created_at": "created_at",
    "status": "status",
    "amount": "amount",
    "method": "method_brand",
}


def _payments(request):
    # Polar's Payment knows one processor, Stripe: a payment staff recorded by hand (provider
    # `manual`) pays the order and shows in the admin, but is not one of Polar's payments
    return Payment.objects.filter(organization=request.auth.organization).exclude(
        provider=Provider.MANUAL
    )


class PaymentListView(GenericAPIView):
    serializer_class = PaymentSerializer

    @extend_schema(
        operation_id="payments_list",
        parameters=[
            OpenApiParameter("page", int),
            OpenApiParameter("limit", int),
            OpenApiParameter("order_id", str, many=True),
            OpenApiParameter("customer_id", str, many=True),
            OpenApiParameter("status", str, many=True, enum=PaymentStatus.values),
            OpenApiParameter("sorting", str, many=True),
        ],
        responses={200: PaymentSerializer(many=True)},
    )
    def get(self, request):
        errors = ErrorList()
        queryset = _payments(request)
        for name, lookup in (("order_id", "invoice_id__in"), ("customer_id", "customer_id__in")):
            ids = params.uuid_list(request, name, errors)
            if ids:
                queryset = queryset.filter(**{lookup: ids})
        statuses = params.enum_list(request, "status", tuple(PaymentStatus.values), errors)
        if statuses:
            queryset = queryset.filter(status__in=statuses)
        order = params.sorting(request, SORTING, ["-created_at"], errors)
        errors.raise_if_any(PolarValidationError)
        page = self.paginate_queryset(queryset.order_by(*order, "-attempt", "id"))
        return self.get_paginated_response(PaymentSerializer(page, many=True).data)


class PaymentDetailView(GenericAPIView):
    serializer_class = PaymentSerializer

    @extend_schema(operation_id="payments_get", responses={200: PaymentSerializer})
    def get(self, request, id):
        return Response(PaymentSerializer(get_object_or_404(_payments(request), pk=id)).data)


class CustomerPaymentMethodView(GenericAPIView):
    serializer_class = PaymentMethodSerializer

    @extend_schema(
        operation_id="customers_payment_methods_attach",
        request=PaymentMethodAttachSerializer,
        responses={200: PaymentMethodSerializer},
    )
    def post(self, request, key):
        """Meterline extension: attach a payment method collected at the provider; it becomes
        the customer's default and the customer's failed invoices are retried at once."""
        customer = customer_by_lookup(request, id=key)
        body = PaymentMethodAttachSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        profile = methods.set_default_method(customer, body.validated_data["payment_method_id"])
        retried = collection.retry_after_new_method(customer)
        return Response(PaymentMethodSerializer(profile, context={"retried": retried}).data)


class ProviderWebhookView(GenericAPIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []
    serializer_class = ProviderWebhookAckSerializer

    @extend_schema(
        operation_id="payments_provider_webhook",
        request=OpenApiTypes.OBJECT,
        responses={
            200: ProviderWebhookAckSerializer,
            400: OpenApiResponse(description="The signature is not the provider's."),
        },
        auth=[],
    )
    def post(self, request, provider):
        """The provider's events, signed (Stripe: the `Stripe-Signature` header)."""
        _, applied = provider_events.receive(
            provider, request.body, request.headers.get("Stripe-Signature")
        )
        return Response(ProviderWebhookAckSerializer({"received": True, "applied": applied}).data)

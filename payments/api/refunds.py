"""Polar's refunds endpoints: `POST /v1/refunds/` (body `RefundCreate`), `GET /v1/refunds/` and
`GET /v1/refunds/{id}`, in Polar's `Refund` shape plus Meterline's `comment` and
`credit_note_id`. The view parses the body and calls `payments.refunds`; its refusals become
Polar's errors in `core.api.errors`."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from billing.api.response_serializers import Always, LowerCase, Metadata, NamedEnum
from billing.api.serializers import MAX_CENTS
from billing.models import Invoice
from core.api import params
from core.api.errors import PolarValidationError
from core.api.serializers import StrictSerializer
from core.errors import ErrorList
from customers.api.serializers import MetadataField
from payments import refunds
from payments.models import Refund, RefundReason, RefundStatus

# Polar accepts every reason but `dispute_prevention` (its own, for disputes it prevents)
CREATE_REASONS = [r for r in RefundReason.values if r != RefundReason.DISPUTE_PREVENTION]

SORTING = {"created_at": "created_at", "amount": "amount"}


class RefundCreateSerializer(StrictSerializer):
    order_id = serializers.UUIDField()
    reason = serializers.ChoiceField(choices=CREATE_REASONS, help_text="Reason for the refund.")
    amount = serializers.IntegerField(
        min_value=1, max_value=MAX_CENTS, help_text="Amount to refund in cents. Minimum is 1."
    )
    comment = serializers.CharField(
        max_length=2000,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="An internal comment about the refund.",
    )
    revoke_benefits = serializers.BooleanField(
        required=False,
        default=False,
        help_text="For a subscription's order: revoke the subscription (only with a refund of "
        "everything left to refund).",
    )
    metadata = MetadataField(required=False)


class RefundSerializer(serializers.Serializer):
    created_at = serializers.DateTimeField()
    modified_at = serializers.DateTimeField(allow_null=True)
    id = serializers.UUIDField()
    metadata = Metadata()
    status = NamedEnum(RefundStatus.values, enum_name="RefundStatus")
    reason = NamedEnum(RefundReason.values, enum_name="RefundReason")
    amount = serializers.IntegerField()
    tax_amount = serializers.IntegerField()
    currency = LowerCase()
    organization_id = serializers.UUIDField()
    order_id = serializers.UUIDField(source="invoice_id")
    subscription_id = serializers.UUIDField(source="invoice.subscription_id", allow_null=True)
    customer_id = serializers.UUIDField()
    revoke_benefits = serializers.BooleanField()
    dispute = Always(None, documented_as=serializers.JSONField(allow_null=True))
    comment = serializers.CharField(allow_null=True, help_text="Meterline: the internal comment.")
    credit_note_id = serializers.UUIDField(
        allow_null=True, help_text="Meterline: the credit note of a succeeded refund."
    )


def _refunds(request):
    return Refund.objects.filter(organization=request.auth.organization).select_related("invoice")


class RefundListView(GenericAPIView):
    serializer_class = RefundSerializer

    @extend_schema(
        operation_id="refunds_list",
        parameters=[
            OpenApiParameter("page", int),
            OpenApiParameter("limit", int),
            OpenApiParameter("id", str, many=True),
            OpenApiParameter("order_id", str, many=True),
            OpenApiParameter("subscription_id", str, many=True),
            OpenApiParameter("customer_id", str, many=True),
            OpenApiParameter("external_customer_id", str, many=True),
            OpenApiParameter("succeeded", bool),
            OpenApiParameter("sorting", str, many=True),
        ],
        responses={200: RefundSerializer(many=True)},
    )
    def get(self, request):
        errors = ErrorList()
        queryset = _refunds(request)
        for name, lookup in (
            ("id", "pk__in"),
            ("order_id", "invoice_id__in"),
            ("subscription_id", "invoice__subscription_id__in"),
            ("customer_id", "customer_id__in"),
        ):
            ids = params.uuid_list(request, name, errors)
            if ids:
                queryset = queryset.filter(**{lookup: ids})
        external = params.string_list(request, "external_customer_id", errors)
        if external:
            queryset = queryset.filter(customer__external_id__in=external)
        succeeded = params.parse_bool(request, "succeeded", errors)
        if succeeded is not None:
            queryset = (
                queryset.filter(status=RefundStatus.SUCCEEDED)
                if succeeded
                else queryset.exclude(status=RefundStatus.SUCCEEDED)
            )
        order = params.sorting(request, SORTING, ["-created_at"], errors)
        errors.raise_if_any(PolarValidationError)
        page = self.paginate_queryset(queryset.order_by(*order, "id"))
        return self.get_paginated_response(RefundSerializer(page, many=True).data)

    @extend_schema(
        operation_id="refunds_create",
        request=RefundCreateSerializer,
        responses={
            201: RefundSerializer,
            404: OpenApiResponse(description="No such order."),
            502: OpenApiResponse(
                description="The payment provider did not answer: the refund stays pending "
                "until reconciliation."
            ),
        },
    )
    def post(self, request):
        """Refund a paid order, in full or in part, through the provider that collected it
        (recorded only when it was paid manually). A 422 says how much is left to refund."""
        body = RefundCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        invoice = get_object_or_404(
            Invoice.objects.filter(organization=request.auth.organization), pk=data["order_id"]
        )
        refund = refunds.create_refund(
            invoice,
            amount=data["amount"],
            reason=data["reason"],
            comment=data.get("comment"),
            revoke_benefits=data["revoke_benefits"],
            metadata=data.get("metadata"),
        )
        refund = _refunds(request).get(pk=refund.pk)
        return Response(RefundSerializer(refund).data, status=status.HTTP_201_CREATED)


class RefundDetailView(GenericAPIView):
    serializer_class = RefundSerializer

    @extend_schema(operation_id="refunds_get", responses={200: RefundSerializer})
    def get(self, request, id):
        return Response(RefundSerializer(get_object_or_404(_refunds(request), pk=id)).data)


def refund_payload(refund: Refund) -> dict:
    """A refund as the API shows it (webhooks send the same)."""
    return dict(RefundSerializer(Refund.objects.select_related("invoice").get(pk=refund.pk)).data)

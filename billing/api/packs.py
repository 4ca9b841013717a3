"""`POST /v1/customers/{id}/credit-packs` (Meterline extension): buy one credit pack (a one-time
product with meter-credit benefits) for a customer. The answer is the pack's order in Polar's
`Order` shape; it is collected like any order (automatic collection charges the customer's
default card once the request commits), and its units are granted when it is paid.

With an `Idempotency-Key` header a retry buys nothing more: it gets the first answer again
(core.api.idempotency)."""

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from billing import packs, subscriptions
from billing.api.response_serializers import OrderSerializer
from billing.models import Invoice
from core.api import idempotency
from core.api.serializers import StrictSerializer
from customers.models import Customer


class CreditPackPurchaseSerializer(StrictSerializer):
    product_id = serializers.UUIDField()


class CustomerCreditPacksView(GenericAPIView):
    serializer_class = OrderSerializer

    @extend_schema(
        operation_id="customers_buy_credit_pack",
        request=CreditPackPurchaseSerializer,
        parameters=[
            OpenApiParameter(
                idempotency.HEADER,
                str,
                OpenApiParameter.HEADER,
                description=(
                    "Optional, 1-255 printable ASCII characters. The same key with the same "
                    "request within 24 hours answers the first response again (header "
                    "`Idempotent-Replayed: true`) and buys nothing; with another request, 422."
                ),
            )
        ],
        responses={
            201: OpenApiResponse(
                OrderSerializer, description="The pack's order (or the first answer, replayed)"
            )
        },
    )
    def post(self, request, id):
        organization = request.auth.organization
        return idempotency.run_once(
            request,
            organization_id=organization.pk,
            endpoint="customers_buy_credit_pack",
            act=lambda: self._buy(request, organization, id),
        )

    def _buy(self, request, organization, id) -> Response:
        customer = Customer.objects.active().filter(organization=organization, pk=id).first()
        if customer is None:
            raise Http404("Customer not found")
        body = CreditPackPurchaseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        product = subscriptions.product_of(organization, body.validated_data["product_id"])
        order = packs.buy(customer=customer, product=product)
        order = (
            Invoice.objects.select_related("customer", "product", "discount")
            .prefetch_related("lines")
            .get(pk=order.pk)
        )
        return Response(OrderSerializer(order).data, status=status.HTTP_201_CREATED)

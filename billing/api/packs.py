"""`POST /v1/customers/{id}/credit-packs` (Meterline extension): buy one credit pack (a one-time
product with meter-credit benefits) for a customer. The answer is the pack's order in Polar's
`Order` shape; it is collected like any order (automatic collection charges the customer's
default card once the request commits), and its units are granted when it is paid."""

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from billing import packs, subscriptions
from billing.api.response_serializers import OrderSerializer
from billing.models import Invoice
from core.api.serializers import StrictSerializer
from customers.models import Customer


class CreditPackPurchaseSerializer(StrictSerializer):
    product_id = serializers.UUIDField()


class CustomerCreditPacksView(GenericAPIView):
    serializer_class = OrderSerializer

    @extend_schema(
        operation_id="customers_buy_credit_pack",
        request=CreditPackPurchaseSerializer,
        responses={201: OrderSerializer},
    )
    def post(self, request, id):
        organization = request.auth.organization
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

from django.db.models import Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from core.api import params
from core.api.errors import PolarValidationError
from core.errors import ErrorList
from customers import services
from customers.api.serializers import (
    CustomerCreateSerializer,
    CustomerSerializer,
    CustomerStateSerializer,
    CustomerUpdateSerializer,
)
from customers.api.state import customer_state
from customers.models import Customer

CUSTOMER_SORTING = {"created_at": "created_at", "email": "email", "name": "name"}


def organization_customers(request):
    # by id: the token's organization row is not loaded just to filter on it (a statement per
    # request that the customer state and lookups don't otherwise need)
    return Customer.objects.active().filter(organization_id=request.auth.organization_id)


def customer_by_lookup(request, *, id=None, external_id=None) -> Customer:
    customers = organization_customers(request)
    if id is not None:
        return get_object_or_404(customers, pk=id)
    return get_object_or_404(customers, external_id=external_id)


class CustomerListView(GenericAPIView):
    serializer_class = CustomerSerializer

    @extend_schema(
        operation_id="customers_list",
        parameters=[
            OpenApiParameter("email", str),
            OpenApiParameter("query", str),
            OpenApiParameter("page", int),
            OpenApiParameter("limit", int),
            OpenApiParameter("sorting", str, many=True),
        ],
    )
    def get(self, request):
        errors = ErrorList()
        queryset = organization_customers(request)
        email = request.query_params.get("email")
        if email:
            queryset = queryset.filter(email__iexact=email)
        query = request.query_params.get("query")
        if query:
            queryset = queryset.filter(
                Q(email__icontains=query) | Q(name__icontains=query) | Q(external_id=query)
            )
        queryset = queryset.filter(
            params.metadata_q("metadata", params.metadata_filters(request, errors))
        )
        order = params.sorting(request, CUSTOMER_SORTING, ["-created_at"], errors)
        errors.raise_if_any(PolarValidationError)
        queryset = queryset.order_by(*order, "id")
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(CustomerSerializer(page, many=True).data)

    @extend_schema(
        operation_id="customers_create",
        request=CustomerCreateSerializer,
        responses={201: CustomerSerializer},
    )
    def post(self, request):
        serializer = CustomerCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        customer = services.create_customer(
            organization=request.auth.organization, **serializer.validated_data
        )
        return Response(CustomerSerializer(customer).data, status=status.HTTP_201_CREATED)


class CustomerDetailView(GenericAPIView):
    serializer_class = CustomerSerializer
    lookup = "id"

    def get_customer(self, request, key):
        return customer_by_lookup(request, **{self.lookup: key})

    @extend_schema(operation_id="customers_get")
    def get(self, request, key):
        return Response(CustomerSerializer(self.get_customer(request, key)).data)

    @extend_schema(operation_id="customers_update", request=CustomerUpdateSerializer)
    def patch(self, request, key):
        customer = self.get_customer(request, key)
        serializer = CustomerUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        customer = services.update_customer(
            customer=customer, changes=dict(serializer.validated_data)
        )
        return Response(CustomerSerializer(customer).data)

    @extend_schema(operation_id="customers_delete", responses={204: None})
    def delete(self, request, key):
        services.delete_customer(customer=self.get_customer(request, key))
        return Response(status=status.HTTP_204_NO_CONTENT)


class CustomerExternalDetailView(CustomerDetailView):
    lookup = "external_id"

    @extend_schema(operation_id="customers_get_external")
    def get(self, request, key):
        return super().get(request, key)

    @extend_schema(operation_id="customers_update_external", request=CustomerUpdateSerializer)
    def patch(self, request, key):
        return super().patch(request, key)

    @extend_schema(operation_id="customers_delete_external", responses={204: None})
    def delete(self, request, key):
        return super().delete(request, key)


class CustomerStateView(GenericAPIView):
    serializer_class = CustomerSerializer
    lookup = "id"

    @extend_schema(operation_id="customers_get_state", responses={200: CustomerStateSerializer})
    def get(self, request, key):
        customer = customer_by_lookup(request, **{self.lookup: key})
        return Response(customer_state(customer))


class CustomerExternalStateView(CustomerStateView):
    lookup = "external_id"

    @extend_schema(
        operation_id="customers_get_state_external", responses={200: CustomerStateSerializer}
    )
    def get(self, request, key):
        return super().get(request, key)

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from core.api.errors import PolarValidationError
from customers.models import Customer
from portal import sign_in
from portal.api.serializers import CustomerSessionCreateSerializer, CustomerSessionSerializer


class CustomerSessionCreateView(GenericAPIView):
    serializer_class = CustomerSessionSerializer

    @extend_schema(
        operation_id="customer_sessions_create",
        request=CustomerSessionCreateSerializer,
        responses={201: CustomerSessionSerializer},
    )
    def post(self, request):
        serializer = CustomerSessionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        customers = Customer.objects.active().filter(organization=request.auth.organization)
        if "customer_id" in data:
            field, customer = "customer_id", customers.filter(pk=data["customer_id"]).first()
        else:
            field = "external_customer_id"
            customer = customers.filter(external_id=data["external_customer_id"]).first()
        if customer is None:
            # Polar answers an unknown customer with a validation error, not a 404.
            raise PolarValidationError.single(["body", field], "Customer does not exist.")
        row, token, url = sign_in.create_api_session(
            customer=customer,
            return_url=data.get("return_url"),
            base_url=request.build_absolute_uri("/"),
        )
        payload = {
            "id": row.pk,
            "created_at": row.created_at,
            "modified_at": row.modified_at,
            "token": token,
            "expires_at": row.expires_at,
            "return_url": row.return_url,
            "customer_portal_url": url,
            "customer_id": customer.pk,
            "customer": customer,
        }
        return Response(CustomerSessionSerializer(payload).data, status=status.HTTP_201_CREATED)

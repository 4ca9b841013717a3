"""`GET /v1/metrics/margins` (Meterline extension): the margin report of the token's organization
for a period (`billing.margins`), as JSON or, with `?format=csv` (or `Accept: text/csv`), as the
same rows in CSV."""

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from billing import margins
from core.api import params
from core.api.errors import PolarValidationError
from core.errors import ErrorList
from customers.models import Customer


class CSVRenderer(BaseRenderer):
    """Negotiates `?format=csv`; the view renders the CSV itself (`margins.to_csv`)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


class MarginRowSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="customer, meter or product id; empty for none")
    name = serializers.CharField()
    currency = serializers.CharField()
    revenue = serializers.IntegerField(help_text="minor units, net of discounts, credit notes, tax")
    cost = serializers.CharField(help_text="sum of `_cost.amount`: minor units, exact decimal")
    margin = serializers.CharField(help_text="revenue − cost, exact decimal")
    margin_percent = serializers.CharField(allow_null=True)


class MarginReportSerializer(serializers.Serializer):
    start_timestamp = serializers.DateTimeField()
    end_timestamp = serializers.DateTimeField()
    customer_id = serializers.UUIDField(allow_null=True)
    customers = MarginRowSerializer(many=True)
    meters = MarginRowSerializer(many=True)
    products = MarginRowSerializer(many=True)
    totals = MarginRowSerializer(many=True)


def payload(report: margins.MarginReport, customer_id) -> dict:
    def rows(items):
        return [margins.row_values(row) for row in items]

    return {
        "start_timestamp": report.start,
        "end_timestamp": report.end,
        "customer_id": customer_id,
        "customers": rows(report.customers),
        "meters": rows(report.meters),
        "products": rows(report.products),
        "totals": rows(report.totals),
    }


REPORT_DESCRIPTION = (
    "The report as JSON; with `format=csv` (or `Accept: text/csv`) the same rows as a CSV "
    "attachment `margins.csv`: a header row `"
    + ",".join(margins.CSV_COLUMNS)
    + "`, then one row per customer, meter, product and total (`section`: `customer`, `meter`, "
    "`product`, `total`), values as in the JSON rows (`margin_percent` empty when null)."
)


class MarginReportView(GenericAPIView):
    serializer_class = MarginReportSerializer
    renderer_classes = [JSONRenderer, CSVRenderer]
    pagination_class = None

    @extend_schema(
        operation_id="metrics_margins",
        parameters=[
            OpenApiParameter("start_timestamp", str, required=True),
            OpenApiParameter("end_timestamp", str, required=True),
            OpenApiParameter("customer_id", str),
            OpenApiParameter(
                "format",
                str,
                enum=["json", "csv"],
                description=(
                    "`csv`: the same rows as a CSV file (`text/csv`) instead of JSON; "
                    "`Accept: text/csv` does the same. Errors are JSON whatever the format."
                ),
            ),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(MarginReportSerializer, REPORT_DESCRIPTION),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, REPORT_DESCRIPTION),
        },
    )
    def get(self, request):
        errors = ErrorList()
        query = request.query_params
        start = params.parse_datetime(query.get("start_timestamp"), "start_timestamp", errors)
        end = params.parse_datetime(query.get("end_timestamp"), "end_timestamp", errors)
        for name, value in (("start_timestamp", start), ("end_timestamp", end)):
            if value is None and not query.get(name):
                errors.add(["query", name], "Field required", "missing")
        customer = None
        if query.get("customer_id"):
            customer_id = params.parse_uuid(query["customer_id"], ["query", "customer_id"], errors)
            customer = Customer.objects.filter(
                organization=request.auth.organization, pk=customer_id
            ).first()
            if customer_id is not None and customer is None:
                errors.add(["query", "customer_id"], "Customer does not exist.", "value_error")
        errors.raise_if_any(PolarValidationError)
        try:
            report = margins.report(
                request.auth.organization,
                start=start,
                end=end,
                customer_id=customer.pk if customer else None,
            )
        except margins.InvalidPeriod as exc:
            raise PolarValidationError.single(["query", *exc.field], exc.message) from exc
        if request.accepted_renderer.format == "csv":
            response = HttpResponse(margins.to_csv(report), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = 'attachment; filename="margins.csv"'
            return response
        return Response(
            MarginReportSerializer(payload(report, customer.pk if customer else None)).data
        )

    def handle_exception(self, exc):
        # errors are JSON (Polar's shape) whatever format the report was asked in
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)

"""Billing endpoints in Polar's wire format: products, benefits, discounts, subscriptions, orders
(invoices), plus Meterline's tax rates, upcoming invoice and invoice status actions.

Views parse the request (`billing.api.serializers`), call one billing service and render the
result with the response serializer that also documents it (`billing.api.response_serializers`):
the rules live in the services (the admin calls the same ones), and their refusals
(`core.errors.DomainError`) become Polar's 422 in `core.api.errors`."""

import operator
from functools import reduce
from urllib.parse import urlencode

from django.db.models import F, Prefetch, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from billing import (
    catalog,
    credit_notes,
    discounts,
    documents,
    invoices,
    subscriptions,
    taxes,
    thresholds,
)
from billing.api import serializers as inputs
from billing.api.response_serializers import (
    AcceptedSerializer,
    BenefitSerializer,
    CreditNoteSerializer,
    DiscountSerializer,
    OrderInvoiceSerializer,
    OrderSerializer,
    ProductSerializer,
    SubscriptionSerializer,
    TaxRateSerializer,
    UpcomingInvoice,
    UpcomingOrderSerializer,
)
from billing.errors import InvalidPrice, SubscriptionEnded
from billing.models import (
    LIVE_STATUSES,
    Benefit,
    CreditNote,
    CreditNoteKind,
    Discount,
    Invoice,
    InvoiceStatus,
    Price,
    Product,
    Subscription,
    SubscriptionPrice,
    SubscriptionStatus,
    TaxRate,
)
from core.api import params
from core.api.errors import PolarValidationError, register_domain_error
from core.errors import ErrorList

# Polar answers a revocation of an ended subscription with 403, not a 422
register_domain_error(SubscriptionEnded, status_code=403, error="AlreadyCanceledSubscription")

PAGE_PARAMS = [OpenApiParameter("page", int), OpenApiParameter("limit", int)]


def _org(request):
    return request.auth.organization


def _products(request):
    return Product.objects.filter(organization=_org(request)).prefetch_related(
        Prefetch("prices", queryset=Price.objects.select_related("meter").order_by("created_at")),
        Prefetch("benefits", queryset=Benefit.objects.select_related("meter")),
    )


def _subscriptions(request):
    return (
        Subscription.objects.filter(organization=_org(request))
        .select_related("organization", "customer", "product", "discount", "pending_product")
        .prefetch_related(
            Prefetch(
                "subscription_prices",
                queryset=SubscriptionPrice.objects.select_related(
                    "price__meter", "price__product"
                ).order_by("starts_at", "id"),
            ),
            Prefetch(
                "product__prices",
                queryset=Price.objects.select_related("meter").order_by("created_at"),
            ),
            "product__benefits",
            "discount__products",
        )
    )


def _invoices(request):
    return (
        Invoice.objects.filter(organization=_org(request))
        .select_related("customer", "product", "discount", "subscription__product")
        .prefetch_related("lines", "subscription__subscription_prices__price", "discount__products")
    )


def _discounts(request):
    return Discount.objects.filter(
        organization=_org(request), deleted_at__isnull=True
    ).prefetch_related("products")


def _subscriptions_data(rows: list[Subscription]) -> list[dict]:
    """Subscriptions with their current meters (one read for the whole page)."""
    context = {"meters": subscriptions.current_meters(rows)}
    return SubscriptionSerializer(rows, many=True, context=context).data


def _by_ids(request, queryset, filters: dict, errors: ErrorList):
    """`?customer_id=…&product_id=…`: each named list of UUIDs filters by its lookup."""
    for name, lookup in filters.items():
        ids = params.uuid_list(request, name, errors)
        if ids:
            queryset = queryset.filter(**{lookup: ids})
    external = params.string_list(request, "external_customer_id", errors)
    if external:
        queryset = queryset.filter(customer__external_id__in=external)
    return queryset


def _body(serializer_class, request, **kwargs) -> dict:
    body = serializer_class(data=request.data, **kwargs)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


def _created(data: dict) -> Response:
    return Response(data, status=status.HTTP_201_CREATED)


# --- products ------------------------------------------------------------------------------------


class ProductListView(GenericAPIView):
    serializer_class = ProductSerializer

    @extend_schema(
        operation_id="products_list",
        parameters=[
            *PAGE_PARAMS,
            OpenApiParameter("is_archived", bool),
            OpenApiParameter("query", str),
            OpenApiParameter("id", str, many=True),
        ],
        responses={200: ProductSerializer(many=True)},
    )
    def get(self, request):
        errors = ErrorList()
        queryset = _by_ids(request, _products(request), {"id": "pk__in"}, errors)
        archived = params.parse_bool(request, "is_archived", errors)
        errors.raise_if_any(PolarValidationError)
        if archived is not None:
            queryset = queryset.filter(is_archived=archived)
        query = request.query_params.get("query")
        if query:
            queryset = queryset.filter(name__icontains=query[:256])
        page = self.paginate_queryset(queryset.order_by("-created_at", "id"))
        return self.get_paginated_response(ProductSerializer(page, many=True).data)

    @extend_schema(
        operation_id="products_create",
        request=inputs.ProductCreateSerializer,
        responses={201: ProductSerializer},
    )
    def post(self, request):
        data = _body(inputs.ProductCreateSerializer, request)
        specs, keep, currency = catalog.parse_prices_input(data["prices"])
        if keep:
            raise InvalidPrice("A new product cannot reference existing prices", field=("prices",))
        product = catalog.create_product(
            organization=_org(request),
            currency=currency,
            prices=specs,
            spend_threshold=thresholds.parse_threshold(
                data.get("spend_threshold_amount"), currency
            ),
            **{key: data.get(key) for key in PRODUCT_CREATE_FIELDS},
        )
        return _created(ProductSerializer(_products(request).get(pk=product.pk)).data)


PRODUCT_CREATE_FIELDS = (
    "name",
    "description",
    "recurring_interval",
    "recurring_interval_count",
    "trial_interval",
    "trial_interval_count",
    "metadata",
)
# Polar's update: null leaves these as they are (description and the trial can be cleared)
KEPT_WHEN_NULL = (
    "name",
    "is_archived",
    "metadata",
    "recurring_interval",
    "recurring_interval_count",
)


class ProductDetailView(GenericAPIView):
    serializer_class = ProductSerializer

    @extend_schema(operation_id="products_get", responses={200: ProductSerializer})
    def get(self, request, id):
        return Response(ProductSerializer(get_object_or_404(_products(request), pk=id)).data)

    @extend_schema(
        operation_id="products_update",
        request=inputs.ProductUpdateSerializer,
        responses={200: ProductSerializer},
    )
    def patch(self, request, id):
        product = get_object_or_404(_products(request), pk=id)
        data = _body(inputs.ProductUpdateSerializer, request, partial=True)
        prices = data.pop("prices", None)
        if "spend_threshold_amount" in data:
            data["spend_threshold"] = thresholds.parse_threshold(
                data.pop("spend_threshold_amount"), product.currency
            )
        catalog.update_product(
            product,
            **{k: v for k, v in data.items() if not (v is None and k in KEPT_WHEN_NULL)},
        )
        if prices is not None:
            specs, keep, _ = catalog.parse_prices_input(prices, currency=product.currency)
            catalog.replace_prices(product=product, prices=specs, keep_ids=keep)
        return Response(ProductSerializer(_products(request).get(pk=product.pk)).data)


class ProductBenefitsView(GenericAPIView):
    serializer_class = ProductSerializer

    @extend_schema(
        operation_id="products_update_benefits",
        request=inputs.ProductBenefitsSerializer,
        responses={200: ProductSerializer},
    )
    def post(self, request, id):
        product = get_object_or_404(_products(request), pk=id)
        data = _body(inputs.ProductBenefitsSerializer, request)
        catalog.set_benefits(product=product, benefit_ids=data["benefits"])
        return Response(ProductSerializer(_products(request).get(pk=product.pk)).data)


# --- benefits ------------------------------------------------------------------------------------


class BenefitListView(GenericAPIView):
    serializer_class = BenefitSerializer

    @extend_schema(
        operation_id="benefits_list",
        parameters=[*PAGE_PARAMS, OpenApiParameter("type", str, many=True)],
        responses={200: BenefitSerializer(many=True)},
    )
    def get(self, request):
        errors = ErrorList()
        # only meter_credit benefits exist in Meterline: the filter is checked, never narrows
        params.enum_list(request, "type", ("meter_credit",), errors)
        errors.raise_if_any(PolarValidationError)
        queryset = Benefit.objects.filter(organization=_org(request), is_deleted=False)
        page = self.paginate_queryset(queryset.order_by("-created_at", "id"))
        return self.get_paginated_response(BenefitSerializer(page, many=True).data)

    @extend_schema(
        operation_id="benefits_create",
        request=inputs.BenefitCreateSerializer,
        responses={201: BenefitSerializer},
    )
    def post(self, request):
        data = _body(inputs.BenefitCreateSerializer, request)
        benefit = catalog.create_benefit(
            organization=_org(request),
            description=data["description"],
            metadata=data.get("metadata"),
            **data["properties"],
        )
        return _created(BenefitSerializer(benefit).data)


class BenefitDetailView(GenericAPIView):
    serializer_class = BenefitSerializer

    @extend_schema(operation_id="benefits_get", responses={200: BenefitSerializer})
    def get(self, request, id):
        benefit = get_object_or_404(Benefit, organization=_org(request), pk=id, is_deleted=False)
        return Response(BenefitSerializer(benefit).data)


# --- discounts -----------------------------------------------------------------------------------


class DiscountListView(GenericAPIView):
    serializer_class = DiscountSerializer

    @extend_schema(
        operation_id="discounts_list",
        parameters=[*PAGE_PARAMS, OpenApiParameter("query", str)],
        responses={200: DiscountSerializer(many=True)},
    )
    def get(self, request):
        queryset = _discounts(request)
        query = request.query_params.get("query")
        if query:
            queryset = queryset.filter(Q(name__icontains=query[:256]) | Q(code__iexact=query[:64]))
        page = self.paginate_queryset(queryset.order_by("-created_at", "id"))
        return self.get_paginated_response(DiscountSerializer(page, many=True).data)

    @extend_schema(
        operation_id="discounts_create",
        request=inputs.DiscountCreateSerializer,
        responses={201: DiscountSerializer},
    )
    def post(self, request):
        data = _body(inputs.DiscountCreateSerializer, request)
        discount = discounts.create_discount(
            organization=_org(request), product_ids=data.pop("products", None), **data
        )
        return _created(DiscountSerializer(_discounts(request).get(pk=discount.pk)).data)


class DiscountDetailView(GenericAPIView):
    serializer_class = DiscountSerializer

    @extend_schema(operation_id="discounts_get", responses={200: DiscountSerializer})
    def get(self, request, id):
        return Response(DiscountSerializer(get_object_or_404(_discounts(request), pk=id)).data)

    @extend_schema(
        operation_id="discounts_update",
        request=inputs.DiscountUpdateSerializer,
        responses={200: DiscountSerializer},
    )
    def patch(self, request, id):
        discount = get_object_or_404(_discounts(request), pk=id)
        data = _body(inputs.DiscountUpdateSerializer, request, partial=True)
        if "products" in data:
            data["product_ids"] = data.pop("products")
        # null leaves the terms, the name and the metadata as they are
        kept = (*discounts.TERMS, "name", "metadata")
        discounts.update_discount(
            discount, **{k: v for k, v in data.items() if not (v is None and k in kept)}
        )
        return Response(DiscountSerializer(_discounts(request).get(pk=discount.pk)).data)

    @extend_schema(operation_id="discounts_delete", responses={204: None})
    def delete(self, request, id):
        discounts.delete_discount(get_object_or_404(_discounts(request), pk=id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- subscriptions -------------------------------------------------------------------------------

SUBSCRIPTION_SORTING = {
    "started_at": "started_at",
    "current_period_end": "current_period_end",
    "status": "status",
    "ended_at": "ended_at",
    "ends_at": "ends_at",
}
POLAR_SUBSCRIPTION_STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)


class SubscriptionListView(GenericAPIView):
    serializer_class = SubscriptionSerializer

    @extend_schema(
        operation_id="subscriptions_list",
        parameters=[
            *PAGE_PARAMS,
            OpenApiParameter("customer_id", str, many=True),
            OpenApiParameter("external_customer_id", str, many=True),
            OpenApiParameter("product_id", str, many=True),
            OpenApiParameter("discount_id", str, many=True),
            OpenApiParameter("active", bool),
            OpenApiParameter("status", str, many=True),
            OpenApiParameter("cancel_at_period_end", bool),
            OpenApiParameter("sorting", str, many=True),
        ],
        responses={200: SubscriptionSerializer(many=True)},
    )
    def get(self, request):
        errors = ErrorList()
        queryset = _by_ids(
            request,
            _subscriptions(request),
            {
                "customer_id": "customer_id__in",
                "product_id": "product_id__in",
                "discount_id": "discount_id__in",
            },
            errors,
        )
        active = params.parse_bool(request, "active", errors)
        if active is not None:
            live = Q(status__in=LIVE_STATUSES)
            queryset = queryset.filter(live if active else ~live)
        statuses = params.enum_list(request, "status", POLAR_SUBSCRIPTION_STATUSES, errors)
        if statuses:
            queryset = queryset.filter(status__in=statuses)
        cancel = params.parse_bool(request, "cancel_at_period_end", errors)
        if cancel is not None:
            queryset = queryset.filter(cancel_at_period_end=cancel)
        order = params.sorting(request, SUBSCRIPTION_SORTING, ["-started_at"], errors)
        errors.raise_if_any(PolarValidationError)
        page = self.paginate_queryset(queryset.order_by(*order, "id"))
        return self.get_paginated_response(_subscriptions_data(page))

    @extend_schema(
        operation_id="subscriptions_create",
        request=inputs.SubscriptionCreateSerializer,
        responses={201: SubscriptionSerializer},
    )
    def post(self, request):
        data = _body(inputs.SubscriptionCreateSerializer, request)
        organization = _org(request)
        customer = subscriptions.customer_of(
            organization,
            customer_id=data.get("customer_id"),
            external_customer_id=data.get("external_customer_id"),
        )
        product = subscriptions.product_of(organization, data["product_id"])
        subscription = subscriptions.create_subscription(
            customer=customer,
            product=product,
            started_at=data.get("started_at"),
            discount=subscriptions.discount_of(organization, data.get("discount_id")),
            metadata=data.get("metadata"),
            spend_threshold=thresholds.parse_threshold(
                data.get("spend_threshold_amount"), product.currency
            ),
        )
        (data,) = _subscriptions_data([_subscriptions(request).get(pk=subscription.pk)])
        return _created(data)


class SubscriptionDetailView(GenericAPIView):
    serializer_class = SubscriptionSerializer

    def _respond(self, request, id):
        (data,) = _subscriptions_data([get_object_or_404(_subscriptions(request), pk=id)])
        return Response(data)

    @extend_schema(operation_id="subscriptions_get", responses={200: SubscriptionSerializer})
    def get(self, request, id):
        return self._respond(request, id)

    @extend_schema(
        operation_id="subscriptions_update",
        request=inputs.SubscriptionUpdateSerializer,
        responses={200: SubscriptionSerializer},
    )
    def patch(self, request, id):
        subscription = get_object_or_404(_subscriptions(request), pk=id)
        data = _body(inputs.SubscriptionUpdateSerializer, request, partial=True)
        if data.get("revoke"):
            subscriptions.revoke(subscription)
        else:
            subscriptions.update_subscription(
                subscription,
                discount_id=data.get("discount_id", subscriptions.UNSET),
                product_id=data.get("product_id"),
                proration_behavior=data.get("proration_behavior"),
                clear_pending_change="pending_update" in data,
                cancel_at_period_end=data.get("cancel_at_period_end"),
                metadata=data.get("metadata"),
                spend_threshold=(
                    thresholds.parse_threshold(
                        data["spend_threshold_amount"], subscription.currency
                    )
                    if "spend_threshold_amount" in data
                    else subscriptions.UNSET
                ),
            )
        return self._respond(request, id)

    @extend_schema(operation_id="subscriptions_revoke", responses={200: SubscriptionSerializer})
    def delete(self, request, id):
        subscriptions.revoke(get_object_or_404(_subscriptions(request), pk=id))
        return self._respond(request, id)


class SubscriptionUpcomingView(GenericAPIView):
    serializer_class = UpcomingOrderSerializer

    @extend_schema(operation_id="subscriptions_upcoming", responses={200: UpcomingOrderSerializer})
    def get(self, request, id):
        subscription = get_object_or_404(_subscriptions(request), pk=id)
        if subscription.status == SubscriptionStatus.CANCELED:
            raise PolarValidationError.single(["path", "id"], "The subscription has ended.")
        draft = subscriptions.upcoming_invoice(subscription)
        upcoming = UpcomingInvoice(subscription, draft, timezone.now())
        return Response(UpcomingOrderSerializer(upcoming).data)


# --- orders (invoices) ---------------------------------------------------------------------------

ORDER_SORTING = {"created_at": "created_at", "invoice_number": "sequence", "status": "status"}
_PAID = Q(status=InvoiceStatus.PAID)
_REFUNDED = Q(refunded_amount__gt=0, refunded_amount__gte=F("amount_due"))
ORDER_STATUSES = {
    "draft": Q(status=InvoiceStatus.DRAFT),
    "pending": Q(status__in=[InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE]),
    "paid": _PAID & Q(refunded_amount=0),
    "void": Q(status=InvoiceStatus.VOID),
    "refunded": _PAID & _REFUNDED,
    "partially_refunded": _PAID & Q(refunded_amount__gt=0) & ~_REFUNDED,
}


class OrderListView(GenericAPIView):
    serializer_class = OrderSerializer

    @extend_schema(
        operation_id="orders_list",
        parameters=[
            *PAGE_PARAMS,
            OpenApiParameter("customer_id", str, many=True),
            OpenApiParameter("external_customer_id", str, many=True),
            OpenApiParameter("subscription_id", str, many=True),
            OpenApiParameter("product_id", str, many=True),
            OpenApiParameter("status", str, many=True),
            OpenApiParameter("sorting", str, many=True),
        ],
        responses={200: OrderSerializer(many=True)},
    )
    def get(self, request):
        errors = ErrorList()
        queryset = _by_ids(
            request,
            _invoices(request),
            {
                "customer_id": "customer_id__in",
                "subscription_id": "subscription_id__in",
                "product_id": "product_id__in",
            },
            errors,
        )
        statuses = params.enum_list(request, "status", tuple(ORDER_STATUSES), errors)
        if statuses:
            queryset = queryset.filter(reduce(operator.or_, (ORDER_STATUSES[s] for s in statuses)))
        order = params.sorting(request, ORDER_SORTING, ["-created_at"], errors)
        errors.raise_if_any(PolarValidationError)
        page = self.paginate_queryset(queryset.order_by(*order, "-sequence", "id"))
        return self.get_paginated_response(OrderSerializer(page, many=True).data)


class OrderDetailView(GenericAPIView):
    serializer_class = OrderSerializer

    @extend_schema(operation_id="orders_get", responses={200: OrderSerializer})
    def get(self, request, id):
        return Response(OrderSerializer(get_object_or_404(_invoices(request), pk=id)).data)


class OrderInvoiceView(GenericAPIView):
    serializer_class = OrderInvoiceSerializer

    @extend_schema(operation_id="orders_invoice", responses={200: OrderInvoiceSerializer})
    def get(self, request, id):
        """Polar's `OrderInvoice`: a URL that downloads the PDF without a token (signed, expires
        after INVOICE_LINK_MAX_AGE). The PDF is rendered here if the delivery task has not yet."""
        invoice = get_object_or_404(_invoices(request), pk=id)
        documents.invoice_pdf(invoice.pk)
        path = reverse("order-invoice-pdf", kwargs={"id": invoice.pk})
        query = urlencode({"token": documents.download_token(invoice)})
        url = request.build_absolute_uri(f"{path}?{query}")
        return Response(OrderInvoiceSerializer({"url": url}).data)

    @extend_schema(
        operation_id="orders_generate_invoice", request=None, responses={202: AcceptedSerializer}
    )
    def post(self, request, id):
        """Polar's "generate the invoice": Meterline renders it at finalization anyway, so this
        only makes sure it is stored (idempotent)."""
        documents.invoice_pdf(get_object_or_404(_invoices(request), pk=id).pk)
        return Response(AcceptedSerializer({}).data, status=status.HTTP_202_ACCEPTED)


class OrderInvoicePdfView(GenericAPIView):
    """The download behind that URL: the signed token is the credential (a browser or mail
    client opens it without the API token)."""

    authentication_classes = ()
    permission_classes = ()

    @extend_schema(
        operation_id="orders_invoice_pdf",
        parameters=[OpenApiParameter("token", str, required=True)],
        responses={(200, "application/pdf"): OpenApiTypes.BINARY},
    )
    def get(self, request, id):
        if not documents.token_is_valid(id, request.query_params.get("token", "")):
            raise PolarValidationError.single(
                ["query", "token"], "The link is invalid or has expired", "invalid_token"
            )
        invoice = get_object_or_404(Invoice, pk=id)
        response = HttpResponse(documents.invoice_pdf(invoice.pk), content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{documents.filename(invoice)}"'
        return response


class OrderActionView(GenericAPIView):
    serializer_class = OrderSerializer
    transition = None

    def post(self, request, id):
        self.transition(get_object_or_404(_invoices(request), pk=id))
        return Response(OrderSerializer(_invoices(request).get(pk=id)).data)


class OrderMarkPaidView(OrderActionView):
    transition = staticmethod(invoices.mark_paid)

    @extend_schema(operation_id="orders_mark_paid", request=None, responses={200: OrderSerializer})
    def post(self, request, id):
        return super().post(request, id)


class OrderVoidView(OrderActionView):
    transition = staticmethod(invoices.void)

    @extend_schema(operation_id="orders_void", request=None, responses={200: OrderSerializer})
    def post(self, request, id):
        return super().post(request, id)


# --- credit notes (Meterline extension) ----------------------------------------------------------


def _credit_notes(request):
    return CreditNote.objects.filter(organization=_org(request))


class CreditNoteListView(GenericAPIView):
    serializer_class = CreditNoteSerializer

    @extend_schema(
        operation_id="credit_notes_list",
        parameters=[
            *PAGE_PARAMS,
            OpenApiParameter("order_id", str, many=True),
            OpenApiParameter("customer_id", str, many=True),
        ],
        responses={200: CreditNoteSerializer(many=True)},
    )
    def get(self, request):
        errors = ErrorList()
        queryset = _credit_notes(request)
        for name, lookup in (("order_id", "invoice_id__in"), ("customer_id", "customer_id__in")):
            ids = params.uuid_list(request, name, errors)
            if ids:
                queryset = queryset.filter(**{lookup: ids})
        errors.raise_if_any(PolarValidationError)
        page = self.paginate_queryset(queryset.order_by("-sequence"))
        return self.get_paginated_response(CreditNoteSerializer(page, many=True).data)

    @extend_schema(
        operation_id="credit_notes_create",
        request=inputs.CreditNoteCreateSerializer,
        responses={201: CreditNoteSerializer},
    )
    def post(self, request):
        """A credit note to the customer's balance, spent by the customer's next invoices."""
        data = _body(inputs.CreditNoteCreateSerializer, request)
        invoice = Invoice.objects.filter(organization=_org(request), pk=data["order_id"]).first()
        if invoice is None:
            raise PolarValidationError.single(
                ["body", "order_id"], "Order does not exist.", "value_error"
            )
        note = credit_notes.issue(
            invoice,
            amount=data["amount"],
            kind=CreditNoteKind.BALANCE,
            reason=data["reason"],
            comment=data.get("comment") or "",
        )
        return _created(CreditNoteSerializer(note).data)


class CreditNoteDetailView(GenericAPIView):
    serializer_class = CreditNoteSerializer

    @extend_schema(operation_id="credit_notes_get", responses={200: CreditNoteSerializer})
    def get(self, request, id):
        return Response(CreditNoteSerializer(get_object_or_404(_credit_notes(request), pk=id)).data)


class CreditNotePdfView(GenericAPIView):
    @extend_schema(
        operation_id="credit_notes_pdf",
        responses={(200, "application/pdf"): OpenApiTypes.BINARY},
    )
    def get(self, request, id):
        note = get_object_or_404(_credit_notes(request), pk=id)
        response = HttpResponse(documents.credit_note_pdf(note.pk), content_type="application/pdf")
        response["Content-Disposition"] = (
            f'inline; filename="{documents.credit_note_filename(note)}"'
        )
        return response


# --- tax rates (Meterline extension) -------------------------------------------------------------


class TaxRateListView(GenericAPIView):
    serializer_class = TaxRateSerializer

    @extend_schema(
        operation_id="tax_rates_list",
        parameters=PAGE_PARAMS,
        responses={200: TaxRateSerializer(many=True)},
    )
    def get(self, request):
        queryset = TaxRate.objects.filter(organization=_org(request))
        page = self.paginate_queryset(queryset.order_by("country", "state", "id"))
        return self.get_paginated_response(TaxRateSerializer(page, many=True).data)

    @extend_schema(
        operation_id="tax_rates_create",
        request=inputs.TaxRateCreateSerializer,
        responses={201: TaxRateSerializer},
    )
    def post(self, request):
        data = _body(inputs.TaxRateCreateSerializer, request)
        data.setdefault("state", None)
        rate = taxes.create_tax_rate(organization=_org(request), **data)
        return _created(TaxRateSerializer(rate).data)


class TaxRateDetailView(GenericAPIView):
    serializer_class = TaxRateSerializer

    def _get(self, request, id):
        return get_object_or_404(TaxRate, organization=_org(request), pk=id)

    @extend_schema(operation_id="tax_rates_get", responses={200: TaxRateSerializer})
    def get(self, request, id):
        return Response(TaxRateSerializer(self._get(request, id)).data)

    @extend_schema(
        operation_id="tax_rates_update",
        request=inputs.TaxRateUpdateSerializer,
        responses={200: TaxRateSerializer},
    )
    def patch(self, request, id):
        data = _body(inputs.TaxRateUpdateSerializer, request, partial=True)
        rate = taxes.update_tax_rate(self._get(request, id), **data)
        return Response(TaxRateSerializer(rate).data)

    @extend_schema(operation_id="tax_rates_delete", responses={204: None})
    def delete(self, request, id):
        taxes.delete_tax_rate(self._get(request, id))
        return Response(status=status.HTTP_204_NO_CONTENT)

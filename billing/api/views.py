"""Billing endpoints in Polar's wire format: products, benefits, discounts, subscriptions, orders
(invoices), plus Meterline's tax rates, upcoming invoice and invoice status actions."""

from urllib.parse import urlencode

from django.db import transaction
from django.db.models import Prefetch, ProtectedError, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from billing import catalog, discounts, documents, invoices, plan_changes, subscriptions, taxes
from billing.api import payloads
from billing.api import serializers as inputs
from billing.api.errors import wire_errors
from billing.models import (
    LIVE_STATUSES,
    Benefit,
    Discount,
    Invoice,
    Price,
    Product,
    Subscription,
    SubscriptionPrice,
    SubscriptionStatus,
    TaxRate,
)
from core.api import params
from core.api.errors import ErrorList, PolarValidationError
from customers.models import Customer

PAGE_PARAMS = [OpenApiParameter("page", int), OpenApiParameter("limit", int)]


class Payload(serializers.Serializer):
    """Responses are built by billing.api.payloads in Polar's shapes."""

    id = serializers.UUIDField()


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
        .select_related("customer", "product", "discount")
        .prefetch_related(
            Prefetch(
                "subscription_prices",
                queryset=SubscriptionPrice.objects.select_related(
                    "price__meter", "price__product"
                ).order_by("id"),
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


def _subscription_payloads(rows: list[Subscription]) -> list[dict]:
    meters = subscriptions.current_meters(rows)
    return [payloads.subscription_payload(s, meters[s.pk]) for s in rows]


def _uuid_params(request, name, errors):
    return params.uuid_list(request, name, errors)


# --- products ------------------------------------------------------------------------------------


class ProductListView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(
        operation_id="products_list",
        parameters=[
            *PAGE_PARAMS,
            OpenApiParameter("is_archived", bool),
            OpenApiParameter("query", str),
            OpenApiParameter("id", str, many=True),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        errors = ErrorList()
        queryset = _products(request)
        archived = params.parse_bool(request, "is_archived", errors)
        ids = _uuid_params(request, "id", errors)
        errors.raise_if_any()
        if archived is not None:
            queryset = queryset.filter(is_archived=archived)
        if ids:
            queryset = queryset.filter(pk__in=ids)
        query = request.query_params.get("query")
        if query:
            queryset = queryset.filter(name__icontains=query[:256])
        page = self.paginate_queryset(queryset.order_by("-created_at", "id"))
        return self.get_paginated_response([payloads.product_payload(p) for p in page])

    @extend_schema(
        operation_id="products_create",
        request=inputs.ProductCreateSerializer,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        body = inputs.ProductCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        with wire_errors():
            specs, keep, currency = catalog.parse_prices_input(data["prices"])
            if keep:
                raise PolarValidationError.single(
                    ["body", "prices"], "A new product cannot reference existing prices"
                )
            product = catalog.create_product(
                organization=_org(request),
                name=data["name"],
                description=data.get("description"),
                recurring_interval=data["recurring_interval"],
                recurring_interval_count=data["recurring_interval_count"],
                trial_interval=data.get("trial_interval"),
                trial_interval_count=data.get("trial_interval_count"),
                currency=currency,
                prices=specs,
                metadata=data.get("metadata"),
            )
        product = _products(request).get(pk=product.pk)
        return Response(payloads.product_payload(product), status=status.HTTP_201_CREATED)


class ProductDetailView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(operation_id="products_get", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, id):
        return Response(payloads.product_payload(get_object_or_404(_products(request), pk=id)))

    @extend_schema(
        operation_id="products_update",
        request=inputs.ProductUpdateSerializer,
        responses={200: OpenApiTypes.OBJECT},
    )
    def patch(self, request, id):
        product = get_object_or_404(_products(request), pk=id)
        body = inputs.ProductUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        with wire_errors():
            if data.get("prices") is not None:
                specs, keep, _ = catalog.parse_prices_input(
                    data.pop("prices"), currency=product.currency
                )
                catalog.replace_prices(product=product, prices=specs, keep_ids=keep)
            data.pop("prices", None)
            for key, value in data.items():
                if value is None and key in ("name", "is_archived", "metadata"):
                    continue
                if key in ("recurring_interval", "recurring_interval_count") and value is None:
                    continue
                setattr(product, key, value)
            product.save()
        return Response(payloads.product_payload(_products(request).get(pk=product.pk)))


class ProductBenefitsView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(
        operation_id="products_update_benefits",
        request=inputs.ProductBenefitsSerializer,
        responses={200: OpenApiTypes.OBJECT},
    )
    def post(self, request, id):
        product = get_object_or_404(_products(request), pk=id)
        body = inputs.ProductBenefitsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with wire_errors():
            catalog.set_benefits(product=product, benefit_ids=body.validated_data["benefits"])
        return Response(payloads.product_payload(_products(request).get(pk=product.pk)))


# --- benefits ------------------------------------------------------------------------------------


class BenefitListView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(
        operation_id="benefits_list",
        parameters=[*PAGE_PARAMS, OpenApiParameter("type", str, many=True)],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        errors = ErrorList()
        types = params.enum_list(request, "type", ("meter_credit",), errors)
        errors.raise_if_any()
        del types  # only meter_credit benefits exist in Meterline
        queryset = Benefit.objects.filter(organization=_org(request), is_deleted=False)
        page = self.paginate_queryset(queryset.order_by("-created_at", "id"))
        return self.get_paginated_response([payloads.benefit_payload(b) for b in page])

    @extend_schema(
        operation_id="benefits_create",
        request=inputs.BenefitCreateSerializer,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        body = inputs.BenefitCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        with wire_errors():
            benefit = catalog.create_benefit(
                organization=_org(request),
                description=data["description"],
                meter_id=data["properties"]["meter_id"],
                units=data["properties"]["units"],
                rollover=data["properties"]["rollover"],
                metadata=data.get("metadata"),
            )
        return Response(payloads.benefit_payload(benefit), status=status.HTTP_201_CREATED)


class BenefitDetailView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(operation_id="benefits_get", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, id):
        benefit = get_object_or_404(Benefit, organization=_org(request), pk=id, is_deleted=False)
        return Response(payloads.benefit_payload(benefit))


# --- discounts -----------------------------------------------------------------------------------


def _discounts(request):
    return Discount.objects.filter(
        organization=_org(request), deleted_at__isnull=True
    ).prefetch_related("products")


class DiscountListView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(
        operation_id="discounts_list",
        parameters=[*PAGE_PARAMS, OpenApiParameter("query", str)],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        queryset = _discounts(request)
        query = request.query_params.get("query")
        if query:
            queryset = queryset.filter(Q(name__icontains=query[:256]) | Q(code__iexact=query[:64]))
        page = self.paginate_queryset(queryset.order_by("-created_at", "id"))
        return self.get_paginated_response([payloads.discount_payload(d) for d in page])

    @extend_schema(
        operation_id="discounts_create",
        request=inputs.DiscountCreateSerializer,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        body = inputs.DiscountCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        with wire_errors():
            discount = discounts.create_discount(
                organization=_org(request),
                name=data["name"],
                type=data["type"],
                duration=data["duration"],
                basis_points=data.get("basis_points"),
                amount=data.get("amount"),
                currency=data.get("currency"),
                duration_in_months=data.get("duration_in_months"),
                code=data.get("code"),
                starts_at=data.get("starts_at"),
                ends_at=data.get("ends_at"),
                max_redemptions=data.get("max_redemptions"),
                product_ids=data.get("products"),
                metadata=data.get("metadata"),
            )
        discount = _discounts(request).get(pk=discount.pk)
        return Response(payloads.discount_payload(discount), status=status.HTTP_201_CREATED)


class DiscountDetailView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(operation_id="discounts_get", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, id):
        return Response(payloads.discount_payload(get_object_or_404(_discounts(request), pk=id)))

    @extend_schema(
        operation_id="discounts_update",
        request=inputs.DiscountUpdateSerializer,
        responses={200: OpenApiTypes.OBJECT},
    )
    def patch(self, request, id):
        discount = get_object_or_404(_discounts(request), pk=id)
        body = inputs.DiscountUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        terms = ("duration", "duration_in_months", "type", "amount", "currency", "basis_points")
        changed = [key for key in terms if data.get(key) is not None]
        if changed:
            # invoices already promised these terms; a new discount is the honest change
            raise PolarValidationError.single(
                ["body", changed[0]], "A discount's terms cannot change; create a new discount"
            )
        with wire_errors():
            if "products" in data:
                discounts.set_products(discount=discount, product_ids=data.pop("products") or [])
            for key in ("name", "code", "starts_at", "ends_at", "max_redemptions", "metadata"):
                if key in data and not (key in ("name", "metadata") and data[key] is None):
                    setattr(discount, key, data[key])
            discounts.check_definition(
                type=discount.type,
                duration=discount.duration,
                basis_points=discount.basis_points,
                amount=1 if discount.amount is not None else None,
                currency=str(discount.amount.currency) if discount.amount is not None else None,
                duration_in_months=discount.duration_in_months,
                starts_at=discount.starts_at,
                ends_at=discount.ends_at,
            )
            if discount.code and (
                _discounts(request)
                .filter(code__iexact=discount.code)
                .exclude(pk=discount.pk)
                .exists()
            ):
                raise PolarValidationError.single(
                    ["body", "code"], "A discount with this code already exists"
                )
            discount.save()
        return Response(payloads.discount_payload(_discounts(request).get(pk=discount.pk)))

    @extend_schema(operation_id="discounts_delete", responses={204: None})
    def delete(self, request, id):
        discount = get_object_or_404(_discounts(request), pk=id)
        discount.deleted_at = timezone.now()
        discount.save(update_fields=["deleted_at", "modified_at"])
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- subscriptions -------------------------------------------------------------------------------

SUBSCRIPTION_SORTING = {
    "started_at": "started_at",
    "current_period_end": "current_period_end",
    "status": "status",
    "ended_at": "ended_at",
    "ends_at": "ends_at",
}


class SubscriptionListView(GenericAPIView):
    serializer_class = Payload

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
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        errors = ErrorList()
        queryset = _subscriptions(request)
        for name, lookup in (
            ("customer_id", "customer_id__in"),
            ("product_id", "product_id__in"),
            ("discount_id", "discount_id__in"),
        ):
            ids = _uuid_params(request, name, errors)
            if ids:
                queryset = queryset.filter(**{lookup: ids})
        external = params.string_list(request, "external_customer_id", errors)
        if external:
            queryset = queryset.filter(customer__external_id__in=external)
        active = params.parse_bool(request, "active", errors)
        if active is not None:
            live = Q(status__in=LIVE_STATUSES)
            queryset = queryset.filter(live if active else ~live)
        statuses = params.enum_list(
            request,
            "status",
            (
                "incomplete",
                "incomplete_expired",
                "trialing",
                "active",
                "past_due",
                "canceled",
                "unpaid",
                "paused",
            ),
            errors,
        )
        if statuses:
            queryset = queryset.filter(status__in=statuses)
        cancel = params.parse_bool(request, "cancel_at_period_end", errors)
        if cancel is not None:
            queryset = queryset.filter(cancel_at_period_end=cancel)
        order = params.sorting(request, SUBSCRIPTION_SORTING, ["-started_at"], errors)
        errors.raise_if_any()
        page = self.paginate_queryset(queryset.order_by(*order, "id"))
        return self.get_paginated_response(_subscription_payloads(page))

    @extend_schema(
        operation_id="subscriptions_create",
        request=inputs.SubscriptionCreateSerializer,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        body = inputs.SubscriptionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        organization = _org(request)
        customers = Customer.objects.active().filter(organization=organization)
        if "customer_id" in data:
            customer = customers.filter(pk=data["customer_id"]).first()
            loc = ["body", "customer_id"]
        else:
            customer = customers.filter(external_id=data["external_customer_id"]).first()
            loc = ["body", "external_customer_id"]
        if customer is None:
            raise PolarValidationError.single(loc, "Customer does not exist.", "customer_not_found")
        product = Product.objects.filter(organization=organization, pk=data["product_id"]).first()
        if product is None:
            raise PolarValidationError.single(["body", "product_id"], "Product does not exist.")
        discount = None
        if data.get("discount_id"):
            discount = _discounts(request).filter(pk=data["discount_id"]).first()
            if discount is None:
                raise PolarValidationError.single(
                    ["body", "discount_id"], "Discount does not exist."
                )
        with wire_errors():
            subscription = subscriptions.create_subscription(
                customer=customer,
                product=product,
                started_at=data.get("started_at"),
                discount=discount,
                metadata=data.get("metadata"),
            )
        (payload,) = _subscription_payloads([_subscriptions(request).get(pk=subscription.pk)])
        return Response(payload, status=status.HTTP_201_CREATED)


class SubscriptionDetailView(GenericAPIView):
    serializer_class = Payload

    def _get(self, request, id):
        return get_object_or_404(_subscriptions(request), pk=id)

    def _respond(self, request, id):
        (payload,) = _subscription_payloads([self._get(request, id)])
        return Response(payload)

    @extend_schema(operation_id="subscriptions_get", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, id):
        return self._respond(request, id)

    @extend_schema(
        operation_id="subscriptions_update",
        request=inputs.SubscriptionUpdateSerializer,
        responses={200: OpenApiTypes.OBJECT},
    )
    def patch(self, request, id):
        subscription = self._get(request, id)
        body = inputs.SubscriptionUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        # one body, one outcome: a refused product change leaves the discount untouched too
        with wire_errors(), transaction.atomic():
            if data.get("revoke"):
                subscriptions.revoke(subscription)
                return self._respond(request, id)
            if "discount_id" in data:
                discount = None
                if data["discount_id"] is not None:
                    discount = _discounts(request).filter(pk=data["discount_id"]).first()
                    if discount is None:
                        raise PolarValidationError.single(
                            ["body", "discount_id"], "Discount does not exist."
                        )
                subscriptions.set_discount(subscription, discount)
            if data.get("product_id") is not None:
                product = Product.objects.filter(
                    organization_id=subscription.organization_id, pk=data["product_id"]
                ).first()
                if product is None:
                    raise PolarValidationError.single(
                        ["body", "product_id"], "Product does not exist."
                    )
                plan_changes.change_product(
                    subscription,
                    product,
                    proration_behavior=data.get("proration_behavior")
                    or plan_changes.DEFAULT_BEHAVIOR,
                )
            if "pending_update" in data:
                plan_changes.cancel_pending_change(subscription)
            if "cancel_at_period_end" in data:
                subscriptions.set_cancel_at_period_end(subscription, data["cancel_at_period_end"])
            if data.get("metadata") is not None:
                Subscription.objects.filter(pk=subscription.pk).update(metadata=data["metadata"])
        return self._respond(request, id)

    @extend_schema(operation_id="subscriptions_revoke", responses={200: OpenApiTypes.OBJECT})
    def delete(self, request, id):
        with wire_errors():
            subscriptions.revoke(self._get(request, id))
        return self._respond(request, id)


class SubscriptionUpcomingView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(operation_id="subscriptions_upcoming", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, id):
        subscription = get_object_or_404(_subscriptions(request), pk=id)
        if subscription.status == SubscriptionStatus.CANCELED:
            raise PolarValidationError.single(["path", "id"], "The subscription has ended.")
        draft = subscriptions.upcoming_invoice(subscription)
        return Response(payloads.upcoming_payload(subscription, draft, timezone.now()))


# --- orders (invoices) ---------------------------------------------------------------------------

ORDER_SORTING = {"created_at": "created_at", "invoice_number": "sequence", "status": "status"}
ORDER_STATUSES = {
    "draft": ["draft"],
    "pending": ["open", "uncollectible"],
    "paid": ["paid"],
    "void": ["void"],
    "refunded": [],
    "partially_refunded": [],
}


class OrderListView(GenericAPIView):
    serializer_class = Payload

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
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        errors = ErrorList()
        queryset = _invoices(request)
        for name, lookup in (
            ("customer_id", "customer_id__in"),
            ("subscription_id", "subscription_id__in"),
            ("product_id", "product_id__in"),
        ):
            ids = _uuid_params(request, name, errors)
            if ids:
                queryset = queryset.filter(**{lookup: ids})
        external = params.string_list(request, "external_customer_id", errors)
        if external:
            queryset = queryset.filter(customer__external_id__in=external)
        statuses = params.enum_list(request, "status", tuple(ORDER_STATUSES), errors)
        if statuses:
            queryset = queryset.filter(
                status__in=[s for name in statuses for s in ORDER_STATUSES[name]]
            )
        order = params.sorting(request, ORDER_SORTING, ["-created_at"], errors)
        errors.raise_if_any()
        page = self.paginate_queryset(queryset.order_by(*order, "-sequence", "id"))
        return self.get_paginated_response([payloads.order_payload(i) for i in page])


class OrderDetailView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(operation_id="orders_get", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, id):
        return Response(payloads.order_payload(get_object_or_404(_invoices(request), pk=id)))


class OrderInvoiceView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(operation_id="orders_invoice", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, id):
        """Polar's `OrderInvoice`: a URL that downloads the PDF without a token (signed, expires
        after INVOICE_LINK_MAX_AGE). The PDF is rendered here if the delivery task has not yet."""
        invoice = get_object_or_404(_invoices(request), pk=id)
        with wire_errors():
            documents.invoice_pdf(invoice.pk)
        path = reverse("order-invoice-pdf", kwargs={"id": invoice.pk})
        query = urlencode({"token": documents.download_token(invoice)})
        return Response({"url": request.build_absolute_uri(f"{path}?{query}")})

    @extend_schema(
        operation_id="orders_generate_invoice", request=None, responses={202: OpenApiTypes.OBJECT}
    )
    def post(self, request, id):
        """Polar's "generate the invoice": Meterline renders it at finalization anyway, so this
        only makes sure it is stored (idempotent)."""
        invoice = get_object_or_404(_invoices(request), pk=id)
        with wire_errors():
            documents.invoice_pdf(invoice.pk)
        return Response({}, status=status.HTTP_202_ACCEPTED)


class OrderInvoicePdfView(GenericAPIView):
    """The download behind that URL: the signed token is the credential (a browser or mail
    client opens it without the API token)."""

    serializer_class = Payload
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
    serializer_class = Payload
    transition = None

    def post(self, request, id):
        invoice = get_object_or_404(_invoices(request), pk=id)
        with wire_errors():
            self.transition(invoice)
        return Response(payloads.order_payload(_invoices(request).get(pk=id)))


class OrderMarkPaidView(OrderActionView):
    transition = staticmethod(invoices.mark_paid)

    @extend_schema(
        operation_id="orders_mark_paid", request=None, responses={200: OpenApiTypes.OBJECT}
    )
    def post(self, request, id):
        return super().post(request, id)


class OrderVoidView(OrderActionView):
    transition = staticmethod(invoices.void)

    @extend_schema(operation_id="orders_void", request=None, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, id):
        return super().post(request, id)


# --- tax rates (Meterline extension) -------------------------------------------------------------


class TaxRateListView(GenericAPIView):
    serializer_class = Payload

    @extend_schema(
        operation_id="tax_rates_list", parameters=PAGE_PARAMS, responses={200: OpenApiTypes.OBJECT}
    )
    def get(self, request):
        queryset = TaxRate.objects.filter(organization=_org(request))
        page = self.paginate_queryset(queryset.order_by("country", "state", "id"))
        return self.get_paginated_response([payloads.tax_rate_payload(r) for r in page])

    @extend_schema(
        operation_id="tax_rates_create",
        request=inputs.TaxRateCreateSerializer,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        body = inputs.TaxRateCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        with wire_errors():
            rate = taxes.create_tax_rate(
                organization=_org(request),
                name=data["name"],
                country=data["country"],
                state=data.get("state"),
                basis_points=data["basis_points"],
                inclusive=data["inclusive"],
            )
        return Response(payloads.tax_rate_payload(rate), status=status.HTTP_201_CREATED)


class TaxRateDetailView(GenericAPIView):
    serializer_class = Payload

    def _get(self, request, id):
        return get_object_or_404(TaxRate, organization=_org(request), pk=id)

    @extend_schema(operation_id="tax_rates_get", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, id):
        return Response(payloads.tax_rate_payload(self._get(request, id)))

    @extend_schema(
        operation_id="tax_rates_update",
        request=inputs.TaxRateUpdateSerializer,
        responses={200: OpenApiTypes.OBJECT},
    )
    def patch(self, request, id):
        rate = self._get(request, id)
        body = inputs.TaxRateUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        for key, value in body.validated_data.items():
            setattr(rate, key, value)
        rate.save()
        return Response(payloads.tax_rate_payload(rate))

    @extend_schema(operation_id="tax_rates_delete", responses={204: None})
    def delete(self, request, id):
        rate = self._get(request, id)
        try:
            rate.delete()
        except ProtectedError:
            raise PolarValidationError.single(
                ["path", "id"], "The tax rate is on invoices; it cannot be deleted."
            )
        return Response(status=status.HTTP_204_NO_CONTENT)

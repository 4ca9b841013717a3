"""Polar's page/limit pagination with {"items", "pagination": {total_count, max_page}}."""

import math

from django.conf import settings
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

from core.api.errors import PolarValidationError
from core.errors import ErrorList

MAX_LIMIT = 100
# OFFSET is a bigint in PostgreSQL; far beyond any real page, far below its overflow.
MAX_PAGE = 10**9


def read_page_params(request) -> tuple[int, int]:
    errors = ErrorList()
    values = {}
    for name, default, upper in (("page", 1, MAX_PAGE), ("limit", 10, MAX_LIMIT)):
        raw = request.query_params.get(name)
        if raw is None:
            values[name] = default
            continue
        try:
            value = int(raw)
        except ValueError:
            errors.add(["query", name], "Input should be a valid integer", "int_parsing")
            continue
        if value < 1:
            errors.add(["query", name], "Input should be greater than 0", "greater_than")
        elif value > upper:
            errors.add(["query", name], f"Input should be at most {upper}", "less_than_equal")
        values[name] = value
    errors.raise_if_any(PolarValidationError)
    return values["page"], values["limit"]


class PolarPagination(BasePagination):
    """Exact counts, except on tables marked `capped_count` (events): there we count at most a
    few pages beyond the current one, so a deep table never costs a full COUNT(*)."""

    count_lookahead_pages = getattr(settings, "PAGINATION_COUNT_LOOKAHEAD_PAGES", 10)

    def paginate_queryset(self, queryset, request, view=None):
        self.page, self.limit = read_page_params(request)
        offset = (self.page - 1) * self.limit
        if getattr(view, "capped_count", False):
            cap = offset + self.limit * self.count_lookahead_pages + 1
            self.total = queryset.order_by()[:cap].count()
        else:
            self.total = queryset.count()
        return list(queryset[offset : offset + self.limit])

    def get_paginated_response(self, data):
        return Response(
            {
                "items": data,
                "pagination": {
                    "total_count": self.total,
                    "max_page": max(1, math.ceil(self.total / self.limit)) if self.total else 0,
                },
            }
        )

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["items", "pagination"],
            "properties": {
                "items": schema,
                "pagination": {
                    "type": "object",
                    "required": ["total_count", "max_page"],
                    "properties": {
                        "total_count": {"type": "integer"},
                        "max_page": {"type": "integer"},
                    },
                },
            },
        }

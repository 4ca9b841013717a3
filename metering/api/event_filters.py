"""Event list filters shared by the API (and the admin)."""

import decimal
import json

from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

from core.api import params
from core.errors import ErrorList
from core.strict_json import NonFiniteNumber
from metering import filters
from metering.models import Meter
from metering.stores.postgres import customer_q

MAX_DEPTH = 5

DESCENDANTS_SQL = """
WITH RECURSIVE tree(id, depth) AS (
    SELECT id, 0 FROM metering_event WHERE organization_id = %s AND {anchor}
    UNION ALL
    SELECT e.id, tree.depth + 1 FROM metering_event e JOIN tree ON e.parent_id = tree.id
    WHERE tree.depth < %s
)
SELECT id FROM tree
"""


def with_canceled(sources: list[str], include_canceled: bool) -> list[str]:
    """Canceled originals go out as "user" events: with `include_canceled`, `source=user`
    finds them too."""
    if include_canceled and "user" in sources:
        return [*sources, "canceled"]
    return sources


def filter_events(request, queryset, errors: ErrorList, *, include_canceled: bool = False):
    query_params = request.query_params
    customer_ids = params.uuid_list(request, "customer_id", errors)
    external_ids = params.string_list(request, "external_customer_id", errors)
    if customer_ids or external_ids:
        queryset = queryset.filter(customer_q(customer_ids, external_ids))
    names = params.string_list(request, "name", errors, max_length=128)
    if names:
        queryset = queryset.filter(name__in=names)
    sources = params.enum_list(request, "source", ("user", "system"), errors)
    if sources:
        queryset = queryset.filter(source__in=with_canceled(sources, include_canceled))
    start = params.parse_datetime(query_params.get("start_timestamp"), "start_timestamp", errors)
    end = params.parse_datetime(query_params.get("end_timestamp"), "end_timestamp", errors)
    if start:
        queryset = queryset.filter(timestamp__gte=start)
    if end:
        queryset = queryset.filter(timestamp__lte=end)
    query = query_params.get("query")
    if query:
        queryset = queryset.filter(name__icontains=query)
    metadata = params.metadata_filters(request, errors)
    if metadata:
        queryset = queryset.filter(params.metadata_q("metadata", metadata))
    queryset = _filter_tree(request, queryset, errors)
    queryset = filter_events_by_meter(request, queryset, errors)
    return queryset


def event_criteria(request, errors: ErrorList, *, include_canceled: bool = False) -> dict:
    """The list filters as plain values (the ClickHouse event store applies them itself), with
    the same parsing and errors as `filter_events`. Tree filters are the caller's."""
    query_params = request.query_params
    sources = params.enum_list(request, "source", ("user", "system"), errors)
    criteria = {
        "customer_ids": params.uuid_list(request, "customer_id", errors),
        "external_ids": params.string_list(request, "external_customer_id", errors),
        "names": params.string_list(request, "name", errors, max_length=128),
        "sources": with_canceled(sources, include_canceled),
        "include_canceled": include_canceled,
        "start": params.parse_datetime(
            query_params.get("start_timestamp"), "start_timestamp", errors
        ),
        "end": params.parse_datetime(query_params.get("end_timestamp"), "end_timestamp", errors),
        "query": query_params.get("query"),
        "metadata": params.metadata_filters(request, errors),
        "filters": [],
    }
    for condition, _user_only in _meter_conditions(request, errors):
        criteria["filters"].append(condition)
    return criteria


def _filter_tree(request, queryset, errors: ErrorList):
    raw_parent = request.query_params.get("parent_id")
    parent_id = (
        params.parse_uuid(raw_parent, ["query", "parent_id"], errors) if raw_parent else None
    )
    depth = params.parse_int(request, "depth", errors, minimum=0, maximum=MAX_DEPTH)
    if depth is None:
        return queryset.filter(parent_id=parent_id) if parent_id else queryset
    organization_id = request.auth.organization.pk
    if parent_id is None and depth == 0:
        return queryset.filter(parent__isnull=True)
    anchor = "id = %s" if parent_id else "parent_id IS NULL"
    sql_params = [organization_id, *([parent_id] if parent_id else []), depth]
    return queryset.filter(pk__in=RawSQL(DESCENDANTS_SQL.format(anchor=anchor), sql_params))


def filter_events_by_meter(request, queryset, errors: ErrorList):
    """`meter_id` and `filter` (a meter filter as JSON) narrow the list to matching events, with
    the same typed comparison rule as the meters (metering.filters)."""
    for condition, user_only in _meter_conditions(request, errors):
        sql, sql_params = filters.compile_filter(condition, alias="metering_event")
        if user_only:  # meters only count user events
            sql = f"(metering_event.source = 'user' AND {sql})"
        queryset = queryset.filter(RawSQL(sql, sql_params, output_field=_bool()))
    return queryset


def _meter_conditions(request, errors: ErrorList) -> list[tuple[dict, bool]]:
    """(filter, only user events) of `meter_id` and `filter`."""
    raw_meter = request.query_params.get("meter_id")
    raw_filter = request.query_params.get("filter")
    conditions = []
    if raw_meter:
        meter_id = params.parse_uuid(raw_meter, ["query", "meter_id"], errors)
        if meter_id is not None:
            meter = Meter.objects.filter(
                pk=meter_id, organization=request.auth.organization
            ).first()
            if meter is None:
                errors.add(["query", "meter_id"], "Meter not found", "not_found", raw_meter)
            else:
                conditions.append((meter.filter, True))
    if raw_filter:
        try:
            parsed = json.loads(raw_filter, parse_float=_decimal, parse_constant=_non_finite)
        except (ValueError, RecursionError):
            errors.add(["query", "filter"], "Input should be a JSON filter object", "json_invalid")
        else:
            cleaned = filters.validate_filter(parsed, ["query", "filter"], errors)
            if cleaned is not None:
                conditions.append((cleaned, False))
    return conditions


def _decimal(text):
    return decimal.Decimal(text)


def _non_finite(text):
    return NonFiniteNumber(text)


def _bool():
    return BooleanField()

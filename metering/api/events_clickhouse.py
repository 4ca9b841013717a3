"""`GET /v1/events/` and `GET /v1/events/{id}` when user events live in ClickHouse: the user
events come from the store, the system events (credits, resets) from PostgreSQL, merged in
timestamp order under the same filters and pagination."""

from django.http import Http404

from core.api import params
from core.errors import ErrorList
from metering import stores
from metering.api.event_filters import MAX_DEPTH, event_criteria, filter_events
from metering.event_lists import MergedEvents
from metering.models import EventKey, EventSource


def clickhouse_criteria(request, errors: ErrorList, include_canceled: bool) -> dict | None:
    """The list filters for the store; None when nothing there can match."""
    criteria = event_criteria(request, errors, include_canceled=include_canceled)
    raw_parent = request.query_params.get("parent_id")
    parent_id = (
        params.parse_uuid(raw_parent, ["query", "parent_id"], errors) if raw_parent else None
    )
    depth = params.parse_int(request, "depth", errors, minimum=0, maximum=MAX_DEPTH)
    if parent_id is None and depth is None:
        return criteria
    if parent_id is None:
        criteria["depth_from_roots"] = depth
        return criteria
    organization_id = request.auth.organization.pk
    if depth is None:
        criteria["parent_refs"] = _references([parent_id], organization_id)
        return criteria
    found, level = [parent_id], [parent_id]
    for _ in range(depth):
        children = stores.current().list_events(
            organization_id,
            # the tree walks through canceled events as PostgreSQL's does; the list filters them
            {"parent_refs": _references(level, organization_id), "include_canceled": True},
            descending=False,
            limit=10_000,
        )
        level = [child.id for child in children]
        if not level:
            break
        found += level
    criteria["ids"] = found
    return criteria


def _references(event_ids: list, organization_id) -> list[str]:
    """How children name these events: by id, or by external id."""
    keys = EventKey.objects.filter(organization_id=organization_id, event_id__in=event_ids)
    return [str(i) for i in event_ids] + list(keys.values_list("external_id", flat=True))


def merged_events(
    request, queryset, errors: ErrorList, descending: bool, *, include_canceled: bool
) -> MergedEvents:
    criteria = clickhouse_criteria(request, errors, include_canceled)
    system = filter_events(request, queryset, errors).filter(source=EventSource.SYSTEM)
    order = "-" if descending else ""
    system = system.order_by(f"{order}timestamp", f"{order}id")
    return MergedEvents(system, request.auth.organization.pk, criteria, descending)


def lookup(request, queryset, event_id):
    found = queryset.filter(pk=event_id).first()
    if found is not None:
        return found
    events = stores.current().list_events(
        request.auth.organization.pk,
        {"ids": [event_id], "include_canceled": True},  # a canceled event is still found
        descending=False,
        limit=1,
    )
    if not events:
        raise Http404
    return events[0]

"""Query-parameter parsing with Polar's 422 shape (loc = ["query", name])."""

import re
import uuid
from datetime import UTC, datetime

from django.db.models import Q

from core import timestamps
from core.errors import ErrorList
from core.metadata import metadata_value_candidates

METADATA_PARAM = re.compile(r"^metadata\[([^\]]{1,40})\]$")


def parse_uuid(raw: str, loc, errors: ErrorList) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(raw))
    except (ValueError, AttributeError, TypeError):
        errors.add(loc, "Input should be a valid UUID", "uuid_parsing", raw)
        return None


def uuid_list(request, name: str, errors: ErrorList) -> list[uuid.UUID]:
    values = []
    for raw in request.query_params.getlist(name):
        parsed = parse_uuid(raw, ["query", name], errors)
        if parsed is not None:
            values.append(parsed)
    return values


def string_list(request, name: str, errors: ErrorList, max_length: int = 256) -> list[str]:
    values = request.query_params.getlist(name)
    for value in values:
        if len(value) > max_length:
            errors.add(
                ["query", name],
                f"String should have at most {max_length} characters",
                "string_too_long",
            )
    return values


def parse_datetime(raw: str | None, name: str, errors: ErrorList) -> datetime | None:
    """An ISO 8601 query value in UTC (naive means UTC), within `core.timestamps`' range."""
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw.replace(" ", "+") if raw.count(":") else raw)
    except ValueError:
        errors.add(["query", name], "Input should be a valid datetime", "datetime_parsing", raw)
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    utc = timestamps.to_utc(value)
    if utc is None:
        errors.add(["query", name], timestamps.RANGE_MESSAGE, "datetime_range", raw)
    return utc


def parse_int(request, name: str, errors: ErrorList, *, minimum=None, maximum=None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        errors.add(["query", name], "Input should be a valid integer", "int_parsing", raw)
        return None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        errors.add(["query", name], f"Input should be between {minimum} and {maximum}", "range")
        return None
    return value


def parse_bool(request, name: str, errors: ErrorList) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    errors.add(["query", name], "Input should be a valid boolean", "bool_parsing", raw)
    return None


def enum_list(request, name: str, allowed, errors: ErrorList) -> list[str]:
    values = request.query_params.getlist(name)
    for value in values:
        if value not in allowed:
            errors.add(
                ["query", name], f"Input should be one of {', '.join(allowed)}", "enum", value
            )
    return [v for v in values if v in allowed]


def sorting(request, allowed: dict[str, str], default: list[str], errors: ErrorList) -> list[str]:
    """Map Polar sort keys (`-timestamp`) to ORM order_by expressions."""
    requested = request.query_params.getlist("sorting") or default
    order = []
    for key in requested:
        bare = key.removeprefix("-")
        if bare not in allowed:
            errors.add(["query", "sorting"], f"Unknown sorting criterion {key!r}", "enum", key)
            continue
        order.append(("-" if key.startswith("-") else "") + allowed[bare])
    return order


def metadata_filters(request, errors: ErrorList) -> dict[str, list]:
    """deepObject `metadata[key]=value`, repeatable (values of one key are OR-ed, keys AND-ed)."""
    filters: dict[str, list] = {}
    for name in request.query_params:
        if not name.startswith("metadata"):
            continue
        match = METADATA_PARAM.match(name)
        if not match:
            errors.add(["query", name], "Use metadata[key]=value", "value_error")
            continue
        filters[match.group(1)] = request.query_params.getlist(name)
    return filters


def metadata_q(field: str, filters: dict[str, list]):
    """A Q matching JSON metadata where each key equals one of its values (string, int or bool)."""
    q = Q()
    for key, raw_values in filters.items():
        alternatives = Q()
        for raw in raw_values:
            for candidate in metadata_value_candidates(raw):
                alternatives |= Q(**{f"{field}__contains": {key: candidate}})
        q &= alternatives
    return q

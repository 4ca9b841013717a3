"""The meter filter language: validation (Polar's 422 shape), a SQL compiler and a pure-Python
evaluator that implement one typed comparison rule (docs/meters.md, "Typed comparison").

Property values are handled as jsonb everywhere in SQL, so SQL and Python share one definition:

- `name` / `source` are strings, `timestamp` is the integer Unix second (floor);
- anything else is a metadata path (a leading `metadata.` dropped): a flat key of that exact name
  first, else (dotted path) a walk through nested objects (`_llm.total_tokens`).
"""

import decimal
import re
from datetime import UTC, datetime

from core.errors import ErrorList
from core.metadata import NUMBER_LIMIT_DIGITS, NUMBER_RANGE_MESSAGE
from core.strict_json import NonFiniteNumber

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "like", "not_like")
ORDERING = {"gt", "gte", "lt", "lte"}
CONJUNCTIONS = ("and", "or")
MAX_DEPTH = 5
MAX_CLAUSES = 100
MAX_STRING = 1000
MAX_PROPERTY = 256
COLUMN_PROPERTIES = ("name", "source", "timestamp")
AGGREGATION_FUNCS = ("count", "sum", "avg", "min", "max", "unique")
PROPERTY_FUNCS = ("sum", "avg", "min", "max")
MISSING = object()
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- validation -----------------------------------------------------------------------------


def _is_number(value) -> bool:
    return isinstance(value, int | decimal.Decimal | float) and not isinstance(value, bool)


def _check_string(value: str, loc, errors: ErrorList, max_length: int) -> bool:
    if len(value) > max_length:
        errors.add(loc, f"String should have at most {max_length} characters", "string_too_long")
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        errors.add(loc, "String must be valid Unicode (no lone surrogates)", "string_unicode")
        return False
    if "\x00" in value:
        errors.add(loc, "String must not contain NUL characters", "string_nul")
        return False
    return True


def _clean_value(value, loc, errors: ErrorList):
    """string (≤ 1000), integer or boolean; a number is accepted when it is integral (`12.0` is
    stored as `12`). Fractional clause values are refused: Polar's wire format (and so its
    clients) carries a clause value as string, integer or boolean only, and one stored value
    no client can read would break the meter list for the whole organization."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value if _check_string(value, loc, errors, MAX_STRING) else None
    if isinstance(value, NonFiniteNumber):
        errors.add(loc, f"{value.text} is not allowed: numbers must be finite", "finite_number")
        return None
    if isinstance(value, decimal.Decimal | float):
        number = decimal.Decimal(value)
        if not number.is_finite():
            errors.add(loc, "Number must be finite", "finite_number")
            return None
        if number != number.to_integral_value():
            errors.add(
                loc,
                "Filter values must be integers, strings or booleans: compare a fractional "
                "property in a smaller unit (e.g. latency_ms >= 12500 instead of latency >= 12.5)",
                "filter_value_fractional",
            )
            return None
        if number and number.adjusted() >= NUMBER_LIMIT_DIGITS:
            errors.add(loc, NUMBER_RANGE_MESSAGE, "number_range")
            return None
        value = int(number)
    if isinstance(value, int):
        if abs(value) >= 10**NUMBER_LIMIT_DIGITS:
            errors.add(loc, NUMBER_RANGE_MESSAGE, "number_range")
            return None
        return value
    errors.add(
        loc, "Input should be a valid string, integer, number or boolean", "filter_value_type"
    )
    return None


def _clean_property(value, loc, errors: ErrorList):
    if not isinstance(value, str):
        errors.add(loc, "Input should be a valid string", "string_type")
        return None
    if not value or not value.removeprefix("metadata."):
        errors.add(loc, "Property must not be empty", "string_too_short")
        return None
    return value if _check_string(value, loc, errors, MAX_PROPERTY) else None


def validate_filter(raw, loc, errors: ErrorList) -> dict | None:
    """Return the normalized filter, or None after recording every problem with its location."""
    counter = [0]
    before = len(errors.items)
    cleaned = _validate_group(raw, list(loc), errors, 1, counter)
    if counter[0] > MAX_CLAUSES:
        errors.add(loc, f"A filter may have at most {MAX_CLAUSES} clauses", "too_many_clauses")
    return cleaned if len(errors.items) == before else None


def _validate_group(raw, loc, errors, depth, counter):
    if not isinstance(raw, dict):
        errors.add(loc, "Input should be a valid filter object", "dict_type")
        return None
    if depth > MAX_DEPTH:
        errors.add(loc, f"Filters nest at most {MAX_DEPTH} levels deep", "too_deep")
        return None
    for key in raw:
        if key not in ("conjunction", "clauses"):
            errors.add([*loc, key], "Extra inputs are not permitted", "extra_forbidden")
    conjunction = raw.get("conjunction")
    if conjunction not in CONJUNCTIONS:
        errors.add(
            [*loc, "conjunction"],
            "Input should be 'and' or 'or'",
            "literal_error" if "conjunction" in raw else "missing",
        )
    clauses = raw.get("clauses")
    cleaned = []
    if not isinstance(clauses, list):
        errors.add(
            [*loc, "clauses"],
            "Input should be a valid list",
            "list_type" if "clauses" in raw else "missing",
        )
        clauses = []
    for index, clause in enumerate(clauses):
        counter[0] += 1
        if counter[0] > MAX_CLAUSES:
            break
        sub = [*loc, "clauses", index]
        if isinstance(clause, dict) and ("clauses" in clause or "conjunction" in clause):
            cleaned.append(_validate_group(clause, sub, errors, depth + 1, counter))
        else:
            cleaned.append(_validate_clause(clause, sub, errors))
    return {"conjunction": conjunction, "clauses": cleaned}


def _validate_clause(raw, loc, errors):
    if not isinstance(raw, dict):
        errors.add(loc, "Input should be a valid filter clause object", "dict_type")
        return None
    for key in raw:
        if key not in ("property", "operator", "value"):
            errors.add([*loc, key], "Extra inputs are not permitted", "extra_forbidden")
    prop = None
    if "property" not in raw:
        errors.add([*loc, "property"], "Field required", "missing")
    else:
        prop = _clean_property(raw["property"], [*loc, "property"], errors)
    operator = raw.get("operator")
    if operator not in OPERATORS:
        errors.add(
            [*loc, "operator"],
            f"Input should be one of {', '.join(OPERATORS)}",
            "literal_error" if "operator" in raw else "missing",
        )
    value = None
    if "value" not in raw or raw["value"] is None:
        errors.add([*loc, "value"], "Field required", "missing")
    else:
        value = _clean_value(raw["value"], [*loc, "value"], errors)
    return {"property": prop, "operator": operator, "value": value}


def validate_aggregation(raw, loc, errors: ErrorList) -> dict | None:
    before = len(errors.items)
    if not isinstance(raw, dict):
        errors.add(loc, "Input should be a valid aggregation object", "dict_type")
        return None
    func = raw.get("func")
    if func not in AGGREGATION_FUNCS:
        errors.add(
            [*loc, "func"],
            f"Input should be one of {', '.join(AGGREGATION_FUNCS)}",
            "literal_error" if "func" in raw else "missing",
        )
        return None
    allowed = {"func"} if func == "count" else {"func", "property"}
    for key in raw:
        if key not in allowed:
            errors.add([*loc, key], "Extra inputs are not permitted", "extra_forbidden")
    cleaned = {"func": func}
    if func != "count":
        if "property" not in raw:
            errors.add([*loc, "property"], "Field required", "missing")
        else:
            cleaned["property"] = _clean_property(raw["property"], [*loc, "property"], errors)
    return cleaned if len(errors.items) == before else None


# --- property resolution --------------------------------------------------------------------


def metadata_path(prop: str) -> str:
    return prop.removeprefix("metadata.") if prop not in COLUMN_PROPERTIES else prop


def resolve(prop: str, event) -> object:
    """The value of `prop` in an event (a dict with name, source, timestamp, metadata)."""
    if prop in ("name", "source"):
        return event[prop]
    if prop == "timestamp":
        return unix_seconds(event["timestamp"])
    path = metadata_path(prop)
    metadata = event.get("metadata") or {}
    if path in metadata:
        return metadata[path]
    if "." in path:
        current = metadata
        for part in path.split("."):
            if isinstance(current, dict) and part in current:
                current = current[part]
            else:
                return MISSING
        return current
    return MISSING


def unix_seconds(moment: datetime) -> int:
    delta = moment - EPOCH
    return delta.days * 86400 + delta.seconds  # floor: microseconds dropped, days may be < 0


def _as_decimal(value) -> decimal.Decimal:
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    return decimal.Decimal(value)


def compare(value, operator: str, expected) -> bool:
    """The one typed comparison rule (the table in docs/meters.md)."""
    if value is MISSING:
        return False
    if isinstance(expected, bool):
        if not isinstance(value, bool):
            return False
        if operator == "eq":
            return value == expected
        if operator == "ne":
            return value != expected
        return False
    if isinstance(expected, str):
        if not isinstance(value, str):
            return False
        if operator == "like":
            return expected in value
        if operator == "not_like":
            return expected not in value
        return _ordered(value, operator, expected)
    if not _is_number(value):
        return False
    if operator in ("like", "not_like"):
        return False
    return _ordered(_as_decimal(value), operator, _as_decimal(expected))


def _ordered(left, operator, right) -> bool:
    return {
        "eq": left == right,
        "ne": left != right,
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
    }[operator]


def evaluate(filter_: dict, event) -> bool:
    clauses = filter_.get("clauses") or []
    if not clauses:
        return True
    results = (
        evaluate(clause, event)
        if "clauses" in clause
        else compare(resolve(clause["property"], event), clause["operator"], clause["value"])
        for clause in clauses
    )
    return all(results) if filter_["conjunction"] == "and" else any(results)


def numeric_value(prop: str, event):
    """The aggregation number of an event: its property when it is a JSON number, else None."""
    value = resolve(prop, event)
    return _as_decimal(value) if _is_number(value) else None


def value_key(prop: str, event) -> str | None:
    """The typed distinct key for `unique`: `s:text`, `n:normalized number`, `b:true|false`."""
    value = resolve(prop, event)
    if isinstance(value, bool):
        return f"b:{'true' if value else 'false'}"
    if isinstance(value, str):
        return f"s:{value}"
    if _is_number(value):
        number = _as_decimal(value)
        if number == 0:
            return "n:0"
        text = format(number.normalize(), "f")
        return f"n:{text}"
    return None


# --- SQL ------------------------------------------------------------------------------------


def property_sql(prop: str, alias: str = "e") -> tuple[str, list]:
    """A jsonb expression for `prop` (SQL NULL when missing)."""
    if prop in ("name", "source"):
        return f"to_jsonb({alias}.{prop})", []
    if prop == "timestamp":
        return f"to_jsonb(floor(extract(epoch from {alias}.timestamp))::numeric)", []
    path = metadata_path(prop)
    if "." in path:
        return (
            f"COALESCE({alias}.metadata -> %s, {alias}.metadata #> %s::text[])",
            [path, path.split(".")],
        )
    return f"({alias}.metadata -> %s)", [path]


def _subst(template: str, expr: str, expr_params: list, extra: list) -> tuple[str, list]:
    """Fill `{v}` with the property expression (repeating its params) and `%s` with `extra`."""
    out, params = [], []
    extra_iter = iter(extra)
    for token in re.split(r"(\{v\}|%s)", template):
        if token == "{v}":
            out.append(expr)
            params.extend(expr_params)
        elif token == "%s":
            out.append("%s")
            params.append(next(extra_iter))
        else:
            out.append(token)
    return "".join(out), params


def numeric_sql(prop: str, alias: str = "e") -> tuple[str, list]:
    expr, params = property_sql(prop, alias)
    return _subst(
        "(CASE WHEN jsonb_typeof({v}) = 'number' THEN ({v})::numeric END)", expr, params, []
    )


def value_key_sql(prop: str, alias: str = "e") -> tuple[str, list]:
    expr, params = property_sql(prop, alias)
    return _subst(
        "(CASE jsonb_typeof({v}) WHEN 'string' THEN 's:' || ({v} #>> '{}') "
        "WHEN 'number' THEN 'n:' || trim_scale(({v})::numeric)::text "
        "WHEN 'boolean' THEN 'b:' || ({v} #>> '{}') END)",
        expr,
        params,
        [],
    )


SQL_OPS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _clause_sql(clause: dict, alias: str) -> tuple[str, list]:
    prop, operator, expected = clause["property"], clause["operator"], clause["value"]
    if prop in ("name", "source"):
        column = f"{alias}.{prop}"
        if not isinstance(expected, str):
            return "FALSE", []
        if operator == "like":
            return f"(strpos({column}, %s) > 0)", [expected]
        if operator == "not_like":
            return f"(strpos({column}, %s) = 0)", [expected]
        return f'({column} COLLATE "C" {SQL_OPS[operator]} %s COLLATE "C")', [expected]
    if prop == "timestamp":
        if (
            isinstance(expected, bool)
            or not _is_number(expected)
            or operator in ("like", "not_like")
        ):
            return "FALSE", []
        return (
            f"(floor(extract(epoch from {alias}.timestamp)) {SQL_OPS[operator]} %s::numeric)",
            [str(_as_decimal(expected))],
        )
    expr, params = property_sql(prop, alias)
    if isinstance(expected, bool):
        if operator == "eq":
            return f"COALESCE({expr} = %s::jsonb, FALSE)", [
                *params,
                "true" if expected else "false",
            ]
        if operator == "ne":
            return (
                f"COALESCE({expr} = %s::jsonb, FALSE)",
                [*params, "false" if expected else "true"],
            )
        return "FALSE", []
    if isinstance(expected, str):
        if operator in ("like", "not_like"):
            test = "> 0" if operator == "like" else "= 0"
            return _subst(
                "(CASE WHEN jsonb_typeof({v}) = 'string' THEN strpos({v} #>> '{}', %s) "
                f"{test} ELSE FALSE END)",
                expr,
                params,
                [expected],
            )
        return _subst(
            "(CASE WHEN jsonb_typeof({v}) = 'string' THEN "
            f'({{v}} #>> \'{{}}\') COLLATE "C" {SQL_OPS[operator]} %s COLLATE "C" '
            "ELSE FALSE END)",
            expr,
            params,
            [expected],
        )
    if operator in ("like", "not_like"):
        return "FALSE", []
    return _subst(
        f"(CASE WHEN jsonb_typeof({{v}}) = 'number' THEN ({{v}})::numeric {SQL_OPS[operator]} "
        "%s::numeric ELSE FALSE END)",
        expr,
        params,
        [str(_as_decimal(expected))],
    )


def compile_filter(filter_: dict, alias: str = "e") -> tuple[str, list]:
    """SQL boolean expression (never NULL) over the events table aliased `alias`."""
    clauses = filter_.get("clauses") or []
    if not clauses:
        return "TRUE", []
    parts, params = [], []
    for clause in clauses:
        sql, sub = (
            compile_filter(clause, alias) if "clauses" in clause else _clause_sql(clause, alias)
        )
        parts.append(sql)
        params.extend(sub)
    joiner = " AND " if filter_["conjunction"] == "and" else " OR "
    return "(" + joiner.join(parts) + ")", params

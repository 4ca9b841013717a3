"""Validation of the flat metadata objects Polar accepts on events and customers."""

import contextlib
import decimal

from core.errors import ErrorList
from core.strict_json import NonFiniteNumber

MAX_KEYS = 50
MAX_KEY_LENGTH = 40
MAX_STRING_LENGTH = 500
# Event numbers: |value| < 10^40 with at most 20 decimal places, the same rule in every event
# store, so that no sum of up to 10^15 of them can overflow a Decimal(76, 20) column.
NUMBER_LIMIT_DIGITS = 40
NUMBER_MAX_PLACES = 20
NUMBER_RANGE_MESSAGE = (
    f"Number out of range: the absolute value must be below 10^{NUMBER_LIMIT_DIGITS}, with at "
    f"most {NUMBER_MAX_PLACES} decimal places"
)
# Other metadata (customers, meters) is only stored and shown: any JSON number a client sends,
# within a sane exponent.
MAX_OTHER_EXPONENT = 1000

LLM_REQUIRED_INT = ("input_tokens", "output_tokens", "total_tokens")
LLM_OPTIONAL_INT = ("cached_input_tokens",)
LLM_REQUIRED_STR = ("vendor", "model")
LLM_OPTIONAL_STR = ("prompt", "response")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def describe(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, NonFiniteNumber):
        return f"non-finite number {value.text}"
    return type(value).__name__


def number_in_range(number: decimal.Decimal) -> bool:
    """The event number rule: finite, |number| < 10^40, at most 20 decimal places as written."""
    if not number.is_finite():
        return False
    if number and number.adjusted() >= NUMBER_LIMIT_DIGITS:
        return False
    return -min(number.as_tuple().exponent, 0) <= NUMBER_MAX_PLACES


def as_decimal(value: int | float | decimal.Decimal) -> decimal.Decimal:
    """A number as the decimal it was written as (a float by its shortest repr, not its binary
    expansion: 0.1 is 0.1)."""
    return decimal.Decimal(repr(value)) if isinstance(value, float) else decimal.Decimal(value)


def _in_range(number: decimal.Decimal, event: bool) -> bool:
    if event:
        return number_in_range(number)
    return not number or abs(number.adjusted()) <= MAX_OTHER_EXPONENT


def _range_message(event: bool) -> str:
    return (
        NUMBER_RANGE_MESSAGE
        if event
        else f"Number out of range (|exponent| ≤ {MAX_OTHER_EXPONENT})"
    )


def check_scalar(
    value, loc, errors: ErrorList, max_length: int = MAX_STRING_LENGTH, *, event: bool = False
) -> bool:
    """string (bounded), integer, finite number or boolean: the one scalar rule of the API. An
    event's numbers are also within the range every event store holds exactly (`event`)."""
    if isinstance(value, bool):
        return True
    if _is_int(value):
        if not _in_range(decimal.Decimal(value), event):
            errors.add(loc, _range_message(event), "number_range")
            return False
        return True
    if isinstance(value, str):
        if len(value) > max_length:
            errors.add(
                loc, f"String should have at most {max_length} characters", "string_too_long"
            )
            return False
        if "\x00" in value:
            errors.add(loc, "NUL characters are not allowed", "string_nul")
            return False
        return True
    if isinstance(value, decimal.Decimal | float):
        number = as_decimal(value)
        if not number.is_finite():
            errors.add(loc, "Number must be finite", "finite_number")
            return False
        if not _in_range(number, event):
            errors.add(loc, _range_message(event), "number_range")
            return False
        return True
    if isinstance(value, NonFiniteNumber):
        errors.add(loc, f"{value.text} is not allowed: numbers must be finite", "finite_number")
        return False
    errors.add(
        loc,
        f"Value must be a string, integer, finite number or boolean, not {describe(value)}",
        "metadata_value_type",
    )
    return False


def _validate_llm(value, loc, errors: ErrorList) -> dict | None:
    if not isinstance(value, dict):
        errors.add(loc, "_llm must be an object", "dict_type")
        return None
    start = len(errors.items)
    for key in value:
        if key not in LLM_REQUIRED_INT + LLM_OPTIONAL_INT + LLM_REQUIRED_STR + LLM_OPTIONAL_STR:
            errors.add([*loc, key], "Unknown key in _llm", "extra_forbidden")
    for key in LLM_REQUIRED_STR + LLM_REQUIRED_INT:
        if key not in value:
            errors.add([*loc, key], "Field required", "missing")
    for key in LLM_REQUIRED_STR + LLM_OPTIONAL_STR:
        if key in value and value[key] is not None:
            if not isinstance(value[key], str) or "\x00" in value[key]:
                errors.add([*loc, key], "Input should be a valid string without NUL", "string_type")
            elif key in LLM_REQUIRED_STR and len(value[key]) > MAX_STRING_LENGTH:
                errors.add([*loc, key], "String too long", "string_too_long")
        elif key in value and key in LLM_REQUIRED_STR:
            errors.add([*loc, key], "Input should be a valid string", "string_type")
    for key in LLM_REQUIRED_INT + LLM_OPTIONAL_INT:
        if key in value and not (key in LLM_OPTIONAL_INT and value[key] is None):
            if not _is_int(value[key]):
                errors.add([*loc, key], "Input should be a valid integer", "int_type")
            elif value[key] < 0:
                errors.add([*loc, key], "Input should be greater than or equal to 0", "ge")
    return dict(value) if len(errors.items) == start else None


def _validate_cost(value, loc, errors: ErrorList) -> dict | None:
    if not isinstance(value, dict):
        errors.add(loc, "_cost must be an object", "dict_type")
        return None
    start = len(errors.items)
    for key in value:
        if key not in ("amount", "currency"):
            errors.add([*loc, key], "Unknown key in _cost", "extra_forbidden")
    amount = value.get("amount")
    parsed = None
    if "amount" not in value:
        errors.add([*loc, "amount"], "Field required", "missing")
    elif isinstance(amount, bool) or not isinstance(amount, int | float | decimal.Decimal | str):
        errors.add([*loc, "amount"], "Amount must be a number of cents", "decimal_type")
    else:
        try:
            # a decimal string (Polar's own output form) counts as the number it spells
            number = (
                decimal.Decimal(amount.strip()) if isinstance(amount, str) else as_decimal(amount)
            )
        except decimal.InvalidOperation:
            errors.add([*loc, "amount"], "Amount must be a number of cents", "decimal_parsing")
        else:
            if not number.is_finite():
                errors.add([*loc, "amount"], "Amount must be finite", "finite_number")
            elif not number_in_range(number):
                errors.add([*loc, "amount"], NUMBER_RANGE_MESSAGE, "number_range")
            else:
                parsed = amount if _is_int(amount) else number
    currency = value.get("currency")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        errors.add([*loc, "currency"], "Currency must be a 3-letter ISO code", "currency")
    if len(errors.items) != start:
        return None
    # Stored as a JSON number (exact: the decimal as written), so that a `sum` meter over
    # `_cost.amount` adds costs up like any other number; Polar accepts the amount as a number
    # or a decimal string, and the event API renders it back as the string Polar returns.
    return {"amount": parsed, "currency": currency.lower()}


def validate_metadata(value, loc, errors: ErrorList, *, structured: bool = False) -> dict:
    """Validate and return a clean copy; problems go to `errors` with their exact location.
    `structured` (events): the `_llm` and `_cost` keys, and numbers in the event range."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add(loc, "Input should be a valid dictionary", "dict_type")
        return {}
    if len(value) > MAX_KEYS:
        errors.add(loc, f"Metadata can have at most {MAX_KEYS} keys", "too_long")
    clean = {}
    for key, item in value.items():
        key_loc = [*loc, key]
        if not 1 <= len(key) <= MAX_KEY_LENGTH or "\x00" in key:
            errors.add(
                key_loc,
                f"Key must be 1 to {MAX_KEY_LENGTH} characters, without NUL",
                "string_length",
            )
            continue
        if structured and key == "_llm":
            checked = _validate_llm(item, key_loc, errors)
        elif structured and key == "_cost":
            checked = _validate_cost(item, key_loc, errors)
        elif isinstance(item, dict | list):
            errors.add(
                key_loc,
                "Nested objects and arrays are not allowed in metadata"
                + (" (only _llm and _cost)" if structured else ""),
                "metadata_value_type",
            )
            continue
        else:
            checked = item if check_scalar(item, key_loc, errors, event=structured) else None
        if checked is not None:
            clean[key] = checked
    return clean


def json_scalar(value):
    """A validated scalar as the ORM's JSON can store it. The parser reads number literals with a
    fraction or exponent as exact decimals (integers stay int); such a value was a float in the
    client's JSON, and goes back as one (1.5e223 must not come back as a 224-digit integer)."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def metadata_value_candidates(raw: str) -> list:
    """A query-string value matches the string itself, and also the boolean or integer it spells."""
    candidates: list = [raw]
    if raw in ("true", "false"):
        candidates.append(raw == "true")
    with contextlib.suppress(ValueError):
        candidates.append(int(raw))
    return candidates

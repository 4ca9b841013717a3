"""JSON parsing that keeps numbers as written: the API's bodies and the metadata rule share it."""

import decimal
import json
import re

from core.errors import DomainError


class NonFiniteNumber:
    """Stands in for NaN/Infinity so validation can name the field instead of failing to parse."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


class LoneSurrogate(DomainError):
    """A `\\ud800`-style escape without its pair: valid JSON, but not Unicode text, so no column
    can store it (UTF-8 has no encoding for it). The API answers 422 naming the field."""

    type = "string_unicode"


# UTF-8 cannot carry a surrogate, so in a body that decoded one can only come from a \uD800–\uDFFF
# escape: bodies without one (nearly all) are not walked
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def loads(data: bytes | str):
    """Parse JSON with numbers as written: floats become Decimal (exact), NaN/Infinity a marker.
    LoneSurrogate when a string or key holds half of a UTF-16 surrogate pair."""
    value = json.loads(data, parse_float=decimal.Decimal, parse_constant=NonFiniteNumber)
    escape = _SURROGATE_ESCAPE_BYTES if isinstance(data, bytes | bytearray) else _SURROGATE_ESCAPE
    if escape.search(data):
        check_text(value)
    return value


def check_text(value) -> None:
    """LoneSurrogate naming the first string (or key) in `value` that is not valid Unicode."""
    stack = [((), value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                _refuse(loc)
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    _refuse((*loc, key))
                stack.append(((*loc, key), child))
        elif isinstance(item, list):
            stack.extend(((*loc, index), child) for index, child in enumerate(item))


def _printable(part):
    # the error names the field; a key holding the surrogate is shown escaped, as it was sent
    return part.encode("utf-8", "backslashreplace").decode() if isinstance(part, str) else part


def _refuse(loc) -> None:
    raise LoneSurrogate(
        "Invalid Unicode: a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape) can't be "
        "stored",
        field=tuple(_printable(part) for part in loc),
    )

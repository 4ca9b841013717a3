"""JSON parsing that keeps numbers as written: the API's bodies and the metadata rule share it."""

import decimal
import json


class NonFiniteNumber:
    """Stands in for NaN/Infinity so validation can name the field instead of failing to parse."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def loads(data: bytes | str):
    """Parse JSON with numbers as written: floats become Decimal (exact), NaN/Infinity a marker."""
    return json.loads(data, parse_float=decimal.Decimal, parse_constant=NonFiniteNumber)

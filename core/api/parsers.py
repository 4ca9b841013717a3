"""Request-body parsing that keeps exact decimals and never lets bad JSON become a 500."""

import decimal
import json

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class NonFiniteNumber:
    """Stands in for NaN/Infinity so validation can name the field instead of failing to parse."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def loads(data: bytes | str):
    """Parse JSON with numbers as written: floats become Decimal (exact), NaN/Infinity a marker."""
    return json.loads(data, parse_float=decimal.Decimal, parse_constant=NonFiniteNumber)


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            raw = stream.read() if stream is not None else b""
            return loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"Malformed JSON: {exc}")
        except RecursionError:
            raise ParseError("Malformed JSON: nested too deeply")

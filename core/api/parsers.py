"""Request-body parsing that keeps exact decimals and never lets bad JSON become a 500."""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from core.strict_json import loads


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            raw = stream.read() if stream is not None else b""
            return loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"Malformed JSON: {exc}")
        except RecursionError:
            raise ParseError("Malformed JSON: nested too deeply")

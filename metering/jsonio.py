"""JSON on the ingest path through msgspec (parsing a 1,000-event body and writing its metadata
several times faster than the standard library and simplejson), with the exact-number rule of
`core.strict_json`: a number with a fraction or exponent becomes the Decimal it spells.

Anything msgspec refuses — NaN/Infinity, a lone surrogate escape, invalid UTF-8, malformed or
too deeply nested input, an integer beyond its range — is parsed again by `core.strict_json`,
so every result and every error a client can see stays the one that parser gives."""

import decimal

import msgspec

from core import strict_json

_decoder = msgspec.json.Decoder(float_hook=decimal.Decimal)
# Decimals as JSON numbers exactly as written (never a float, never a string)
_encoder = msgspec.json.Encoder(decimal_format="number")


def loads(data: bytes | str):
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return strict_json.loads(data)


def dumps(value) -> str:
    return _encoder.encode(value).decode()

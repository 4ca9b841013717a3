"""`Idempotency-Key` on endpoints that act on money (Stripe's and pretix's header): a client that
retries after a timeout sends the same key, and gets the first answer instead of a second purchase.

- The first request with a key claims it: a `core.IdempotencyKey` row inserted in the same
  transaction as the endpoint's work, holding a hash of the request (method, path, body) and the
  answer (status and body) once there is one. A request refused with an error rolls the claim
  back with everything else: nothing was done, so a retry runs again.
- The same key again within `TTL` with the same request: the stored answer, replayed (same status,
  same body, header `Idempotent-Replayed: true`); nothing runs.
- The same key with another request: 422 at `["header", "Idempotency-Key"]` (the IETF draft's
  status for a key reused with a different payload: the request is well formed but can't be
  processed with this key).
- Concurrent requests with one key: the second one's insert waits on the unique key until the
  first one's transaction ends, then replays its answer (or, if it failed, runs itself). No
  request is refused for being concurrent.
- After `TTL` a key is free again: reusing it runs the request anew.

An endpoint adopts it by running its work through `run_once` with its own endpoint name; keys are
per organization and endpoint."""

import hashlib
import json

from django.db import transaction
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from core import idempotency
from core.api.errors import PolarValidationError
from core.idempotency import TTL

HEADER = "Idempotency-Key"
LOC = ["header", HEADER]
MAX_LENGTH = 255


def key_of(request) -> str | None:
    """The request's key, or None without the header; 422 for one that is empty, too long or not
    printable ASCII."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_LENGTH or not all(" " <= c <= "~" for c in key):
        raise PolarValidationError.single(
            LOC, f"A key is 1 to {MAX_LENGTH} printable ASCII characters", "value_error"
        )
    return key


def request_hash(request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), cls=JSONEncoder)
    text = f"{request.method} {request.path}\n{body}"
    return hashlib.sha256(text.encode()).hexdigest()


def run_once(request, *, organization_id, endpoint: str, act) -> Response:
    """`act()` (returning the endpoint's Response), once per key: see the module's docstring.
    Without the header, `act()` as it is."""
    key = key_of(request)
    if key is None:
        return act()
    fingerprint = request_hash(request)
    with transaction.atomic():
        claimed = idempotency.claim(
            organization_id=organization_id, endpoint=endpoint, key=key, request_hash=fingerprint
        )
        if claimed is None:
            return _replay(organization_id, endpoint, key, fingerprint)
        response = act()
        idempotency.answer(
            claimed,
            status=response.status_code,
            body=json.loads(json.dumps(response.data, cls=JSONEncoder)),
        )
        return response


def _replay(organization_id, endpoint: str, key: str, fingerprint: str) -> Response:
    stored = idempotency.answered(organization_id=organization_id, endpoint=endpoint, key=key)
    if stored.request_hash != fingerprint:
        raise PolarValidationError.single(
            LOC,
            "This key was used with another request in the last "
            f"{int(TTL.total_seconds() // 3600)} hours; use a new key for a new request",
            "value_error",
        )
    return Response(
        stored.response_body,
        status=stored.response_status,
        headers={"Idempotent-Replayed": "true"},
    )

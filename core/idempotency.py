"""Idempotency keys (`core.IdempotencyKey`): an operation that acts on money runs once per key.
The API's `Idempotency-Key` header (core.api.idempotency) and the portal's purchase forms (a key
rendered into the form, so a double click or a resubmitted page buys once) both claim keys here.

`claim` inserts the key's row in the caller's transaction: the first caller gets its id and acts
(then `answer` stores what it answered); a concurrent caller's insert waits on the unique key
until the first one's transaction ends and gets None — the key is taken, read the answer with
`answered`. A caller whose work fails rolls its claim back with the rest. A key older than `TTL`
is free again."""

from datetime import timedelta

from django.db import connection
from django.utils import timezone

from core.models import IdempotencyKey

TTL = timedelta(hours=24)

# Claims the key, or takes over one past its TTL; no row returned: a live claim holds it (the
# insert waited for the transaction that made it, when that one was still running).
CLAIM_SQL = """
INSERT INTO core_idempotencykey AS k (organization_id, endpoint, key, request_hash, created_at)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (organization_id, endpoint, key) DO UPDATE
   SET request_hash = EXCLUDED.request_hash, created_at = EXCLUDED.created_at,
       response_status = NULL, response_body = NULL
 WHERE k.created_at <= %s
RETURNING k.id
"""


def claim(*, organization_id, endpoint: str, key: str, request_hash: str):
    """The claimed row's id, or None when the key is taken (call inside a transaction)."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_SQL, [organization_id, endpoint, key, request_hash, now, now - TTL])
        claimed = cursor.fetchone()
    return claimed[0] if claimed else None


def answer(claimed_id, *, status: int, body) -> None:
    IdempotencyKey.objects.filter(pk=claimed_id).update(response_status=status, response_body=body)


def answered(*, organization_id, endpoint: str, key: str) -> IdempotencyKey:
    return IdempotencyKey.objects.get(organization_id=organization_id, endpoint=endpoint, key=key)

"""What customers tells the apps above it, which register here (they may import customers; the
reverse would be a cycle).

- `external_id_assigned`: a signal sent inside the transaction that gives a customer its
  external id (on create, or on the update of a customer that had none). Receivers run in that
  transaction; metering links the events sent earlier under that id. On update it is sent
  before the customer's row is rewritten, so that receivers' row locks come first, in the
  global lock order the ingest path uses.
"""

from django.dispatch import Signal

external_id_assigned = Signal()  # sender=Customer, customer=Customer

"""What payments tells the apps above it (webhooks registers receivers in its `ready`). Each
signal is sent inside the transaction that makes the change, so a rolled-back change sends
nothing that is delivered.

- `refund_created(refund)` — a refund was recorded (`pending`, its amount reserved).
- `refund_updated(refund)` — a refund was settled: `succeeded` (with its credit note) or
  `failed`.
"""

from django.dispatch import Signal

refund_created = Signal()
refund_updated = Signal()

"""What billing tells other code that reacts without billing knowing it: the apps above it
(webhooks) connect receivers in their `AppConfig.ready`, and billing's own document delivery
listens to `invoice_finalized`.

Every signal is sent *inside* the transaction that makes the change, so a receiver that writes
(e.g. an outbox row) commits or rolls back together with the change itself.

- `subscription_created(subscription)` — a subscription was started.
- `subscription_changed(subscription, change)` — `change` is one of `SUBSCRIPTION_CHANGES`:
  `canceled` (will end at period end), `uncanceled` (that was undone), `cycled` (a new period
  began), `revoked` (ended now, or ended at the end of a canceled period), `updated` (any other
  change, e.g. the discount), `past_due` (a payment failed), `active` (it was recovered).
- `invoice_finalized(invoice)` — an invoice was issued (`open`, numbered); receivers that work
  outside the database enqueue it on commit, so a rolled-back close sends nothing.
- `invoice_status_changed(invoice, previous)` — paid, void or uncollectible.
- `credit_note_issued(credit_note)` — a credit note was issued (refund or customer balance).
- `invoice_refunded(invoice)` — money was paid back on a paid invoice (its refunded amounts
  changed).
"""

from django.dispatch import Signal

SUBSCRIPTION_CHANGES = (
    "updated",
    "canceled",
    "uncanceled",
    "cycled",
    "revoked",
    "past_due",
    "active",
)

subscription_created = Signal()
subscription_changed = Signal()
invoice_finalized = Signal()
invoice_status_changed = Signal()
credit_note_issued = Signal()
invoice_refunded = Signal()

"""Billing events other code reacts to without billing knowing it (documents, webhooks)."""

from django.dispatch import Signal

# sent inside the finalizing transaction with `invoice`; receivers that do work outside the
# database enqueue it on commit, so a rolled-back close sends nothing
invoice_finalized = Signal()

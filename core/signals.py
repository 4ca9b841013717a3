"""Signals through which a lower layer lets higher ones join in without importing them."""

from django.dispatch import Signal

# Sent by `seed_demo` once the demo organization, customers, events and meters exist
# (kwargs: organization, customers). Receivers return a one-line summary for the output.
demo_seeded = Signal()

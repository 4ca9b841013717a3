"""Extension points the apps above metering register into (they may import metering; the reverse
would be a cycle).

- Guards, `guard(meter) -> list[str]`: reasons that forbid redefining or archiving a meter
  (billing: a meter on a finalized invoice, or used by a price or credit benefit).
- Period numbers, `provider(pairs) -> {(customer_id, meter_id): (consumed, credited)}` for a list
  of `(customer_id, meter)` pairs: where a subscription prices the meter, the customer meter
  shows the subscription's current billing period (its usage plus late usage carried into it)
  instead of all time, so the customer meter, the subscription and the upcoming invoice agree.
  One call for many pairs keeps lists of customer meters at a constant number of queries.
- `events_ingested` (signal; organization, event_ids, batch): sent inside an ingest's
  transaction once its events are written; `batch.customer_ids` reads the events' customers once
  for all receivers (webhooks evaluates usage alerts after the commit)."""

from collections.abc import Callable

from django.dispatch import Signal

from metering.models import Meter

Guard = Callable[[Meter], list[str]]

definition_change_guards: list[Guard] = []  # filter/aggregation changes
archive_guards: list[Guard] = []


def register_definition_change_guard(guard: Guard) -> None:
    if guard not in definition_change_guards:
        definition_change_guards.append(guard)


def register_archive_guard(guard: Guard) -> None:
    if guard not in archive_guards:
        archive_guards.append(guard)


PeriodNumbers = Callable[[list[tuple]], dict]

period_number_providers: list[PeriodNumbers] = []


def register_period_numbers(provider: PeriodNumbers) -> None:
    if provider not in period_number_providers:
        period_number_providers.append(provider)


def period_numbers(pairs: list[tuple]) -> dict:
    found: dict = {}
    for provider in period_number_providers:
        found.update(provider(pairs))
    return found


events_ingested = Signal()

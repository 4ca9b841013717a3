"""Extension points the apps above metering register into (they may import metering; the reverse
would be a cycle). Each guard is `guard(meter) -> list[str]` of reasons that forbid the change;
billing registers one for meters used by prices or credit benefits."""

from collections.abc import Callable

from metering.models import Meter

Guard = Callable[[Meter], list[str]]

definition_change_guards: list[Guard] = []  # filter/aggregation changes
archive_guards: list[Guard] = []


def register_definition_change_guard(guard: Guard) -> None:
    definition_change_guards.append(guard)


def register_archive_guard(guard: Guard) -> None:
    archive_guards.append(guard)

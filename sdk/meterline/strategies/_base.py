"""What every strategy shares: who is billed, under which event name, and a safe emit."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from meterline._events import customer_fields

logger = logging.getLogger("meterline")


class Sink(Protocol):
    def ingest(self, event: Mapping[str, Any], *, strategy: str = "manual") -> str | None: ...


@dataclass
class Emitter:
    """Builds and queues one event per measured occurrence; never raises."""

    sink: Sink
    strategy: str
    name: str
    customer: dict[str, str]
    metadata: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None

    @classmethod
    def make(
        cls,
        sink: Sink,
        strategy: str,
        *,
        name: str,
        customer: str | None,
        customer_id: str | None,
        metadata: Mapping[str, Any] | None,
        parent_id: str | None = None,
    ) -> Emitter:
        if not name:
            raise ValueError("an event name is required")
        return cls(
            sink,
            strategy,
            name,
            customer_fields(customer, customer_id),
            dict(metadata or {}),
            parent_id,
        )

    def emit(self, measured: Mapping[str, Any]) -> str | None:
        try:
            event: dict[str, Any] = {
                "name": self.name,
                **self.customer,
                "metadata": {**self.metadata, **measured, "strategy": self.strategy},
            }
            if self.parent_id:
                event["parent_id"] = self.parent_id
            return self.sink.ingest(event, strategy=self.strategy)
        except Exception:
            logger.exception("meterline: could not emit a %s event", self.strategy)
            return None

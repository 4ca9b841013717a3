"""Meterline Python SDK: background event ingestion and metering strategies."""

from meterline._transport import IngestError, IngestStats, RetryPolicy
from meterline.client import AsyncMeterline, Meterline, MeterlineAPIError
from meterline.strategies import DeltaTimer, LLMUsage, extract_usage

__all__ = [
    "AsyncMeterline",
    "DeltaTimer",
    "IngestError",
    "IngestStats",
    "LLMUsage",
    "Meterline",
    "MeterlineAPIError",
    "RetryPolicy",
    "extract_usage",
]
__version__ = "0.1.0"

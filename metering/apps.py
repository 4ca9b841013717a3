from django.apps import AppConfig


class MeteringConfig(AppConfig):
    name = "metering"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # registrations: the receiver that links a new customer's earlier events, and the
        # customer state's `active_meters` section
        from django.conf import settings

        from core.schedules import SCHEDULES
        from metering import linking  # noqa: F401
        from metering.api import state  # noqa: F401

        SCHEDULES["compact meter rollups"] = (
            "metering.tasks.compact_rollups",
            settings.ROLLUP_COMPACTION_INTERVAL_SECONDS,
        )
        if settings.EVENT_STORE == "clickhouse":
            SCHEDULES["relay event batches"] = ("metering.tasks.relay_event_batches", 10)

from django.db import models


class RateCounter(models.Model):
    """One rate-limit window's request count (see core.ratecounters)."""

    key = models.CharField(max_length=250, primary_key=True)
    count = models.BigIntegerField()
    expires = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"

from rest_framework import serializers

from core.api.serializers import StrictSerializer
from webhooks.models import ALL_EVENT_TYPES


class EndpointWriteSerializer(StrictSerializer):
    url = serializers.URLField(max_length=2048)
    name = serializers.CharField(max_length=256, required=False, allow_null=True, allow_blank=True)
    api_version = serializers.ChoiceField(choices=["2026-10"], required=False, allow_null=True)
    format = serializers.ChoiceField(choices=["raw"])
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=ALL_EVENT_TYPES), max_length=64
    )


class EndpointUpdateSerializer(EndpointWriteSerializer):
    enabled = serializers.BooleanField(required=False, allow_null=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, partial=True, **kwargs)
        for field in ("url", "format", "events"):
            self.fields[field].allow_null = True

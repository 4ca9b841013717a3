"""The "Correct usage" form of an event's admin page: what staff type, turned into the one
correction `metering.corrections.correct_events` takes. The service validates (reason, name,
metadata rules); the form only parses the metadata's JSON, so a syntax error is named on the
field before anything is sent."""

from django import forms

from core.errors import DomainError
from metering import jsonio
from metering.corrections import MAX_REASON
from metering.ingest import MAX_NAME
from metering.models import CorrectionAction


class EventCorrectionForm(forms.Form):
    action = forms.ChoiceField(
        choices=CorrectionAction.choices,
        widget=forms.RadioSelect,
        initial=CorrectionAction.CANCEL,
        help_text="Cancel: the event leaves every meter. Replace: a new event with the same "
        "timestamp and customer takes its place.",
    )
    reason = forms.CharField(
        max_length=MAX_REASON,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Kept with the correction and in the audit log.",
    )
    name = forms.CharField(
        required=False,
        max_length=MAX_NAME,
        strip=False,  # the service refuses a blank name; stripping here would hide that
        help_text="Replace only: the replacement's name.",
    )
    metadata = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 10, "cols": 60, "class": "ml-mono"}),
        help_text="Replace only: the replacement's metadata, a JSON object.",
    )

    def __init__(self, *args, event=None, **kwargs):
        if event is not None:
            kwargs.setdefault(
                "initial",
                {"name": event.name, "metadata": _pretty(event.metadata or {})},
            )
        super().__init__(*args, **kwargs)

    def clean_metadata(self):
        text = self.cleaned_data["metadata"]
        if self.data.get("action") != CorrectionAction.REPLACE:
            return None
        if not text.strip():
            return {}
        try:
            # numbers exactly as typed (Decimal), as the API reads them
            return jsonio.loads(text)
        except (ValueError, RecursionError, DomainError) as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from exc

    def correction(self, event_id) -> dict:
        """The service's input for this one event (call after is_valid())."""
        data = self.cleaned_data
        item = {"event_id": str(event_id), "action": data["action"], "reason": data["reason"]}
        if data["action"] == CorrectionAction.REPLACE:
            item["name"] = data["name"]
            item["metadata"] = data["metadata"]
        return item


def _pretty(metadata: dict) -> str:
    """One key a line, numbers exact (jsonio writes a Decimal as the number it is)."""
    if not metadata:
        return "{}"
    lines = [f"  {jsonio.dumps(key)}: {jsonio.dumps(value)}" for key, value in metadata.items()]
    return "{\n" + ",\n".join(lines) + "\n}"

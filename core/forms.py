"""Form fields shared by the apps' admin pages."""

from django import forms


class OptionalJSONField(forms.JSONField):
    """A JSON field whose empty value shows as an empty box, not the literal `null`.

    Django's JSONField form renders a stored NULL as the JSON text `null`; for optional data
    (a billing address nobody entered) that reads as a value. An empty box saves NULL again.
    """

    def prepare_value(self, value):
        if value is None:
            return ""
        return super().prepare_value(value)

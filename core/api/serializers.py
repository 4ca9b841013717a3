"""Request serializers that are the one source of truth for a body's shape: they validate (with
Polar's strictness: no type coercion, unknown fields refused) and document the body in OpenAPI.

Errors are DRF errors whose nesting mirrors the location and whose codes are Polar's error types,
so the exception handler renders `{"loc": ["body", …], "msg", "type"}` items, every problem of the
body at once."""

from collections.abc import Callable

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from core.errors import ErrorList


def nested_detail(items: list[dict]):
    """Domain error items with locations relative to a field → a DRF error detail whose nesting
    follows the locations (codes keep the items' types)."""
    root: dict = {}
    for item in items:
        node = root
        for part in item["loc"]:
            node = node.setdefault(part, {})
        node.setdefault("non_field_errors", []).append(ErrorDetail(item["msg"], code=item["type"]))
    return root.get("non_field_errors") if list(root) == ["non_field_errors"] else root


class ValidatedJSONField(serializers.JSONField):
    """A JSON value checked by a domain validator `validate(raw, loc, errors) -> clean`, the same
    function the admin and the services use."""

    validator: Callable | None = None

    def __init__(self, *args, validator: Callable | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if validator is not None:
            self.validator = validator

    def to_internal_value(self, data):
        errors = ErrorList()
        clean = self.validator(data, [], errors)
        if errors:
            raise serializers.ValidationError(nested_detail(errors.items))
        return clean


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "Input should be a valid string"}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid": "Input should be a valid integer"}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Input should be a valid boolean"}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictSerializer(serializers.Serializer):
    """Rejects unknown fields (a typo must not silently drop data) and `organization_id`
    (tokens are organization-scoped); `ignored_fields` are accepted and dropped."""

    ignored_fields: tuple[str, ...] = ()

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        errors: dict = {}
        if data.get("organization_id") is not None:
            errors["organization_id"] = [
                "Setting organization_id is disallowed when using an organization token."
            ]
        unknown = set(data) - set(self.fields) - set(self.ignored_fields) - {"organization_id"}
        for key in sorted(unknown):
            errors[key] = [ErrorDetail("Extra inputs are not permitted", code="extra_forbidden")]
        try:
            values = super().to_internal_value(data)
        except serializers.ValidationError as exc:  # report these with the fields' problems
            errors = {**exc.detail, **errors}
        if errors:
            raise serializers.ValidationError(errors)
        return values

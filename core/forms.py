"""Form fields shared by the apps' admin pages."""

from decimal import Decimal

from django import forms
from djmoney.forms import MoneyField
from djmoney.money import Money

from core.display import money_input, plain


class OptionalJSONField(forms.JSONField):
    """A JSON field whose empty value shows as an empty box, not the literal `null`.

    Django's JSONField form renders a stored NULL as the JSON text `null`; for optional data
    (a billing address nobody entered) that reads as a value. An empty box saves NULL again.
    """

    def prepare_value(self, value):
        if value is None:
            return ""
        return super().prepare_value(value)


class SignificantDecimalField(forms.DecimalField):
    """A stored decimal shown by its significant digits: a rate kept with 12 places reads
    "0.2", not "0.200000000000". The same number: an unchanged form changes nothing."""

    def prepare_value(self, value):
        return plain(value) if isinstance(value, Decimal) else value


class CurrencyMoneyField(MoneyField):
    """django-money's field with the amount written to its currency's places ("29.00 USD",
    "1000 JPY", not "1000.00")."""

    def prepare_value(self, value):
        if isinstance(value, Money):
            currency = str(value.currency)
            return [money_input(value.amount, currency), currency]
        return value

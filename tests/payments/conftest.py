"""Payments fixtures: Stripe settings pointing at the session's localstripe, and tasks run at
once (the collection task after an invoice is finalized, the emails)."""

import pytest

from tests import localstripe as ls


@pytest.fixture
def stripe_settings(settings, localstripe):
    settings.STRIPE_SECRET_KEY = ls.SECRET_KEY
    settings.STRIPE_PUBLISHABLE_KEY = ls.PUBLISHABLE_KEY
    settings.STRIPE_WEBHOOK_SECRET = ls.WEBHOOK_SECRET
    settings.STRIPE_API_BASE = localstripe.url
    settings.PAYMENTS_COLLECTION = "automatic"
    settings.DUNNING_SCHEDULE = [2, 5, 7, 7]
    settings.DUNNING_FINAL_ACTION = "cancel"
    settings.PAYMENTS_RECONCILE_AFTER = 300
    return localstripe


def stripe_env(localstripe, api_base: str | None = None) -> dict[str, str]:
    """The same settings for a subprocess."""
    return {
        "STRIPE_SECRET_KEY": ls.SECRET_KEY,
        "STRIPE_PUBLISHABLE_KEY": ls.PUBLISHABLE_KEY,
        "STRIPE_WEBHOOK_SECRET": ls.WEBHOOK_SECRET,
        "STRIPE_API_BASE": api_base or localstripe.url,
        "PAYMENTS_COLLECTION": "automatic",
    }


@pytest.fixture
def product(polar, stripe_settings, eager_tasks):
    """The scenario's plan, created through polar-sdk: $29 a month and 0.5 ¢ an API call."""
    meter = polar.meters.create(
        name="API calls",
        filter={
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "api.call"}],
        },
        aggregation={"func": "count"},
    )
    return polar.products.create(
        name="Pro",
        recurring_interval="month",
        prices=[
            {"amount_type": "fixed", "price_amount": 2900},
            {"amount_type": "metered_unit", "meter_id": meter.id, "unit_amount": "0.5"},
        ],
    )


@pytest.fixture
def eager_tasks():
    from config.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous

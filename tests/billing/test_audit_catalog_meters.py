"""A staff user's edits of a meter (its filter, aggregation, name) and of a product's prices in the
admin leave audit entries naming the user, with each changed value before and after; the same
services called with an API token, or by code outside a staff request, leave none."""

import json
import re

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from billing import catalog, subscriptions
from billing.models import Price
from metering import meters
from metering.models import Meter
from tests.billing.conftest import fixed_price, named, unit_price
from tests.billing.test_admin_amounts import form_values
from tests.security.test_audit_log import assert_by_ops, entries_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops():
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-123456")
    client = Client(REMOTE_ADDR="203.0.113.5")
    client.force_login(user)
    client.user = user
    return client


def meter_form(meter, **overrides):
    data = {
        "name": meter.name,
        "filter": json.dumps(meter.filter),
        "aggregation_func": meter.aggregation["func"],
        "aggregation_property": meter.aggregation.get("property", ""),
        "unit": "scalar",
        "custom_label": "",
        "custom_multiplier": "",
    }
    return {**data, **overrides}


def test_a_meter_edit_in_the_admin_names_the_staff_user(ops, org, api):
    meter = meters.create_meter(
        organization=org, name="Calls", filter=named("api.call"), aggregation={"func": "count"}
    )
    url = reverse("admin:metering_meter_change", args=[meter.pk])
    data = meter_form(
        meter,
        name="LLM tokens",
        filter=json.dumps(named("llm")),
        aggregation_func="sum",
        aggregation_property="tokens",
    )
    response = ops.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    (entry,) = entries_for(meter)
    assert_by_ops(entry, ops, "meter change")
    assert entry.action == LogEntry.Action.UPDATE
    clause = (
        '{"clauses": [{"operator": "eq", "property": "name", "value": "%s"}], "conjunction": "and"}'
    )
    assert entry.changes == {
        "name": ["Calls", "LLM tokens"],
        "filter": [clause % "api.call", clause % "llm"],
        "aggregation": ['{"func": "count"}', '{"func": "sum", "property": "tokens"}'],
    }

    # an unchanged save writes nothing; the API's token and code outside a request neither
    assert ops.post(url, meter_form(Meter.objects.get(pk=meter.pk))).status_code == 302
    patched = api.patch(f"/v1/meters/{meter.pk}", {"name": "Tokens"}, format="json")
    assert patched.status_code == 200, patched.content
    meters.update_meter(meter=meter, filter=named("llm.completion"))
    assert len(entries_for(meter)) == 1
    assert LogEntry.objects.count() == 1


def test_price_edits_in_the_admin_record_terms_before_and_after(
    ops, org, make_product, api_calls, tokens, customer
):
    product = make_product(
        fixed_price(2900), unit_price(api_calls, "0.2"), unit_price(tokens, 1, cap=5000), name="Pro"
    )
    fixed = Price.objects.get(product=product, amount_type="fixed")
    calls = Price.objects.get(product=product, meter=api_calls)
    per_token = Price.objects.get(product=product, meter=tokens)
    url = reverse("admin:billing_product_change", args=[product.pk])

    def edit(price, field, value):
        values = form_values(ops.get(url).content.decode())
        (row,) = [
            k.split("-")[1] for k, v in values.items() if k.endswith("-id") and v == [str(price.pk)]
        ]
        values[f"prices-{row}-{field}"] = [value]
        response = ops.post(url, values)
        assert response.status_code == 302, re.findall(
            r"errorlist.{0,300}", response.content.decode()
        )

    # not sold yet: edited in place, or deleted
    edit(calls, "unit_amount", "0.5")
    (entry,) = entries_for(calls)
    assert_by_ops(entry, ops, "price change")
    assert entry.changes == {"unit_amount": ["0.2", "0.5"]}
    edit(per_token, "DELETE", "on")
    assert not Price.objects.filter(pk=per_token.pk).exists()
    (entry,) = entries_for(per_token)
    assert_by_ops(entry, ops, "price removal")
    assert entry.changes == {
        "status": ["live", "deleted"],
        "amount_type": ["metered_unit", None],
        "meter": ["Tokens", None],
        "unit_amount": ["1", None],
        "cap_amount": ["5000", None],
    }

    # a new price: the entry creates it
    values = form_values(ops.get(url).content.decode())
    row = int(values["prices-TOTAL_FORMS"][0])
    values["prices-TOTAL_FORMS"] = [str(row + 1)]
    values |= {
        f"prices-{row}-amount_type": ["metered_unit"],
        f"prices-{row}-meter": [str(tokens.pk)],
        f"prices-{row}-unit_amount": ["0.25"],
        f"prices-{row}-price_amount_1": ["USD"],
        f"prices-{row}-cap_amount_1": ["USD"],
    }
    response = ops.post(url, values)
    assert response.status_code == 302, re.findall(r"errorlist.{0,300}", response.content.decode())
    added = Price.objects.get(product=product, meter=tokens)
    (entry,) = entries_for(added)
    assert_by_ops(entry, ops, "price added")
    assert entry.action == LogEntry.Action.CREATE
    assert entry.changes == {
        "amount_type": [None, "metered_unit"],
        "meter": [None, "Tokens"],
        "unit_amount": [None, "0.25"],
    }

    # sold: the fixed price is archived and replaced by one with the new amount
    subscriptions.create_subscription(customer=customer, product=product)
    edit(fixed, "price_amount_0", "39.00")
    replacement = Price.objects.get(product=product, amount_type="fixed", is_archived=False)
    assert replacement.pk != fixed.pk
    (entry,) = entries_for(fixed)
    assert_by_ops(entry, ops, "price change")
    assert entry.changes == {
        "price_amount": ["2900", "3900"],
        "is_archived": ["False", "True"],
        "replaced_by": [None, str(replacement.pk)],
    }
    assert LogEntry.objects.count() == 4


def test_price_edits_outside_a_staff_request_leave_no_entry(ops, org, make_product, api_calls):
    product = make_product(fixed_price(2900), name="Pro")
    assert ops.get(reverse("admin:billing_product_changelist")).status_code == 200
    (fixed,) = product.prices.all()
    catalog.change_prices(
        product=product,
        added=[unit_price(api_calls, 1)],
        changed={fixed: fixed_price(3900)},
    )
    assert Price.objects.filter(product=product).count() == 2
    assert not LogEntry.objects.exists()

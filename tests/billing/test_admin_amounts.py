"""Numbers in the catalog's admin forms are shown as staff write them (a rate by its significant
digits, an amount to its currency's places) and an unchanged form saves the exact same values."""

import re
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from djmoney.money import Money

from billing import catalog
from billing.catalog import PriceSpec
from billing.models import Discount, Price, TaxRate
from core.roles import SUPPORT
from tests.billing.conftest import fixed_price, unit_price

pytestmark = pytest.mark.django_db


class FormValues(HTMLParser):
    """What a browser posts for the page's form: inputs, checked boxes, selected options and
    textareas as rendered (no submit buttons)."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, list[str]] = {}
        self._select = self._textarea = None
        self._text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.values.setdefault(name, []).append(a.get("value") or "")
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            self.values.setdefault(self._select, []).append(a.get("value") or "")
        elif tag == "textarea" and name:
            self._textarea, self._text = name, []

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea" and self._textarea:
            self.values[self._textarea] = ["".join(self._text).lstrip("\n")]
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self._text.append(data)


def form_values(html: str) -> dict[str, list[str]]:
    """The form's values, without the inline's blank template row (`__prefix__`)."""
    parser = FormValues()
    parser.feed(html)
    return {k: v for k, v in parser.values.items() if "__prefix__" not in k}


@pytest.fixture
def root():
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    return client


def test_price_rates_show_their_digits_and_an_unchanged_save_keeps_them(
    org, root, make_product, api_calls
):
    product = make_product(
        fixed_price(2900),
        unit_price(api_calls, "0.2"),
        name="Pro",
        spend_threshold=Money("50.00", "USD"),
    )
    before = list(Price.objects.filter(product=product).values_list("pk", flat=True))
    metered = Price.objects.get(product=product, amount_type="metered_unit")
    assert str(metered.unit_amount) == "0.200000000000"  # as stored: 12 places

    url = reverse("admin:billing_product_change", args=[product.pk])
    page = root.get(url).content.decode()
    values = form_values(page)
    rates = sorted(v[0] for k, v in values.items() if k.endswith("-unit_amount"))
    assert rates == ["", "0.2"]  # the fixed price has none
    amounts = sorted(v[0] for k, v in values.items() if k.endswith("-price_amount_0"))
    assert amounts == ["", "29.00"]
    assert values["spend_threshold_0"] == ["50.00"]
    assert "0.200000000000" not in page
    assert "0.002 USD" in page  # the per-unit column: 0.2 cents

    response = root.post(url, {k: v for k, v in values.items()})
    assert response.status_code == 302, response.content.decode()[:3000]
    # nothing was replaced (a price edited in use is archived and a new one made)
    after = Price.objects.filter(product=product, is_archived=False).values_list("pk", flat=True)
    assert sorted(after) == sorted(before) and Price.objects.filter(product=product).count() == 2
    metered.refresh_from_db()
    assert metered.unit_amount == Decimal("0.2") and not metered.is_archived
    product.refresh_from_db()
    assert product.spend_threshold == Money("50.00", "USD")


def test_half_a_cent_is_saved_exactly_from_the_form(org, root, make_product, api_calls):
    product = make_product(unit_price(api_calls, "0.5"), name="Calls")
    url = reverse("admin:billing_product_change", args=[product.pk])
    values = form_values(root.get(url).content.decode())
    (name,) = [k for k in values if k.endswith("-unit_amount")]
    assert values[name] == ["0.5"]
    values[name] = ["0.005"]
    response = root.post(url, values)
    assert response.status_code == 302, response.content.decode()[:3000]
    live = Price.objects.get(product=product, is_archived=False)
    assert live.unit_amount == Decimal("0.005")
    page = root.get(url).content.decode()
    assert form_values(page)[name] == ["0.005"]
    assert "0.00005 USD" in page


def test_support_staff_read_the_rate_by_its_digits(org, make_product, api_calls):
    product = make_product(unit_price(api_calls, "0.5"), name="Calls")
    user = get_user_model().objects.create_user("sue", "sue@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name=SUPPORT))
    client = Client()
    client.force_login(user)
    page = client.get(reverse("admin:billing_product_change", args=[product.pk])).content.decode()
    assert "0.500000000000" not in page
    cells = re.findall(r'<td class="field-unit_amount_cents">\s*<p>([^<]*)</p>', page)
    assert cells == ["0.5"]
    assert "0.005 USD" in page


def test_yen_amounts_have_no_fraction_and_rates_and_discounts_read_as_percent(
    org, root, make_product
):
    product = catalog.create_product(
        organization=org,
        name="Yen plan",
        currency="JPY",
        recurring_interval="month",
        prices=[PriceSpec(amount_type="fixed", price_amount=1000)],
    )
    values = form_values(
        root.get(reverse("admin:billing_product_change", args=[product.pk])).content.decode()
    )
    assert [v for k, v in values.items() if k.endswith("-price_amount_0")] == [["1000"]]

    TaxRate.objects.create(organization=org, name="NY", country="US", state="NY", basis_points=887)
    Discount.objects.create(
        organization=org, name="Launch", type="percentage", basis_points=1500, duration="once"
    )
    Discount.objects.create(
        organization=org,
        name="Five off",
        type="fixed",
        amount=Money("5.00", "USD"),
        duration="once",
    )
    taxes = root.get(reverse("admin:billing_taxrate_changelist")).content.decode()
    assert '<td class="field-rate">8.87 %</td>' in taxes
    offers = root.get(reverse("admin:billing_discount_changelist")).content.decode()
    assert '<td class="field-terms">15 % off</td>' in offers
    assert '<td class="field-terms">5.00 USD off</td>' in offers

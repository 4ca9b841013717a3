"""Discounts and tax on invoices, exact cents."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing import cycles, discounts, subscriptions, taxes
from billing.errors import DiscountNotApplicable, InvalidDiscount
from billing.money import to_minor
from tests.billing.conftest import at, fixed_price, unit_price

pytestmark = pytest.mark.django_db


def amounts(invoice):
    return {
        key: to_minor(getattr(invoice, field))
        for key, field in [
            ("subtotal", "subtotal"),
            ("discount", "discount_amount"),
            ("net", "net"),
            ("tax", "tax"),
            ("total", "total"),
        ]
    }


def billed_customer(customer, country="FR", state=None):
    customer.billing_address = {"country": country, **({"state": state} if state else {})}
    customer.save()
    return customer


def test_ten_percent_forever_and_twenty_percent_exclusive_tax(
    org, make_product, customer, api_calls, send
):
    taxes.create_tax_rate(
        organization=org, name="TVA", country="FR", state=None, basis_points=2000, inclusive=False
    )
    discount = discounts.create_discount(
        organization=org, name="10%", type="percentage", basis_points=1000, duration="forever"
    )
    product = make_product(fixed_price(1999), unit_price(api_calls, "3.3"))
    sub = subscriptions.create_subscription(
        customer=billed_customer(customer),
        product=product,
        started_at=at("2024-01-01T00:00:00"),
        discount=discount,
    )
    first = sub.invoices.get()
    # 1999 − 200 (199.9 → 200) = 1799; tax 359.8 → 360
    assert amounts(first) == {
        "subtotal": 1999,
        "discount": 200,
        "net": 1799,
        "tax": 360,
        "total": 2159,
    }
    send("api.call", "ada", "2024-01-10T00:00:00", count=15)  # 49.5 → 50 cents
    invoices_ = cycles.close_due(as_of=at("2024-03-01T02:00:00")).invoices
    assert [amounts(i) for i in invoices_] == [
        # lines 50 + 1999: discount 204.9 → 205 spread 5 + 200; tax 9 + 359.8 → 360
        {"subtotal": 2049, "discount": 205, "net": 1844, "tax": 369, "total": 2213},
        {"subtotal": 1999, "discount": 200, "net": 1799, "tax": 360, "total": 2159},
    ]
    lines = list(invoices_[0].lines.order_by("position"))
    assert [
        (to_minor(x.amount), to_minor(x.discount_amount), to_minor(x.tax_amount)) for x in lines
    ] == [
        (50, 5, 9),
        (1999, 200, 360),
    ]


def test_fixed_discount_larger_than_the_invoice_never_goes_negative(org, make_product, customer):
    discount = discounts.create_discount(
        organization=org, name="$50 off", type="fixed", amount=5000, currency="usd", duration="once"
    )
    product = make_product(fixed_price(1200))
    sub = subscriptions.create_subscription(customer=customer, product=product, discount=discount)
    assert amounts(sub.invoices.get()) == {
        "subtotal": 1200,
        "discount": 1200,
        "net": 0,
        "tax": 0,
        "total": 0,
    }


def test_inclusive_tax_is_contained_in_the_amount(org, make_product, customer):
    taxes.create_tax_rate(
        organization=org, name="VAT", country="DE", state=None, basis_points=1900, inclusive=True
    )
    taxes.create_tax_rate(
        organization=org, name="US CA", country="US", state="CA", basis_points=725, inclusive=False
    )
    product = make_product(fixed_price(1190))
    sub = subscriptions.create_subscription(
        customer=billed_customer(customer, "DE"), product=product
    )
    # 1190 − 1190/1.19 = 190
    assert amounts(sub.invoices.get()) == {
        "subtotal": 1190,
        "discount": 0,
        "net": 1190,
        "tax": 190,
        "total": 1190,
    }


def test_tax_rate_by_country_then_state(org, customer):
    country = taxes.create_tax_rate(
        organization=org, name="US", country="US", state=None, basis_points=500, inclusive=False
    )
    california = taxes.create_tax_rate(
        organization=org, name="CA", country="US", state="CA", basis_points=725, inclusive=False
    )
    assert taxes.rate_for(billed_customer(customer, "US", "CA")) == california
    assert taxes.rate_for(billed_customer(customer, "US", "NY")) == country
    assert taxes.rate_for(billed_customer(customer, "GB")) is None


def test_repeating_discount_stops_after_n_periods(org, make_product, customer):
    discount = discounts.create_discount(
        organization=org,
        name="3 months half",
        type="percentage",
        basis_points=5000,
        duration="repeating",
        duration_in_months=3,
    )
    product = make_product(fixed_price(1000))
    sub = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00"), discount=discount
    )
    cycles.close_due(as_of=at("2024-05-01T02:00:00"))
    totals = [to_minor(i.total) for i in sub.invoices.order_by("sequence")]
    assert totals == [500, 500, 500, 1000, 1000]


def test_discount_rules_validity_limit_and_product(org, make_product, customer):
    from customers.models import Customer

    product, other = make_product(fixed_price(100)), make_product(fixed_price(100), name="Other")
    limited = discounts.create_discount(
        organization=org,
        name="one use",
        type="percentage",
        basis_points=100,
        duration="once",
        max_redemptions=1,
        product_ids=[product.pk],
        code="ONCE",
    )
    with pytest.raises(DiscountNotApplicable, match="does not apply to this product"):
        subscriptions.create_subscription(customer=customer, product=other, discount=limited)
    subscriptions.create_subscription(customer=customer, product=product, discount=limited)
    second = Customer.objects.create(organization=org, email="b@example.com")
    with pytest.raises(DiscountNotApplicable, match="redemption limit"):
        subscriptions.create_subscription(customer=second, product=product, discount=limited)
    expired = discounts.create_discount(
        organization=org,
        name="old",
        type="percentage",
        basis_points=100,
        duration="once",
        starts_at=at("2020-01-01T00:00:00"),
        ends_at=at("2020-02-01T00:00:00"),
    )
    with pytest.raises(DiscountNotApplicable, match="not valid at this time"):
        subscriptions.create_subscription(customer=second, product=product, discount=expired)
    with pytest.raises(InvalidDiscount, match="already exists"):
        discounts.create_discount(
            organization=org,
            name="dup",
            type="percentage",
            basis_points=1,
            duration="once",
            code="ONCE",
        )


@given(st.integers(0, 10**7), st.lists(st.integers(0, 10**6), min_size=1, max_size=8))
def test_spread_adds_up_exactly_and_never_exceeds_a_line(total, lines):
    total = min(total, sum(lines))
    shares = discounts.spread(total, lines)
    assert sum(shares) == (total if sum(lines) else 0)
    assert all(0 <= share <= line for share, line in zip(shares, lines, strict=True))

"""A finalized invoice copies what it shows — tax name, rate and region, the seller's name and
address, the price terms — so its document never changes when the catalog, a tax rate or the
organization is edited later."""

import subprocess

import pytest

from billing import documents, subscriptions, taxes
from billing.models import Invoice
from tests.billing.conftest import at, fixed_price, unit_price

pytestmark = pytest.mark.django_db


def pdf_text(invoice) -> str:
    pdf = documents.invoice_pdf(invoice.pk)
    return subprocess.run(
        ["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True
    ).stdout.decode()


def test_editing_a_tax_rate_or_the_seller_does_not_change_an_issued_invoice(
    org, api, make_product, customer, api_calls
):
    org.invoice_address = "1 Rue de la Paix\n75002 Paris"
    org.save()
    customer.billing_address = {"country": "FR", "city": "Lyon"}
    customer.save()
    rate = taxes.create_tax_rate(
        organization=org, name="TVA", country="FR", state=None, basis_points=2000, inclusive=False
    )
    product = make_product(fixed_price(1000), unit_price(api_calls, "0.5"), name="Pro")
    subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    invoice = Invoice.objects.get()
    assert (int(invoice.tax.amount * 100), int(invoice.total.amount * 100)) == (200, 1200)
    # the catalog and the seller change after the invoice was issued, before its PDF exists
    response = api.patch(
        f"/v1/tax-rates/{rate.pk}", {"name": "VAT reduced", "basis_points": 550}, format="json"
    )
    assert response.status_code == 200
    org.name, org.invoice_address = "Renamed Inc", "9 Other Street"
    org.save()
    text = pdf_text(invoice)
    assert "TVA 20%" in text and "VAT reduced" not in text and "5.5%" not in text
    assert "1 Rue de la Paix" in text and "9 Other Street" not in text
    assert "Acme" in text and "Renamed Inc" not in text
    invoice.refresh_from_db()
    assert (invoice.tax_name, invoice.tax_basis_points, invoice.tax_country) == ("TVA", 2000, "FR")
    assert (invoice.seller_name, invoice.seller_address) == ("Acme", "1 Rue de la Paix\n75002 Paris")


def test_a_deleted_tax_rate_leaves_issued_invoices_whole(org, api, make_product, customer):
    customer.billing_address = {"country": "FR"}
    customer.save()
    rate = taxes.create_tax_rate(
        organization=org, name="TVA", country="FR", state=None, basis_points=2000, inclusive=False
    )
    product = make_product(fixed_price(1000), name="Pro")
    subscriptions.create_subscription(customer=customer, product=product)
    response = api.delete(f"/v1/tax-rates/{rate.pk}")
    assert response.status_code == 204
    invoice = Invoice.objects.get()
    assert "TVA 20%" in pdf_text(invoice)

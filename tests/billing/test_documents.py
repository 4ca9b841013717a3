"""Invoice documents: the PDF read back with poppler (pdftoppm, pdftotext), stored once, served
through polar-sdk's `orders.invoice` as a signed URL; the email sent once per invoice."""

import io
import subprocess
from pathlib import Path

import httpx
import pytest
from django.core import mail
from PIL import Image

from billing import cycles, discounts, documents, subscriptions, tasks, taxes
from billing.models import Invoice, InvoiceDocument
from billing.money import to_minor
from tests.billing.conftest import at, fixed_price, unit_price


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(pdf)
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


def pdf_page_image(pdf: bytes, tmp_path: Path) -> Image.Image:
    path = tmp_path / "invoice.pdf"
    path.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(path), str(tmp_path / "page")],
        check=True,
    )
    (png,) = tmp_path.glob("page*.png")
    return Image.open(io.BytesIO(png.read_bytes())).convert("L")


@pytest.fixture
def billed_invoices(org, make_product, customer, api_calls, send):
    """Pro: $29/month + 2 cents per call, 10% off forever, 20% exclusive VAT. Jan: 50 calls;
    5 more January calls arrive after January closed (late units on February's invoice)."""
    org.invoice_address = "  8 Rue Oberkampf\n\n75011 Paris, France\nVAT FR40123456789"
    org.save()
    taxes.create_tax_rate(
        organization=org, name="VAT", country="FR", state=None, basis_points=2000, inclusive=False
    )
    discount = discounts.create_discount(
        organization=org, name="10%", type="percentage", basis_points=1000, duration="forever"
    )
    customer.billing_name = "Ada Lovelace Ltd"
    customer.billing_address = {"line1": "12 Rue de la Paix", "city": "Paris", "country": "FR"}
    customer.save()
    product = make_product(fixed_price(2900), unit_price(api_calls, 2), name="Pro")
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, discount=discount, started_at=at("2024-01-01T00:00:00")
    )
    send("api.call", "ada", "2024-01-10T00:00:00", count=50)
    cycles.close_due(as_of=at("2024-02-01T02:00:00"))
    send("api.call", "ada", "2024-01-20T00:00:00", count=5)
    send("api.call", "ada", "2024-02-10T00:00:00", count=10)
    cycles.close_due(as_of=at("2024-03-01T02:00:00"))
    return list(subscription.invoices.order_by("sequence"))


@pytest.mark.django_db
def test_pdf_shows_number_lines_late_units_discount_tax_and_total(billed_invoices, tmp_path):
    create, january, february = billed_invoices
    assert [i.number for i in billed_invoices] == ["ACME-0001", "ACME-0002", "ACME-0003"]
    # February closes 15 calls (10 of its own + 5 late) = 30 cents, plus March's $29 renewal:
    # subtotal 2930, 10% off 293, net 2637, VAT on each discounted line 5 + 522 = 527
    assert [to_minor(getattr(february, f)) for f in ("subtotal", "discount_amount", "tax")] == [
        2930,
        293,
        527,
    ]
    assert to_minor(february.total) == 3164

    pdf = documents.invoice_pdf(february.pk)
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf, tmp_path)
    for expected in (
        "Acme",  # the organization, with its address
        "8 Rue Oberkampf",
        "75011 Paris, France",
        "VAT FR40123456789",
        "ACME-0003",
        "Ada Lovelace Ltd",
        "12 Rue de la Paix",
        "Feb 01, 2024 00:00 – Mar 01, 2024 00:00 UTC",  # the usage line's period
        "includes 5 late units",
        "29.30 USD",  # subtotal
        "−2.93 USD",  # discount
        "VAT 20%",
        "5.27 USD",  # tax
        "31.64 USD",  # total
        "Unit price",
        "0.02 USD",  # 2 cents a call, in the currency
    ):
        assert expected in text, expected
    assert "minor units" not in text
    assert text.count(february.customer.email) == 1  # under the billing name, once
    assert "Total" in text and text.index("Total") < text.rindex("31.64 USD")

    page = pdf_page_image(pdf, tmp_path)
    assert page.size[0] > 300 and page.size[1] > 400  # A4 at 50 dpi: 413 x 585
    dark = sum(1 for value in page.tobytes() if value < 128)
    assert dark > 500, "the rendered page has visible text"


@pytest.mark.django_db
def test_the_pdf_is_rendered_once_and_kept(billed_invoices):
    invoice = billed_invoices[0]
    first = documents.invoice_pdf(invoice.pk)
    assert documents.invoice_pdf(invoice.pk) == first
    assert InvoiceDocument.objects.filter(invoice=invoice).count() == 1
    assert bytes(InvoiceDocument.objects.get(invoice=invoice).pdf) == first


@pytest.mark.django_db
def test_finalization_enqueues_delivery_and_the_email_goes_out_once(
    org, make_product, customer, django_capture_on_commit_callbacks, tmp_path
):
    product = make_product(fixed_price(2900), name="Pro")
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        subscription = subscriptions.create_subscription(customer=customer, product=product)
    invoice = Invoice.objects.get(subscription=subscription)
    # core.outbox records each task and publishes it on commit: publish(id, name, args, kwargs)
    assert [(c.args[1], c.args[2]) for c in enqueued] == [
        (tasks.deliver_invoice.name, [str(invoice.pk)])
    ]

    mail.outbox.clear()
    tasks.deliver_invoice.run(str(invoice.pk))
    tasks.deliver_invoice.run(str(invoice.pk))  # a redelivered task sends nothing
    assert documents.email_invoice(invoice.pk) is False

    (message,) = mail.outbox
    assert message.to == ["ada@example.com"]
    assert message.subject == "Acme invoice ACME-0001"
    assert "Total: 29.00 USD" in message.body
    ((name, content, mimetype),) = message.attachments
    assert (name, mimetype) == ("ACME-0001.pdf", "application/pdf")
    assert content == bytes(InvoiceDocument.objects.get(invoice=invoice).pdf)
    assert "29.00 USD" in pdf_text(content, tmp_path)
    invoice.refresh_from_db()
    assert invoice.emailed_at is not None


@pytest.mark.django_db
def test_a_failed_send_is_not_recorded_and_the_retry_sends_it(
    org, make_product, customer, settings
):
    product = make_product(fixed_price(2900), name="Pro")
    invoice = Invoice.objects.get(
        subscription=subscriptions.create_subscription(customer=customer, product=product)
    )
    # nothing listens on port 9: the SMTP connection is refused
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    with pytest.raises(OSError):
        documents.email_invoice(invoice.pk)
    invoice.refresh_from_db()
    assert invoice.emailed_at is None

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    assert documents.email_invoice(invoice.pk) is True
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_order_invoice_through_polar_sdk_is_a_signed_download_url(polar, live_url):
    customer = polar.customers.create(email="bob@example.com", external_id="bob")
    product = polar.products.create(
        name="Team",
        recurring_interval="month",
        prices=[{"amount_type": "fixed", "price_amount": 9900, "price_currency": "usd"}],
    )
    polar.subscriptions.create(product_id=product.id, customer_id=customer.id)
    (order,) = polar.orders.list(customer_id=customer.id).items

    invoice = polar.orders.invoice(id=order.id)
    assert invoice.url.startswith(f"{live_url}/v1/orders/{order.id}/invoice.pdf?token=")
    download = httpx.get(invoice.url)  # no API token: the signature is the credential
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/pdf"
    assert download.content == bytes(InvoiceDocument.objects.get(invoice_id=order.id).pdf)
    assert polar.orders.generate_invoice(id=order.id) == {}

    # a token signs one invoice: it opens no other
    token = invoice.url.split("?token=")[1]
    other = httpx.get(f"{live_url}/v1/orders/{customer.id}/invoice.pdf?token={token}")
    assert other.status_code == 422
    forged = httpx.get(f"{live_url}/v1/orders/{order.id}/invoice.pdf?token=forged")
    assert forged.status_code == 422
    assert forged.json()["detail"][0]["loc"] == ["query", "token"]


@pytest.mark.django_db
def test_a_fraction_of_a_cent_reads_as_an_amount_and_the_email_is_not_repeated(
    org, customer, make_product, api_calls, send, tmp_path
):
    """Half a cent a call is "0.005 USD"; without a billing name or a name, "Bill to" is the
    email, once."""
    customer.name = None
    customer.billing_name = None
    customer.save()
    product = make_product(fixed_price(100), unit_price(api_calls, "0.5"), name="Tiny")
    subscription = subscriptions.create_subscription(
        customer=customer, product=product, started_at=at("2024-01-01T00:00:00")
    )
    send("api.call", "ada", "2024-01-10T00:00:00", count=3)
    cycles.close_due(as_of=at("2024-02-01T02:00:00"))
    cycle = subscription.invoices.get(billing_reason="subscription_cycle")
    text = pdf_text(documents.invoice_pdf(cycle.pk), tmp_path)
    assert "0.005 USD" in text and "minor units" not in text
    assert text.count(customer.email) == 1

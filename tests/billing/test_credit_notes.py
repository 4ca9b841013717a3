"""Credit notes and the customer balance: exact cents, tax pro rata that adds up, gapless numbers
(also when two transactions issue at once), refusals that say what is left, the PDF read back
with pdftotext, and a balance spent by the next invoice."""

import threading

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection
from django.test import Client
from django.urls import reverse

from billing import (
    balance,
    catalog,
    credit_notes,
    cycles,
    documents,
    invoices,
    subscriptions,
    tasks,
    taxes,
)
from billing.credit_notes import CreditNoteError
from billing.errors import InvoiceStateError
from billing.models import BalanceTransaction, CreditNote, Invoice, InvoiceStatus
from billing.money import to_minor
from customers.models import Customer
from tests.billing.conftest import at, fixed_price, unit_price
from tests.billing.test_documents import pdf_text


def cents(money) -> int:
    return to_minor(money)


@pytest.fixture
def pro(make_product, api_calls):
    """$29/month + half a cent per call."""
    return make_product(fixed_price(2900), unit_price(api_calls, "0.5"), name="Pro")


@pytest.fixture
def paid_2904(pro, customer, send):
    """The second invoice: 7 calls (3.5 ¢ → 4) + the next month's $29 = 2904, paid."""
    subscription = subscriptions.create_subscription(
        customer=customer, product=pro, started_at=at("2024-01-01T00:00:00")
    )
    send("api.call", "ada", "2024-01-10T00:00:00", count=7)
    cycles.close_due(as_of=at("2024-02-01T02:00:00"))
    create, january = subscription.invoices.order_by("sequence")
    assert cents(january.total) == 2904
    return invoices.mark_paid(january)


def refund(invoice, amount, **kwargs):
    kwargs.setdefault("reason", "customer_request")
    return credit_notes.issue(invoice, amount=amount, kind="refund", **kwargs)


@pytest.mark.django_db
def test_partial_then_full_refund_exact_cents_and_gapless_numbers(paid_2904):
    assert credit_notes.refundable(paid_2904) == 2904
    first = refund(paid_2904, 1000, comment="sorry")
    assert (first.number, cents(first.amount), cents(first.tax_amount)) == ("ACME-CN-0001", 1000, 0)
    invoice = Invoice.objects.get(pk=paid_2904.pk)
    assert (cents(invoice.refunded_amount), credit_notes.refundable(invoice)) == (1000, 1904)
    assert invoice.status == InvoiceStatus.PAID and not invoice.is_refunded

    with pytest.raises(CreditNoteError) as refused:
        refund(invoice, 1905)
    assert refused.value.message == "The amount 1905 is more than what is left: 1904 left to refund"
    assert refused.value.field == ("amount",)

    second = refund(invoice, 1904)
    assert second.number == "ACME-CN-0002"
    invoice.refresh_from_db()
    assert cents(invoice.refunded_amount) == 2904 and invoice.is_refunded
    with pytest.raises(CreditNoteError, match="0 left to refund"):
        refund(invoice, 1)
    assert [n.number for n in CreditNote.objects.order_by("sequence")] == [
        "ACME-CN-0001",
        "ACME-CN-0002",
    ]
    # the lines are credited pro rata and add up exactly
    assert sum(line["amount"] for line in first.lines) == 1000
    assert sum(line["amount"] for line in second.lines) == 1904


@pytest.mark.django_db
def test_refused_credit_notes_write_nothing(paid_2904, pro, customer):
    for kwargs, message in (
        ({"amount": 0}, "positive"),
        ({"amount": -5}, "positive"),
        ({"amount": 10, "reason": "because"}, "Unknown reason"),
        ({"amount": 10, "kind": "cash"}, "Unknown credit note kind"),
    ):
        kwargs.setdefault("kind", "refund")
        kwargs.setdefault("reason", "other")
        with pytest.raises(CreditNoteError, match=message):
            credit_notes.issue(paid_2904, **kwargs)
    open_invoice = Invoice.objects.filter(status=InvoiceStatus.OPEN).first()
    with pytest.raises(InvoiceStateError, match="Only a paid invoice can be refunded"):
        refund(open_invoice, 10)
    assert not CreditNote.objects.exists()
    assert not BalanceTransaction.objects.exists()


@pytest.mark.django_db
def test_tax_is_credited_pro_rata_and_adds_up_exactly(org, make_product, customer):
    taxes.create_tax_rate(
        organization=org, name="VAT", country="FR", state=None, basis_points=2000, inclusive=False
    )
    customer.billing_address = {"country": "FR"}
    customer.save()
    product = make_product(fixed_price(2900), name="Pro")
    subscription = subscriptions.create_subscription(customer=customer, product=product)
    invoice = invoices.mark_paid(subscription.invoices.get())
    assert (cents(invoice.total), cents(invoice.tax)) == (3480, 580)

    notes = [refund(invoice, amount) for amount in (1000, 1000, 1480)]
    # 1000 × 580 / 3480 = 166.67 → 167, twice; the last one takes exactly what is left: 246
    assert [cents(n.tax_amount) for n in notes] == [167, 167, 246]
    assert sum(cents(n.amount) for n in notes) == 3480
    invoice.refresh_from_db()
    assert (cents(invoice.refunded_amount), cents(invoice.refunded_tax_amount)) == (3480, 580)
    for note in notes:
        assert sum(line["tax_amount"] for line in note.lines) == cents(note.tax_amount)


@pytest.mark.django_db
def test_the_pdf_shows_number_invoice_and_amount_and_the_email_goes_once(
    paid_2904, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        note = refund(paid_2904, 1000)
    assert [(c.args[1], c.args[2]) for c in enqueued] == [
        (tasks.deliver_credit_note.name, [str(note.pk)])
    ]
    text = pdf_text(documents.credit_note_pdf(note.pk), tmp_path)
    for expected in ("Credit note", "ACME-CN-0001", "ACME-0002", "10.00 USD", "customer_request"):
        assert expected in text, expected
    assert documents.credit_note_pdf(note.pk) == documents.credit_note_pdf(note.pk)

    mail.outbox.clear()
    tasks.deliver_credit_note.run(str(note.pk))
    tasks.deliver_credit_note.run(str(note.pk))  # a redelivered task sends nothing
    (message,) = mail.outbox
    assert message.subject == "Acme credit note ACME-CN-0001"
    assert "Amount: 10.00 USD (refunded to your payment method)" in message.body
    assert message.attachments[0][0] == "ACME-CN-0001.pdf"


@pytest.mark.django_db(transaction=True)
def test_concurrent_refunds_cannot_exceed_what_is_left_and_numbers_stay_gapless(paid_2904):
    barrier = threading.Barrier(2)
    results: list = []

    def issue():
        try:
            barrier.wait()
            results.append(refund(paid_2904, 2000).number)
        except CreditNoteError as exc:
            results.append(exc.message)
        finally:
            connection.close()

    threads = [threading.Thread(target=issue) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [
        "ACME-CN-0001",
        "The amount 2000 is more than what is left: 904 left to refund",
    ]
    assert refund(paid_2904, 904).number == "ACME-CN-0002"
    invoice = Invoice.objects.get(pk=paid_2904.pk)
    assert cents(invoice.refunded_amount) == 2904
    assert list(CreditNote.objects.order_by("sequence").values_list("sequence", flat=True)) == [
        1,
        2,
    ]


@pytest.mark.django_db
def test_a_balance_credit_is_spent_by_the_next_invoice(pro, customer, send):
    subscription = subscriptions.create_subscription(
        customer=customer, product=pro, started_at=at("2024-01-01T00:00:00")
    )
    create = subscription.invoices.get()
    note = credit_notes.issue(create, amount=1000, kind="balance", reason="service_disruption")
    assert note.number == "ACME-CN-0001"
    assert balance.available(customer.pk, "USD") == 1000
    create.refresh_from_db()
    assert create.status == InvoiceStatus.OPEN  # a balance credit note doesn't refund
    assert cents(create.refunded_amount) == 0 and cents(create.credited_amount) == 1000

    send("api.call", "ada", "2024-01-10T00:00:00", count=7)
    cycles.close_due(as_of=at("2024-02-01T02:00:00"))
    january = subscription.invoices.get(sequence=2)
    assert [cents(january.total), cents(january.balance_applied), cents(january.amount_due)] == [
        2904,
        1000,
        1904,
    ]
    assert january.status == InvoiceStatus.OPEN
    assert balance.available(customer.pk, "USD") == 0
    assert list(
        BalanceTransaction.objects.order_by("created_at").values_list("amount", flat=True)
    ) == [10, -10]


@pytest.mark.django_db
def test_an_invoice_the_balance_covers_is_paid_at_once(pro, customer, send, tmp_path):
    subscription = subscriptions.create_subscription(
        customer=customer, product=pro, started_at=at("2024-01-01T00:00:00")
    )
    create = invoices.mark_paid(subscription.invoices.get())
    credit_notes.issue(create, amount=2899, kind="balance", reason="other")
    credit_notes.issue(create, amount=1, kind="balance", reason="other")
    cycles.close_due(as_of=at("2024-02-01T02:00:00"))  # no usage: $29
    january = subscription.invoices.get(sequence=2)
    assert [cents(january.total), cents(january.balance_applied), cents(january.amount_due)] == [
        2900,
        2900,
        0,
    ]
    assert january.status == InvoiceStatus.PAID and january.paid_at is not None
    assert balance.available(customer.pk, "USD") == 0
    text = pdf_text(documents.invoice_pdf(january.pk), tmp_path)
    assert "Customer balance applied" in text and "−29.00 USD" in text
    assert "Amount due" in text and "0.00 USD" in text


@pytest.mark.django_db
def test_voiding_an_invoice_gives_its_balance_back(pro, customer):
    subscription = subscriptions.create_subscription(
        customer=customer, product=pro, started_at=at("2024-01-01T00:00:00")
    )
    create = invoices.mark_paid(subscription.invoices.get())
    credit_notes.issue(create, amount=500, kind="balance", reason="other")
    cycles.close_due(as_of=at("2024-02-01T02:00:00"))
    january = subscription.invoices.get(sequence=2)
    assert cents(january.balance_applied) == 500 and balance.available(customer.pk, "USD") == 0
    invoices.void(january)
    assert balance.available(customer.pk, "USD") == 500


@pytest.mark.django_db
def test_credit_notes_api_create_list_get_pdf(api, paid_2904, customer, tmp_path):
    refund(paid_2904, 1000)
    response = api.post(
        "/v1/credit-notes/",
        {
            "order_id": str(paid_2904.pk),
            "amount": 904,
            "reason": "service_disruption",
            "comment": "outage",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert {k: body[k] for k in ("number", "order_id", "refund_id", "amount", "tax_amount")} == {
        "number": "ACME-CN-0002",
        "order_id": str(paid_2904.pk),
        "refund_id": None,
        "amount": 904,
        "tax_amount": 0,
    }
    assert (body["currency"], body["kind"], body["reason"]) == (
        "usd",
        "balance",
        "service_disruption",
    )
    assert balance.available(customer.pk, "USD") == 904

    listed = api.get("/v1/credit-notes/", {"order_id": str(paid_2904.pk)}).json()
    assert [n["number"] for n in listed["items"]] == ["ACME-CN-0002", "ACME-CN-0001"]
    assert listed["pagination"]["total_count"] == 2
    assert api.get("/v1/credit-notes/", {"customer_id": str(paid_2904.pk)}).json()["items"] == []
    assert api.get(f"/v1/credit-notes/{body['id']}").json() == body
    pdf = api.get(f"/v1/credit-notes/{body['id']}/pdf")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert "ACME-CN-0002" in pdf_text(pdf.content, tmp_path)

    order = api.get(f"/v1/orders/{paid_2904.pk}").json()
    assert (order["status"], order["refunded_amount"], order["refundable_amount"]) == (
        "partially_refunded",
        1000,
        1000,  # 2904 − 1000 refunded − 904 credited to the balance
    )
    statuses = {"partially_refunded": [str(paid_2904.pk)], "paid": [], "refunded": []}
    for status, expected in statuses.items():
        found = api.get("/v1/orders/", {"status": status}).json()["items"]
        assert [o["id"] for o in found] == expected, status


@pytest.mark.django_db
def test_credit_notes_api_refuses_bad_input_with_422_and_writes_nothing(api, paid_2904, token_for):
    other_org, _ = token_for("Other")
    url = "/v1/credit-notes/"
    order_id = str(paid_2904.pk)
    cases = [
        (
            {"order_id": order_id, "amount": 2905, "reason": "other"},
            ["body", "amount"],
            "2904 left",
        ),
        ({"order_id": order_id, "amount": 0, "reason": "other"}, ["body", "amount"], ""),
        ({"order_id": order_id, "amount": 10, "reason": "nope"}, ["body", "reason"], ""),
        ({"order_id": order_id, "amount": 10}, ["body", "reason"], ""),
        ({"order_id": order_id, "amount": "ten", "reason": "other"}, ["body", "amount"], ""),
        ({"order_id": order_id, "amount": 10, "reason": "other", "x": 1}, ["body", "x"], ""),
        ({"order_id": "not-a-uuid", "amount": 10, "reason": "other"}, ["body", "order_id"], ""),
        (
            {"order_id": "00000000-0000-0000-0000-000000000000", "amount": 10, "reason": "other"},
            ["body", "order_id"],
            "does not exist",
        ),
    ]
    for payload, loc, message in cases:
        response = api.post(url, payload, format="json")
        assert response.status_code == 422, (payload, response.content)
        (problem,) = response.json()["detail"]
        assert problem["loc"] == loc, payload
        assert message in problem["msg"]
    assert not CreditNote.objects.exists() and not BalanceTransaction.objects.exists()
    assert api.get("/v1/credit-notes/", {"order_id": "nope"}).status_code == 422
    assert api.get("/v1/credit-notes/00000000-0000-0000-0000-000000000000").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_polar_sdk_reads_refunded_orders_and_balance(polar, live_org_token, make_product_live):
    organization = live_org_token[0]
    invoice = make_product_live(organization)
    refund(invoice, 1000)
    order = polar.orders.get(str(invoice.pk))
    assert (order.status, order.refunded_amount, order.refundable_amount) == (
        "partially_refunded",
        1000,
        1900,
    )
    refund(invoice, 1900)
    order = polar.orders.get(str(invoice.pk))
    assert (order.status, order.refunded_amount, order.refundable_amount) == ("refunded", 2900, 0)
    assert [o.id for o in polar.orders.list(status="refunded").items] == [order.id]


@pytest.fixture
def make_product_live():
    def make(organization):
        customer = Customer.objects.create(organization=organization, email="x@example.com")
        product = catalog.create_product(
            organization=organization, name="Pro", prices=[fixed_price(2900)]
        )
        subscription = subscriptions.create_subscription(customer=customer, product=product)
        return invoices.mark_paid(subscription.invoices.get())

    return make


@pytest.fixture
def superuser_client():
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_admin_shows_credit_notes_on_the_invoice_and_the_balance_on_the_customer(
    superuser_client, paid_2904, customer
):
    note = refund(paid_2904, 1000)
    credit_notes.issue(paid_2904, amount=904, kind="balance", reason="other")
    page = superuser_client.get(reverse("admin:billing_invoice_change", args=[paid_2904.pk]))
    body = page.content.decode()
    pdf_url = reverse("admin:billing_creditnote_pdf", args=[note.pk])
    assert "ACME-CN-0001" in body and "ACME-CN-0002" in body and f'href="{pdf_url}"' in body
    pdf = superuser_client.get(pdf_url)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    listing = superuser_client.get(reverse("admin:billing_creditnote_changelist"))
    assert listing.status_code == 200 and "ACME-CN-0002" in listing.content.decode()
    assert superuser_client.get(reverse("admin:billing_creditnote_add")).status_code == 403

    page = superuser_client.get(reverse("admin:customers_customer_change", args=[customer.pk]))
    body = page.content.decode()
    assert "Customer balance" in body and "9.04 USD" in body and "credit note ACME-CN-0002" in body


@pytest.mark.django_db
def test_admin_void_actions_release_usage_and_optionally_fixed_lines(
    superuser_client, pro, customer, send
):
    subscription = subscriptions.create_subscription(
        customer=customer, product=pro, started_at=at("2024-01-01T00:00:00")
    )
    send("api.call", "ada", "2024-01-10T00:00:00", count=7)
    cycles.close_due(as_of=at("2024-02-01T02:00:00"))
    create, january = subscription.invoices.order_by("sequence")
    url = reverse("admin:billing_invoice_changelist")
    superuser_client.post(url, {"action": "void", "_selected_action": [january.pk]})
    superuser_client.post(url, {"action": "void_rebill_fixed", "_selected_action": [create.pk]})
    assert set(subscription.invoices.values_list("status", flat=True)) == {InvoiceStatus.VOID}
    cycles.close_due(as_of=at("2024-03-01T02:00:00"))
    february = subscription.invoices.get(sequence=3)
    # 7 calls released (4 ¢ at half a cent), January's $29 re-billed, March's $29
    assert to_minor(february.total) == 4 + 2900 + 2900


@pytest.mark.django_db(transaction=True)
def test_two_finalizations_at_once_spend_the_balance_once(org, make_product, customer):
    product = make_product(fixed_price(2900), name="Pro")
    first = subscriptions.create_subscription(customer=customer, product=product)
    invoices.mark_paid(first.invoices.get())
    credit_notes.issue(first.invoices.get(), amount=1000, kind="balance", reason="other")
    barrier = threading.Barrier(2)
    created, errors = [], []

    def subscribe():
        try:
            barrier.wait()
            created.append(subscriptions.create_subscription(customer=customer, product=product))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=subscribe) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    spent = sorted(
        (cents(i.balance_applied), cents(i.amount_due))
        for i in Invoice.objects.filter(subscription__in=created)
    )
    assert spent == [(0, 2900), (1000, 1900)]
    assert balance.available(customer.pk, "USD") == 0

"""The development console email backend keeps the text (sign-in links, invoice summaries) and
shows attachments as one line instead of their base64."""

import io

from django.core.mail import EmailMessage

from core.mail import ConsoleSummaryBackend


def test_attachments_show_as_one_line_and_the_text_stays():
    stream = io.StringIO()
    message = EmailMessage(
        "Acme invoice ACME-0001",
        "Total: 35.00 USD\nhttps://example.com/portal/sign-in?token=abc",
        "billing@example.com",
        ["ada@example.com"],
    )
    message.attach("ACME-0001.pdf", b"%PDF-1.7 " + b"x" * 5000, "application/pdf")
    sent = ConsoleSummaryBackend(stream=stream).send_messages([message])
    out = stream.getvalue()
    assert sent == 1
    assert "Total: 35.00 USD" in out and "token=abc" in out
    assert "[attachment ACME-0001.pdf (application/pdf, 5,009 bytes) not shown]" in out
    assert "base64" not in out and "JVBERi" not in out  # "%PDF" in base64
    assert len(message.attachments) == 1  # the message itself is left as it was

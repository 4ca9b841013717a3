"""The development email backend: Django's console backend without the attachments' bytes.

Sign-in links and invoice emails stay readable in the worker's log; an invoice PDF shows as one
line (name, type, size) instead of hundreds of lines of base64."""

from django.core.mail.backends.console import EmailBackend


class ConsoleSummaryBackend(EmailBackend):
    def write_message(self, message):
        attachments = message.attachments
        message.attachments = []
        try:
            super().write_message(message)
        finally:
            message.attachments = attachments
        for attachment in attachments:
            if isinstance(attachment, tuple):
                name, content, mimetype = attachment
            else:  # a MIMEBase part
                name = attachment.get_filename()
                content, mimetype = (
                    attachment.get_payload(decode=True),
                    attachment.get_content_type(),
                )
            self.stream.write(
                f"[attachment {name} ({mimetype}, {len(content):,} bytes) not shown]\n"
            )

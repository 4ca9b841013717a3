"""The development email backend: Django's console backend without the attachments' bytes.
Without DEBUG every send also logs a warning that email is not configured.

Sign-in links and invoice emails stay readable in the worker's log; an invoice PDF shows as one
line (name, type, size) instead of hundreds of lines of base64."""

import logging

from django.conf import settings
from django.core.mail.backends.console import EmailBackend

logger = logging.getLogger(__name__)


class ConsoleSummaryBackend(EmailBackend):
    def send_messages(self, email_messages):
        sent = super().send_messages(email_messages)
        if sent and not settings.DEBUG:
            # in production this is a misconfiguration (the deploy check says so too): say it
            # beside every message, a sign-in link in a log lets its reader in
            logger.warning(
                "EMAIL_URL is not set: %d email(s) were printed to this log instead of being "
                "sent (sign-in links included). Set EMAIL_URL (docs/security.md).",
                sent,
            )
        return sent

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

"""Without EMAIL_URL email goes to the console backend: in production every send says, in the
log, that it was printed instead of sent (the deploy check refuses the setting too:
tests/test_deploy_check.py)."""

import logging

from django.core.mail import send_mail


def test_printed_email_is_flagged_in_the_log_without_debug(settings, caplog, capsys):
    settings.EMAIL_BACKEND = "core.mail.ConsoleSummaryBackend"
    settings.DEBUG = False
    with caplog.at_level(logging.WARNING, logger="core.mail"):
        send_mail("Sign in", "https://billing.example.com/portal/x", "a@b.example", ["c@d.example"])
    assert "https://billing.example.com/portal/x" in capsys.readouterr().out
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "EMAIL_URL is not set: 1 email(s) were printed to this log instead of being sent "
        "(sign-in links included). Set EMAIL_URL (docs/security.md)."
    )


def test_development_console_email_is_not_flagged(settings, caplog, capsys):
    settings.EMAIL_BACKEND = "core.mail.ConsoleSummaryBackend"
    settings.DEBUG = True
    with caplog.at_level(logging.WARNING, logger="core.mail"):
        send_mail("Sign in", "link", "a@b.example", ["c@d.example"])
    assert "link" in capsys.readouterr().out
    assert caplog.records == []

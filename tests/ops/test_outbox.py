"""The task outbox's rules, one by one (the real broker outage and killed worker are in
test_faults.py): recorded with the transaction, kept until finished, resent when due."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from core import outbox
from core.models import PendingTask
from core.tasks import clear_expired_sessions

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(
        clear_expired_sessions,
        "apply_async",
        lambda args, kwargs, task_id: calls.append((args, kwargs, task_id)),
    )
    return calls


def test_recorded_with_the_transaction_and_sent_after_commit(sent):
    with transaction.atomic():
        task_id = clear_expired_sessions.delay_on_commit()
        assert sent == []  # not before the commit
    assert sent == [([], {}, str(task_id))]
    pending = PendingTask.objects.get(pk=task_id)
    assert pending.attempts == 1
    assert pending.next_attempt_at > timezone.now() + timedelta(seconds=800)  # the lease

    outbox.task_finished(str(task_id))  # what a worker's task_success signal does
    assert not PendingTask.objects.exists()


def test_rolled_back_work_enqueues_nothing(sent):
    with pytest.raises(RuntimeError), transaction.atomic():
        clear_expired_sessions.delay_on_commit()
        raise RuntimeError
    assert sent == [] and not PendingTask.objects.exists()


def test_broker_down_keeps_the_task_and_resend_sends_it_when_due(monkeypatch, settings, sent):
    def broker_down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(clear_expired_sessions, "apply_async", broker_down)
    task_id = clear_expired_sessions.delay_on_commit()  # autocommit: "after commit" is now
    pending = PendingTask.objects.get(pk=task_id)
    assert pending.attempts == 0
    assert pending.last_error == "publish: OperationalError: connection refused"
    assert outbox.resend_pending() == 0  # not due yet

    monkeypatch.undo()
    monkeypatch.setattr(
        clear_expired_sessions,
        "apply_async",
        lambda args, kwargs, task_id: sent.append(task_id),
    )
    PendingTask.objects.update(next_attempt_at=timezone.now())
    assert outbox.resend_pending() == 1
    assert sent == [str(task_id)]
    assert PendingTask.objects.get(pk=task_id).attempts == 1


def test_gives_up_after_max_attempts(settings, sent):
    settings.OUTBOX_MAX_ATTEMPTS = 2
    task_id = clear_expired_sessions.delay_on_commit()
    PendingTask.objects.update(next_attempt_at=timezone.now())
    assert outbox.resend_pending() == 1
    PendingTask.objects.update(next_attempt_at=timezone.now())
    assert outbox.resend_pending() == 0  # two sends made; left for a human
    outbox.task_failed(str(task_id), ValueError("bad input"))
    assert PendingTask.objects.get(pk=task_id).last_error == "ValueError: bad input"
    assert len(sent) == 2


def test_admin_lists_pending_tasks_and_sends_them(sent, client, django_user_model):
    task_id = clear_expired_sessions.delay_on_commit()
    staff = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw-123456")
    client.force_login(staff)
    page = client.get("/admin/core/pendingtask/")
    assert page.status_code == 200
    assert "core.tasks.clear_expired_sessions" in page.content.decode()
    response = client.post(
        "/admin/core/pendingtask/",
        {"action": "send_now", "_selected_action": [str(task_id)]},
        follow=True,
    )
    assert "1 of 1 sent." in response.content.decode()
    assert len(sent) == 2

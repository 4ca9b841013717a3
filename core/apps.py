from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Meterline core"

    def ready(self):
        from celery.signals import task_failure, task_success, worker_ready

        # core.checks registers the deploy checks
        from core import checks, outbox  # noqa: F401

        # weak=False: the receivers are module-level lambdas that would otherwise be collected
        task_success.connect(
            lambda sender=None, **kw: outbox.task_finished(sender.request.id), weak=False
        )
        task_failure.connect(
            lambda task_id=None, exception=None, **kw: outbox.task_failed(task_id, exception),
            weak=False,
        )
        # a worker that starts (again) sends what a killed one left unfinished, once due
        worker_ready.connect(lambda **kw: outbox.resend_pending(), weak=False)

        from core.roles import ensure_staff_roles

        # after every migrate, when every app's permissions exist
        post_migrate.connect(ensure_staff_roles, dispatch_uid="core.ensure_staff_roles")

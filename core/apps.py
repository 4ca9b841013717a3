from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Meterline core"

    def ready(self):
        from core.roles import ensure_staff_roles

        # after every migrate, when every app's permissions exist
        post_migrate.connect(ensure_staff_roles, dispatch_uid="core.ensure_staff_roles")

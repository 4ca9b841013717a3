"""Celery tasks: thin wrappers over portal services."""

from celery import shared_task

from portal import sign_in


@shared_task(acks_late=True)
def send_sign_in_link(organization_id: str, email: str, base_url: str, next_path: str = "") -> None:
    sign_in.send_sign_in_link(
        organization_id=organization_id, email=email, base_url=base_url, next_path=next_path
    )


@shared_task
def clear_expired_portal_sessions() -> None:
    sign_in.clear_expired()

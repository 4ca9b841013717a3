"""Two browsers redeeming one token at the same moment get one session; staff see and end
portal sessions in the admin."""

import threading

from django.contrib.admin.models import LogEntry
from django.db import connection

from portal import sign_in
from portal.errors import InvalidSignInToken
from portal.models import PortalSession, SignInTokenKind

from .conftest import build_world


def race_to_redeem(organization, token: str, browsers: int) -> list:
    """Each thread (own database connection) redeems `token` at the same moment."""
    barrier = threading.Barrier(browsers)
    results = []

    def redeem():
        try:
            barrier.wait()
            session = sign_in.redeem(
                organization=organization, token=token, kind=SignInTokenKind.API_SESSION
            )
            results.append(session.pk)
        except InvalidSignInToken:
            results.append(None)
        finally:
            connection.close()

    threads = [threading.Thread(target=redeem) for _ in range(browsers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_redemptions_of_one_token_give_one_session(transactional_db, token_for):
    world = build_world(token_for)
    for _ in range(5):
        _, token, _ = sign_in.create_api_session(
            customer=world.alice, return_url=None, base_url="http://x/"
        )
        results = race_to_redeem(world.acme.organization, token, browsers=4)
        assert len(results) == 4
        assert results.count(None) == 3
    assert PortalSession.objects.filter(customer=world.alice).count() == 5


def test_staff_end_a_customers_sessions(world, signed_in, admin_client):
    # admin_client: pytest-django's client signed in as a superuser
    portal = signed_in(world.alice)
    assert portal.get("/portal/acme-inc/").status_code == 200
    session = PortalSession.objects.get(customer=world.alice)

    listing = admin_client.get("/admin/portal/portalsession/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "alice@acme-inc.example" in html and "API customer session" in html
    assert admin_client.get("/admin/portal/portalsession/add/").status_code == 403

    response = admin_client.post(
        "/admin/portal/portalsession/",
        {"action": "end_sessions", "_selected_action": [str(session.pk)]},
    )
    assert response.status_code == 302
    session.refresh_from_db()
    assert session.ended_at is not None
    assert LogEntry.objects.filter(object_id=str(session.pk)).count() == 1
    assert portal.get("/portal/acme-inc/").status_code == 302  # signed out

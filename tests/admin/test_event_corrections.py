"""Usage corrections from the event's admin page: staff holding `metering.correct_event` cancel
or replace an event (meters read the corrected usage at once, the audit log names them), staff
without it see no button and get a 403; a bad form writes nothing; the events list marks the
canceled originals and the corrections list shows what was done."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from core.roles import BILLING_OPERATOR, SUPPORT
from customers.models import Customer
from metering import meters, queries
from metering.ingest import ingest_events
from metering.models import Event, EventCorrection, EventSource

pytestmark = pytest.mark.django_db

T0 = datetime(2024, 1, 5, 10, tzinfo=UTC)
WHOLE = ((datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)),)


def staff_with(username, *codenames):
    user = get_user_model().objects.create_user(
        username, f"{username}@example.com", "pw-123456", is_staff=True
    )
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="metering", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return user, client


@pytest.fixture
def corrector():
    return staff_with("ops", "view_event", "view_eventcorrection", "correct_event")


@pytest.fixture
def viewer():
    return staff_with("support", "view_event", "view_eventcorrection")


@pytest.fixture
def ada(organization):
    return Customer.objects.create(organization=organization, external_id="ada", email="a@x.io")


@pytest.fixture
def usage(organization, ada):
    """Three `req` events of ada (v = 10, 20, 30) and a sum and a count meter over them."""
    ingest_events(
        organization=organization,
        events=[
            {
                "name": "req",
                "external_customer_id": "ada",
                "timestamp": (T0 + timedelta(minutes=i)).isoformat(),
                "external_id": f"r{i}",
                "metadata": {"v": (i + 1) * 10, "model": "m1"},
            }
            for i in range(3)
        ],
    )
    by_name = {
        "req": {
            "conjunction": "and",
            "clauses": [{"property": "name", "operator": "eq", "value": "req"}],
        }
    }
    return {
        "sum": meters.create_meter(
            organization=organization,
            name="v",
            filter=by_name["req"],
            aggregation={"func": "sum", "property": "v"},
        ),
        "count": meters.create_meter(
            organization=organization,
            name="n",
            filter=by_name["req"],
            aggregation={"func": "count"},
        ),
    }


def values(usage, customer) -> dict:
    windows = [queries.Window(k, m, customer.pk, WHOLE) for k, m in usage.items()]
    return {k: v.value for k, v in queries.window_values(windows).items()}


def event(external_id) -> Event:
    return Event.objects.get(external_id=external_id)


def page(event_id) -> str:
    return f"/admin/metering/event/{event_id}/change/"


def correct_url(event_id) -> str:
    return f"/admin/metering/event/{event_id}/correct/"


def test_staff_with_the_permission_cancels_through_the_form(corrector, usage, ada):
    user, client = corrector
    r0 = event("r0")
    shown = client.get(page(r0.pk)).content.decode()
    assert f'href="{correct_url(r0.pk)}"' in shown and "Correct usage" in shown
    form = client.get(correct_url(r0.pk))
    assert form.status_code == 200
    assert form.context["form"]["name"].value() == "req"
    assert form.context["form"]["metadata"].value() == '{\n  "v": 10,\n  "model": "m1"\n}'

    response = client.post(correct_url(r0.pk), {"action": "cancel", "reason": "test traffic"})

    assert response.status_code == 302 and response["Location"] == page(r0.pk)
    assert values(usage, ada) == {"sum": 50, "count": 2}
    assert event("r0").source == EventSource.CANCELED
    (made,) = EventCorrection.objects.all()
    assert (made.event_id, made.action, made.reason, made.replacement_id) == (
        r0.pk,
        "cancel",
        "test traffic",
        None,
    )
    assert (made.actor, made.created_by) == (f"staff:{user.username}", user)
    (entry,) = LogEntry.objects.filter(object_pk=str(made.pk))
    assert (entry.actor, entry.additional_data) == (
        user,
        {"action": "event canceled: test traffic"},
    )
    after = client.get(page(r0.pk), follow=True).content.decode()
    assert "Event canceled." in after  # the success message
    assert "test traffic" in after and f"staff:{user.username}" in after
    assert f'href="{correct_url(r0.pk)}"' not in after  # corrected once
    # the form's URL refuses the corrected original too, writing nothing
    again = client.post(correct_url(r0.pk), {"action": "cancel", "reason": "again"})
    assert again.status_code == 302 and EventCorrection.objects.count() == 1


def test_staff_with_the_permission_replaces_through_the_form(corrector, usage, ada):
    user, client = corrector
    r2 = event("r2")

    response = client.post(
        correct_url(r2.pk),
        {
            "action": "replace",
            "reason": "peak mis-measured",
            "name": "req",
            "metadata": '{"v": 2.75, "model": "m0"}',
        },
    )

    (made,) = EventCorrection.objects.all()
    assert response.status_code == 302 and response["Location"] == page(made.replacement_id)
    assert values(usage, ada) == {"sum": Decimal("32.75"), "count": 3}
    replacement = Event.objects.get(pk=made.replacement_id)
    assert (replacement.name, replacement.timestamp, replacement.customer_id) == (
        "req",
        r2.timestamp,
        ada.pk,
    )
    assert made.replacement == {"name": "req", "metadata": {"v": Decimal("2.75"), "model": "m0"}}
    assert LogEntry.objects.get(object_pk=str(made.pk)).actor == user
    # each page links to the other
    original_page = client.get(page(r2.pk)).content.decode()
    assert f'href="{page(made.replacement_id)}"' in original_page
    replacement_page = client.get(page(made.replacement_id)).content.decode()
    assert f'href="{page(r2.pk)}"' in replacement_page and "peak mis-measured" in replacement_page
    # a replacement is a user event: it may be corrected in turn
    assert f'href="{correct_url(made.replacement_id)}"' in replacement_page


def test_without_the_permission_no_button_and_a_403(viewer, usage, ada):
    _, client = viewer
    r0 = event("r0")
    shown = client.get(page(r0.pk))
    assert shown.status_code == 200 and "Correct usage" not in shown.content.decode()
    assert client.get(correct_url(r0.pk)).status_code == 403
    posted = client.post(correct_url(r0.pk), {"action": "cancel", "reason": "x"})
    assert posted.status_code == 403
    assert values(usage, ada) == {"sum": 60, "count": 3}
    assert not EventCorrection.objects.exists() and event("r0").source == EventSource.USER


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"action": "cancel", "reason": "  "}, "reason", "This field is required."),
        (
            {"action": "replace", "reason": "x", "name": "req", "metadata": '{"v": 1,'},
            "metadata",
            "Not valid JSON",
        ),
        (  # the service's refusal, on the field its loc names
            {"action": "replace", "reason": "x", "name": "req", "metadata": '{"v": [1]}'},
            "metadata",
            "Nested objects and arrays are not allowed",
        ),
        ({"action": "replace", "reason": "x", "name": " ", "metadata": "{}"}, "name", "non-empty"),
        ({"action": "drop", "reason": "x"}, "action", "Select a valid choice"),
    ],
)
def test_an_invalid_form_writes_nothing(corrector, usage, ada, data, field, message):
    _, client = corrector
    r0 = event("r0")
    response = client.post(correct_url(r0.pk), data)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert list(errors) == [field] and message in errors[field][0]
    assert values(usage, ada) == {"sum": 60, "count": 3}
    assert (
        not EventCorrection.objects.exists()
        and not LogEntry.objects.filter(content_type__model="eventcorrection").exists()
    )
    assert event("r0").source == EventSource.USER


def test_the_lists_mark_canceled_events_and_show_the_corrections(
    corrector, usage, ada, organization
):
    _, client = corrector
    r1 = event("r1")
    client.post(correct_url(r1.pk), {"action": "cancel", "reason": "duplicate send"})

    listed = client.get("/admin/metering/event/")
    assert [(e.external_id, e.source) for e in listed.context["cl"].result_list] == [
        ("r2", "user"),
        ("r1", "canceled"),
        ("r0", "user"),
    ]
    assert listed.content.decode().count('<span class="ml-status ml-status-void"') == 1
    only = client.get("/admin/metering/event/?source=canceled")
    assert [e.external_id for e in only.context["cl"].result_list] == ["r1"]
    assert ("canceled", "Canceled") in [
        (choice["query_string"].split("source=")[-1], choice["display"])
        for spec in only.context["cl"].filter_specs
        if spec.parameter_name == "source"
        for choice in spec.choices(only.context["cl"])
    ]

    corrections = client.get("/admin/metering/eventcorrection/")
    assert corrections.status_code == 200
    (row,) = corrections.context["cl"].result_list
    assert (row.event_id, row.reason) == (r1.pk, "duplicate send")
    for query in (
        f"?q={r1.pk}",
        "?q=duplicate",
        "?action__exact=cancel",
        f"?organization={organization.pk}",
        "?created_at__gte=2000-01-01T00:00:00%2B00:00",
    ):
        found = client.get(f"/admin/metering/eventcorrection/{query}").context["cl"].result_list
        assert [c.pk for c in found] == [row.pk], query
    for query in ("?q=nothing-like-it", "?action__exact=replace", f"?q={event('r0').pk}"):
        assert not client.get(f"/admin/metering/eventcorrection/{query}").context["cl"].result_list
    detail = client.get(f"/admin/metering/eventcorrection/{row.pk}/change/")
    assert detail.status_code == 200
    text = detail.content.decode()
    assert f'href="{page(r1.pk)}"' in text and "&quot;v&quot;: 20" in text
    assert 'name="reason"' not in text  # read-only


@pytest.mark.parametrize(("role", "may"), [(BILLING_OPERATOR, True), (SUPPORT, False)])
def test_the_billing_operator_role_corrects_support_does_not(usage, role, may):
    user = get_user_model().objects.create_user("in-role", "r@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    r0 = event("r0")
    assert ("Correct usage" in client.get(page(r0.pk)).content.decode()) is may
    assert client.get(correct_url(r0.pk)).status_code == (200 if may else 403)


def test_the_corrections_list_runs_the_same_queries_for_more_rows(corrector, usage):
    _, client = corrector

    def queries_of_the_list():
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/admin/metering/eventcorrection/").status_code == 200
        return len(captured.captured_queries)

    client.post(correct_url(event("r0").pk), {"action": "cancel", "reason": "a"})
    one = queries_of_the_list()
    for external_id in ("r1", "r2"):
        client.post(
            correct_url(event(external_id).pk),
            {"action": "replace", "reason": "b", "name": "req", "metadata": '{"v": 1}'},
        )
    assert EventCorrection.objects.count() == 3
    assert queries_of_the_list() == one

"""Usage corrections on both stores (conftest `store`): every aggregation reads the corrected
usage once the call returns, bad requests write nothing, an event is corrected once (its
replacement again). Then what only ClickHouse has: the cancellations and replacements travel
as one outbox batch, and a consistent read sees the correction exactly when ClickHouse has it;
and its event lists leave canceled events out unless asked for."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from customers.services import create_customer
from metering import corrections, queries, stores
from metering.errors import InvalidCorrection
from metering.ingest import ingest_events
from metering.models import EventBatch, EventCorrection
from metering.queries import Window
from tests.factories import TEN_REQUESTS_AT as T0
from tests.factories import event_meter, send_ten_requests

pytestmark = pytest.mark.django_db(transaction=True)

WHOLE = ((datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)),)


@pytest.fixture
def org(store, token_for):
    return token_for(f"Corrections {store}")[0]


@pytest.fixture
def ada(org):
    return create_customer(organization=org, email="ada@x.io", external_id="ada")


@pytest.fixture
def ten(org, ada):
    """r0..r9 seven minutes apart, v = 10..100, model m0..m3 in turn."""
    send_ten_requests(org)


def meter(org, func, prop=None):
    return event_meter(org, {"func": func, **({"property": prop} if prop else {})})


def value(m, customer) -> Decimal:
    return queries.window_values([Window("k", m, customer.pk, WHOLE)])["k"].value


def found(org, *, ids=(), external_ids=()) -> dict:
    """The store's events by external id (or id when it has none)."""
    events = stores.current().find_events(org.pk, ids=list(ids), external_ids=list(external_ids))
    return {e.external_id or e.id: e for e in events}


def correct(org, *items, actor="api:test"):
    return corrections.correct_events(organization=org, corrections=list(items), actor=actor)


def test_cancel_and_replace_reflect_in_every_aggregation_at_once(org, ada, ten):
    funcs = {
        "count": meter(org, "count"),
        "sum": meter(org, "sum", "v"),
        "avg": meter(org, "avg", "v"),
        "min": meter(org, "min", "v"),
        "max": meter(org, "max", "v"),
        "unique": meter(org, "unique", "model"),
    }
    assert {func: value(m, ada) for func, m in funcs.items()} == {
        "count": 10,
        "sum": 550,
        "avg": 55,
        "min": 10,
        "max": 100,
        "unique": 4,
    }
    with queries.consistent_read() as before:
        pass
    originals = found(org, external_ids=["r0", "r1", "r9"])
    assert originals["r9"].metadata == {"v": 100, "model": "m1"}
    replace, cancel0, cancel1 = correct(
        org,
        {
            "external_id": "r9",
            "action": "replace",
            "reason": "peak mis-measured",
            "metadata": {"v": Decimal("5.25"), "model": "m0"},
        },
        {"external_id": "r0", "action": "cancel", "reason": "test traffic"},
        {"event_id": str(originals["r1"].id), "action": "cancel", "reason": "test traffic"},
        actor="staff:test",
    )
    # r9 (100, m1) → 5.25, m0; r0 (10, m0) and r1 (20, m1) gone: v = 30..90 and 5.25
    assert {func: value(m, ada) for func, m in funcs.items()} == {
        "count": 8,
        "sum": Decimal("425.25"),
        "avg": Decimal("53.15625"),
        "min": Decimal("5.25"),
        "max": 90,
        "unique": 4,  # m0 (replacement, r4, r8), m1 (r5), m2, m3
    }
    after = found(org, ids=[replace.replacement_id], external_ids=["r0", "r1", "r9"])
    assert {after[k].source for k in ("r0", "r1", "r9")} == {"canceled"}
    replacement = after[replace.replacement_id]
    r9 = originals["r9"]
    assert (
        replacement.name,
        replacement.source,
        replacement.timestamp,
        replacement.customer_id,
        replacement.external_customer_id,
        replacement.external_id,
        replacement.arrival_txid,
    ) == ("req", "user", r9.timestamp, ada.pk, "ada", None, r9.arrival_txid)
    assert replacement.metadata == {"v": Decimal("5.25"), "model": "m0"}
    assert type(replacement.metadata["v"]) is Decimal
    assert (cancel0.replacement_id, cancel1.replacement_id) == (None, None)
    assert replace.original["metadata"] == {"v": 100, "model": "m1"}
    assert replace.event_arrival_txid == r9.arrival_txid
    assert replace.txid == cancel0.txid == cancel1.txid
    # the service's events_ingested receivers read the replacements' customers
    assert stores.current().customers_of_events([replace.replacement_id]) == [ada.pk]
    # the replacement stands where r9 stood: a boundary that saw r9 sees it (no late usage)
    seen = queries.window_events(Window("e", funcs["sum"], ada.pk, WHOLE), seen_by=before)
    assert [(e.timestamp, e.number) for e in seen][-1] == (r9.timestamp, Decimal("5.25"))
    assert len(seen) == 8


def test_a_bad_correction_writes_nothing(org, ada, ten):
    count = meter(org, "count")
    batches = EventBatch.objects.count()
    with pytest.raises(InvalidCorrection) as caught:
        correct(
            org,
            {"external_id": "r0", "action": "cancel", "reason": "ok"},
            {"external_id": "nope", "action": "cancel", "reason": "x"},
            {"external_id": "r2", "action": "cancel", "reason": " "},
            {"external_id": "r3", "action": "replace", "reason": "x"},
            {"event_id": "not-a-uuid", "action": "cancel", "reason": "x"},
            {"external_id": "r4", "action": "drop", "reason": "x"},
        )
    assert {(tuple(i["loc"]), i["type"]) for i in caught.value.items} == {
        ((2, "reason"), "missing"),
        ((3,), "missing"),
        ((4, "event_id"), "uuid_parsing"),
        ((5, "action"), "enum"),
    }
    with pytest.raises(InvalidCorrection) as caught:
        correct(
            org,
            {"external_id": "r0", "action": "cancel", "reason": "ok"},
            {"external_id": "nope", "action": "cancel", "reason": "x"},
            {"event_id": "00000000-0000-4000-8000-000000000000", "action": "cancel", "reason": "x"},
            {"external_id": "r0", "action": "cancel", "reason": "twice"},
        )
    assert [(i["loc"], i["type"]) for i in caught.value.items] == [
        ([1, "external_id"], "event_not_found"),
        ([2, "event_id"], "event_not_found"),
        ([3, "external_id"], "duplicate"),
    ]
    assert value(count, ada) == 10
    assert not EventCorrection.objects.exists() and EventBatch.objects.count() == batches
    assert {e.source for e in found(org, external_ids=["r0"]).values()} == {"user"}


def test_an_event_is_corrected_once_and_its_replacement_again(org, ada, ten):
    total = meter(org, "sum", "v")
    (first,) = correct(
        org, {"external_id": "r0", "action": "replace", "reason": "a", "metadata": {"v": 11}}
    )
    for again in ({"external_id": "r0"}, {"event_id": str(first.event_id)}):
        with pytest.raises(InvalidCorrection) as caught:
            correct(org, {**again, "action": "cancel", "reason": "again"})
        assert [i["type"] for i in caught.value.items] == ["already_corrected"]
    (second,) = correct(
        org,
        {
            "event_id": str(first.replacement_id),
            "action": "replace",
            "reason": "b",
            "name": "req",
            "metadata": {"v": 12},
        },
    )
    assert value(total, ada) == 550 - 10 + 12
    assert second.event_arrival_txid == first.event_arrival_txid
    events = found(org, ids=[first.replacement_id, second.replacement_id])
    assert events[first.replacement_id].source == "canceled"
    assert events[second.replacement_id].source == "user"
    assert events[second.replacement_id].arrival_txid == first.event_arrival_txid


def test_an_event_sent_before_its_customer_existed(org, ten):
    """ClickHouse keeps such an event unlinked (the zero customer): its canceled copy and its
    replacement keep that, and stay the customer's through the link."""
    total = meter(org, "sum", "v")
    ingest_events(
        organization=org,
        events=[
            {"name": "req", "external_customer_id": "cy", "timestamp": T0.isoformat(), **extra}
            for extra in ({"external_id": "c1", "metadata": {"v": 7}}, {"metadata": {"v": 3}})
        ],
    )
    cy = create_customer(organization=org, email="cy@x.io", external_id="cy")
    assert value(total, cy) == 10
    c1 = found(org, external_ids=["c1"])["c1"]
    assert (c1.customer_id, c1.external_customer_id) == (cy.pk, "cy")
    (made,) = correct(
        org, {"external_id": "c1", "action": "replace", "reason": "x", "metadata": {"v": 70}}
    )
    assert made.customer_id == cy.pk
    assert value(total, cy) == 73
    assert stores.current().customers_of_events([made.replacement_id]) == [cy.pk]


@pytest.mark.parametrize("store", ["clickhouse"], indirect=True)
def test_clickhouse_a_correction_is_seen_when_its_batch_is_delivered(org, ada, ten, monkeypatch):
    from metering.stores import clickhouse

    total = meter(org, "sum", "v")

    def unreachable(rows, batch_id):
        raise ConnectionError("ClickHouse unreachable")

    monkeypatch.setattr(clickhouse, "_insert", unreachable)
    replace, cancel = correct(
        org,
        {"external_id": "r9", "action": "replace", "reason": "a", "metadata": {"v": 1}},
        {"external_id": "r0", "action": "cancel", "reason": "b"},
    )
    (pending,) = EventBatch.objects.filter(organization=org, delivered_at__isnull=True)
    # one batch: the replacement first, then both canceled copies, in the correcting transaction
    assert (pending.txid, pending.event_count) == (replace.txid, 3)
    assert (pending.first_event_id, pending.customer_ids) == (replace.replacement_id, [ada.pk])
    assert stores.current().customers_of_events([replace.replacement_id]) == [ada.pk]
    with queries.consistent_read() as boundary:
        assert not boundary.sees(replace.txid)
        assert value(total, ada) == 550
    # committed: the events read as corrected already though ClickHouse has not got it
    assert {e.source for e in found(org, external_ids=["r0", "r9"]).values()} == {"canceled"}
    with pytest.raises(InvalidCorrection) as caught:
        correct(org, {"external_id": "r0", "action": "cancel", "reason": "again"})
    assert [i["type"] for i in caught.value.items] == ["already_corrected"]
    monkeypatch.undo()
    assert clickhouse.relay(min_age=timedelta(0)) == 1
    with queries.consistent_read() as boundary:
        assert boundary.sees(replace.txid)
        assert value(total, ada) == 550 - 100 + 1 - 10
    # a resend of the batch (the relay racing the request) changes nothing
    rows = (
        clickhouse.client()
        .query(f"SELECT * FROM {clickhouse.layout().events} WHERE batch_id = {pending.pk}")
        .result_rows
    )
    assert sorted(r[5] for r in rows) == ["canceled", "canceled", "user"]
    clickhouse._insert([list(r) for r in rows], pending.pk)
    assert value(total, ada) == 441


@pytest.mark.parametrize("store", ["clickhouse"], indirect=True)
def test_clickhouse_event_lists_leave_canceled_events_out_unless_asked(org, ada, ten):
    (replace, _) = correct(
        org,
        {"external_id": "r1", "action": "replace", "reason": "a", "name": "fixed"},
        {"external_id": "r0", "action": "cancel", "reason": "b"},
    )
    store = stores.current()

    def listed(**criteria):
        events = store.list_events(org.pk, criteria, descending=False, limit=100)
        assert store.count_events(org.pk, criteria, cap=100) == len(events)
        return sorted((e.external_id or e.name, e.source) for e in events)

    users = [(f"r{i}", "user") for i in range(2, 10)] + [("fixed", "user")]
    canceled = [("r0", "canceled"), ("r1", "canceled")]
    assert listed() == sorted(users)
    assert listed(sources=["user"]) == sorted(users)
    assert listed(sources=["canceled"]) == []
    assert listed(include_canceled=True) == sorted(users + canceled)
    assert listed(include_canceled=True, sources=["canceled"]) == canceled
    assert listed(include_canceled=True, sources=["system"]) == []
    assert listed(include_canceled=True, ids=[replace.event_id]) == [("r1", "canceled")]
    names = store.customer_event_names(org.pk, customer_ids=[ada.pk], external_ids=["ada"])
    assert sorted((n["name"], n["occurrences"]) for n in names) == [("fixed", 1), ("req", 8)]
    preview = store.preview(
        org.pk,
        filter_={"conjunction": "and", "clauses": []},
        aggregation={"func": "sum", "property": "v"},
        start=WHOLE[0][0],
        end=WHOLE[0][1],
        timeout_ms=10_000,
    )
    assert preview.total[:3] == (9, 9, Decimal(540))

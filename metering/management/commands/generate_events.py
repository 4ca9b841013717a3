"""`python manage.py generate_events --events 10000000 ...`: synthetic events through PostgreSQL
COPY, for benchmarks (docs/performance.md) and for trying the admin on a big table.

One transaction: customers are created (set-based) if missing, the events are streamed with
`COPY ... FROM STDIN` on psycopg 3's raw connection while Python generates the next rows, then the
EventName summary and customers' `first_user_event_at` are updated from figures collected while
generating (no scan of the events table), and the table is ANALYZEd so the planner and the
admin's row estimate see the new size. With `--meters`, the six demo meters (one per
aggregation) are created afterwards and backfilled (unless `--skip-rollups`).

Events are linked (customer_id and external_customer_id both set), `source = 'user'`, with unique
`external_id`s `gen_<run>_<n>`; timestamps rise through the last `--days` days (with jitter),
customers follow a Zipf-like distribution, metadata is the same as seed_demo's.
"""

import random
import secrets
import time
from datetime import UTC, datetime, timedelta

import simplejson
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from tqdm import tqdm

from customers.models import Customer, Organization
from metering.backfill import backfill
from metering.demo import ensure_demo_meters
from metering.management.commands.seed_demo import customer_weights, synthetic_event
from metering.models import Meter, MeterState

COPY_SQL = (
    "COPY metering_event (organization_id, name, source, timestamp, ingested_at, customer_id, "
    "external_customer_id, external_id, metadata) FROM STDIN"
)
CHUNK = 20_000

FIRST_EVENT_SQL = """
UPDATE customers_customer c SET first_user_event_at = m.first
FROM unnest(%s::uuid[], %s::timestamptz[]) AS m(id, first)
WHERE c.id = m.id AND (c.first_user_event_at IS NULL OR c.first_user_event_at > m.first)
"""

EVENT_NAMES_SQL = """
INSERT INTO metering_eventname (organization_id, name, source, occurrences, first_seen, last_seen)
SELECT %s, n.name, 'user', n.occurrences, n.first_seen, n.last_seen
FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[], %s::timestamptz[])
     AS n(name, occurrences, first_seen, last_seen)
ORDER BY n.name
ON CONFLICT (organization_id, name, source) DO UPDATE SET
    occurrences = metering_eventname.occurrences + EXCLUDED.occurrences,
    first_seen = LEAST(metering_eventname.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(metering_eventname.last_seen, EXCLUDED.last_seen)
"""


def _copy_text(value: str) -> str:
    """Escape for COPY's text format (backslash, tab, newline, carriage return)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


class Command(BaseCommand):
    help = "Load synthetic events with PostgreSQL COPY (benchmarks, big-table admin checks)."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=1_000_000)
        parser.add_argument("--customers", type=int, default=1_000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--org", default="Generated", help="organization name (created)")
        parser.add_argument("--seed", type=int, default=None, help="random seed (reproducible)")
        parser.add_argument(
            "--meters", action="store_true", help="create the 6 demo meters afterwards"
        )
        parser.add_argument(
            "--skip-rollups", action="store_true", help="don't backfill meter rollups"
        )
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def handle(self, *args, events, customers, days, org, seed, meters, skip_rollups, **options):
        if events < 0 or customers < 1 or days < 1:
            raise CommandError("--events >= 0, --customers >= 1 and --days >= 1 are required.")
        rng = random.Random(seed)
        run = secrets.token_hex(4)  # unique per run, even with the same --seed
        started = time.perf_counter()
        organization, _ = Organization.objects.get_or_create(name=org)
        with transaction.atomic():
            people = self._ensure_customers(organization, customers)
            stats = self._copy_events(organization, people, events, days, rng, run, options)
            self._update_summaries(organization, people, stats)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE metering_event")
        elapsed = time.perf_counter() - started
        rate = events / elapsed if elapsed else 0
        self.stdout.write(
            self.style.SUCCESS(
                f"Loaded {events:,} events for {len(people):,} customers of '{organization.name}' "
                f"in {elapsed:.1f} s ({rate:,.0f} events/s); external ids gen_{run}_*."
            )
        )
        self._meters(organization, meters, skip_rollups)

    # -- steps ---------------------------------------------------------------------------------

    def _ensure_customers(self, organization, count: int) -> list[tuple]:
        """(id, external_id) of customers gen_cust_000001.. (created set-based if missing)."""
        wanted = [f"gen_cust_{k + 1:06d}" for k in range(count)]
        existing = dict(
            Customer.objects.active()
            .filter(organization=organization, external_id__in=wanted)
            .values_list("external_id", "pk")
        )
        missing = [
            Customer(
                organization=organization,
                external_id=external_id,
                email=f"{external_id.replace('_', '.')}@example.com",
                name=f"Generated customer {external_id[9:]}",
            )
            for external_id in wanted
            if external_id not in existing
        ]
        # These customers are new and the events below are linked as they are written, so the
        # service's "link earlier events" step has nothing to do: a bulk insert is equivalent.
        for customer in Customer.objects.bulk_create(missing, batch_size=5_000):
            existing[customer.external_id] = customer.pk
        return [(existing[external_id], external_id) for external_id in wanted]

    def _copy_events(self, organization, people, total, days, rng, run, options) -> dict:
        now = datetime.now(UTC) - timedelta(seconds=1)
        start = (now - timedelta(days=days)).timestamp()
        span = now.timestamp() - start
        ingested = now.isoformat()
        org = str(organization.pk)
        cum = customer_weights(len(people))
        indexes = range(len(people))
        keys = [(str(pk), _copy_text(external_id)) for pk, external_id in people]
        names: dict[str, list] = {}
        first_seen: dict[int, float] = {}
        dumps = simplejson.dumps
        fromtimestamp = datetime.fromtimestamp
        choices, random_ = rng.choices, rng.random
        bar = tqdm(
            total=total, unit="ev", unit_scale=True, desc="COPY events",
            disable=options.get("no_progress"),
        )  # fmt: skip
        connection.ensure_connection()
        with connection.connection.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
            for chunk_start in range(0, total, CHUNK):
                lines = []
                for i in range(chunk_start, min(chunk_start + CHUNK, total)):
                    name, metadata = synthetic_event(rng)
                    who = choices(indexes, cum_weights=cum)[0]
                    moment = start + (i + random_()) * span / total
                    customer_id, external_customer_id = keys[who]
                    stamp = fromtimestamp(moment, UTC).isoformat()
                    lines.append(
                        f"{org}\t{name}\tuser\t{stamp}\t{ingested}\t{customer_id}\t"
                        f"{external_customer_id}\tgen_{run}_{i}\t"
                        f"{_copy_text(dumps(metadata, separators=(',', ':')))}\n"
                    )
                    stat = names.get(name)
                    if stat is None:
                        names[name] = [1, moment, moment]
                    else:
                        stat[0] += 1
                        stat[1] = min(stat[1], moment)
                        stat[2] = max(stat[2], moment)
                    if who not in first_seen or moment < first_seen[who]:
                        first_seen[who] = moment
                copy.write("".join(lines))
                bar.update(len(lines))
        bar.close()
        return {"names": names, "first_seen": first_seen}

    def _update_summaries(self, organization, people, stats) -> None:
        def as_dt(moment):
            return datetime.fromtimestamp(moment, UTC)

        names = sorted(stats["names"].items())
        first_seen = stats["first_seen"]
        with connection.cursor() as cursor:
            if names:
                cursor.execute(
                    EVENT_NAMES_SQL,
                    [
                        organization.pk,
                        [name for name, _ in names],
                        [stat[0] for _, stat in names],
                        [as_dt(stat[1]) for _, stat in names],
                        [as_dt(stat[2]) for _, stat in names],
                    ],
                )
            if first_seen:
                cursor.execute(
                    FIRST_EVENT_SQL,
                    [
                        [people[who][0] for who in first_seen],
                        [as_dt(moment) for moment in first_seen.values()],
                    ],
                )

    def _meters(self, organization, create: bool, skip_rollups: bool) -> None:
        if create:
            self.stdout.write(ensure_demo_meters(organization))
        ready = Meter.objects.filter(organization=organization, state=MeterState.READY)
        if ready.exists():
            # COPY bypasses the ingest path, so rollups of meters that were already READY miss
            # these events; rebuilding is the operator's call (it drops the rollups first).
            self.stdout.write(
                self.style.WARNING(
                    f"{ready.count()} meter(s) of '{organization.name}' were ready before this "
                    "load: their rollups don't include the copied events; rebuild them with "
                    "`manage.py backfill_meter --rebuild`."
                )
            )
        pending = Meter.objects.filter(organization=organization, state=MeterState.BACKFILLING)
        if skip_rollups:
            if pending.exists():
                self.stdout.write(f"Rollups: skipped; {pending.count()} meter(s) backfilling.")
            return
        for meter in pending:
            started = time.perf_counter()
            backfill(meter.pk)
            self.stdout.write(
                f"Rollups: {meter.name} backfilled in {time.perf_counter() - started:.1f} s"
            )

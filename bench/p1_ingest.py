"""P1 ingest throughput (and, with --probe, P2 freshness under the same load).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/meterline_bench .venv/bin/python bench/p1_ingest.py

HTTP `POST /v1/events/ingest` to gunicorn (`config.wsgi`, DEBUG=0, sync workers) on this machine,
1,000-event batches with external ids, 4 concurrent clients, 6 meters (one per aggregation) in a
fresh organization with 2,000 customers. Request bodies are serialized before the clock starts.
References in the same run, both one stream in one transaction: `COPY` of the same rows into a
minimal events table (same columns, two indexes: primary key and the idempotency key), and into
Meterline's own `metering_event` table (all its indexes and constraints) for another fresh
organization. Rollup compaction runs every `ROLLUP_COMPACTION_INTERVAL_SECONDS` during the load
(in this process, as the beat would schedule it), so its cost is in the figure.
Worker RSS is sampled every 0.5 s (P6). Test data is deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, workload  # noqa: E402

PROBE_CUSTOMER = "bench-probe"
PROBE_METER = "bench: requests (count)"
MAX_ATTEMPTS = 5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=400_000, help="measured events")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--no-meters", action="store_true", help="ingest without any meter")
    parser.add_argument("--probe", action="store_true", help="P2: freshness probe during load")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark organizations")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def post_batches(base_url: str, token: str, bodies: list[bytes], clients: int):
    """Send `bodies` with `clients` threads; returns (wall seconds, per-request records)."""
    import httpx

    work: queue.Queue = queue.Queue()
    for item in bodies:
        work.put(item)
    records: list[dict] = []
    errors: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def client():
        with httpx.Client(base_url=base_url, headers=headers, timeout=300) as http:
            while True:
                try:
                    data = work.get_nowait()
                except queue.Empty:
                    return
                start = time.perf_counter()
                # A failed batch is sent again (idempotent through its external ids), as a
                # client would; failures are counted and reported.
                for _attempt in range(MAX_ATTEMPTS):
                    response = http.post("/v1/events/ingest", content=data)
                    if response.status_code == 200:
                        break
                    with lock:
                        failures.append(f"{response.status_code}: {response.text[:200]}")
                elapsed = (time.perf_counter() - start) * 1000
                if response.status_code != 200:
                    with lock:
                        errors.append(f"{response.status_code}: {response.text[:300]}")
                    continue
                payload = response.json()
                with lock:
                    records.append(
                        {
                            "client_ms": elapsed,
                            "server_ms": common.server_ms(response),
                            "inserted": payload["inserted"],
                            "duplicates": payload["duplicates"],
                        }
                    )

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} batches failed {MAX_ATTEMPTS} times: {errors[0]}")
    return wall, records, failures


class FreshnessProbe(threading.Thread):
    """P2: ingest 10 `api.request` events for one customer, then read its customer state at once;
    the count meter must already include them (read-your-writes). A read that does not is stale;
    the probe then polls until it shows, recording the delay."""

    def __init__(self, base_url: str, token: str, meter_id: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.base_url, self.token, self.meter_id, self.stop = base_url, token, meter_id, stop
        self.visible_ms: list[float] = []  # ingest response -> a read showing the events
        self.read_ms: list[float] = []
        self.ingest_ms: list[float] = []
        self.stale = 0
        self.rounds = 0
        self.errors: list[str] = []

    def run(self):
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"}
        expected = 0
        serial = 0
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=60) as http:
            while not self.stop.is_set():
                events = [
                    {
                        "name": "api.request",
                        "external_customer_id": PROBE_CUSTOMER,
                        "external_id": f"probe-{uuid.uuid4()}",
                        "metadata": {"endpoint": "/probe", "region": "eu-west", "duration_ms": 1},
                    }
                    for _ in range(10)
                ]
                serial += 1
                start = time.perf_counter()
                response = http.post("/v1/events/ingest", json={"events": events})
                answered = time.perf_counter()
                if response.status_code != 200:
                    self.errors.append(f"ingest {response.status_code}: {response.text[:200]}")
                    time.sleep(0.2)
                    continue
                self.ingest_ms.append((answered - start) * 1000)
                expected += response.json()["inserted"]
                first = True
                while True:
                    read_start = time.perf_counter()
                    state = http.get(f"/v1/customers/external/{PROBE_CUSTOMER}/state")
                    read_end = time.perf_counter()
                    self.read_ms.append((read_end - read_start) * 1000)
                    consumed = None
                    if state.status_code == 200:
                        for meter in state.json().get("active_meters", []):
                            if meter.get("meter_id") == self.meter_id:
                                consumed = meter.get("consumed_units")
                    else:
                        self.errors.append(f"state {state.status_code}: {state.text[:200]}")
                    if consumed is not None and float(consumed) >= expected:
                        self.visible_ms.append((read_end - answered) * 1000)
                        break
                    if first:
                        self.stale += 1
                        first = False
                    if time.perf_counter() - answered > 30:
                        self.errors.append(f"round {serial}: not visible after 30 s")
                        break
                    time.sleep(0.005)
                self.rounds += 1


class WaitSampler(threading.Thread):
    """Samples pg_stat_activity of the benchmark database every 0.1 s: what the server's
    backends are doing (running, waiting on a lock, on I/O, idle in transaction...)."""

    def __init__(self, stop: threading.Event):
        super().__init__(daemon=True)
        self.stop = stop
        self.samples: dict[str, int] = {}
        self.active_samples = 0

    def run(self):
        import psycopg

        with psycopg.connect(common.database_url(), autocommit=True) as conn:
            me = conn.info.backend_pid
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event, "
                    "left(regexp_replace(query, '\\s+', ' ', 'g'), 60) "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend' AND pid <> %s "
                    "AND state <> 'idle'",
                    [me],
                ).fetchall()
                for state, wait_type, wait, query in rows:
                    self.active_samples += 1
                    if wait_type in ("Lock", "LWLock", "IO", "IPC") or wait_type is None:
                        what = f"{wait_type or 'CPU'}:{wait or state}"
                    else:
                        what = f"{wait_type}:{wait}"
                    if wait_type == "Lock":
                        what += f" <- {query}"
                    self.samples[what] = self.samples.get(what, 0) + 1
                self.stop.wait(0.1)

    def report(self) -> dict:
        total = self.active_samples or 1
        return {
            key: {"samples": n, "share": round(n / total, 3)}
            for key, n in sorted(self.samples.items(), key=lambda kv: -kv[1])
        }


def copy_reference(payload: bytes, rows: int) -> float:
    """COPY the rows into metering_event in one transaction; returns events/s."""
    import psycopg

    with psycopg.connect(common.database_url()) as conn:
        with conn.cursor() as cursor:
            start = time.perf_counter()
            with cursor.copy(f"COPY metering_event ({workload.COPY_COLUMNS}) FROM STDIN") as copy:
                view = memoryview(payload)
                for offset in range(0, len(view), 1 << 20):
                    copy.write(view[offset : offset + (1 << 20)])
        conn.commit()
        elapsed = time.perf_counter() - start
    return rows / elapsed, elapsed


MINIMAL_TABLE = """
CREATE TABLE bench_minimal_event (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NOT NULL, name varchar(128) NOT NULL, source varchar(8) NOT NULL,
    timestamp timestamptz NOT NULL, ingested_at timestamptz NOT NULL, customer_id uuid,
    external_customer_id varchar(256), external_id varchar(256), parent_reference varchar(256),
    metadata jsonb NOT NULL
);
CREATE UNIQUE INDEX bench_minimal_event_idem ON bench_minimal_event (organization_id, external_id)
    WHERE external_id IS NOT NULL;
"""


def minimal_copy_reference(payload: bytes, rows: int) -> tuple[float, float]:
    """COPY the rows into a minimal events table (two indexes) in one transaction: the bound
    for any ingest into PostgreSQL on this machine. The table is dropped afterwards."""
    import psycopg

    with psycopg.connect(common.database_url(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_minimal_event")
        conn.execute(MINIMAL_TABLE)
        try:
            with conn.transaction(), conn.cursor() as cursor:
                start = time.perf_counter()
                with cursor.copy(
                    f"COPY bench_minimal_event ({workload.COPY_COLUMNS}) FROM STDIN"
                ) as copy:
                    view = memoryview(payload)
                    for offset in range(0, len(view), 1 << 20):
                        copy.write(view[offset : offset + (1 << 20)])
            elapsed = time.perf_counter() - start
        finally:
            conn.execute("DROP TABLE IF EXISTS bench_minimal_event")
    return rows / elapsed, elapsed


class Compactor(threading.Thread):
    """What the beat entry does: `metering.compaction.compact_rollups` every interval."""

    def __init__(self, stop: threading.Event, interval: float):
        super().__init__(daemon=True)
        self.stop, self.interval = stop, interval
        self.runs: list[tuple[float, int]] = []  # (seconds, delta rows moved)

    def run(self):
        from django.db import connection

        from metering import compaction

        while not self.stop.wait(self.interval):
            start = time.perf_counter()
            moved = compaction.compact_rollups()
            self.runs.append((time.perf_counter() - start, moved))
        connection.close()

    def report(self) -> dict:
        seconds = [r[0] * 1000 for r in self.runs]
        return {
            "runs": len(self.runs),
            "rows_moved": sum(r[1] for r in self.runs),
            "run_ms": common.percentiles(seconds) if seconds else {},
        }


def cleanup(organization_ids: list) -> None:
    """Delete what the run created (events, rollups, meters, customers, tokens, organizations)."""
    import psycopg

    ids = [str(i) for i in organization_ids]
    from metering import rollups

    statements = [
        f"DELETE FROM {table} WHERE meter_id IN "
        "(SELECT id FROM metering_meter WHERE organization_id = ANY(%(ids)s::uuid[]))"
        for table in rollups.ALL_TABLES
        if table != rollups.DELTA_TABLE  # a view over DELTA_ROWS
    ]
    statements.append(
        f"DELETE FROM {rollups.DELTA_ROWS} WHERE meter_ids && (SELECT array_agg(id) "
        "FROM metering_meter WHERE organization_id = ANY(%(ids)s::uuid[]))"
    )
    statements += [
        "DELETE FROM metering_customermeter WHERE meter_id IN "
        "(SELECT id FROM metering_meter WHERE organization_id = ANY(%(ids)s::uuid[]))",
        "DELETE FROM metering_meter WHERE organization_id = ANY(%(ids)s::uuid[])",
        "DELETE FROM metering_event WHERE organization_id = ANY(%(ids)s::uuid[])",
        "DELETE FROM metering_eventname WHERE organization_id = ANY(%(ids)s::uuid[])",
        "DELETE FROM customers_customer WHERE organization_id = ANY(%(ids)s::uuid[])",
        "DELETE FROM customers_apitoken WHERE organization_id = ANY(%(ids)s::uuid[])",
        "DELETE FROM customers_organization WHERE id = ANY(%(ids)s::uuid[])",
    ]
    try:
        with psycopg.connect(common.database_url()) as conn:
            for sql in statements:
                conn.execute(sql, {"ids": ids})
            conn.commit()
    except psycopg.Error as exc:
        print(f"cleanup failed ({exc}); the organizations are left in place", file=sys.stderr)
        return
    # The run churned ~1M delta rows through compaction. On a server without autovacuum (as
    # here) they would stay as dead tuples and the delta tables without statistics, and the
    # next benchmark's reads would pay for it (a never-analyzed, bloated delta table gets a
    # sequential scan: 213 ms instead of 1.2 ms for P3's all-time read).
    with psycopg.connect(common.database_url(), autocommit=True) as conn:
        conn.execute(f"VACUUM (ANALYZE) {rollups.DELTA_ROWS}, {rollups.UNIQUE_DELTA_TABLE}")


def run(args, *, name: str = "p1_ingest") -> dict:
    url = common.database_url()
    common.ensure_database(url)
    common.bootstrap(url)
    from customers.models import Customer, Organization

    info = common.machine_info(url)
    common.print_machine(info)

    stale = list(
        Organization.objects.filter(name__regex=r"^bench-(p1|copy)-[0-9a-f]{8}$").values_list(
            "pk", flat=True
        )
    )
    if stale:
        print(f"removing {len(stale)} organizations left by an interrupted run")
        cleanup(stale)
    run_id = uuid.uuid4().hex[:8]
    organization, token, meter_ids = workload.setup_organization(
        name=f"bench-p1-{run_id}", customers=args.customers, with_meters=not args.no_meters
    )
    Customer.objects.create(
        organization=organization, external_id=PROBE_CUSTOMER, email="probe@bench.example"
    )
    copy_org = Organization.objects.create(name=f"bench-copy-{run_id}")
    customer_ids = dict(
        Customer.objects.filter(organization=organization).values_list("external_id", "pk")
    )

    measured = args.events // args.batch
    warmup = args.clients * 2
    print(
        f"P1: {measured} batches x {args.batch} events, {args.clients} clients, "
        f"{args.workers} gunicorn workers, {len(meter_ids)} meters, {args.customers} customers"
    )
    t0 = time.perf_counter()
    all_batches = workload.make_batches(
        seed=args.seed,
        run_id=run_id,
        batches=warmup + measured,
        batch_size=args.batch,
        customers=args.customers,
    )
    warm_bodies = [workload.body(b) for b in all_batches[:warmup]]
    bodies = [workload.body(b) for b in all_batches[warmup:]]
    copy_data = workload.copy_payload(
        all_batches[warmup:], organization_id=copy_org.pk, customer_ids=customer_ids
    )
    del all_batches
    print(
        f"prepared {len(bodies)} bodies ({sum(map(len, bodies)) / 2**20:.0f} MiB) "
        f"in {time.perf_counter() - t0:.1f} s"
    )

    probe = None
    with common.Server(url=url, workers=args.workers) as server:
        _, _, warm_failures = post_batches(server.base_url, token, warm_bodies, args.clients)
        warm_at = time.monotonic()
        stop = threading.Event()
        waits = WaitSampler(stop)
        waits.start()
        from django.conf import settings

        compactor = Compactor(stop, settings.ROLLUP_COMPACTION_INTERVAL_SECONDS)
        compactor.start()
        if args.probe:
            probe = FreshnessProbe(server.base_url, token, meter_ids[PROBE_METER], stop)
            probe.start()
        wall, records, failures = post_batches(server.base_url, token, bodies, args.clients)
        stop.set()
        waits.join(timeout=10)
        compactor.join(timeout=120)
        if probe:
            probe.join(timeout=60)
        time.sleep(0.6)  # one more RSS sample after the load
        rss = server.rss_report(since=warm_at)

    inserted = sum(r["inserted"] for r in records)
    duplicates = sum(r["duplicates"] for r in records)
    throughput = inserted / wall
    client = common.percentiles([r["client_ms"] for r in records])
    server_side = common.percentiles([r["server_ms"] for r in records if r["server_ms"]])

    load = common.load_average()
    minimal_rate, minimal_seconds = minimal_copy_reference(copy_data, measured * args.batch)
    copy_rate, copy_seconds = copy_reference(copy_data, measured * args.batch)
    ratio = throughput / minimal_rate

    print(f"ingested {inserted:,} events ({duplicates} duplicates) in {wall:.2f} s")
    if failures or warm_failures:
        print(
            f"   FAILED requests (retried): {len(failures)} measured + {len(warm_failures)} "
            f"warm-up, first: {(failures or warm_failures)[0]}"
        )
    print(f"P1 ingest: {throughput:,.0f} events/s   target >= 20,000 events/s")
    print(
        f"   COPY into a minimal table (2 indexes): {minimal_rate:,.0f} events/s "
        f"({minimal_seconds:.2f} s)"
    )
    print(f"   ratio: {ratio:.3f} x minimal COPY   target >= 0.25")
    print(
        f"   COPY into metering_event (all its indexes): {copy_rate:,.0f} events/s "
        f"({copy_seconds:.2f} s); ratio {throughput / copy_rate:.3f}"
    )
    print(f"   load average at the end of the load: {load}")
    print(f"   compaction during the load: {compactor.report()}")
    print(f"   per batch, client: {common.fmt_ms(client)}")
    print(f"   per batch, server (Server-Timing): {common.fmt_ms(server_side)}")
    print("   database backends during the run (share of non-idle samples):")
    for what, figures in list(waits.report().items())[:8]:
        print(f"      {figures['share']:6.1%}  {what}")
    for pid, figures in rss.items():
        print(
            f"   P6 worker {pid} RSS: {figures['start_mib']} -> {figures['end_mib']} MiB "
            f"(quarters {figures['quarters_mib']}, peak {figures['peak_mib']}, "
            f"{figures['samples']} samples)"
        )
    result = {
        "machine": info,
        "parameters": {
            **vars(args),
            "warmup_batches": warmup,
            "measured_batches": measured,
            "meters": list(meter_ids),
        },
        "p1": {
            "events_per_second": round(throughput),
            "inserted": inserted,
            "duplicates": duplicates,
            "wall_seconds": round(wall, 3),
            "minimal_copy_events_per_second": round(minimal_rate),
            "minimal_copy_seconds": round(minimal_seconds, 3),
            "ratio_to_minimal_copy": round(ratio, 4),
            "copy_events_per_second": round(copy_rate),
            "copy_seconds": round(copy_seconds, 3),
            "ratio_to_copy": round(throughput / copy_rate, 4),
            "load_average": load,
            "compaction": compactor.report(),
            "batch_client_ms": client,
            "batch_server_ms": server_side,
            "failed_requests_retried": len(failures),
            "failed_requests_warmup": len(warm_failures),
            "failure_samples": (failures + warm_failures)[:10],
            "targets": {"events_per_second": 20000, "ratio_to_copy": 0.25},
            "met": throughput >= 20000 and ratio >= 0.25,
        },
        "p6_worker_rss": rss,
        "database_backend_samples": waits.report(),
    }
    if probe:
        visible = common.percentiles(probe.visible_ms)
        reads = common.percentiles(probe.read_ms)
        print(
            f"P2 freshness: {probe.rounds} rounds, stale reads {probe.stale} (target 0); "
            f"response -> visible {common.fmt_ms(visible)}"
        )
        print(f"   probe state reads under load: {common.fmt_ms(reads)}")
        if probe.errors:
            print(f"   probe errors: {len(probe.errors)}, first: {probe.errors[0]}")
        result["p2"] = {
            "rounds": probe.rounds,
            "stale_reads": probe.stale,
            "visible_after_ms": visible,
            "state_read_ms": reads,
            "probe_ingest_ms": common.percentiles(probe.ingest_ms),
            "errors": probe.errors[:20],
            "target_stale_reads": 0,
            "met": probe.stale == 0 and not probe.errors and probe.rounds > 0,
        }
    if not args.keep:
        cleanup([organization.pk, copy_org.pk])
    common.save_result(name, result)
    return result


if __name__ == "__main__":
    run(parse_args())

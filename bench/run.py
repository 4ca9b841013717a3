"""One entry point for the benchmarks (docs/performance.md):

    .venv/bin/python bench/run.py load   # 10M-event dataset for P3/P4 (once, minutes)
    .venv/bin/python bench/run.py p1     # ingest throughput vs COPY (+ P6 worker RSS)
    .venv/bin/python bench/run.py p2     # P1's load plus the freshness probe
    .venv/bin/python bench/run.py p3     # customer state vs an empty events table
    .venv/bin/python bench/run.py p4     # quantities, 90 days x day
    .venv/bin/python bench/run.py profile  # per-statement time of an ingest batch
    .venv/bin/python bench/run.py p5     # cycle close vs one GROUP BY (+ P6 closing RSS)
    .venv/bin/python bench/run.py dashboard  # the admin billing dashboard on P5's database
    .venv/bin/python bench/run.py p8     # collect_payments vs the provider calls (localstripe)

Extra arguments go to the benchmark (e.g. `bench/run.py p1 --events 200000`). The database is
`DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/meterline_bench).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in (
        "load",
        "p1",
        "p2",
        "p3",
        "p4",
        "p5",
        "dashboard",
        "profile",
        "p8",
    ):
        print(__doc__)
        raise SystemExit(2)
    which, rest = sys.argv[1], sys.argv[2:]
    if which == "load":
        from bench import load_dataset

        load_dataset.main(rest)
    elif which in ("p1", "p2"):
        from bench import p1_ingest

        args = p1_ingest.parse_args(rest + (["--probe"] if which == "p2" else []))
        p1_ingest.run(args, name="p2_freshness" if which == "p2" else "p1_ingest")
    elif which in ("p3", "p4"):
        from bench import p3_p4_reads

        p3_p4_reads.main([*rest, "--only", which])
    elif which == "p5":
        from bench import p5_close

        p5_close.main(rest)
    elif which == "p8":
        from bench import p8_collect

        p8_collect.main(rest)
    elif which == "dashboard":
        from bench import dashboard_page

        dashboard_page.main(rest)
    else:
        from bench import profile_ingest

        profile_ingest.main(rest)


if __name__ == "__main__":
    main()

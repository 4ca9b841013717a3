"""Soaks: the long versions of scenario tests that the suite runs short (docs/performance.md).

    .venv/bin/python bench/soak.py dev-run [--cycles 20] [--budget 10]
    .venv/bin/python bench/soak.py races [--rounds 10]

Each runs the suite's own test through pytest with bigger numbers, on the database `./dev test`
uses (DATABASE_URL, or the embedded PostgreSQL), with a progress bar on a terminal, and prints the
test's figures. `dev-run` also holds every stop and every restart of `./dev run` to the budget (the
10 s target; the suite's test only catches a hang). Extra arguments after `--` go to pytest.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SOAKS = {
    "dev-run": "tests/ops/test_dev_run.py::test_dev_run_stops_cleanly_and_restarts",
    "races": (
        "tests/races/test_signup_and_new_meter_races.py"
        "::test_signups_and_new_meters_during_ingest_lose_no_events"
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("soak", choices=sorted(SOAKS))
    parser.add_argument("--cycles", type=int, default=20, help="dev-run: restarts (10 per signal)")
    parser.add_argument("--budget", type=float, default=10.0, help="dev-run: seconds per stop/start")
    parser.add_argument("--rounds", type=int, default=10, help="races: rounds of 300 sign-ups")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    # what `./dev test` sets
    env.setdefault("SECRET_KEY", "test-only-secret-key")
    env["DEBUG"] = "0"
    if args.soak == "dev-run":
        env["DEV_RUN_CYCLES"] = str(args.cycles)
        env["DEV_RUN_STOP_BUDGET"] = env["DEV_RUN_START_BUDGET"] = str(args.budget)
        what = f"{args.cycles} restarts of ./dev run, each stop and start within {args.budget:g} s"
    else:
        env["RACE_ROUNDS"] = str(args.rounds)
        env.setdefault("LOG_LEVEL", "WARNING")  # not a line per HTTP request under the bar
        what = f"{args.rounds} rounds of 300 sign-ups and 2 new meters during 3-client ingest"

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"» soak {args.soak}: {what}\n  {os.cpu_count()} cores, load average {load}", flush=True)
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q"]
    result = subprocess.run([*command, SOAKS[args.soak], *args.pytest_args], cwd=BASE_DIR, env=env)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    verdict = "passed" if result.returncode == 0 else f"FAILED (pytest exit {result.returncode})"
    print(f"» soak {args.soak} {verdict} in {time.monotonic() - started:.0f} s (load {load})")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())

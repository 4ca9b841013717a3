"""`./dev run` as a developer uses it: started, stopped with Ctrl-C (SIGINT to its process group)
or `kill` (SIGTERM), and started again. Every stop is clean (no traceback, no process of the run
left, the port free); every restart serves again; a state file that an interrupted run left
empty, truncated, of the wrong shape or naming a dead process is recovered with one line, and a
clean restart prints no such line. The figures (stop, start, signal-to-serving) are printed.

Five restarts cover each signal and each kind of damaged state file; every other stop finds the
worker ready (a warm shutdown), the others come right after the banner. The time limits here only
catch a hang (30 s to stop, 60 s to serve again; with two busy loops beside it on 2 shared cores,
load 8.6-12.3, starts took 3.4-9.2 s and stops up to 3.3 s). The product's targets — every stop and
every start within 10 s, over 20 restarts — are checked by the soak `bench/soak.py dev-run`
(docs/performance.md), which runs this test with DEV_RUN_CYCLES=20 and both limits at 10 s.

It runs the embedded PostgreSQL in a private data folder (the path the state file belongs to),
migrated and seeded with the demo data once by the first start. The demo's payments are checked
against localstripe, which `./dev run` starts too: a paid invoice for each charge that
succeeded there (one charge each, for its total), one customer's declined card making its
subscription `past_due`, and localstripe's state kept over the restarts.

The README's snippets run in order against the same demo, as a reader would: the demo token, the
documented commands, nothing set up behind their back; meanwhile the terminal shows the banner
last, background work going to the files its lines name.
"""

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import stripe
from tqdm import tqdm

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
CYCLES = int(os.environ.get("DEV_RUN_CYCLES", "5"))
# hang limits, not the 10 s targets (see the module docstring); the soak sets both to 10
STOP_BUDGET_SECONDS = float(os.environ.get("DEV_RUN_STOP_BUDGET", "30"))
START_BUDGET_SECONDS = float(os.environ.get("DEV_RUN_START_BUDGET", "60"))
# what a start finds in the state file, in turn: nothing done to it, then what an interrupted
# run could have left (empty, a dead process, truncated, the wrong shape)
DAMAGE = [None, "", json.dumps([2**22 + 12345]), "[12", "{}"]
RECOVERY_LINE = "» embedded PostgreSQL: recovered"

pytestmark = pytest.mark.slow


def serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class DevRun:
    """One `./dev run` process with its output captured in files."""

    def __init__(
        self,
        env: dict,
        port: int,
        logs: Path,
        index: int,
        stripe_port: int,
        seed: bool = False,
        terminal: bool = False,
    ) -> None:
        self.stdout_path = logs / f"run{index}.out"
        # terminal: stdout and stderr interleaved in one file, as a terminal shows them
        self.stderr_path = self.stdout_path if terminal else logs / f"run{index}.err"
        self.health = f"http://127.0.0.1:{port}/healthz"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [
                    "./dev",
                    "run",
                    *([] if seed else ["--no-seed"]),
                    "--port",
                    str(port),
                    "--stripe-port",
                    str(stripe_port),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, as a terminal job has
            )

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.report("exited before serving")
            if serving(self.health) and "is running" in self.stdout_path.read_text():
                return
            time.sleep(0.05)
        raise AssertionError(self.report(f"not serving within {timeout}s"))

    def wait_worker_ready(self, log: Path, timeout: float) -> None:
        """Until the worker this run started says it is ready (in its log, after its start)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            since_start = log.read_text().rsplit("--- ./dev run started worker", 1)[-1]
            if " ready." in since_start:
                return
            assert self.proc.poll() is None, self.report(f"exited\n--- worker.log{since_start}")
            time.sleep(0.1)
        raise AssertionError(self.report(f"worker not ready in {timeout}s\n--- {since_start}"))

    def processes(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]

    def stop(self, sig: int) -> None:
        if sig == signal.SIGINT:
            os.killpg(self.proc.pid, sig)  # what Ctrl-C in a terminal does
        else:
            self.proc.send_signal(sig)  # what `kill <pid>` does
        self.proc.wait(timeout=STOP_BUDGET_SECONDS)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def report(self, what: str) -> str:
        return (
            f"./dev run {what}\n--- stdout\n{self.stdout_path.read_text()}"
            f"\n--- stderr\n{self.stderr()}"
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            for process in self.processes():
                process.kill()
            self.proc.wait(10)


def alive(processes: list[psutil.Process]) -> list[str]:
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())}")
        except psutil.NoSuchProcess:
            pass
    return left


class Demo:
    """A private data folder whose embedded PostgreSQL holds the seeded demo."""

    def __init__(self, env: dict, data_dir: Path) -> None:
        self.env, self.data_dir = env, data_dir
        self.port, self.stripe_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.stripe_url = f"http://127.0.0.1:{self.stripe_port}"
        self.starts = 0

    def start(self, logs: Path, seed: bool = False, terminal: bool = False) -> DevRun:
        self.starts += 1
        return DevRun(
            self.env, self.port, logs, self.starts, self.stripe_port, seed=seed, terminal=terminal
        )

    @property
    def token(self) -> str:
        return json.loads((self.data_dir / "demo-credentials.json").read_text())["token"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The first start of `./dev run`: initdb, migrations and the demo data (checked against
    localstripe), then stopped; each test starts its own run on it."""
    # Not under pytest's tmp_path: the embedded PostgreSQL runs as another user when the tests
    # run as root, and any pytest session that starts meanwhile makes /tmp/pytest-of-root private
    # again (0700), which locked `./dev stop` out of the data folder.
    data_dir = Path(tempfile.mkdtemp(prefix="meterline-dev-run-")) / "data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_"))}
    for name in (
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "TEST_DATABASE_NAME",
        "SECRET_KEY",
        "STRIPE_SECRET_KEY",
        "STRIPE_API_BASE",
        "PAYMENTS_COLLECTION",
        "EMAIL_URL",
    ):
        env.pop(name, None)
    env.update(METERLINE_DATA_DIR=str(data_dir), DEBUG="1", PYTHONUNBUFFERED="1")
    demo = Demo(env, data_dir)
    run = demo.start(tmp_path_factory.mktemp("seed"), seed=True)
    try:
        run.wait_serving(timeout=420)  # first start: initdb, migrations and the demo data
        assert f"localstripe at {demo.stripe_url}" in run.stdout_path.read_text()
        demo.charges = check_demo_payments(demo.base, demo.stripe_url, data_dir)
        run.stop(signal.SIGTERM)
        yield demo
    finally:
        run.kill()
        # the README's way to stop the embedded PostgreSQL that `./dev run` leaves running
        stop = subprocess.run(
            ["./dev", "stop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert stop.stdout.strip() == "stopped", stop.stderr
        assert not (data_dir / "postgres" / "postmaster.pid").exists()
        shutil.rmtree(data_dir.parent)


def restart_plan(cycles: int) -> list[tuple[signal.Signals, str | None]]:
    """Signals alternate; the damage kinds come in turn, so five restarts cover each once and
    an odd count of kinds pairs each with both signals over ten."""
    return [
        ((signal.SIGINT, signal.SIGTERM)[i % 2], DAMAGE[i % len(DAMAGE)]) for i in range(cycles)
    ]


def test_restart_plan_covers_every_signal_and_damage():
    plan = restart_plan(CYCLES)
    assert {sig for sig, _ in plan} == {signal.SIGINT, signal.SIGTERM}
    assert [damage for _, damage in plan[: len(DAMAGE)]] == DAMAGE


def get_json(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def check_demo_payments(base: str, stripe_url: str, data_dir: Path) -> int:
    """The demo's invoices against localstripe's charges; the number of charges that succeeded."""
    token = json.loads((data_dir / "demo-credentials.json").read_text())["token"]
    orders = get_json(f"{base}/v1/orders/?limit=100", token)["items"]
    paid = {o["id"]: o["total_amount"] for o in orders if o["status"] == "paid"}
    assert paid, orders
    client = stripe.StripeClient(
        "sk_test_dev_run", base_addresses={"api": stripe_url}, max_network_retries=0
    )
    intents = list(client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter())
    charged = [
        (i.metadata["meterline_invoice_id"], i.amount) for i in intents if i.status == "succeeded"
    ]
    # one charge per paid invoice (none twice), for its total
    assert sorted(charged) == sorted((k, v) for k, v in paid.items() if v > 0)
    # the demo's own customers (the README's `u1` comes on top)
    statuses = [
        s["status"]
        for s in get_json(f"{base}/v1/subscriptions/?limit=100", token)["items"]
        if s["customer"]["external_id"].startswith("demo_cust_")
    ]
    assert len(statuses) == 18 and statuses.count("past_due") == 1, statuses
    return len(charged)


def test_dev_run_stops_cleanly_and_restarts(demo, tmp_path):
    env, data_dir, stripe_url = demo.env, demo.data_dir, demo.stripe_url
    logs = tmp_path / "logs"
    logs.mkdir()
    handle_file = data_dir / "postgres" / ".handle_pids.json"
    plan = restart_plan(CYCLES)

    started = time.monotonic()
    run = demo.start(logs)
    timings, first_start = [], None
    try:
        run.wait_serving(timeout=START_BUDGET_SECONDS)
        first_start = round(time.monotonic() - started, 1)
        listed = json.loads(handle_file.read_text())
        # the bar shows only on a terminal (`bench/soak.py dev-run`), not in a captured run
        for index, (sig, damage) in enumerate(tqdm(plan, desc="restarts", disable=None)):
            processes = run.processes()
            # dev, web, worker, beat, localstripe
            assert len(processes) >= 5, [p.cmdline() for p in processes]
            # every other stop finds the worker ready (it then shuts down warm), the others
            # right after the banner, while it still starts
            worker_ready = index % 2 == 1
            if worker_ready:
                run.wait_worker_ready(data_dir / "logs" / "worker.log", START_BUDGET_SECONDS)
            signalled = time.monotonic()
            run.stop(sig)
            stopped = time.monotonic() - signalled

            name = signal.Signals(sig).name
            assert "Traceback" not in run.stderr(), run.report(f"printed a traceback on {name}")
            assert "Meterline stopped" in run.stdout_path.read_text(), run.report(name)
            assert alive(processes) == [], f"left running after {name}: {alive(processes)}"
            assert not serving(run.health)
            assert stopped <= STOP_BUDGET_SECONDS, f"{name}: stopped in {stopped:.1f}s"

            if damage is not None:
                handle_file.write_text(damage)
            started = time.monotonic()
            run = demo.start(logs)
            run.wait_serving(timeout=START_BUDGET_SECONDS)
            now = time.monotonic()
            timings.append(
                (
                    name + (" (worker ready)" if worker_ready else ""),
                    round(stopped, 1),
                    round(now - started, 1),
                    round(now - signalled, 1),
                )
            )

            recovered = [line for line in run.stderr().splitlines() if RECOVERY_LINE in line]
            assert len(recovered) == (0 if damage is None else 1), run.report("recovery line")
            assert "Traceback" not in run.stderr(), run.report("printed a traceback at start")
            json.loads(handle_file.read_text())  # readable again
        assert listed == []  # no process keeps itself on the library's list
        # localstripe kept its state in the data folder over the restarts
        assert check_demo_payments(demo.base, stripe_url, data_dir) == demo.charges

        # a second run on the same port says so and starts nothing
        second = subprocess.run(
            [
                "./dev",
                "run",
                "--no-seed",
                "--port",
                str(demo.port),
                "--stripe-port",
                str(free_port()),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert f"127.0.0.1:{demo.port} is already in use" in second.stderr
        assert "Traceback" not in second.stderr and "is running" not in second.stdout
        assert serving(run.health)

        processes = run.processes()
        run.stop(signal.SIGTERM)
        assert alive(processes) == []
    finally:
        run.kill()
        print(
            f"start on the seeded demo: {first_start} s; "
            "(signal, seconds to stop, seconds to serve again, signal to serving):",
            timings,
        )
    assert len(timings) == len(plan)


# --- the README, as a reader runs it -------------------------------------------------------------

README = ROOT / "README.md"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
# what the banner says, one line each, the last thing `./dev run` prints
BANNER = ("admin:", "API:", "web:", "worker:", "beat:", "emails:", "stripe:", "data:", "login:")


# the billing example's two invoices, and for each the news that paying it failed (no card)
EMAILS_TO_U1 = 4


def banner_and_after(output: str) -> list[str]:
    """The lines from the banner's first to the end of the output, blank ones left out."""
    start = output.index("Meterline is running at")
    return [line.strip() for line in output[start:].splitlines() if line.strip()]


def emails_to(mail_dir: Path, address: str) -> list[str]:
    subjects = []
    for path in sorted(mail_dir.glob("*")):
        text = path.read_text(errors="replace")
        for message in text.split("\n" + "-" * 79 + "\n"):
            if re.search(rf"^To: {re.escape(address)}$", message, re.M):
                subjects.append(re.search(r"^Subject: (.*)$", message, re.M).group(1))
    return subjects


def test_readme_runs_in_order_against_the_demo(demo, tmp_path):
    """Every snippet of the README in order, with the demo token: python blocks executed as
    written (the address and token filled in, as a reader does), shell commands run as written;
    the terminal meanwhile shows nothing after the banner."""
    blocks = FENCE.findall(README.read_text())
    run = demo.start(tmp_path, terminal=True)
    try:
        run.wait_serving(timeout=START_BUDGET_SECONDS)
        banner = banner_and_after(run.stdout_path.read_text())
        assert [line.split()[0] for line in banner[1:-2]] == list(BANNER), banner
        assert banner[-2:] == [f"token:   {demo.token}", "Ctrl-C stops everything."]
        assert f"emails:  not sent: each one is written to a file in {demo.data_dir}/mail/" in (
            banner
        )

        namespace: dict = {}
        printed = io.StringIO()
        ran = []
        for language, body in blocks:
            if language == "python":
                code = body.replace("<token>", demo.token)
                code = code.replace("http://127.0.0.1:8000", demo.base)
                with contextlib.redirect_stdout(printed):
                    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
                ran.append("python")
            elif language == "bash":
                for line in body.splitlines():
                    command = line.split("  #")[0].strip()
                    # the commands about this very process (run, test, stop) are not repeated
                    if command.startswith("./dev manage"):
                        result = subprocess.run(
                            shlex.split(command),
                            cwd=ROOT,
                            env=demo.env,
                            capture_output=True,
                            text=True,
                            timeout=120,
                        )
                        assert result.returncode == 0, result.stderr
                        ran.append(command)
        assert ran == [
            "python",
            './dev manage create_api_token --org "Acme" --name "backend"',
            "python",
            "./dev manage close_cycles",
            "python",
            "python",
        ]
        # the first example's usage, read back by meter name
        assert "API requests 1.0" in printed.getvalue().splitlines()
        # the billing example's two invoices are emailed to u1 by the worker, into the files
        # the banner names
        deadline = time.monotonic() + 60
        while len(emails_to(demo.data_dir / "mail", "u1@example.com")) < EMAILS_TO_U1:
            assert time.monotonic() < deadline, emails_to(demo.data_dir / "mail", "u1@example.com")
            time.sleep(0.5)
        subjects = emails_to(demo.data_dir / "mail", "u1@example.com")
        assert len([s for s in subjects if s.startswith("Meterline Demo invoice ")]) == 2, subjects

        # all that (API requests, tasks, emails, beat's every-minute work) printed nothing
        assert banner_and_after(run.stdout_path.read_text()) == banner
        assert "Traceback" not in run.stdout_path.read_text()
        log = (demo.data_dir / "logs" / "worker.log").read_text()
        assert "billing.tasks.deliver_invoice" in log
        run.stop(signal.SIGINT)
        assert banner_and_after(run.stdout_path.read_text()) == [*banner, "» Meterline stopped."]
    finally:
        run.kill()

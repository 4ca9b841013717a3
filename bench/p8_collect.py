"""P8: `collect_payments` charging N finalized invoices through localstripe, against the
provider calls alone — the same number of PaymentIntent create + confirm calls made straight
through the `stripe` library, one after the other, with the same client settings.

    .venv/bin/python bench/run.py p8 [--invoices 10000] [--per-customer 10]

Its own database (`meterline_bench_p8` on DATABASE_URL's server) and two localstripe processes
on free ports, in memory (`manage.py localstripe`): one for the collection, one for the
baseline (with as many customers and cards of its own), so both start from the same store. Every run creates a fresh organization: N
subscriptions of a $29 product (N / per-customer customers, each with the 4242 card), whose
first invoices are finalized under automatic collection — their collection tasks go to a
filesystem queue in a temporary folder that nothing consumes, so `collect_payments` (run as the
real command, in its own process) finds them all due. Then, from localstripe: localstripe holds exactly one
charge per invoice, each invoice's charge is read back (a sample of 200
above 2,000 invoices) for its amount, and every invoice is paid.
Target (docs/performance.md): collection ≤ 1.5 × the provider calls.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime

from tqdm import tqdm

from bench.common import (
    BASE_DIR,
    PYTHON,
    bootstrap,
    database_url,
    ensure_database,
    free_port,
    machine_info,
    print_machine,
    save_result,
    server_env,
    with_database,
)

SECRET_KEY = "sk_test_bench_p8"
PRICE = 2900
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--per-customer", type=int, default=10)
    parser.add_argument("--database", default="meterline_bench_p8")
    parser.add_argument(
        "--collectors",
        type=int,
        default=1,
        help="collect_payments processes started at once (they skip each other's invoices)",
    )
    return parser.parse_args(argv)


def start_localstripe(env: dict) -> tuple[subprocess.Popen, str]:
    import socket

    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, str(BASE_DIR / "manage.py"), "localstripe", "--port", str(port)],
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "localstripe exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("localstripe did not start")


def stripe_client(url: str):
    import stripe

    # the provider's own settings: no library retries
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": url}, max_network_retries=0)


def prepare(args, organization_name: str, url: str):
    """N finalized invoices due for collection; the customers' provider ids and methods."""
    from billing import catalog, subscriptions
    from billing.catalog import PriceSpec
    from customers.models import Customer, Organization
    from payments import methods
    from payments.models import BillingProfile, InvoiceCollection, Payment

    client = stripe_client(url)
    # earlier runs' localstripes are gone: whatever they left to collect in this database (an
    # interrupted run) is not this run's work
    InvoiceCollection.objects.filter(state="collecting").update(
        state="stopped", next_attempt_at=None
    )
    Payment.objects.filter(status="pending").update(status="failed", not_attempted=True)
    organization = Organization.objects.create(name=organization_name)
    product = catalog.create_product(
        organization=organization,
        name="P8",
        recurring_interval="month",
        prices=[PriceSpec(amount_type="fixed", price_amount=PRICE)],
    )
    count = -(-args.invoices // args.per_customer)
    customers = []
    for n in tqdm(range(count), desc="customers with a card", unit="customer"):
        customer = Customer.objects.create(
            organization=organization, email=f"p8-{n}@example.com", external_id=f"p8-{n}"
        )
        method = client.v1.payment_methods.create(params={"type": "card", "card": CARD})
        methods.set_default_method(customer, method.id)
        customers.append(customer)
    for n in tqdm(range(args.invoices), desc="finalized invoices", unit="invoice"):
        subscriptions.create_subscription(customer=customers[n % len(customers)], product=product)
    due = InvoiceCollection.objects.filter(organization=organization).count()
    assert due == args.invoices, f"{due} invoices due for collection, expected {args.invoices}"
    profiles = list(
        BillingProfile.objects.filter(customer__organization=organization).values_list(
            "provider_customer_id", "default_method_id"
        )
    )
    return organization, profiles


def baseline_cards(url: str, count: int) -> list:
    """The baseline's own customers with an attached card, in its own localstripe (created as
    methods.set_default_method does, untimed)."""
    client = stripe_client(url)
    profiles = []
    for n in tqdm(range(count), desc="baseline customers", unit="customer"):
        customer = client.v1.customers.create(params={"email": f"p8-base-{n}@example.com"})
        method = client.v1.payment_methods.create(params={"type": "card", "card": CARD})
        client.v1.payment_methods.attach(method.id, params={"customer": customer.id})
        profiles.append((customer.id, method.id))
    return profiles


def provider_calls_alone(url: str, profiles: list, n: int) -> float:
    """The same calls as collection's, without Meterline: create then confirm, N times."""
    client = stripe_client(url)
    began = time.perf_counter()
    for i in tqdm(range(n), desc="provider calls alone", unit="charge"):
        customer, method = profiles[i % len(profiles)]
        intent = client.v1.payment_intents.create(
            params={
                "amount": PRICE,
                "currency": "usd",
                "customer": customer,
                "payment_method": method,
                "metadata": {"bench": "p8-baseline", "n": str(i)},
            },
            options={"idempotency_key": f"p8-baseline-{i}:create"},
        )
        client.v1.payment_intents.confirm(
            intent.id,
            params={"off_session": True},
            options={"idempotency_key": f"p8-baseline-{i}:confirm"},
        )
    return time.perf_counter() - began


def collect_with_progress(env: dict, organization, n: int, collectors: int) -> tuple[float, str]:
    """`manage.py collect_payments`, in `collectors` processes started at once; the bar follows
    the settled payments."""
    from payments.models import Payment

    settled = Payment.objects.filter(organization=organization).exclude(status="pending")
    began = time.perf_counter()
    procs = [
        subprocess.Popen(
            [PYTHON, str(BASE_DIR / "manage.py"), "collect_payments"],
            env=env,
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(collectors)
    ]
    outputs: list = [None] * collectors

    def read(index: int) -> None:
        outputs[index] = procs[index].communicate()

    readers = [threading.Thread(target=read, args=(i,)) for i in range(collectors)]
    for reader in readers:
        reader.start()
    with tqdm(total=n, desc="collect_payments", unit="invoice") as bar:
        for reader in readers:
            while reader.is_alive():
                bar.update(settled.count() - bar.n)
                reader.join(0.5)
        bar.update(settled.count() - bar.n)
    seconds = time.perf_counter() - began
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    return seconds, " | ".join(out.strip().splitlines()[0] for out, _err in outputs)


def check(url: str, organization, n: int, *, full: bool) -> dict:
    """From localstripe: one successful charge per invoice, for its amount (0 charged twice);
    every invoice paid in the database.

    Every card here succeeds and this localstripe saw nothing but this run's collection, so its
    number of charges must be exactly one per invoice: a second charge of any invoice would be
    one more. Each invoice's own charge is then read back — all of them with `full`,
    else a sample (localstripe reads are linear in its whole store, so reading 10,000 back one
    by one takes longer than the benchmark)."""
    from billing.models import Invoice, InvoiceStatus
    from payments.models import Payment

    client = stripe_client(url)
    charges = client.v1.charges.list(params={"limit": 1}).to_dict()["total_count"]
    statuses = dict(Invoice.objects.filter(organization=organization).values_list("pk", "status"))
    payments = list(
        Payment.objects.filter(organization=organization).values_list(
            "invoice_id", "status", "amount", "provider_payment_id"
        )
    )
    assert len(statuses) == n, len(statuses)
    assert charges == n, f"localstripe has {charges} charges, expected {n}"
    succeeded = [p for p in payments if p[1] == "succeeded"]
    assert len(payments) == len(succeeded) == n, Counter(p[1] for p in payments)
    assert {p[0] for p in succeeded} == set(statuses), "an invoice without its payment"
    assert len({p[3] for p in succeeded}) == n, "two payments share a charge"
    paid = sum(1 for status in statuses.values() if status == InvoiceStatus.PAID)
    assert paid == n, paid
    read = succeeded if full else random.Random(8).sample(succeeded, min(n, 200))
    for invoice_id, _status, amount, intent_id in tqdm(read, desc="reading back", unit="charge"):
        intent = client.v1.payment_intents.retrieve(intent_id).to_dict()
        assert intent["status"] == "succeeded" and intent["amount"] == amount == PRICE, intent
        assert intent["metadata"]["meterline_invoice_id"] == str(invoice_id), intent
    return {
        "invoices": n,
        "localstripe_charges": charges,
        "charged_twice": charges - n,
        "paid": paid,
        "read_back": len(read),
    }


def run(args) -> dict:
    url = with_database(database_url(), args.database)
    ensure_database(url)
    data_dir = tempfile.mkdtemp(prefix="meterline-p8-")
    base_env = server_env(url)
    # one localstripe each: its calls slow down as its store grows (every object of every kind
    # is kept in one dict it scans), so each side starts from the same store and grows alike
    localstripe, stripe_url = start_localstripe(base_env)
    baseline_localstripe, baseline_url = start_localstripe(base_env)
    env = {
        **base_env,
        # the collection tasks enqueued at finalization go to a queue nothing consumes
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "METERLINE_DATA_DIR": data_dir,
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_PUBLISHABLE_KEY": "pk_test_bench_p8",
        "STRIPE_API_BASE": stripe_url,
        "PAYMENTS_COLLECTION": "automatic",
    }
    env.pop("CELERY_BROKER_URL", None)
    try:
        os.environ.update(env)
        os.environ.pop("CELERY_BROKER_URL", None)
        bootstrap(url)
        info = machine_info(url)
        print_machine(info)
        name = f"P8 bench {datetime.now(UTC):%Y%m%dT%H%M%S}"
        organization, profiles = prepare(args, name, stripe_url)
        baseline = provider_calls_alone(
            baseline_url, baseline_cards(baseline_url, len(profiles)), args.invoices
        )
        collect_seconds, report = collect_with_progress(
            env, organization, args.invoices, args.collectors
        )
        checked = check(stripe_url, organization, args.invoices, full=args.invoices <= 2000)
    finally:
        for process in (localstripe, baseline_localstripe):
            process.terminate()
            process.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
    ratio = collect_seconds / baseline
    print(f"collect_payments: {report}")
    print(
        f"collection {collect_seconds:.1f} s ({collect_seconds / args.invoices * 1000:.2f} ms an "
        f"invoice) vs provider calls alone {baseline:.1f} s "
        f"({baseline / args.invoices * 1000:.2f} ms): {ratio:.2f}× (target ≤ 1.5×)"
    )
    print(
        f"localstripe: {checked['localstripe_charges']} charges for {args.invoices} invoices "
        f"({checked['charged_twice']} charged twice), {checked['read_back']} read back; "
        f"{checked['paid']} of {args.invoices} invoices paid"
    )
    return {
        "machine": info,
        "invoices": args.invoices,
        "customers": len(profiles),
        "collectors": args.collectors,
        "collect_seconds": round(collect_seconds, 2),
        "provider_calls_seconds": round(baseline, 2),
        "ratio": round(ratio, 3),
        "target_ratio": 1.5,
        "command_output": report,
        **checked,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    result = run(args)
    save_result("p8_collect", result)
    if result["ratio"] > 1.5:
        raise SystemExit(f"P8 missed its target: {result['ratio']:.2f}× > 1.5×")

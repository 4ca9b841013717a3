"""localstripe (a stateful Stripe stand-in from PyPI) as a real process for the tests, and a
look at its state through the `stripe` library for assertions. The process is
`manage.py localstripe` (as `./dev run` starts it): state in memory, `off_session` accepted on
confirm (docs/payments.md, "localstripe")."""

import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import stripe

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "sk_test_meterline"
PUBLISHABLE_KEY = "pk_test_meterline"
WEBHOOK_SECRET = "whsec_meterline_tests"


class LocalStripe:
    """One localstripe process on a free port: `start()`, `stop()`, and readers of its state."""

    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.client = stripe.StripeClient(
            SECRET_KEY, base_addresses={"api": self.url}, max_network_retries=0
        )

    def start(self, timeout: float = 20) -> "LocalStripe":
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "localstripe", "--port", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"localstripe exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"localstripe did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    # --- reading its state -----------------------------------------------------------------------

    def payment_intents(self, customer: str | None = None) -> list:
        # localstripe lists payment intents without a customer filter
        intents = self.client.v1.payment_intents.list(params={"limit": 100}).auto_paging_iter()
        return [i for i in intents if customer is None or i.customer == customer]

    def charges(self, customer: str | None = None) -> list:
        params = {"limit": 100}
        if customer:
            params["customer"] = customer
        return list(self.client.v1.charges.list(params=params).auto_paging_iter())

    def succeeded_charges(self, customer: str | None = None) -> list:
        return [c for c in self.charges(customer) if c.status == "succeeded"]

    def card(self, number: str) -> str:
        """A payment method for a test card number (as Stripe.js would create it)."""
        method = self.client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            }
        )
        return method.id


def sign_webhook(payload: bytes, secret: str = WEBHOOK_SECRET) -> str:
    """A `Stripe-Signature` header for the payload, as Stripe signs its webhooks."""
    timestamp = int(time.time())
    signature = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={signature}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

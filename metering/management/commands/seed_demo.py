"""`python manage.py seed_demo`: a demo organization, a staff login, an API token, customers and
~100,000 realistic events over the last 60 days, inserted set-based through the ingestion service.

Idempotent: organization, user and customers are looked up by name / username / external id;
events carry deterministic external ids (``demo_evt_0000042``), so a re-run only tops up what is
missing and the ingestion's idempotency key (``ON CONFLICT DO NOTHING``) makes duplicates
impossible anyway. The API token is reused when the credentials file still holds a valid one;
otherwise earlier demo tokens are revoked and one new token is created (its secret exists only
in the credentials file — it is stored hashed).

The demo login is ``demo`` / ``meterline-demo`` (``--password`` to change it); it is a
development convenience, never run this against a production database.
"""

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from tqdm import tqdm

from core.signals import demo_seeded
from customers.models import APIToken, Customer, Organization
from customers.services import create_customer
from metering.backfill import backfill
from metering.demo import ensure_demo_meters
from metering.ingest import ingest_events
from metering.models import Event, Meter, MeterState

DEMO_ORGANIZATION = "Meterline Demo"
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "meterline-demo"
DEMO_TOKEN_NAME = "demo"
DEMO_CUSTOMERS = 25
# These customers first appear only as `external_customer_id` on events; they are created after
# the events, which links their history (customers.services.create_customer).
LATE_CUSTOMERS = 5
EVENT_PREFIX = "demo_evt_"
BATCH = 5_000
DAYS = 60

# --- realistic synthetic usage (shared with generate_events) -----------------------------------

LLM_MODELS = (
    # vendor, model, weight, input scale (lognormal mu), output scale
    ("openai", "gpt-4o-mini", 35, 6.6, 5.3),
    ("openai", "gpt-4o", 15, 7.0, 5.8),
    ("anthropic", "claude-3-5-haiku", 20, 6.8, 5.5),
    ("anthropic", "claude-3-5-sonnet", 15, 7.3, 6.0),
    ("google", "gemini-1.5-flash", 10, 6.9, 5.4),
    ("mistral", "mistral-large", 5, 6.7, 5.6),
)
API_ROUTES = (
    ("/v1/search", "GET", 30),
    ("/v1/documents", "GET", 15),
    ("/v1/documents", "POST", 10),
    ("/v1/documents/{id}", "GET", 20),
    ("/v1/documents/{id}", "DELETE", 2),
    ("/v1/chat", "POST", 15),
    ("/v1/embeddings", "POST", 8),
)
API_STATUSES = ((200, 86), (201, 5), (400, 3), (401, 1), (404, 3), (429, 1), (500, 1))
STORAGE_BUCKETS = ("uploads", "exports", "avatars", "backups")
CONTENT_TYPES = (
    ("application/pdf", 30),
    ("image/png", 25),
    ("image/jpeg", 20),
    ("text/csv", 15),
    ("application/zip", 5),
    ("video/mp4", 5),
)
EVENT_MIX = (("api.request", 55), ("llm.completion", 35), ("storage.upload", 10))


def _cumulative(weights):
    total, out = 0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


_MIX_NAMES = [name for name, _ in EVENT_MIX]
_MIX_CUM = _cumulative(w for _, w in EVENT_MIX)
_LLM_CUM = _cumulative(m[2] for m in LLM_MODELS)
_ROUTE_CUM = _cumulative(r[2] for r in API_ROUTES)
_STATUS_CUM = _cumulative(s[1] for s in API_STATUSES)
_CT_CUM = _cumulative(c[1] for c in CONTENT_TYPES)


def synthetic_event(rng: random.Random) -> tuple[str, dict]:
    """One event's name and flat metadata (plus Polar's `_llm` key for LLM calls)."""
    name = rng.choices(_MIX_NAMES, cum_weights=_MIX_CUM)[0]
    if name == "llm.completion":
        vendor, model, _, mu_in, mu_out = rng.choices(LLM_MODELS, cum_weights=_LLM_CUM)[0]
        input_tokens = min(int(rng.lognormvariate(mu_in, 0.9)) + 1, 200_000)
        output_tokens = min(int(rng.lognormvariate(mu_out, 0.8)) + 1, 16_000)
        total = input_tokens + output_tokens
        return name, {
            "model": model,
            "vendor": vendor,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": total,
            "_llm": {
                "vendor": vendor,
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": total,
            },
        }
    if name == "api.request":
        route, method, _ = rng.choices(API_ROUTES, cum_weights=_ROUTE_CUM)[0]
        status = rng.choices(API_STATUSES, cum_weights=_STATUS_CUM)[0][0]
        return name, {
            "route": route,
            "method": method,
            "status": status,
            "latency_ms": max(1, int(rng.lognormvariate(4.2, 0.7))),
        }
    content_type = rng.choices(CONTENT_TYPES, cum_weights=_CT_CUM)[0][0]
    return name, {
        "bytes": max(128, min(int(rng.lognormvariate(12.5, 2.0)), 5_000_000_000)),
        "bucket": rng.choice(STORAGE_BUCKETS),
        "content_type": content_type,
    }


# What each demo call costs the demo company, sent as Polar's cost block (`_cost`, cents): LLM
# calls by their tokens at the model's list price (cents per million input / output tokens), API
# requests a flat compute cost. Kept out of `synthetic_event` so the load generator's events stay
# as they were.
LLM_PRICES = {
    "gpt-4o-mini": (Decimal(15), Decimal(60)),
    "gpt-4o": (Decimal(250), Decimal(1000)),
    "claude-3-5-haiku": (Decimal(80), Decimal(400)),
    "claude-3-5-sonnet": (Decimal(300), Decimal(1500)),
    "gemini-1.5-flash": (Decimal("7.5"), Decimal(30)),
    "mistral-large": (Decimal(200), Decimal(600)),
}
API_REQUEST_COST = Decimal("0.05")


def with_cost(name: str, metadata: dict) -> dict:
    if name == "llm.completion":
        per_input, per_output = LLM_PRICES[metadata["model"]]
        amount = (
            metadata["input_tokens"] * per_input + metadata["output_tokens"] * per_output
        ) / 1_000_000  # exact: at most 7 decimal places
    elif name == "api.request":
        amount = API_REQUEST_COST
    else:
        return metadata
    return {**metadata, "_cost": {"amount": amount, "currency": "usd"}}


def customer_weights(count: int) -> list[float]:
    """Zipf-like cumulative weights: a few big customers, a long tail of small ones."""
    return _cumulative(1.0 / (rank + 1) ** 0.9 for rank in range(count))


# --- the command -------------------------------------------------------------------------------


class Command(BaseCommand):
    help = (
        "Load demo data: organization 'Meterline Demo', staff login demo/meterline-demo, an API "
        "token, 25 customers and ~100,000 events over 60 days (LLM and API calls carry their "
        "costs). Safe to re-run (tops up)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=100_000, help="events wanted in total")
        parser.add_argument(
            "--credentials-file",
            dest="credentials_file",
            default=None,
            help="write {username, password, token, organization} as JSON to this path",
        )
        parser.add_argument("--password", default=DEMO_PASSWORD, help="the demo user's password")
        parser.add_argument("--seed", type=int, default=42, help="random seed for the events")
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def handle(self, *args, events, credentials_file, password, seed, no_progress, **options):
        if not settings.DEBUG:
            # it creates a superuser with a published password and a demo API token
            raise CommandError(
                "seed_demo is for development only: it creates the superuser "
                f"'{DEMO_USERNAME}' with a known password. Run it with DEBUG=1."
            )
        organization, _ = Organization.objects.get_or_create(
            name=DEMO_ORGANIZATION,
            defaults={"invoice_address": "1 Demo Street\n75011 Paris, France\nVAT FR00000000000"},
        )
        self._ensure_user(password)
        token = self._ensure_token(organization, credentials_file)
        customers = self._ensure_customers(organization, range(DEMO_CUSTOMERS - LATE_CUSTOMERS))
        inserted = self._ensure_events(organization, events, seed, not no_progress)
        late = range(DEMO_CUSTOMERS - LATE_CUSTOMERS, DEMO_CUSTOMERS)
        customers += self._ensure_customers(organization, late)
        meters = self._ensure_meters(organization)

        if credentials_file:
            path = Path(credentials_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                json.dumps(
                    {
                        "username": DEMO_USERNAME,
                        "password": password,
                        "token": token,
                        "organization": organization.name,
                    },
                    indent=2,
                )
            )
            path.chmod(0o600)
        total = Event.objects.filter(organization=organization).count()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo organization '{organization.name}': {len(customers)} customers, "
                f"{total} events ({inserted} inserted now), login {DEMO_USERNAME}/{password}."
            )
        )
        self.stdout.write(meters)
        for _receiver, summary in demo_seeded.send(
            sender=self.__class__, organization=organization, customers=customers
        ):
            if summary:
                self.stdout.write(str(summary))

    # -- pieces --------------------------------------------------------------------------------

    def _ensure_user(self, password: str) -> None:
        User = get_user_model()
        user, _ = User.objects.get_or_create(
            username=DEMO_USERNAME, defaults={"email": "demo@meterline.localhost"}
        )
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(password)
        user.save()

    def _ensure_token(self, organization: Organization, credentials_file: str | None) -> str:
        """Reuse the secret from an earlier credentials file while it is valid, else rotate."""
        if credentials_file and Path(credentials_file).exists():
            try:
                secret = json.loads(Path(credentials_file).read_text()).get("token") or ""
                existing = APIToken.objects.get_from_key(secret)
            except (ValueError, APIToken.DoesNotExist):
                existing = None
            if (
                existing is not None
                and existing.organization_id == organization.pk
                and not existing.has_expired
            ):
                return secret
        with transaction.atomic():
            APIToken.objects.filter(
                organization=organization, name=DEMO_TOKEN_NAME, revoked=False
            ).update(revoked=True)
            _, secret = APIToken.objects.create_key(name=DEMO_TOKEN_NAME, organization=organization)
        return secret

    def _ensure_customers(self, organization: Organization, indexes) -> list[Customer]:
        out = []
        for index in indexes:
            external_id = f"demo_cust_{index + 1:02d}"
            customer = (
                Customer.objects.active()
                .filter(organization=organization, external_id=external_id)
                .first()
            )
            if customer is None:
                customer = create_customer(
                    organization=organization,
                    email=f"{external_id.replace('_', '.')}@example.com",
                    external_id=external_id,
                    name=DEMO_NAMES[index % len(DEMO_NAMES)],
                    metadata={"plan": ("starter", "growth", "scale")[index % 3]},
                )
            out.append(customer)
        return out

    def _ensure_events(self, organization, wanted: int, seed: int, progress: bool) -> int:
        existing = Event.objects.filter(
            organization=organization, external_id__startswith=EVENT_PREFIX
        ).count()
        if existing >= wanted:
            self.stdout.write(f"{existing} demo events already stored; none added.")
            return 0
        rng = random.Random(seed + existing)
        cum = customer_weights(DEMO_CUSTOMERS)
        external_ids = [f"demo_cust_{i + 1:02d}" for i in range(DEMO_CUSTOMERS)]
        now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        start = now - timedelta(days=DAYS)
        span = (now - start).total_seconds()
        inserted = 0
        bar = tqdm(total=wanted - existing, unit="ev", desc="demo events", disable=not progress)
        for first in range(existing, wanted, BATCH):
            batch = []
            last_request: dict[str, str] = {}
            for i in range(first, min(first + BATCH, wanted)):
                name, metadata = synthetic_event(rng)
                metadata = with_cost(name, metadata)
                customer = rng.choices(external_ids, cum_weights=cum)[0]
                offset = min(span, (i + rng.random()) * span / wanted)
                event = {
                    "name": name,
                    "external_customer_id": customer,
                    "external_id": f"{EVENT_PREFIX}{i:07d}",
                    "timestamp": (start + timedelta(seconds=offset)).isoformat(),
                    "metadata": metadata,
                }
                # Some LLM calls are children of the API request that triggered them.
                if name == "llm.completion" and customer in last_request and rng.random() < 0.3:
                    event["parent_id"] = last_request.pop(customer)
                elif name == "api.request" and metadata["route"] == "/v1/chat":
                    last_request[customer] = event["external_id"]
                batch.append(event)
            result = ingest_events(organization=organization, events=batch)
            inserted += result.inserted
            if (first - existing) % (4 * BATCH) == 0:
                # Fresh statistics keep the ingest's per-batch lookups on the right indexes while
                # the table grows from nothing (stale ones make later batches much slower).
                with connection.cursor() as cursor:
                    cursor.execute("ANALYZE metering_event")
            bar.update(len(batch))
        bar.close()
        return inserted

    def _ensure_meters(self, organization) -> str:
        summary = ensure_demo_meters(organization)
        # Roll up the demo events now (the worker would do it too; this makes the demo ready).
        pending = Meter.objects.filter(organization=organization, state=MeterState.BACKFILLING)
        for meter in pending:
            backfill(meter.pk)
        return summary


DEMO_NAMES = (
    "Acme Robotics",
    "Globex Analytics",
    "Initech",
    "Umbrella Labs",
    "Hooli",
    "Stark Digital",
    "Wayne Data",
    "Tyrell Systems",
    "Cyberdyne AI",
    "Soylent Cloud",
    "Vandelay Imports",
    "Pied Piper",
    "Aperture Science",
    "Black Mesa",
    "Wonka Industries",
    "Oscorp",
    "Gringotts",
    "Monsters Inc",
    "Dunder Mifflin",
    "Prestige Worldwide",
    "Nakatomi Trading",
    "Massive Dynamic",
    "Virtucon",
    "Gekko & Co",
    "Blue Sun",
)

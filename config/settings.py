"""Meterline settings: one module, configured from the environment (see .env.example)."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# First, so that every setting below can come from .env; the environment wins over the file.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
# the embedded PostgreSQL and the filesystem broker (when used), the demo login, beat's schedule
DATA_DIR = Path(env.str("METERLINE_DATA_DIR", default=str(BASE_DIR / ".data")))

DEBUG = env.bool("DEBUG", default=False)
if DEBUG:
    # beside a running `./dev run`: the settings it gave its processes (localstripe, emails)
    from core.devrun import adopt

    adopt(DATA_DIR)
SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-key-change-me" if DEBUG else "")
if not SECRET_KEY:
    # Without DEBUG we refuse to run with a well-known key.
    raise ImproperlyConfigured("Set SECRET_KEY (or DEBUG=1 for local development).")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "django_htmx",
    "django_celery_beat",
    "django_ratelimit",
    "djmoney",
    "axes",
    "auditlog",
    "csp",
    "core",
    "customers",
    "metering",
    "billing",
    "payments",
    "portal",
    "webhooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.api.middleware.ApiEdgeMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "core.audit.StaffActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "core.middleware.RejectNulCharactersMiddleware",
    # last, as django-axes requires: it turns a locked-out sign-in into its 429 page
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# --- database: DATABASE_URL, or the embedded PostgreSQL under .data/ ---------------------------
if env.str("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"
    EMBEDDED_POSTGRES = False
else:
    # Nothing starts here: the backend starts the server with the first connection
    # (config/embedded_db), so commands that never query (--help, check) start nothing.
    from config.embedded import DATABASE_NAME

    DATABASES = {
        "default": {
            "ENGINE": "config.embedded_db",
            "NAME": DATABASE_NAME,
            "EMBEDDED_DATA_DIR": DATA_DIR,
        }
    }
    EMBEDDED_POSTGRES = True
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if env.str("TEST_DATABASE_NAME", default=""):
    # lets several test runs share one server without clobbering each other's test database
    DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # WhiteNoise's hashed, compressed files; a file not collected yet is served by its plain
        # name and logged, not a 500 (docs/operations.md)
        "BACKEND": "core.staticfiles.StaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- security (production values unless DEBUG) -------------------------------------------------
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto on every request
# (docs/operations.md). 0 when clients can reach the server directly: they could forge it.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https")
    if env.bool("SECURE_PROXY_SSL_HEADER", default=True)
    else None
)
# load balancers check health over plain HTTP
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True

# Admin sign-in throttling (django-axes, docs/security.md): after AXES_FAILURE_LIMIT wrong
# passwords for one username, or from one client address, that username or address is refused
# (429, even with the right password) for AXES_COOLOFF_MINUTES. Attempts live in PostgreSQL, so
# every web process and machine counts together.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
# a float is hours to django-axes
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_MINUTES", default=15) / 60
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
# the address counted is core.clients.client_address's: the proxy's unless TRUSTED_PROXY_COUNT
AXES_CLIENT_IP_CALLABLE = "core.clients.client_address"
# its start-up banner would print on every process and command; lockouts are still logged
AXES_VERBOSE = False

# Audit log of staff actions on money (django-auditlog, core/audit.py): changes stored as JSON.
AUDITLOG_STORE_JSON_CHANGES = True

# Content-Security-Policy on every HTML page (django-csp): scripts and styles from this site only;
# a <style> element needs the request's nonce. portal.csp adds the payment provider's origins.
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, NONCE],
        # style="" attributes (Django's admin uses them) cannot carry a nonce
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
    }
}

# How many reverse proxies of ours append to X-Forwarded-For in front of gunicorn (nginx: 1):
# the client address for lockouts, sign-in rates and the audit log (core/clients.py). 0 ignores
# the header, which any client can send.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# --- email -------------------------------------------------------------------------------------
# an empty EMAIL_URL (a blank line in .env) means unset, not an unparsable address
EMAIL_CONFIG = env.email_url_config(env.str("EMAIL_URL", default="") or "consolemail://")
vars().update(EMAIL_CONFIG)
if EMAIL_CONFIG["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend":
    # the console shows invoice emails without their PDF's base64
    EMAIL_BACKEND = "core.mail.ConsoleSummaryBackend"
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@meterline.localhost")
# an open invoice older than this many days counts as overdue on the billing dashboard
BILLING_INVOICE_DUE_DAYS = env.int("BILLING_INVOICE_DUE_DAYS", default=14)
# seconds a signed invoice PDF link (GET /v1/orders/{id}/invoice) stays valid
INVOICE_LINK_MAX_AGE = env.int("INVOICE_LINK_MAX_AGE", default=3600)

# --- customer portal (docs/portal.md) ----------------------------------------------------------
# Absolute base of links to the portal (customer_portal_url, magic links); unset: the host of the
# request that creates them.
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="").rstrip("/")
PORTAL_SESSION_TTL_SECONDS = env.int("PORTAL_SESSION_TTL_SECONDS", default=12 * 3600)
# A customer session created through the API must be opened within this time (Polar: 1 hour).
PORTAL_API_TOKEN_TTL_SECONDS = env.int("PORTAL_API_TOKEN_TTL_SECONDS", default=3600)
PORTAL_MAGIC_LINK_TTL_SECONDS = env.int("PORTAL_MAGIC_LINK_TTL_SECONDS", default=15 * 60)
PORTAL_POLL_SECONDS = env.int("PORTAL_POLL_SECONDS", default=5)
# Sign-in link requests: "count/seconds" per client IP and per email address.
PORTAL_SIGN_IN_RATE_PER_IP = env.str("PORTAL_SIGN_IN_RATE_PER_IP", default="10/900")
PORTAL_SIGN_IN_RATE_PER_EMAIL = env.str("PORTAL_SIGN_IN_RATE_PER_EMAIL", default="3/900")
# a customer's payment actions (save a card, pay now): each can reach the payment provider
PORTAL_PAYMENT_RATE_PER_CUSTOMER = env.str("PORTAL_PAYMENT_RATE_PER_CUSTOMER", default="20/3600")

# --- REST API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["customers.api.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["customers.api.auth.HasOrganizationToken"],
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.PolarPagination",
    "DEFAULT_THROTTLE_CLASSES": ["core.api.throttling.TokenRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.errors.polar_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "STRICT_JSON": True,
    "COERCE_DECIMAL_TO_STRING": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Meterline API",
    "DESCRIPTION": "Usage-based billing. Speaks Polar's v1 wire format for the usage surface.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/v1/",
    "ENUM_NAME_OVERRIDES": {
        # billing choice sets used under several field names (values as the serializers list them)
        "BillingIntervalEnum": ["day", "week", "month", "year"],
        "DiscountTypeEnum": ["percentage", "fixed"],
        "DiscountDurationEnum": ["once", "repeating", "forever"],
        "BenefitTypeEnum": ["meter_credit"],
    },
}

# Event ingestion limits (docs/api.md)
INGEST_MAX_EVENTS = env.int("INGEST_MAX_EVENTS", default=10_000)
INGEST_MAX_BODY_BYTES = env.int("INGEST_MAX_BODY_BYTES", default=16 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = INGEST_MAX_BODY_BYTES
EVENT_FUTURE_TOLERANCE_SECONDS = 300
# Where events are stored and aggregated (docs/scaling.md): "postgres" (default) or "clickhouse"
# at CLICKHOUSE_URL (http(s)://user:password@host:8123/database, or chdb:///path in-process).
EVENT_STORE = env.str("EVENT_STORE", default="postgres")
if EVENT_STORE not in ("postgres", "clickhouse"):
    raise ImproperlyConfigured("EVENT_STORE must be postgres or clickhouse.")
CLICKHOUSE_URL = env.str("CLICKHOUSE_URL", default="")
# a cluster name: the schema command creates Replicated tables and a Distributed one ON CLUSTER
CLICKHOUSE_CLUSTER = env.str("CLICKHOUSE_CLUSTER", default="")
# API token last_used_at is written at most this often per token (no write on every request)
API_TOKEN_TOUCH_INTERVAL_SECONDS = 300

# Billing (docs/billing.md): a period closes at end + grace, so slightly late usage still lands in
# its own period. BILLING_GRACE is in seconds.
from datetime import timedelta  # noqa: E402

BILLING_GRACE = timedelta(seconds=env.int("BILLING_GRACE", default=3600))
BILLING_CLOSE_BATCH_SIZE = env.int("BILLING_CLOSE_BATCH_SIZE", default=200)
# avg/min/max/unique meters: how far back (seconds) a period looks for events of earlier periods
# that arrived after their close (count/sum meters carry late usage without limit)
BILLING_LATE_LOOKBACK = timedelta(seconds=env.int("BILLING_LATE_LOOKBACK", default=62 * 86400))
# Days a past_due subscription (a failed payment) keeps its benefits: a period starting later than
# this after the failure gets its meter credits only when the subscription recovers. Billing reads
# it (payments only sets and clears past_due).
DUNNING_GRACE_DAYS = env.int("DUNNING_GRACE_DAYS", default=7)

# Payments (docs/payments.md): Stripe keys, the installation's collection default and dunning.
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
# empty: Stripe's own address; tests and ./dev run point it at localstripe
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")
# where the portal loads Stripe.js from; empty: Stripe's own, or localstripe's stand-in at
# <STRIPE_API_BASE>/js.stripe.com/v3/ when STRIPE_API_BASE points elsewhere
STRIPE_JS_URL = env.str("STRIPE_JS_URL", default="")
# automatic (charge the default method at finalization), send_invoice (email it, pay in the
# portal), or manual (staff record payments); an organization can override it in the admin
PAYMENTS_COLLECTION = env.str(
    "PAYMENTS_COLLECTION", default="automatic" if STRIPE_SECRET_KEY else "manual"
)
PAYMENTS_DAYS_UNTIL_DUE = env.int("PAYMENTS_DAYS_UNTIL_DUE", default=30)
# days between a failed attempt and the next one, one number per retry (Polar's 2, 5, 7, 7)
DUNNING_SCHEDULE = [
    int(days) for days in env.list("DUNNING_SCHEDULE", default=["2", "5", "7", "7"])
]
# after the last retry failed: cancel (revoke the subscription, invoice uncollectible) or keep
DUNNING_FINAL_ACTION = env.str("DUNNING_FINAL_ACTION", default="cancel")
if DUNNING_FINAL_ACTION not in ("cancel", "keep"):
    raise ImproperlyConfigured("DUNNING_FINAL_ACTION must be cancel or keep.")
# a payment still pending this many seconds after it was recorded is settled from the provider
PAYMENTS_RECONCILE_AFTER = env.int("PAYMENTS_RECONCILE_AFTER", default=300)

# --- cache and rate limits --------------------------------------------------------------------
# The rate-limit counters (API tokens, the portal's sign-in) must live in one store shared by
# every web process and machine: Redis when CACHE_URL names it (e.g. redis://127.0.0.1:6379/1),
# else a PostgreSQL table. Django's default cache is that Redis, or per process.
if env.str("CACHE_URL", default=""):
    CACHES = {"default": env.cache_url("CACHE_URL")}
    CACHES["ratelimit"] = CACHES["default"]
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "ratelimit": {"BACKEND": "core.ratecounters.CounterCache"},
    }
RATELIMIT_USE_CACHE = "ratelimit"
RATELIMIT_ENABLE = env.bool("RATELIMIT_ENABLE", default=True)
# "<count>/<period>" with period s, m, h or d (e.g. 6000/m); empty turns the limit off.
API_RATE_LIMIT = env.str("API_RATE_LIMIT", default="6000/m")
# django-ratelimit knows only memcached and django-redis by name; Django's own Redis backend
# increments atomically, and so does core.ratecounters.CounterCache (one UPDATE).
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]

# --- Celery: CELERY_BROKER_URL, or a filesystem broker under .data/ ----------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
if not CELERY_BROKER_URL:
    from config.embedded import filesystem_broker

    CELERY_BROKER_URL, CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker(DATA_DIR)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Tasks enqueued with delay_on_commit are kept in the database until a worker finishes them
# (core/outbox.py): sent again when the broker was down at commit (every RESEND_INTERVAL), or
# when a worker did not finish one within the LEASE (it died), at most MAX_ATTEMPTS times.
OUTBOX_RESEND_INTERVAL_SECONDS = env.int("OUTBOX_RESEND_INTERVAL_SECONDS", default=60)
OUTBOX_LEASE_SECONDS = env.int("OUTBOX_LEASE_SECONDS", default=900)
OUTBOX_MAX_ATTEMPTS = env.int("OUTBOX_MAX_ATTEMPTS", default=10)
# Save each periodic task's last run as soon as it is sent: a beat that is killed (or restarted
# by a deploy) then neither repeats nor skips a run.
CELERY_BEAT_SYNC_EVERY = 1
# Ingestion appends rollup deltas; this job folds them into the compact tiers. Reads add the
# pending ones, so the interval only bounds how many they add (and the deltas table's size).
ROLLUP_COMPACTION_INTERVAL_SECONDS = env.int("ROLLUP_COMPACTION_INTERVAL_SECONDS", default=10)
CELERY_TIMEZONE = "UTC"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # WeasyPrint reports every rendering step at INFO
        "weasyprint": {"level": "WARNING"},
        "fontTools": {"level": "WARNING"},
        # the embedded PostgreSQL's helper library logs every pg_ctl call at INFO
        "embedded_postgres": {"level": "WARNING"},
    },
}

# --- Webhooks -----------------------------------------------------------------------------------
# Off in production: a tenant's webhook URL must not reach the server's own networks.
WEBHOOK_ALLOW_PRIVATE_URLS = env.bool("WEBHOOK_ALLOW_PRIVATE_URLS", default=False)
WEBHOOK_CONNECT_TIMEOUT = env.float("WEBHOOK_CONNECT_TIMEOUT", default=3.0)
WEBHOOK_READ_TIMEOUT = env.float("WEBHOOK_READ_TIMEOUT", default=10.0)
# customer.state_changed: at most one per customer per this many seconds
WEBHOOK_STATE_DEBOUNCE_SECONDS = env.int("WEBHOOK_STATE_DEBOUNCE_SECONDS", default=5)

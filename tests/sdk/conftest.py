"""SDK fixtures: a ``Meterline`` client pointed at the live test server, and event reads."""

import socket

import pytest
from meterline import Meterline, RetryPolicy

FAST_RETRY = RetryPolicy(max_retries=20, backoff_base=0.05, backoff_max=0.5)


@pytest.fixture
def live_org(live_org_token):
    return live_org_token[0]


@pytest.fixture
def errors():
    return []


@pytest.fixture
def ml(live_url, live_org_token, errors):
    client = Meterline(
        live_org_token[1],
        base_url=live_url,
        flush_interval=0.05,
        retry=FAST_RETRY,
        on_error=errors.append,
    )
    yield client
    client.close(timeout=10)


def stored(org, **filters):
    """The organization's stored events (oldest first)."""
    from metering.models import Event

    return list(Event.objects.filter(organization=org, **filters).order_by("timestamp", "id"))


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()

import pytest


@pytest.fixture(autouse=True, scope="session")
def _celery_in_memory():
    """Tasks enqueued by the code under test (delay_on_commit) go to an in-memory broker, not to
    the development broker under .data/ (a test that needs a real worker starts its own)."""
    from config.celery import app

    previous = app.conf.broker_url
    app.conf.broker_url = "memory://"
    app.pool.force_close_all()
    yield
    app.conf.broker_url = previous

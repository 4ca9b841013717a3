import pytest


@pytest.fixture(autouse=True, scope="session")
def _celery_in_memory():
    """Tasks enqueued by the code under test (delay_on_commit) go to an in-memory broker, not to
    the development broker under .data/ (a test that needs a real worker starts its own)."""
    from config.celery import app

    def reset_pool():
        if app._pool is not None:
            app._pool.force_close_all()
            app._pool = None

    previous = app.conf.broker_url
    reset_pool()
    app.conf.broker_url = "memory://"
    yield
    reset_pool()
    app.conf.broker_url = previous

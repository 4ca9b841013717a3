import pytest
from django.contrib.auth import get_user_model
from django.test import Client

# The editor registers the Meter admin when imported; import it before the URLconf is built
# (in the app it is imported by metering's admin modules).
import metering.admin_meter_editor  # noqa: F401


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("editor", "editor@example.com", "pw-123456")


@pytest.fixture
def staff_client(staff):
    client = Client()
    client.force_login(staff)
    return client

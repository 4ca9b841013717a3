import pytest
from django.contrib.auth import get_user_model
from django.test import Client


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")


@pytest.fixture
def admin_client(staff):
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def plain_client(db):
    user = get_user_model().objects.create_user("joe", "joe@example.com", "pw-123456")
    client = Client()
    client.force_login(user)
    return client

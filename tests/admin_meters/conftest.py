import pytest
from django.contrib.auth import get_user_model
from django.test import Client


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("editor", "editor@example.com", "pw-123456")


@pytest.fixture
def staff_client(staff):
    client = Client()
    client.force_login(staff)
    return client

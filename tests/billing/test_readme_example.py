"""The README's billing example runs as written against a live server, after the README's first
example (which creates the customer `u1` it bills), its shell command run in-process.
tests/ops/test_dev_run.py runs the whole README against `./dev run` itself."""

import re
import shlex
from pathlib import Path

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db(transaction=True)
README = Path(__file__).resolve().parents[2] / "README.md"


def blocks_of(section: str, next_section: str) -> list[tuple[str, str]]:
    text = README.read_text()
    part = text[text.index(section) : text.index(next_section)]
    return re.findall(r"```(python|bash)\n(.*?)```", part, re.S)


def test_readme_billing_example(live_url, live_org_token):
    token = live_org_token[1]
    namespace: dict = {}
    first = blocks_of("## Using the API with Polar's client", "## Customer portal")[:1]
    billing = blocks_of("## Billing with Polar's client", "## Python SDK")
    assert [kind for kind, _ in billing] == ["python", "bash", "python"]
    for kind, code in first + billing:
        code = code.replace("<token>", token).replace("http://127.0.0.1:8000", live_url)
        if kind == "python":
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
        else:
            (command,) = code.strip().splitlines()
            assert command.startswith("./dev manage ")
            call_command(*shlex.split(command)[2:])
    orders = namespace["orders"]
    assert [(o.billing_reason, o.total_amount) for o in orders] == [
        ("subscription_create", 2900),
        ("subscription_cycle", 2904),
    ]
    assert namespace["upcoming"]["total_amount"] == 2902
    namespace["polar"].__exit__(None, None, None)

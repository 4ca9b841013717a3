"""The README's billing example runs as written against a live server."""

import re
from pathlib import Path

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db(transaction=True)
README = Path(__file__).resolve().parents[2] / "README.md"


def billing_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text[text.index("## Billing with Polar's client") : text.index("## Python SDK")]
    return re.findall(r"```(python|bash)\n(.*?)```", section, re.S)


def test_readme_billing_example(live_url, live_org_token):
    token = live_org_token[1]
    namespace: dict = {}
    blocks = billing_blocks()
    assert [kind for kind, _ in blocks] == ["python", "bash", "python"]
    for kind, code in blocks:
        code = code.replace("<token>", token).replace("http://127.0.0.1:8000", live_url)
        if kind == "python":
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
        else:
            (as_of,) = re.findall(r"close_cycles --as-of (\S+)", code)
            call_command("close_cycles", "--as-of", as_of)
    namespace["polar"].__exit__(None, None, None)

"""The README's commands run as written, and the repository stands on its own: every relative
link in README.md and docs/ resolves, and no file points at a path outside the repository."""

import contextlib
import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.support import subprocess_database_url

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
INLINE = re.compile(r"`([^`\n]+)`")
COMMAND_START = re.compile(r"^(\./dev|pip |python |celery |gunicorn |[A-Z_]+=\S+ \./dev)")

# Commands that cannot run inside the test suite itself, and the check that stands in for each.
COVERED_ELSEWHERE = {
    "./dev run": "tests/ops/test_dev_run.py drives it 9 times, bench/soak.py dev-run 23 times",
    "./dev run --port 8001": "tests/ops/test_dev_run.py starts every run with --port",
    "./dev test": ".ci/run is exactly this command",
    "./dev stop": "tests/ops/test_dev_run.py stops its embedded PostgreSQL with it",
    "./dev test tests/api -k ingest": "./dev test passes its arguments to pytest (this run)",
    "DATABASE_URL=postgres://postgres@127.0.0.1:5432/meterline ./dev test": (
        "how the suite is run on machines with PostgreSQL (this run, with a DATABASE_URL)"
    ),
    'pip install "./sdk[openai,boto3]"': "tests/sdk/test_install.py installs ./sdk in a clean venv",
}


def readme_commands() -> list[str]:
    text = README.read_text()
    commands = []
    for language, body in FENCE.findall(text):
        if language in ("bash", "sh", "shell", "console"):
            for line in body.splitlines():
                line = line.split("  #")[0].strip()
                if line and not line.startswith("#"):
                    commands.append(line)
    for span in INLINE.findall(FENCE.sub("", text)):
        if COMMAND_START.match(span):
            commands.append(span)
    return commands


def test_every_readme_command_is_checked():
    commands = readme_commands()
    assert "./dev run" in commands and "./dev test" in commands
    runnable = {
        './dev manage create_api_token --org "Acme" --name "backend"',
        "./dev manage close_cycles",
    }
    unchecked = [c for c in commands if c not in COVERED_ELSEWHERE and c not in runnable]
    assert unchecked == [], "add a check for these README commands"
    assert (ROOT / ".ci/run").read_text().strip().endswith("exec ./dev test")
    assert '"./dev", "stop"' in (ROOT / "tests/ops/test_dev_run.py").read_text()


def test_readme_token_command_runs_as_written(transactional_db, live_server):
    import httpx

    (command,) = [c for c in readme_commands() if "create_api_token" in c]
    env = {"DATABASE_URL": subprocess_database_url(), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and len(lines[0]) > 30  # only the token
    response = httpx.get(
        f"{live_server.url}/v1/customers/", headers={"Authorization": f"Bearer {lines[0]}"}
    )
    assert response.status_code == 200
    from customers.models import Organization

    assert Organization.objects.filter(name="Acme").count() == 1


def test_readme_close_cycles_command_runs_as_written(transactional_db):
    (command,) = [c for c in readme_commands() if "close_cycles" in c]
    env = {"DATABASE_URL": subprocess_database_url(), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_readme_polar_example_shows_the_usage(polar, live_url, live_org_token):
    (example,) = [body for lang, body in FENCE.findall(README.read_text()) if lang == "python"][:1]
    # the demo organization's meters that see `api.request` events
    count = {"func": "count"}
    latency = {"func": "avg", "property": "latency_ms"}
    for name, aggregation in (("API requests", count), ("Average API latency", latency)):
        polar.meters.create(
            name=name,
            filter={
                "conjunction": "and",
                "clauses": [{"property": "name", "operator": "eq", "value": "api.request"}],
            },
            aggregation=aggregation,
        )
    code = example.replace('"<token>"', repr(live_org_token[1])).replace(
        "http://127.0.0.1:8000", live_url
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102
    assert sorted(printed.getvalue().splitlines()) == [
        "API requests 1.0",
        "Average API latency 12.0",
    ]


# --- the repository stands on its own ------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
OUTSIDE = re.compile(r"\.\./shared|shared/spec|\bspec/\w+\.md|/work/|/root/|/home/\w")


def tracked_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in names if (ROOT / name).is_file()]


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("**/*.md"))]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        resolved = (page.parent / path).resolve()
        if not resolved.exists() or not resolved.is_relative_to(ROOT):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_page_named_in_the_docs_is_in_the_repository(page):
    """A bare `events.md` in prose must be a page of this repository (next to the page, or at
    the root), not a document the reader does not have."""
    text = LINK.sub("", page.read_text())
    missing = [
        name
        for name in set(re.findall(r"(?<![\w/.-])([\w-]+\.md)\b", text))
        if not (page.parent / name).exists() and not (ROOT / name).exists()
    ]
    assert missing == []


def test_no_file_points_outside_the_repository():
    this_file = Path(__file__).resolve()
    offenders = []
    for path in tracked_files():
        if path == this_file or path.suffix in (".png", ".jpg", ".ico", ".woff", ".woff2"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert offenders == []

"""The import directions of docs/architecture.md, enforced: import-linter's contracts (layers
between the apps; domain modules free of DRF and of their app's API/admin), and two rules that
apply to every module, present and future, checked on grimp's import graph:

- only API modules (`<app>.api…`, and `config`) import `core.api`, the Polar wire layer;
- inside an app, only its `api`, `admin` and `apps` modules import its `api` or `admin`.
"""

import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
APPS = ("core", "customers", "metering", "billing", "portal", "webhooks")


def test_import_linter_contracts_are_kept():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def _is_api(module: str) -> bool:
    parts = module.split(".")
    return "api" in parts[1:] or parts[0] == "config"


def test_only_api_modules_import_the_wire_layer_and_domain_never_imports_its_views():
    graph = grimp.build_graph(*APPS, "config")
    wire_importers = sorted(
        importer
        for module in graph.find_descendants("core.api") | {"core.api"}
        for importer in graph.find_modules_that_directly_import(module)
        if not _is_api(importer)
    )
    assert wire_importers == []
    upward = []
    for app in APPS:
        outer = {f"{app}.api", f"{app}.admin"}
        for target in outer:
            if target not in graph.modules:
                continue
            for module in graph.find_descendants(target) | {target}:
                for importer in graph.find_modules_that_directly_import(module):
                    head = importer.split(".")[:2]
                    if head[0] == app and ".".join(head) not in outer | {f"{app}.apps"}:
                        upward.append(f"{importer} -> {module}")
    assert sorted(upward) == []


SQL_ON_METERING_TABLES = re.compile(r"\b(FROM|JOIN|INTO|UPDATE)\s+metering_\w+", re.IGNORECASE)
EVENT_MODEL = re.compile(r"from metering\.models import[^\n]*\bEvent\b|\bEvent\._meta\b")


def test_only_metering_reads_the_event_store():
    """Events and rollups are read through metering's query API (metering.queries) only: no
    other app — nor the composition root — names their tables in SQL or imports the Event
    model. That API is the seam a second event store stands behind."""
    offenders = []
    for app in (*APPS, "config"):
        if app == "metering":
            continue
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            text = path.read_text()
            for pattern in (SQL_ON_METERING_TABLES, EVENT_MODEL):
                offenders += [
                    f"{path.relative_to(ROOT)}: {match.group(0)}"
                    for match in pattern.finditer(text)
                ]
    assert offenders == []

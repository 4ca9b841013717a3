"""What `./dev run` tells the other commands of the same data folder while it runs.

`./dev run` gives the processes it starts settings of its own: localstripe's test keys and
address, automatic collection, emails written to files. A command run beside it (`./dev manage
close_cycles`) must do what those processes would — issue an invoice that is charged through the
same localstripe, write its emails to the same folder — so `./dev run` records those settings in
the data folder, and the settings of a DEBUG process read them back while that `./dev run` is
alive. What the environment sets itself still wins."""

import json
import os
from pathlib import Path

FILE_NAME = "dev-run.json"


def record(data_dir: Path, environment: dict[str, str]) -> Path:
    path = data_dir / FILE_NAME
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps({"pid": os.getpid(), "environment": environment}))
    os.replace(scratch, path)
    return path


def forget(data_dir: Path) -> None:
    (data_dir / FILE_NAME).unlink(missing_ok=True)


def adopt(data_dir: Path) -> None:
    """The settings of the `./dev run` of this data folder, if one is running."""
    try:
        recorded = json.loads((data_dir / FILE_NAME).read_text())
        os.kill(recorded["pid"], 0)
    except (OSError, ValueError, KeyError, TypeError):
        return  # none recorded, unreadable, or its `./dev run` is gone
    for name, value in recorded["environment"].items():
        os.environ.setdefault(name, value)

"""``pip install ./sdk`` in a clean virtual environment works without Django."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parents[2] / "sdk"


@pytest.mark.slow
def test_sdk_installs_in_a_clean_venv_without_django(tmp_path):
    started = time.monotonic()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(SDK)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, meterline, meterline.strategies.llm, meterline.strategies.s3; "
            "assert 'django' not in sys.modules; "
            "import importlib.util as u; "
            "assert u.find_spec('django') is None; "
            "assert u.find_spec('openai') is None and u.find_spec('boto3') is None; "
            "print(meterline.__version__, meterline.Meterline.__module__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["0.1.0", "meterline.client"]
    assert time.monotonic() - started < 60

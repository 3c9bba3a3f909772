"""The code stays lint-clean and formatted: ruff runs as part of the tests."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _ruff(*args):
    return subprocess.run(
        [sys.executable, '-m', 'ruff', *args, str(ROOT)], capture_output=True, text=True, cwd=ROOT
    )


def testRuffFindsNoLintErrors():
    result = _ruff('check', '--no-cache')
    assert result.returncode == 0, result.stdout + result.stderr


def testCodeIsRuffFormatted():
    result = _ruff('format', '--check', '--no-cache')
    assert result.returncode == 0, result.stdout + result.stderr

"""The scripts and benchmarks the docs tell people to run must at least compile and answer --help."""

import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_compiles(path):
    py_compile.compile(str(path), doraise=True)


def test_builtin_models_help():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "builtin_models.py"), "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--base-channels" in r.stdout

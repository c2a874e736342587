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


def test_builtin_models_soup_averages_the_runs_named(tmp_path):
    """`soup --of=-a --of=-b` (tags begin with '-') writes the mean of the two runs' weights."""
    import torch
    from _helpers import tiny_model

    from napari_unet.modelfile import load_model, save_model

    a, b = tiny_model(), tiny_model()
    with torch.no_grad():
        for p in b.network.parameters():
            p.add_(1.0)
    save_model(a, tmp_path / "fluo-nuclei-a.safetensors")
    save_model(b, tmp_path / "fluo-nuclei-b.safetensors")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "builtin_models.py"), "soup", "fluo-nuclei",
                        "--of=-a", "--of=-b", "--tag=-ab", "--runs", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    soup = load_model(tmp_path / "fluo-nuclei-ab.safetensors")
    sa, sb = a.network.state_dict(), b.network.state_dict()
    for k, v in soup.network.state_dict().items():
        torch.testing.assert_close(v, (sa[k] + sb[k]) / 2)
    assert soup.provenance["command"].endswith("--of=-a --of=-b --tag=-ab")
    assert set(soup.provenance["soup_of"]) == {"-a", "-b"}

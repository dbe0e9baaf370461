"""Set-up truth: the Makefile installs the PyTorch build the user chose, and the README says
what each choice does (was: "CPU build first", and GPU advice equal to the default)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU = "https://download.pytorch.org/whl/cpu"


def _setup_commands(*args: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "-B", "setup", *args], cwd=ROOT, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.splitlines()


def _torch_line(lines: list[str]) -> str:
    (line,) = [ln for ln in lines if "pip install" in ln and "torch==" in ln]
    return line


def test_default_setup_installs_pinned_torch_from_whatever_pip_is_configured_with():
    line = _torch_line(_setup_commands())
    assert '"torch==2.13.0"' in line and "--index-url" not in line


def test_torch_index_picks_the_build():
    assert _torch_line(_setup_commands(f"TORCH_INDEX={CPU}")).endswith(f'--index-url "{CPU}"')
    cuda = _torch_line(_setup_commands("TORCH_INDEX=https://download.pytorch.org/whl/cu126"))
    assert cuda.endswith('--index-url "https://download.pytorch.org/whl/cu126"')


def test_readme_says_what_each_choice_installs():
    readme = (ROOT / "README.md").read_text()
    assert "CPU build first" not in readme  # untrue with PyPI alone on Linux x86_64
    assert f"make demo TORCH_INDEX={CPU}" in readme and "**CUDA** build" in readme
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cu" in readme

"""Building the package prints no setuptools warning about the project's own metadata.

``pip install -e .`` printed about 170 lines of warnings: the licence as a TOML table
(deprecated) and data folders missing from ``packages``. This builds the editable
wheel the way pip does (the PEP 660 hook) on a copy of the source tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_editable_build_has_no_setuptools_warning(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", ".pytest_cache", ".mypy_cache",
        ".ruff_cache"))
    out = tmp_path / "wheel"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c",
         f"from setuptools import build_meta; print(build_meta.build_editable({str(out)!r}))"],
        cwd=source, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines()
                if "Warning" in line and "byte-compiling is disabled" not in line]
    assert warnings == [], "\n".join(warnings[:20])
    assert list(out.glob("fedswarm-*.whl"))

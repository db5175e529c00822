"""Benchmarks, run from a source checkout: ``python -m bench.quality`` and so on.

They are not part of the installed ``fedswarm`` package. Benchmarks that start copies
of themselves (``-m bench.X``) build the child's command and environment with
:func:`module_command` and :func:`child_env`, so the child finds ``bench`` (and the
test scaffolding some of them reuse) whatever the caller's working directory; the
working directory itself is left alone, so relative paths in arguments keep their
meaning.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def module_command(module: str, *args: str) -> list[str]:
    """``[python, -m, bench.<module>, *args]`` with this interpreter."""
    return [sys.executable, "-m", f"bench.{module}", *args]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` (plus ``extra``) with the repository root first on PYTHONPATH."""
    env = {**os.environ, **(extra or {})}
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env

"""Package attributes imported on first use.

Why: ``fedswarm config check``, ``status`` and ``init`` must start in a fraction of a
second, and importing a package's submodules eagerly pulls in torch, transformers and
peft (seconds). Packages list what they export in a ``_LAZY`` table (name -> submodule)
and resolve a name only when someone reads it; a test fails if ``config check`` imports
the heavy libraries.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


def import_lazily(package: str, table: Mapping[str, str], namespace: dict[str, Any],
                  name: str) -> Any:
    """``package.name`` from the submodule ``table`` names, cached in ``namespace``.

    For a package's module-level ``__getattr__``; ``AttributeError`` for anything the
    table does not list, as Python expects of it.
    """
    module = table.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{package}.{module}"), name)
    namespace[name] = value
    return value

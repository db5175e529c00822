"""Every product folder with an ``__init__.py`` is listed in ``pyproject.toml``'s packages.

setuptools ships only the packages named there. The editable install the README uses
finds unlisted subpackages through the parent's path anyway, so a missing entry passes
every other test and breaks only a plain ``pip install .`` — as ``learning/ownership``
once did.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _listed_packages() -> tuple[set[str], dict[str, str]]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(setuptools["packages"]), dict(setuptools["package-dir"])


def test_every_folder_with_an_init_is_a_listed_package() -> None:
    packages, package_dirs = _listed_packages()
    found: set[str] = set()
    for package, folder in package_dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]))
    missing = sorted(found - packages)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"

"""The package's lazily imported names are the functions and classes, never submodules."""

from __future__ import annotations

import subprocess
import sys


def test_distill_is_the_function_whichever_module_is_imported_first() -> None:
    """``distill`` is also a submodule; FedMKT rounds once got the module and aborted."""
    script = (
        "import fedswarm.learning.fedmkt.trainer\n"  # imports the distill submodule first
        "from fedswarm.learning.fedmkt import distill, fedmkt_loss\n"
        "from fedswarm.learning.fedmkt.trainer import distill as real\n"
        "assert distill is real, distill\n"
        "assert callable(fedmkt_loss)\n"
        "import fedswarm.learning.fedmkt as package\n"
        "assert package.distill is real\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_every_exported_name_resolves_to_what_its_module_defines() -> None:
    import importlib

    import fedswarm.learning.fedmkt as package

    for name in package.__all__:
        value = getattr(package, name)
        assert not isinstance(value, type(package)), f"{name} is a module"
        module = package._LAZY.get(name)
        if module is not None:
            source = importlib.import_module(f"fedswarm.learning.fedmkt.{module}")
            assert value is getattr(source, name), name

"""Start a real ``fedswarm run`` daemon as a hostile roster member.

    python launch.py PLAN.json -- python -m fedswarm.daemon.cli run --config CONFIG

Everything after ``--`` is the normal daemon command line, so the launcher plugs into
``LocalFederation`` as a peer's ``command_prefix`` (``harness.make_hostile``). It loads
``attacks.py`` from this folder by path (the daemon process needs nothing from
``tests``), installs the attacks the plan names, and calls the ordinary CLI entry point:
the daemon is the product's own code except for the patched behaviours.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load_attacks() -> object:
    spec = importlib.util.spec_from_file_location("fedswarm_hostile_attacks", HERE / "attacks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit(f"usage: {Path(__file__).name} PLAN.json -- DAEMON COMMAND LINE")
    plan_path, command = Path(argv[0]), argv[2:]
    # the daemon's own command line: [python] -m fedswarm.daemon.cli run --config X
    if "fedswarm.daemon.cli" not in command:
        raise SystemExit(f"not a fedswarm daemon command line: {command}")
    cli_args = command[command.index("fedswarm.daemon.cli") + 1:]
    attacks = _load_attacks()
    attacks.install(attacks.Plan.load(plan_path))  # type: ignore[attr-defined]
    from fedswarm.daemon.cli import main as cli_main

    cli_main(args=cli_args, prog_name="fedswarm")


if __name__ == "__main__":
    main(sys.argv[1:])

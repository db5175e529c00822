"""``fedswarm offsite build``: writes a package that opens under the id it prints."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner
from fedswarm.daemon.cli import main
from fedswarm.learning.offsite import open_package


def test_build_prints_the_package_id_members_configure(
    deep_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "package"
    result = CliRunner().invoke(
        main,
        [
            "offsite",
            "build",
            "--model",
            str(deep_model_dir),
            "--out",
            str(out),
            "--keep",
            "1",
            "--adapter-layers",
            "1,2",
        ],
    )
    assert result.exit_code == 0, result.output
    package_id = re.search(r'package_id = "([0-9a-f]{64})"', result.output)
    assert package_id is not None
    package = open_package(out, package_id.group(1))
    assert package.layout.emulator_to_full() == [0, 1, 6, 7]
    assert "middle layers [1] kept" in result.output


def test_bad_arguments_are_one_line_errors(deep_model_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad_layers = runner.invoke(
        main,
        [
            "offsite",
            "build",
            "--model",
            str(deep_model_dir),
            "--out",
            str(tmp_path / "a"),
            "--keep",
            "2",
            "--adapter-layers",
            "4,4",
        ],
    )
    assert bad_layers.exit_code == 2
    assert "leave no middle" in bad_layers.output
    no_text = runner.invoke(
        main,
        [
            "offsite",
            "build",
            "--model",
            str(deep_model_dir),
            "--out",
            str(tmp_path / "b"),
            "--keep",
            "2",
            "--adapter-layers",
            "2,2",
            "--distill-steps",
            "5",
        ],
    )
    assert no_text.exit_code == 2 and "--distill-data" in no_text.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

"""[privacy] group-level DP and accountant settings: what loads, and one line for what cannot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fedswarm.daemon.config import load_config
from fedswarm.daemon.errors import ConfigError

from .minimal_config import MINIMAL, write_config


def write(tmp_path: Path, extra: str) -> Path:
    return write_config(tmp_path, MINIMAL + extra)


def test_group_dp_is_off_by_default_and_loads_when_set(tmp_path: Path) -> None:
    assert not load_config(write(tmp_path, "")).privacy.group_dp
    config = load_config(
        write(
            tmp_path,
            '\n[privacy]\ngroup_noise_multiplier = 2.0\ncolluders = 1\naccountant = "prv"\n',
        )
    )
    assert config.privacy.group_dp and config.privacy.colluders == 1
    assert config.privacy.accountant == "prv"


ON = "[privacy]\ngroup_noise_multiplier = 1.0\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[federation]\nsecure_aggregation = "none"\n' + ON,
            r"group_noise_multiplier: needs secure aggregation",
        ),
        (
            '[federation]\nsecure_aggregation = "bfv-mask-shamir-v2"\n' + ON,
            r"group_noise_multiplier: needs federation.secure_aggregation = 'bfv-mask-shamir-v3'",
        ),
        (
            '[federation]\nmode = "fedkseed"\n' + ON,
            r"\[privacy\] group_noise_multiplier: federation.mode = 'fedkseed'",
        ),
        (ON + "colluders = 3\n", r"colluders = 3: .*set colluders <= 2"),
        ("[privacy]\ngroup_noise_multiplier = 1e9\n", r"does not fit a field"),
    ],
)
def test_group_dp_that_cannot_hold_is_refused_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write(tmp_path, "\n" + text))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('accountant = "gdp"', r"privacy.accountant: must be 'rdp' or 'prv'"),
        ("group_noise_multiplier = 0", r"privacy.group_noise_multiplier: must be a finite number"),
        ("group_update_clip = -1.0", r"privacy.group_update_clip: must be a finite number > 0"),
        ("colluders = -1", r"privacy.colluders: must be an integer >= 0"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"\n[privacy]\n{line}\n"))


def test_reading_a_group_dp_config_imports_no_torch(tmp_path: Path) -> None:
    path = write(tmp_path, "\n[privacy]\ngroup_noise_multiplier = 1.0\n")
    script = (
        "import sys\nfrom fedswarm.daemon.config import load_config\n"
        f"load_config({str(path)!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'peft', 'libp2p', 'tenseal', 'opacus')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout

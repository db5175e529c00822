"""[ownership] is validated at start-up: bad values, bad key files and modes, one line each."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedswarm.daemon.config import check_ownership_key, load_config
from fedswarm.daemon.errors import ConfigError
from fedswarm.learning.ownership.keys import write_key_file

from .minimal_config import MINIMAL, write_config


def write(tmp_path: Path, extra: str) -> Path:
    return write_config(tmp_path, MINIMAL + extra)


def test_ownership_is_off_by_default(tmp_path: Path) -> None:
    assert not load_config(write(tmp_path, "")).ownership.enabled


def test_a_good_section_loads_and_resolves_the_key_path(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "\n[ownership]\nenabled = true\nbits = 32\n"))
    assert config.ownership.bits == 32
    assert config.ownership_key_path == tmp_path / "ownership.key"


@pytest.mark.parametrize(("line", "message"), [
    ("bits = 4", r"\[ownership\]: ownership.bits: must be an integer in \[8, 1024\]"),
    ("margin = 0", r"\[ownership\]: ownership.margin: must be a finite number > 0"),
    ("weight = -1.0", r"\[ownership\]: ownership.weight: must be a finite number > 0"),
    ("triggers = 2", r"\[ownership\]: ownership.triggers: must be 0 \(off\) or an integer"),
    ("trigger_weight = 0", r"\[ownership\]: ownership.trigger_weight: must be a finite"),
])
def test_bad_values_are_named(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"\n[ownership]\nenabled = true\n{line}\n"))


def test_a_mode_that_does_not_average_the_scales_is_refused(tmp_path: Path) -> None:
    text = "\n[federation]\nmode = \"fedmkt\"\n\n[ownership]\nenabled = true\n"
    with pytest.raises(ConfigError, match=r"\[ownership\] enabled: federation.mode = 'fedmkt'"):
        load_config(write(tmp_path, text))


def test_triggers_with_dp_sgd_are_refused_in_one_line(tmp_path: Path) -> None:
    text = ("\n[privacy]\nenabled = true\ntarget_epsilon = 8.0\n"
            "\n[ownership]\nenabled = true\ntriggers = 8\n")
    with pytest.raises(ConfigError, match=r"\[ownership\] triggers is not supported with "
                                          r"\[privacy\]") as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_a_group_readable_key_file_is_refused_in_one_line(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "\n[ownership]\nenabled = true\n"))
    write_key_file(config.ownership_key_path)
    check_ownership_key(config)
    config.ownership_key_path.chmod(0o640)
    with pytest.raises(ConfigError, match=r"\[ownership\] key_file: .*mode 0640") as info:
        check_ownership_key(config)
    assert "\n" not in str(info.value)


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "\n[ownership]\nenabled = true\nkey_file = \"k\"\n"))
    with pytest.raises(ConfigError, match=r"\[ownership\] key_file: .*k: ownership key file "
                                          "not found"):
        check_ownership_key(config)


def test_init_writes_an_owner_only_key_and_keeps_it_on_force(tmp_path: Path) -> None:
    from fedswarm.daemon.setup_files import init_node
    from fedswarm.learning.ownership.keys import read_key_file

    first = init_node(tmp_path / "node", "acme")
    key_path = first.config_path.parent / "ownership.key"
    key = read_key_file(key_path)  # refuses anything but an owner-only file
    init_node(tmp_path / "node", "acme", overwrite=True)
    assert read_key_file(key_path) == key

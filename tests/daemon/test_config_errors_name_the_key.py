"""Bad configuration is refused with a message naming the file, table and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedswarm.daemon.config import load_config
from fedswarm.daemon.errors import ConfigError

from .minimal_config import MINIMAL
from .minimal_config import write_config as write


def test_minimal_config_loads_with_defaults_and_resolves_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.node.org == "bank-a"
    assert config.federation.group_size == 4
    assert config.federation.secure_aggregation == "bfv-mask-shamir-v3"
    assert config.data.train_path == str(tmp_path / "train.jsonl")
    assert config.state_dir == tmp_path / "state"


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[node\] org: missing"):
        load_config(write(tmp_path, MINIMAL.replace('org = "bank-a"', "")))


def test_missing_required_table_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[data\] missing"):
        load_config(write(tmp_path, MINIMAL.split("[data]")[0]))


def test_wrong_type_is_named_with_the_value(tmp_path: Path) -> None:
    text = MINIMAL + "\n[train]\nlr = \"fast\"\n"
    with pytest.raises(ConfigError, match=r"\[train\] lr: expected a number, got str 'fast'"):
        load_config(write(tmp_path, text))


def test_unknown_key_is_refused_not_ignored(tmp_path: Path) -> None:
    text = MINIMAL + "\n[federation]\ngroup_sise = 5\n"
    with pytest.raises(ConfigError, match=r"\[federation\]: unknown key 'group_sise'"):
        load_config(write(tmp_path, text))


def test_group_of_two_is_refused_with_the_reason(tmp_path: Path) -> None:
    text = MINIMAL + "\n[federation]\ngroup_size = 2\n"
    with pytest.raises(ConfigError, match="group_size: must be >= 3"):
        load_config(write(tmp_path, text))


def test_unknown_protocol_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + '\n[federation]\nsecure_aggregation = "rot13"\n'
    with pytest.raises(ConfigError, match="secure_aggregation"):
        load_config(write(tmp_path, text))


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[node\norg=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_environment_overrides_secret_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDSWARM_IDENTITY", "/run/credentials/fedswarm/identity.key")
    config = load_config(write(tmp_path, MINIMAL))
    assert config.identity_path == Path("/run/credentials/fedswarm/identity.key")


def test_inbound_blob_limits_load_and_a_zero_limit_is_named(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'org = "bank-a"', 'org = "bank-a"\nmax_inbound_mb = 300\nmax_inbound_blobs_per_peer = 2'
    )
    config = load_config(write(tmp_path, text))
    assert (config.node.max_inbound_mb, config.node.max_inbound_blobs_per_peer) == (300, 2)
    with pytest.raises(ConfigError, match="max_inbound_mb: must be positive"):
        load_config(write(tmp_path, text.replace("max_inbound_mb = 300", "max_inbound_mb = 0")))


def test_retired_secure_aggregation_protocol_names_its_successor(tmp_path: Path) -> None:
    text = MINIMAL + '\n[federation]\nsecure_aggregation = "bfv-mask-shamir-v1"\n'
    with pytest.raises(ConfigError, match=r"secure_aggregation: 'bfv-mask-shamir-v1' was replaced"):
        load_config(write(tmp_path, text))


def test_protocol_v2_can_still_be_chosen(tmp_path: Path) -> None:
    text = MINIMAL + '\n[federation]\nsecure_aggregation = "bfv-mask-shamir-v2"\n'
    assert load_config(write(tmp_path, text)).federation.secure_aggregation == "bfv-mask-shamir-v2"


def test_groups_too_large_for_v3_are_refused_at_load_and_fine_with_v2(tmp_path: Path) -> None:
    big = MINIMAL + "\n[federation]\ngroup_size = 30\n"
    with pytest.raises(ConfigError, match=r"group_size: bfv-mask-shamir-v3 .* up to 32.*<= 29"):
        load_config(write(tmp_path, big))
    fits = MINIMAL + "\n[federation]\ngroup_size = 29\n"
    assert load_config(write(tmp_path, fits)).federation.group_size == 29
    v2 = big + 'secure_aggregation = "bfv-mask-shamir-v2"\n'
    assert load_config(write(tmp_path, v2)).federation.group_size == 30


def test_on_by_default_and_off_when_set(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).federation.average_optimizer_state is True
    off = MINIMAL + "\n[federation]\naverage_optimizer_state = false\n"
    assert load_config(write(tmp_path, off)).federation.average_optimizer_state is False


def test_a_non_boolean_value_is_refused_naming_the_key(tmp_path: Path) -> None:
    bad = MINIMAL + '\n[federation]\naverage_optimizer_state = "yes"\n'
    with pytest.raises(ConfigError, match=r"\[federation\] average_optimizer_state: expected true"):
        load_config(write(tmp_path, bad))


def test_generation_sample_keys_load_and_out_of_range_is_named(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "\n[train]\nsamples_per_round = 0\n"))
    assert (config.train.samples_per_round, config.train.sample_max_new_tokens) == (0, 32)
    text = MINIMAL + "\n[train]\nsample_max_new_tokens = 1000\n"
    with pytest.raises(ConfigError, match=r"\[train\]: train\.sample_max_new_tokens: must be in"):
        load_config(write(tmp_path, text))


def test_rounds_far_apart_levers_load_and_bad_values_are_named(tmp_path: Path) -> None:
    text = MINIMAL + "\n[federation]\nfreeze_lora_a = true\ngroup_momentum = 0.5\n"
    settings = load_config(write(tmp_path, text)).mode_settings()
    assert (settings.freeze_lora_a, settings.group_momentum) == (True, 0.5)
    bad = MINIMAL + "\n[federation]\ngroup_momentum = 1.0\n"
    with pytest.raises(ConfigError, match=r"\[federation\].*group_momentum: must be in \[0, 1\)"):
        load_config(write(tmp_path, bad))
    fedmkt = MINIMAL + '\n[federation]\nmode = "fedmkt"\nfreeze_lora_a = true\n'
    with pytest.raises(ConfigError, match=r"lora_avg"):
        load_config(write(tmp_path, fedmkt))


def test_scaffold_loads_and_is_refused_outside_lora_avg(tmp_path: Path) -> None:
    text = MINIMAL + "\n[federation]\nscaffold = true\n"
    assert load_config(write(tmp_path, text)).mode_settings().scaffold is True
    fedmkt = MINIMAL + '\n[federation]\nmode = "fedmkt"\nscaffold = true\n'
    with pytest.raises(ConfigError, match=r"lora_avg"):
        load_config(write(tmp_path, fedmkt))

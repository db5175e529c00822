"""The daemon's configuration file: TOML validated into typed settings.

One file per organisation, written by ``fedswarm init`` with comments. Relative
paths are resolved against the file's folder so a configuration directory can be
moved as a whole. Every error names the file, the table and the key.

Secrets' paths can be overridden from the environment (``FEDSWARM_IDENTITY``,
``FEDSWARM_API_TOKEN_FILE``), so a systemd credential or a mounted secret can be
used without editing the file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fedswarm.federation.fedmkt.settings import FedMKTSection
from fedswarm.federation.groups.plan import largest_group
from fedswarm.federation.modes import MODES
from fedswarm.federation.offsite.settings import OffsiteSettings
from fedswarm.federation.round import MIN_GROUP_SIZE
from fedswarm.learning.errors import ScreenConfigError
from fedswarm.learning.evaluation.settings import RoundEvalSettings
from fedswarm.learning.fedkseed.settings import KSeedSettings
from fedswarm.learning.fedmkt import (
    PublicDataError,
    PublicDataHashMismatchError,
    PublicDataset,
    load_public_dataset,
)
from fedswarm.learning.screening.classifier_files import check_classifier_dir
from fedswarm.learning.screening.settings import ScreenSettings
from fedswarm.learning.settings import (
    TRIGGERS_WITH_PRIVACY,
    AlignmentSettings,
    DataSettings,
    LoraSettings,
    ModelSettings,
    OwnershipSettings,
    PrivacySettings,
    TrainSettings,
)
from fedswarm.secagg.params import MAX_GROUP_V3, PROTOCOL_NAME, PROTOCOL_V3

from .config_schema import build_section
from .defaults import DEFAULT_LISTEN
from .errors import ConfigError

# v3 packs three signed values per BFV slot (a third of v2's bytes, far less CPU, a coarser
# grid: docs/security.md); v2 and v3 peers cannot share a group, so every member sets one
SECURE_AGGREGATION_CHOICES = ("bfv-mask-shamir-v2", "bfv-mask-shamir-v3", "none")
# v1 peers expect an upload from the decryptor, which v2 never sends: the two cannot mix
RETIRED_SECURE_AGGREGATION = {"bfv-mask-shamir-v1": "bfv-mask-shamir-v2"}


@dataclass
class NodeSettings:
    """Who this daemon is and where it keeps its state."""

    org: str
    identity: str = "identity.key"
    roster: str = "roster.toml"
    state_dir: str = "state"
    listen: str = DEFAULT_LISTEN
    bootstrap: list[str] = field(default_factory=list)
    enable_mdns: bool = False
    mdns_interface: str | None = None
    enable_dht: bool = False
    max_blob_mb: int = 512
    # Inbound blobs held at once (see fedswarm.p2p.inbound); more wait, then are refused.
    max_inbound_mb: int = 2048
    max_inbound_blobs_per_peer: int = 4
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def __post_init__(self) -> None:
        if not self.org.strip():
            raise ValueError("org: must not be empty")
        if self.max_blob_mb <= 0:
            raise ValueError("max_blob_mb: must be positive")
        if self.max_inbound_mb <= 0:
            raise ValueError("max_inbound_mb: must be positive")
        if self.max_inbound_blobs_per_peer <= 0:
            raise ValueError("max_inbound_blobs_per_peer: must be positive")


@dataclass
class ApiSettings:
    """The local status API and dashboard. Loopback by default: it is not meant for the internet."""

    host: str = "127.0.0.1"
    port: int = 8470
    token_file: str = "api.token"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not a TCP port")


@dataclass
class FederationSettings:
    """How this daemon takes part in rounds."""

    mode: str = "lora_avg"  # a key of fedswarm.federation.modes.MODES
    rounds: int = 0
    # What the daemon does once ``rounds`` (> 0) are done: "serve" keeps answering peers
    # (a late member catches up from it) and the API until stopped; "exit" exits with
    # status 0 (a batch job; systemd's Restart=on-failure leaves it stopped).
    after_rounds: Literal["serve", "exit"] = "serve"
    group_size: int = 4
    round_deadline_s: float = 120.0
    secure_aggregation: str = PROTOCOL_NAME
    final_averaging_rounds: int = 0
    wait_for_peers: int = 0
    wait_for_peers_s: float = 120.0
    heartbeat_s: float = 2.0
    peer_timeout_s: float = 10.0
    # lora_avg only: also average AdamW's first moment (exp_avg) with the adapter
    # (docs/learning.md).
    # It doubles the averaged vector; every member of a group must set the same value.
    average_optimizer_state: bool = True
    # lora_avg only, for rounds far apart (many local steps; docs/learning.md): FFA-LoRA,
    # A frozen at a shared init and only B trained and averaged (half the bytes), and
    # FedAvgM's momentum over the group's steps (0 = plain averaging). Every member of a
    # group must set the same values: a group that disagrees aborts its round.
    freeze_lora_a: bool = False
    group_momentum: float = 0.0
    # lora_avg only: SCAFFOLD's control variates correct each local step for drift; the
    # member's c_i travels in the averaged vector (+1x the adapter in bytes).
    scaffold: bool = False
    # The validation gate (docs/security.md): refuse a group result that raises this
    # member's own eval loss by more than this many nats, keeping its model. Unset: off.
    max_eval_loss_increase: float | None = None

    def __post_init__(self) -> None:
        if self.max_eval_loss_increase is not None and not (
            0 <= self.max_eval_loss_increase < float("inf")
        ):
            raise ValueError("max_eval_loss_increase: must be a finite number >= 0")
        if self.rounds < 0:
            raise ValueError("rounds: must be >= 0 (0 means run until stopped)")
        if not 0.0 <= self.group_momentum < 1.0:
            raise ValueError("group_momentum: must be in [0, 1) (0 = plain averaging)")
        if self.mode != "lora_avg" and (self.freeze_lora_a or self.group_momentum
                                        or self.scaffold):
            raise ValueError(
                "freeze_lora_a, group_momentum and scaffold apply to mode = \"lora_avg\" only")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        if self.group_size < MIN_GROUP_SIZE:
            raise ValueError(
                f"group_size: must be >= {MIN_GROUP_SIZE} "
                "(in a group of two the average reveals the other's update)"
            )
        if self.final_averaging_rounds < 0 or (
            self.rounds and self.final_averaging_rounds >= self.rounds
        ):
            raise ValueError(
                "final_averaging_rounds: must be >= 0 and leave at least one training round"
            )
        if self.round_deadline_s <= 0:
            raise ValueError("round_deadline_s: must be positive")
        successor = RETIRED_SECURE_AGGREGATION.get(self.secure_aggregation)
        if successor is not None:
            raise ValueError(
                f"secure_aggregation: {self.secure_aggregation!r} was replaced by "
                f"{successor!r}, whose rounds it cannot join; set {successor!r} on every peer"
            )
        if self.secure_aggregation not in SECURE_AGGREGATION_CHOICES:
            raise ValueError(
                f"secure_aggregation: expected one of {', '.join(SECURE_AGGREGATION_CHOICES)}, "
                f"got {self.secure_aggregation!r}"
            )
        slack = largest_group(self.group_size) - self.group_size
        if self.secure_aggregation == PROTOCOL_V3 and self.group_size + slack > MAX_GROUP_V3:
            raise ValueError(
                f"group_size: {PROTOCOL_V3} sizes its grid for groups of up to "
                f"{MAX_GROUP_V3} and a planned group can reach group_size + {slack}; "
                f"use group_size <= {MAX_GROUP_V3 - slack} or bfv-mask-shamir-v2"
            )


@dataclass
class Config:
    """The whole configuration, with every path already resolved."""

    source: Path
    node: NodeSettings
    api: ApiSettings
    federation: FederationSettings
    model: ModelSettings
    lora: LoraSettings
    data: DataSettings
    train: TrainSettings
    fedmkt: FedMKTSection = field(default_factory=FedMKTSection)
    fedkseed: KSeedSettings = field(default_factory=KSeedSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    ownership: OwnershipSettings = field(default_factory=OwnershipSettings)
    # present exactly when federation.mode = "offsite" (its package_id has no default)
    offsite: OffsiteSettings | None = None
    # [data.screen]: a sub-table of [data], kept apart so DataSettings stays the loader's
    screen: ScreenSettings = field(default_factory=ScreenSettings)
    # [data.alignment]: the shared, hash-pinned safe demonstrations mixed into training
    alignment: AlignmentSettings = field(default_factory=AlignmentSettings)
    # [eval]: sets scored after each round and shown on the training page (docs/safety.md)
    eval: RoundEvalSettings = field(default_factory=RoundEvalSettings)

    def mode_settings(self) -> Any:
        """The settings of the configured federation mode, for ``modes.make_exchange``.

        For ``offsite`` the daemon wraps these in an ``OffsiteRole`` (who the roster
        names model owner), which is what that mode's exchange takes.
        """
        if self.federation.mode == "fedmkt":
            return self.fedmkt
        if self.federation.mode == "fedkseed":
            return self.fedkseed
        if self.federation.mode == "offsite":
            return self.offsite
        from fedswarm.federation.modes.lora_avg import LoraAveragingSettings  # imports torch

        return LoraAveragingSettings(self.federation.average_optimizer_state,
                                     freeze_lora_a=self.federation.freeze_lora_a,
                                     group_momentum=self.federation.group_momentum,
                                     scaffold=self.federation.scaffold)

    @property
    def base_dir(self) -> Path:
        return self.source.parent

    def path(self, value: str) -> Path:
        """Resolve a path from the file relative to the file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def identity_path(self) -> Path:
        return self.path(os.environ.get("FEDSWARM_IDENTITY", self.node.identity))

    @property
    def roster_path(self) -> Path:
        return self.path(self.node.roster)

    @property
    def state_dir(self) -> Path:
        return self.path(os.environ.get("FEDSWARM_STATE_DIR", self.node.state_dir))

    @property
    def ownership_key_path(self) -> Path:
        return self.path(os.environ.get("FEDSWARM_OWNERSHIP_KEY", self.ownership.key_file))

    @property
    def offsite_package_dir(self) -> Path:
        """The owner's built package, or where a member keeps its fetched copy."""
        value = self.offsite.package_dir if self.offsite is not None else ""
        return self.path(value) if value else self.state_dir / "offsite-package"

    @property
    def offsite_export_dir(self) -> Path:
        """Where the model owner writes its plugged-in full model after each round."""
        value = self.offsite.export_dir if self.offsite is not None else ""
        return self.path(value) if value else self.state_dir / "offsite-export"

    @property
    def token_path(self) -> Path:
        return self.path(os.environ.get("FEDSWARM_API_TOKEN_FILE", self.api.token_file))


_SECTIONS: dict[str, type] = {
    "node": NodeSettings,
    "api": ApiSettings,
    "federation": FederationSettings,
    "model": ModelSettings,
    "lora": LoraSettings,
    "data": DataSettings,
    "train": TrainSettings,
    "fedmkt": FedMKTSection,
    "fedkseed": KSeedSettings,
    "privacy": PrivacySettings,
    "ownership": OwnershipSettings,
    "eval": RoundEvalSettings,
}
_REQUIRED_SECTIONS = ("node", "model", "data")
# Tables built only when present: their settings have no usable defaults.
_OPTIONAL_SECTIONS: dict[str, type] = {"offsite": OffsiteSettings}


def load_config(path: Path) -> Config:
    """Read and validate a configuration file. Raises ``ConfigError`` naming what is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return config_from_dict(document, source=path.resolve())


def config_from_dict(document: dict[str, Any], *, source: Path) -> Config:
    unknown = sorted(set(document) - set(_SECTIONS) - set(_OPTIONAL_SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown table [{unknown[0]}]")
    for name in _REQUIRED_SECTIONS:
        if name not in document:
            raise ConfigError(f"{source}: [{name}] missing (required)")
    document = dict(document)
    data = document.get("data")
    screen_table: Any = {}
    alignment_table: Any = {}
    if isinstance(data, dict) and ("screen" in data or "alignment" in data):
        data = dict(data)
        screen_table = data.pop("screen", {})
        alignment_table = data.pop("alignment", {})
        document["data"] = data
    sections: dict[str, Any] = {
        name: build_section(cls, document.get(name, {}), section=name, source=str(source))
        for name, cls in _SECTIONS.items()
    }
    for name, cls in _OPTIONAL_SECTIONS.items():
        if name in document:
            sections[name] = build_section(cls, document[name], section=name, source=str(source))
    sections["screen"] = build_section(ScreenSettings, screen_table, section="data.screen",
                                       source=str(source))
    sections["alignment"] = build_section(AlignmentSettings, alignment_table,
                                          section="data.alignment", source=str(source))
    config = Config(source=source, **sections)
    _check_offsite(config)
    _check_privacy(config)
    _check_screen(config)
    _check_round_eval(config)
    _check_alignment(config)
    _check_ownership(config)
    _resolve_learning_paths(config)
    return config


def _check_offsite(config: Config) -> None:
    """``[offsite]`` goes with ``mode = "offsite"`` and only with it."""
    offsite_mode = config.federation.mode == "offsite"
    if offsite_mode and config.offsite is None:
        raise ConfigError(
            f"{config.source}: [offsite] missing (required when federation.mode = 'offsite'; "
            "package_id is what 'fedswarm offsite build' printed)")
    if not offsite_mode and config.offsite is not None:
        raise ConfigError(
            f"{config.source}: [offsite] is set but federation.mode = "
            f"{config.federation.mode!r}; set mode = 'offsite' or remove the table")


def _refuse_outside_modes(config: Config, enabled: bool, section: str,
                          modes: tuple[str, ...], why: str, fix: str) -> None:
    """One line refusing a feature the configured federation mode cannot carry."""
    if enabled and config.federation.mode not in modes:
        raise ConfigError(f"{config.source}: {section}: federation.mode = "
                          f"{config.federation.mode!r} {why}; {fix}")


def _check_privacy(config: Config) -> None:
    """Refuse DP with a mode whose training is not DP-SGD (docs/privacy.md)."""
    _refuse_outside_modes(
        config, config.privacy.enabled, "[privacy] enabled", ("lora_avg",),
        "trains outside DP-SGD (distillation steps), which the accountant cannot count",
        "use mode = 'lora_avg' or disable [privacy]")
    _check_group_dp(config)


def _check_group_dp(config: Config) -> None:
    """Group-level DP needs v3 secure aggregation and at least one honest survivor.

    Why not plain averaging: each member adds only a 1/sqrt(survivors) share of the
    noise, calibrated on the assumption that nobody sees a member's value without the
    others' noise on it; in the clear every peer would read each update with its own
    share of the noise alone.
    """
    privacy = config.privacy
    if not privacy.group_dp:
        return
    key = f"{config.source}: [privacy] group_noise_multiplier"
    _refuse_outside_modes(
        config, True, "[privacy] group_noise_multiplier", ("lora_avg",),
        "does not send a clipped adapter change through secure aggregation",
        "use mode = 'lora_avg' or unset group_noise_multiplier")
    protocol = config.federation.secure_aggregation
    if protocol == "none":
        raise ConfigError(
            f"{key}: needs secure aggregation (federation.secure_aggregation = 'none' shows "
            "every peer each update with only its own share of the noise); use "
            f"'{PROTOCOL_V3}'")
    if protocol != PROTOCOL_V3:
        raise ConfigError(
            f"{key}: needs federation.secure_aggregation = '{PROTOCOL_V3}' (its packed "
            f"fields carry the noise), not {protocol!r}")
    if MIN_GROUP_SIZE - privacy.colluders < 1:
        raise ConfigError(
            f"{config.source}: [privacy] colluders = {privacy.colluders}: a group may reveal "
            f"a sum of {MIN_GROUP_SIZE} survivors, which leaves no honest member's noise; "
            f"set colluders <= {MIN_GROUP_SIZE - 1}")
    from fedswarm.federation.averaging.group_dp import group_dp_params, group_noise
    from fedswarm.secagg.errors import ParameterSecurityError
    from fedswarm.secagg.quantise import QuantisationGrid

    noise = group_noise(privacy)
    assert noise is not None
    try:  # the largest planned group must fit its noise in a field
        QuantisationGrid.for_group(group_dp_params(protocol, noise),
                                   min(largest_group(config.federation.group_size),
                                       MAX_GROUP_V3))
    except ParameterSecurityError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def _check_screen(config: Config) -> None:
    """The data screen runs in the LoRA trainer's loader (FedMKT's private data included);
    a mode with its own trainer would train on rows the operator asked to drop."""
    _refuse_outside_modes(
        config, config.screen.enabled, "[data.screen]", ("lora_avg", "fedmkt"),
        "loads its data without the screen", "use mode = 'lora_avg' or 'fedmkt', or remove "
        "[data.screen]")


def _check_round_eval(config: Config) -> None:
    """Scoring needs the LoRA trainer's encoder and generator; offsite's trainers have neither."""
    _refuse_outside_modes(
        config, config.eval.enabled, "[eval]", ("lora_avg", "fedmkt"),
        "has no per-round evaluation", "use mode = 'lora_avg' or 'fedmkt', or remove [eval]")


def _check_alignment(config: Config) -> None:
    """The alignment set is mixed in by the LoRA trainer's loader; DP-SGD's accountant would
    count its public rows as private ones (and config check's budget check does not)."""
    enabled = config.alignment.enabled
    _refuse_outside_modes(
        config, enabled, "[data.alignment]", ("lora_avg", "fedmkt"),
        "loads its data without the alignment set", "use mode = 'lora_avg' or 'fedmkt', or "
        "remove [data.alignment]")
    if enabled and config.privacy.enabled:
        raise ConfigError(f"{config.source}: [data.alignment] is not supported with [privacy] "
                          "enabled yet (the accountant would count its public rows as private "
                          "ones); remove one of them")


def _check_ownership(config: Config) -> None:
    """Marks live in averaged norm scales: only a mode that averages the adapter carries them."""
    _refuse_outside_modes(
        config, config.ownership.enabled, "[ownership] enabled", ("lora_avg",),
        "does not average the norm scales that carry the mark",
        "use mode = 'lora_avg' or disable [ownership]")
    if config.ownership.enabled and config.ownership.triggers and config.privacy.enabled:
        raise ConfigError(f"{config.source}: {TRIGGERS_WITH_PRIVACY}")


def check_ownership_key(config: Config) -> None:
    """Refuse a missing, malformed or group/world-readable ownership key, in one line."""
    from fedswarm.learning.errors import OwnershipKeyError
    from fedswarm.learning.ownership.keys import read_key_file

    try:
        read_key_file(config.ownership_key_path)
    except OwnershipKeyError as exc:
        raise ConfigError(f"{config.source}: [ownership] key_file: {exc}") from None


def _resolve_learning_paths(config: Config) -> None:
    """Make the model and data paths absolute, so the trainer does not depend on the cwd."""
    model_path = config.path(config.model.path)
    # A hub id ("org/name") is allowed when the machine is online; only rewrite real paths.
    if model_path.exists() or config.model.path.startswith((".", "/", "~")):
        config.model.path = str(model_path)
    config.data.train_path = str(config.path(config.data.train_path))
    if config.data.eval_path:
        config.data.eval_path = str(config.path(config.data.eval_path))
    if config.fedmkt.public_path:
        config.fedmkt.public_path = str(config.path(config.fedmkt.public_path))
    if config.screen.classifier:
        config.screen.classifier = str(config.path(config.screen.classifier))
    if config.alignment.path:
        config.alignment.path = str(config.path(config.alignment.path))
    config.eval.sets = [str(config.path(p)) for p in config.eval.sets]
    config.eval.refusal = [str(config.path(p)) for p in config.eval.refusal]


def check_files(config: Config) -> None:
    """Check that the files the config names exist and are usable, before anything starts."""
    model = Path(config.model.path)
    if config.federation.mode == "offsite":
        pass  # members train the fetched package, not [model]; the owner's is loaded at start
    elif model.exists():
        # the loader's own check (learning.model_loading), without importing torch
        if not (model / "config.json").is_file():
            raise ConfigError(f"{config.source}: [model] path: {model} is not a Hugging Face "
                              "model directory (no config.json)")
    elif config.model.path.startswith("/"):
        raise ConfigError(f"{config.source}: [model] path: {config.model.path} does not exist")
    elif os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(f"{config.source}: [model] path: {config.model.path} is not a local "
                          "directory (resolved against the config's folder), and "
                          "HF_HUB_OFFLINE=1 forbids the hub")
    if not Path(config.data.train_path).is_file():
        raise ConfigError(
            f"{config.source}: [data] train_path: {config.data.train_path} is not a file"
        )
    if config.data.eval_path and not Path(config.data.eval_path).is_file():
        raise ConfigError(
            f"{config.source}: [data] eval_path: {config.data.eval_path} is not a file"
        )
    if not config.roster_path.is_file():
        raise ConfigError(f"{config.source}: [node] roster: {config.roster_path} is not a file")
    if not config.identity_path.is_file():
        raise ConfigError(f"{config.source}: [node] identity: {config.identity_path} is not a file")
    if config.ownership.enabled:
        check_ownership_key(config)
    if config.node.enable_mdns and config.node.mdns_interface:
        # libp2p and zeroconf: imported only for a config that uses them
        from fedswarm.p2p.mdns import MdnsInterfaceError, interface_ipv4_addresses

        try:
            interface_ipv4_addresses(config.node.mdns_interface)
        except MdnsInterfaceError as exc:
            raise ConfigError(f"{config.source}: [node] mdns_interface: {exc}") from None
    if config.federation.mode == "fedmkt":
        load_checked_public_set(config.fedmkt, config.source)
    if config.alignment.enabled:
        try:  # FedMKT's public-set check: the same file format and content hash
            load_public_dataset(config.alignment.path, expected_sha256=config.alignment.sha256)
        except PublicDataHashMismatchError as exc:
            raise ConfigError(f"{config.source}: [data.alignment] sha256: {exc} "
                              f"({config.alignment.path})") from None
        except PublicDataError as exc:
            raise ConfigError(f"{config.source}: [data.alignment] path: {exc}") from None
    if config.screen.classifier:
        try:  # plain file reads: config check must not import torch
            check_classifier_dir(config.screen.classifier, config.screen.drop_labels)
        except ScreenConfigError as exc:
            raise ConfigError(f"{config.source}: [data.screen] classifier: {exc}") from None


def load_checked_public_set(section: FedMKTSection, source: Path | str) -> PublicDataset:
    """Load the public set and check it against ``public_sha256``; ``ConfigError`` names the key.

    ``section.public_path`` must already be resolved (``config.py`` does that relative
    to the config file).
    """
    where = f"{source}: [fedmkt]"
    if not section.public_path:
        raise ConfigError(
            f"{where} public_path: missing (required when federation.mode = 'fedmkt')"
        )
    if not section.public_sha256:
        raise ConfigError(
            f"{where} public_sha256: missing (required when federation.mode = 'fedmkt'; "
            "every member must hold the same public set)"
        )
    try:
        return load_public_dataset(section.public_path, expected_sha256=section.public_sha256)
    except PublicDataHashMismatchError as exc:
        raise ConfigError(f"{where} public_sha256: {exc} ({section.public_path})") from None
    except PublicDataError as exc:
        raise ConfigError(f"{where} public_path: {exc}") from None

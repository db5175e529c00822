"""What ``fedswarm init`` writes: an identity, an API token and a commented config file."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fedswarm.p2p.identity import Identity

CONFIG_TEMPLATE = """\
# fedswarm daemon configuration for {org_plain}.
# Relative paths are resolved against this file's folder.
# Check it with:  fedswarm config check --config {config_name}

[node]
org = {org}                      # your organisation's name, as it appears in the roster
identity = "identity.key"          # Ed25519 key (mode 0600); env FEDSWARM_IDENTITY overrides
roster = "roster.toml"             # the federation's roster, shared out of band by all members
state_dir = "state"                # SQLite database and checkpoints; env FEDSWARM_STATE_DIR overrides
listen = {listen}
bootstrap = {bootstrap}            # multiaddrs of members to dial first, e.g. "/ip4/10.0.0.2/tcp/4001/p2p/12D3..."
enable_mdns = false                # local-network discovery; opt-in
# mdns_interface = "eth1"          # answer and listen on this interface only (IPv4)
max_blob_mb = 512                  # refuse any single transfer larger than this
max_inbound_mb = 2048              # blobs held at once from all peers; more wait, then are refused
max_inbound_blobs_per_peer = 4     # blobs received at once from one peer; more wait likewise
log_level = "info"

[api]
host = "127.0.0.1"                 # the dashboard and JSON API; keep it on loopback
port = {api_port}
token_file = "api.token"           # env FEDSWARM_API_TOKEN_FILE overrides

[federation]
mode = "lora_avg"                  # "lora_avg" (average LoRA adapters) or "fedmkt" (mutual distillation)
rounds = {rounds}                  # stop after this many rounds; 0 = run until stopped
group_size = 4                     # peers averaged together per round (at least 3)
round_deadline_s = {deadline}      # a straggler misses the round after this long
secure_aggregation = {secure}    # "bfv-mask-shamir-v2" or "none" (plaintext; peers see each other's updates)
final_averaging_rounds = 0         # last rounds only average (no training): every member ends with the same adapter
# average_optimizer_state = true    # lora_avg: average AdamW's exp_avg with the adapter (2x the bytes); same on every peer
# max_eval_loss_increase = 0.5      # refuse a group result that raises our eval loss by more (nats); unset: off
wait_for_peers = {wait_for_peers}  # before round 1, wait until this many members (incl. you) are up
wait_for_peers_s = 120.0

[model]
path = {model_path}              # a local Hugging Face model directory
dtype = "auto"                     # bf16 on a capable GPU, fp32 on CPU
device = "auto"
load_in_4bit = false               # QLoRA (GPU + bitsandbytes only)

[lora]
r = 8
alpha = 16
dropout = 0.0

[data]
train_path = {train_path}        # JSONL or Parquet: text, instruction/input/output, or chat messages
{eval_line}
max_length = {max_length}

[train]
local_steps = {local_steps}        # optimiser steps per round
batch_size = {batch_size}
lr = {lr}
seed = {seed}
# samples_per_round = 2              # eval prompts completed (greedy) per round for the dashboard; 0 = none
# sample_max_new_tokens = 32         # tokens generated per sample
"""


@dataclass
class InitResult:
    config_path: Path
    identity_path: Path
    token_path: Path
    peer_id: str


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def init_node(
    directory: Path,
    org: str,
    *,
    listen: str = "/ip4/127.0.0.1/tcp/4001",
    bootstrap: list[str] | None = None,
    api_port: int = 8470,
    model_path: str = "model",
    train_path: str = "data/train.jsonl",
    eval_path: str | None = None,
    rounds: int = 0,
    deadline_s: float = 120.0,
    secure_aggregation: str = "bfv-mask-shamir-v2",
    wait_for_peers: int = 0,
    local_steps: int = 20,
    batch_size: int = 8,
    lr: float = 2e-4,
    max_length: int = 256,
    seed: int = 0,
    overwrite: bool = False,
) -> InitResult:
    """Create ``directory`` with identity.key, api.token and config.toml."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "config.toml"
    identity_path = directory / "identity.key"
    token_path = directory / "api.token"
    if not overwrite:
        for existing in (config_path, identity_path):
            if existing.exists():
                raise FileExistsError(f"{existing} already exists (use --force to replace it)")
    identity = Identity.generate()
    identity.save(identity_path)
    write_private(token_path, (secrets.token_urlsafe(32) + "\n").encode())
    eval_line = f"eval_path = {toml_string(eval_path)}" if eval_path else "eval_fraction = 0.1"
    config_path.write_text(
        CONFIG_TEMPLATE.format(
            org=toml_string(org),
            org_plain=org.replace("\n", " "),
            config_name=config_path.name,
            listen=toml_string(listen),
            bootstrap="[" + ", ".join(toml_string(b) for b in (bootstrap or [])) + "]",
            api_port=api_port,
            rounds=rounds,
            deadline=float(deadline_s),
            secure=toml_string(secure_aggregation),
            wait_for_peers=wait_for_peers,
            model_path=toml_string(model_path),
            train_path=toml_string(train_path),
            eval_line=eval_line,
            max_length=max_length,
            local_steps=local_steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
        )
    )
    return InitResult(config_path, identity_path, token_path, identity.peer_id)


def toml_string(value: str) -> str:
    """Quote ``value`` as a TOML basic string (JSON's escapes are valid TOML)."""
    return json.dumps(value)


"""What ``fedswarm init`` writes: an identity, an API token and a commented config file."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fedswarm.learning.ownership.keys import write_key_file
from fedswarm.p2p.identity import Identity
from fedswarm.secagg.params import PROTOCOL_NAME

from .defaults import DEFAULT_LISTEN

CONFIG_TEMPLATE = """\
# fedswarm daemon configuration for {org_plain}.
# Relative paths are resolved against this file's folder. Every key fedswarm reads is
# below; a commented line shows the default that applies while it stays commented.
# Check it with:  fedswarm config check --config {config_name}

[node]
org = {org}                      # your organisation's name, as it appears in the roster
identity = "identity.key"          # Ed25519 key (mode 0600); env FEDSWARM_IDENTITY overrides
roster = "roster.toml"             # the federation's roster, shared out of band by all members
state_dir = "state"                # SQLite database and checkpoints; env FEDSWARM_STATE_DIR overrides
listen = {listen}{listen_note}
bootstrap = {bootstrap}            # multiaddrs of members to dial first, e.g. "/ip4/10.0.0.2/tcp/4001/p2p/12D3..."
enable_mdns = false                # local-network discovery; opt-in
# mdns_interface = "eth1"          # answer and listen on this interface only (IPv4)
# enable_dht = false               # Kademlia address records, when members know only one other member
max_blob_mb = 512                  # refuse any single transfer larger than this
max_inbound_mb = 2048              # blobs held at once from all peers; more wait, then are refused
max_inbound_blobs_per_peer = 4     # blobs received at once from one peer; more wait likewise
log_level = "info"                 # debug | info | warning | error (SIGHUP re-reads it)

[api]
host = "127.0.0.1"                 # the dashboard and JSON API; keep it on loopback
port = {api_port}
token_file = "api.token"           # env FEDSWARM_API_TOKEN_FILE overrides

[federation]
mode = "lora_avg"                  # "lora_avg" (average LoRA adapters), "fedmkt" (mutual distillation) or "fedkseed"
rounds = {rounds}                  # train this many rounds, then do what after_rounds says; 0 = until stopped
# after_rounds = "serve"          # "serve": keep answering peers and the API until stopped; "exit": exit 0
group_size = 4                     # peers averaged together per round (at least 3); with fewer
                                   # than group_size + 3 members up (3 with group_size = 4), all
                                   # of them form one group: the whole federation is averaged
round_deadline_s = {deadline}      # a straggler misses the round after this long
secure_aggregation = {secure}    # "bfv-mask-shamir-v3" (default), "bfv-mask-shamir-v2" or "none" (plaintext)
final_averaging_rounds = 0         # last rounds only average (no training): every member ends with the same adapter
# average_optimizer_state = true   # lora_avg: average AdamW's exp_avg with the adapter (2x the bytes); same on every peer
# freeze_lora_a = false            # lora_avg: FFA-LoRA, A frozen at a shared init, only B trained and sent (half the bytes); same on every peer
# group_momentum = 0.0             # lora_avg: FedAvgM momentum over the group's steps, in [0, 1); 0 = plain averaging; same on every peer
# scaffold = false                 # lora_avg: SCAFFOLD control variates correct local drift (+1x adapter in bytes); same on every peer
# max_eval_loss_increase = 0.5     # refuse a group result that raises our eval loss by more (nats); unset: off
wait_for_peers = {wait_for_peers}  # before round 1, wait until this many members (incl. you) are up
wait_for_peers_s = 120.0
# heartbeat_s = 2.0                # how often this daemon tells members its round and state
# peer_timeout_s = 10.0            # a member not heard from for this long counts as down
#                                  # (above 17 members both stretch: each member hears <= 8 beats/s)

[model]
path = {model_path}              # a local Hugging Face model directory (save_pretrained)
dtype = "auto"                     # auto | float32 | bfloat16 | float16; auto = bf16 on a capable GPU, fp32 on CPU
device = "auto"                    # auto | cpu | cuda | cuda:1 | mps
load_in_4bit = false               # QLoRA (GPU + bitsandbytes only)
# trust_remote_code = false        # run the model folder's own Python code (only for models you trust)

[lora]
r = 8
alpha = 16
dropout = 0.0
# target_modules = ["q_proj", "v_proj"]   # unset: detected for the architecture (peft's table, else
                                          # every Linear layer but lm_head); must match on every member
# peft_type = "LORA"               # LORA | LOHA | LOKR

[data]
train_path = {train_path}        # JSONL or Parquet: text, instruction/input/output, or chat messages
{eval_lines}
# format = "auto"                  # auto | text | instruction | chat; auto: the first usable row decides
max_length = {max_length}
# packing = true                   # text rows only: pack rows into full blocks

# Data screen (docs/safety.md): rows refused before training, each one recorded with file:line
# and reason in <state_dir>/quarantine.jsonl. Every screen is off until configured.
# [data.screen]
# patterns = []                    # regular expressions (case-insensitive); a match drops the row
# words = []                       # whole words (case-insensitive); one present drops the row
# min_chars = 0
# max_chars = 20000
# scripts = []                     # e.g. ["LATIN"]: drop rows whose letters are mostly in other scripts
# min_script_share = 0.9
# classifier = "safety-classifier" # a local AutoModelForSequenceClassification folder
# drop_labels = ["unsafe"]         # its labels that drop a row; other labels keep it
# classifier_threshold = 0.5       # probability a drop label must reach
# classifier_batch_size = 16
# classifier_max_length = 256
# loss_outlier_mads = 6.0          # drop rows whose loss under the model is this far above the median
# report_excerpt_chars = 0         # 0: the report holds a row's sha256, not its text

# Shared alignment set (docs/safety.md): safe demonstrations every member mixes into training.
# [data.alignment]
# path = "alignment.jsonl"         # JSONL rows with a "text" string, the same file on every member
# sha256 = ""                      # its content hash (FedMKT's public-set hash); a mismatch stops the daemon
# share = 0.1                      # fraction of each epoch's training examples drawn from it

[train]
local_steps = {local_steps}        # optimiser steps per round
batch_size = {batch_size}
# grad_accum = 1
lr = {lr}                        # AdamW learning rate
# warmup_steps = 0
# schedule = "cosine"              # cosine | linear | constant; decays over total_steps
# total_steps = 600                # whole federation; unset: constant rate after warm-up.
                                   # Rounds far apart (tens of local steps): set it to
                                   # rounds x local_steps (docs/learning.md)
# max_grad_norm = 1.0
# weight_decay = 0.0
seed = {seed}
# fedprox_mu = 0.0                 # > 0 pulls local training towards the group's model (very different data)
# eval_batches = 10                # batches per evaluation (two a round); unset: the whole
                                   # eval set, usually most of a round's "apply" time
# samples_per_round = 2            # eval prompts completed (greedy) per round for the dashboard; 0 = none
# sample_max_new_tokens = 32       # tokens generated per sample

# Per-round evaluation (docs/safety.md): after every `every_rounds` rounds the daemon scores
# these sets (capped at max_rows rows each) and shows them on the dashboard's training page.
# [eval]
# sets = ["qa.jsonl"]              # text, instruction or chat rows: loss; instruction: exact match, Rouge-L
# refusal = ["should-refuse.jsonl"] # rows with a "prompt" that should be refused: the refusal rate
# every_rounds = 1
# max_rows = 32                    # rows (prompts) scored per file: bounds each round's cost
# max_new_tokens = 32              # greedy tokens per answer

# Record-level differential privacy (DP-SGD, docs/privacy.md): each example's gradient is
# clipped and Gaussian noise added; training stops when target_epsilon is spent.
[privacy]
enabled = false
# target_epsilon = 8.0             # the whole budget of this daemon's data, over every round
# delta = 0.001                    # unset: 1 / the number of training examples
# max_grad_norm = 1.0              # each example's gradient is clipped to this L2 norm
# noise_multiplier = 1.0           # noise std / max_grad_norm; unset: derived from target_epsilon
                                   # and [train] total_steps
# accountant = "rdp"               # Opacus's "rdp" or "prv" (tighter: less noise for one epsilon)
# Group-level DP: each member adds integer noise inside secure aggregation (v3), so every
# group sum is DP with respect to one member's whole change in the round.
# group_noise_multiplier = 2.0     # honest noise std / one member's sensitivity; unset: off
# group_update_clip = 0.5          # L2 bound on a member's change per round
# colluders = 0                    # members who may pool their own noise (at most 2)
# group_target_epsilon = 10.0      # unset: accounted and shown, not enforced
# group_delta = 1e-5

# Ownership mark (FedIPR, docs/ownership.md): your secret bits written into the model's
# normalisation scales during training, so you can later prove a model carries them.
[ownership]
enabled = false
key_file = "ownership.key"         # your secret (mode 0600), made by init; env FEDSWARM_OWNERSHIP_KEY overrides
# bits = 32                        # bits in your mark; at most (norm channels) / (roster members)
# weight = 1.0                     # weight of the sign loss
# margin = 0.15                    # how far past zero each bit's reading is pushed
# triggers = 0                     # > 0: that many secret trigger prompts for black-box checks
# trigger_weight = 0.01            # weight of the trigger prompts' loss (not with [privacy])

# Only for mode = "fedmkt" (docs/fedmkt.md): members with different models distil from each other.
# [fedmkt]
# public_path = "public.jsonl"     # the shared public set, identical at every member
# public_sha256 = ""               # its agreed content hash; a file that differs stops the daemon
# top_k = 32
# alpha = 0.9                      # alpha * LM loss + (1 - alpha) * distillation loss
# temperature = 1.0
# selection = "min_ce"             # min_ce | weighted | token_min_ce (per token)
# ce_temperature = 1.0
# distill_loss = "soft_ce"         # soft_ce | kl
# max_length = 128
# knowledge_batch_size = 8
# distill_steps = 10
# distill_batch_size = 8
# distill_lr = 1e-3
# homogeneous_exchange = "secure"  # secure | clear, for members sharing a tokenizer
# support_size = 30
# replay_fraction = 0.75           # share of each distillation batch that is own training data

# Only for mode = "fedkseed" (docs/fedkseed.md): zeroth-order full-model tuning along K shared seeds.
# [fedkseed]
# base_model_sha256 = ""           # pins the base weights; run prints the model's hash when unset
# k = 1024                         # seeds in the pool: a member sends k scalars (and k amplitudes)
# eps = 5e-4                       # perturbation size of the two forward passes
# lr = 3e-7                        # the paper's, for 1-3B models; the demo model uses 2e-4
# steps_per_round = 50
# pro = true                       # FedKSeed-Pro: draw seeds by their past |g|
# grad_clip = 10.0                 # bound on each projected gradient
# max_steps_per_seed = 32.0        # full clipped steps one scalar can carry when sent
# trainable = "all"                # all | no_embeddings
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
    listen: str = DEFAULT_LISTEN,
    bootstrap: list[str] | None = None,
    api_port: int = 8470,
    model_path: str = "model",
    train_path: str = "data/train.jsonl",
    eval_path: str | None = None,
    rounds: int = 0,
    deadline_s: float = 120.0,
    secure_aggregation: str = PROTOCOL_NAME,
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
    ownership_path = directory / "ownership.key"
    if not ownership_path.exists():  # even with --force: a lost key can prove nothing again
        write_key_file(ownership_path)
    write_private(token_path, (secrets.token_urlsafe(32) + "\n").encode())
    if eval_path:
        eval_lines = (f"eval_path = {toml_string(eval_path)}        # held-out rows, same formats\n"
                      "# eval_fraction = 0.1              # only used without eval_path")
    else:
        eval_lines = ('# eval_path = "data/eval.jsonl"   # held-out rows, same formats as train_path\n'
                      "eval_fraction = 0.1                # without eval_path: this share of the "
                      "training rows is held out")
    config_path.write_text(
        CONFIG_TEMPLATE.format(
            org=toml_string(org),
            org_plain=org.replace("\n", " "),
            config_name=config_path.name,
            listen=toml_string(listen),
            listen_note=listen_note(listen),
            bootstrap="[" + ", ".join(toml_string(b) for b in (bootstrap or [])) + "]",
            api_port=api_port,
            rounds=rounds,
            deadline=float(deadline_s),
            secure=toml_string(secure_aggregation),
            wait_for_peers=wait_for_peers,
            model_path=toml_string(model_path),
            train_path=toml_string(train_path),
            eval_lines=eval_lines,
            max_length=max_length,
            local_steps=local_steps,
            batch_size=batch_size,
            lr=toml_float(lr),
            seed=seed,
        )
    )
    return InitResult(config_path, identity_path, token_path, identity.peer_id)


def listen_note(listen: str) -> str:
    """The comment after ``listen =``: whether other members can reach this address."""
    if is_loopback_listen(listen):
        return ("   # loopback: only daemons on this machine can reach it; for members elsewhere\n"
                "                                   # use an address they reach, e.g. /ip4/203.0.113.7/tcp/4001")
    return "   # where other members reach you; the address you give the roster maintainer"


def is_loopback_listen(listen: str) -> bool:
    """True for a listen multiaddr only this machine can reach (127.x, ::1)."""
    return listen.startswith(("/ip4/127.", "/ip6/::1/"))


def roster_addr(listen: str) -> str:
    """The address to give the roster maintainer for ``listen``.

    An unspecified address (0.0.0.0, ::) is never announced and cannot be dialled, so
    the maintainer needs the machine's reachable address in its place.
    """
    for unspecified in ("/ip4/0.0.0.0/", "/ip6/::/"):
        if listen.startswith(unspecified):
            proto = unspecified.split("/")[1]
            return f"/{proto}/<address other members reach>/" + listen[len(unspecified):]
    return listen


def missing_model_folder(model_path: str, base: Path) -> str | None:
    """Why ``model_path`` cannot be the model folder, or None when it looks usable.

    Relative paths are resolved against ``base`` (the config's folder), as the daemon
    will. Only a folder with ``config.json`` is accepted: the daemon would otherwise
    fail at start-up, far from the command that wrote the mistake.
    """
    path = Path(model_path).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.exists():
        return f"no such folder ({path}); give a local Hugging Face model folder"
    if not path.is_dir():
        return f"{path} is a file; give the model's folder (it holds config.json)"
    if not (path / "config.json").is_file():
        return f"{path} has no config.json; give a folder written by save_pretrained"
    return None


def toml_float(value: float) -> str:
    """``value`` as a TOML float, small ones as people write them (2e-4, not 0.0002)."""
    value = float(value)
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return repr(value)
    mantissa, exponent = f"{value:.12e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def toml_string(value: str) -> str:
    """Quote ``value`` as a TOML basic string (JSON's escapes are valid TOML)."""
    return json.dumps(value)


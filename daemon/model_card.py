"""The README.md of an exported adapter: a model card that says how it was made.

PEFT writes a blank card ("[More Information Needed]") with every adapter. An
exported fedswarm adapter travels to people who never saw the federation, so its card
says what they need to judge and load it: the base model, the adapter's shape, the
federation (id, members, mode, rounds), the data formats (the data itself never left
its owners), how updates were aggregated, whether differential privacy was applied,
and the evaluation this member measured. Built from plain values so it is tested
without a model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("fedswarm.daemon")

SECURE_DESCRIPTION = (
    "Every group average was computed under secure aggregation (`{protocol}`): BFV "
    "homomorphic encryption (TenSEAL, 128-bit) plus pairwise and self masks with Shamir "
    "recovery. No member, not even the one that summed, saw another member's update; "
    "each member learns only its group's average."
)
PLAIN_DESCRIPTION = (
    "Group averages were computed in plaintext (`secure_aggregation = \"none\"`): the "
    "members of each group saw each other's adapter updates."
)


@dataclass
class CardFacts:
    """What the card states; every field comes from the exporting member's config,
    roster, checkpoint and round log."""

    org: str
    federation_id: str
    member_orgs: Sequence[str]
    base_model: str
    base_model_type: str | None
    peft_type: str
    r: int
    alpha: int
    dropout: float
    target_modules: Sequence[str]
    mode: str
    group_size: int
    secure_aggregation: str
    round: int
    rounds_complete: int
    rounds_by_status: dict[str, int]
    data_format: str
    train_rows: int
    max_length: int
    local_steps: int
    lr: float
    eval_loss_start: float | None
    eval_loss_last: float | None
    adapter_fingerprint: str
    fedswarm_version: str
    differential_privacy: str | None = None  # a description when DP was applied
    extra: dict[str, str] = field(default_factory=dict)


_PEFT_NAMES = {"LORA": "LoRA", "LOHA": "LoHa", "LOKR": "LoKr"}


def model_card(f: CardFacts) -> str:
    """The adapter's README.md (Hugging Face model card: YAML front matter + Markdown)."""
    kind_name = _PEFT_NAMES.get(f.peft_type.upper(), f.peft_type)
    front = {
        "library_name": "peft",
        "base_model": f.base_model,
        "tags": ["fedswarm", "federated-learning", f.peft_type.lower(), "causal-lm"]
        + (["secure-aggregation"] if f.secure_aggregation != "none" else []),
    }
    lines = ["---"]
    for key, value in front.items():
        lines.append(f"{key}: {json.dumps(value)}")
    lines += ["---", ""]
    lines.append(f"# Federated {kind_name} adapter of {f.org} ({f.federation_id})")
    lines.append("")
    lines.append(
        f"A {kind_name} adapter for `{f.base_model}`, trained by {len(f.member_orgs)} "
        f"organisations with fedswarm {f.fedswarm_version} without sharing their data and "
        "without a central server. This is the copy held by "
        f"**{f.org}** after round {f.round}."
    )
    lines += ["", "## Base model", ""]
    kind = f" ({f.base_model_type})" if f.base_model_type else ""
    lines.append(f"- `{f.base_model}`{kind}; load it first, then this adapter (below).")
    lines += ["", "## Adapter", ""]
    modules = ", ".join(f"`{m}`" for m in f.target_modules) or "detected per architecture"
    lines.append(f"- {kind_name}, r = {f.r}, alpha = {f.alpha}, dropout = {f.dropout}")
    lines.append(f"- target modules: {modules}")
    lines.append(f"- fingerprint of its weights: `{f.adapter_fingerprint}`")
    lines += ["", "## Federation", ""]
    lines.append(f"- federation id: `{f.federation_id}`")
    lines.append(f"- members ({len(f.member_orgs)}): " + ", ".join(f.member_orgs))
    lines.append(f"- mode: `{f.mode}`; groups of {f.group_size} "
                 "(all members in one group while there are at most group_size + 2 of them)")
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(f.rounds_by_status.items()))
    lines.append(f"- rounds: {f.round} ({f.rounds_complete} averaged with a group"
                 + (f"; {statuses}" if statuses else "") + ")")
    lines.append(f"- local training per round: {f.local_steps} steps, learning rate {f.lr:g}")
    lines += ["", "## Training data", ""]
    lines.append(
        f"Each member trained on its own private data, which never left it. {f.org}'s "
        f"data: {f.train_rows} training rows, `{f.data_format}` format, blocks of "
        f"{f.max_length} tokens. fedswarm reads JSONL or Parquet rows with `text`, "
        "`instruction`/`input`/`output`, or chat `messages`; other members' formats and "
        "sizes are not known to this member."
    )
    lines += ["", "## Aggregation", ""]
    lines.append((SECURE_DESCRIPTION if f.secure_aggregation != "none" else PLAIN_DESCRIPTION)
                 .format(protocol=f.secure_aggregation))
    lines += ["", "## Differential privacy", ""]
    lines.append(f.differential_privacy or (
        "None: no differential-privacy noise was added. Secure aggregation hides each "
        "member's update from the others, but the adapter itself may memorise training "
        "examples; do not publish it where that matters."
    ))
    lines += ["", "## Evaluation", ""]
    if f.eval_loss_start is not None and f.eval_loss_last is not None:
        lines.append(
            f"On {f.org}'s held-out data: eval loss {f.eval_loss_start:.4f} before any "
            f"training, {f.eval_loss_last:.4f} after round {f.round}."
        )
    else:
        lines.append("No evaluation was recorded with this adapter.")
    for key, value in f.extra.items():
        lines.append(f"- {key}: {value}")
    lines += ["", "## How to load", "", "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "from peft import PeftModel", "",
              f"base = AutoModelForCausalLM.from_pretrained({json.dumps(f.base_model)})",
              f"tokenizer = AutoTokenizer.from_pretrained({json.dumps(f.base_model)})",
              "model = PeftModel.from_pretrained(base, \"path/to/this/folder\")",
              "```", ""]
    return "\n".join(lines)




def full_model_card(f: CardFacts) -> str:
    """The README.md of a FedKSeed export: a full model, not an adapter.

    The adapter card's federation, data, aggregation, privacy and evaluation sections
    hold as they are; the title, the "Adapter" section and how to load it do not.
    """
    adapter_card = model_card(dataclasses.replace(f, extra={}))  # extras go under "Weights"
    body = adapter_card.split("## Federation", 1)[1].split("## How to load", 1)[0]
    body = body.replace("adapter updates", "K-vectors").replace("the adapter itself",
                                                                "the model itself")
    lines = ["---", 'library_name: "transformers"', f"base_model: {json.dumps(f.base_model)}",
             "tags: " + json.dumps(["fedswarm", "federated-learning", "fedkseed", "causal-lm"]
                                  + (["secure-aggregation"] if f.secure_aggregation != "none"
                                     else [])),
             "---", "",
             f"# FedKSeed-tuned model of {f.org} ({f.federation_id})", "",
             f"`{f.base_model}` with every weight tuned by {len(f.member_orgs)} organisations "
             f"with fedswarm {f.fedswarm_version} (FedKSeed: zeroth-order steps along K shared "
             "seeds; each round a member sent K numbers, never its data). This is the copy "
             f"held by **{f.org}** after round {f.round}; every member of its last group holds "
             "the same weights, bit for bit.", "",
             "## Weights", "",
             f"- a full model (no adapter), fp32; fingerprint of its K-vector: "
             f"`{f.adapter_fingerprint}`",
             *(f"- {key}: {value}" for key, value in f.extra.items()), "",
             "## Federation" + body,
             "## How to load", "", "```python",
             "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
             'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
             'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```", ""]
    return "\n".join(lines)


def card_for_export(config: Any, trainer: Any, round_done: int) -> str:
    """The card for ``fedswarm export``: facts from the config, roster, trainer and
    round log. A roster or database that cannot be read leaves those facts out rather
    than failing the export."""
    from fedswarm.p2p.errors import RosterError
    from fedswarm.p2p.roster import Roster

    from .state import StateStore
    from .views.status import fedswarm_version

    federation_id, orgs = "unknown", [config.node.org]
    try:
        roster = Roster.load(config.roster_path)
        federation_id, orgs = roster.federation_id, [m.org for m in roster.members]
    except (RosterError, OSError) as exc:
        log.warning("model card: roster not read (%s)", exc)
    by_status: dict[str, int] = {}
    eval_start = eval_last = None
    spend: list[tuple[int, float, float]] = []
    db = config.state_dir / "fedswarm.sqlite"
    if db.exists():
        store = StateStore.open(config.state_dir)
        try:
            by_status = {k: v for k, v in store.round_status_counts().items()
                         if k not in ("initial", "in_progress")}
            initial = store.round_record(0)
            eval_start = initial.eval_loss_after if initial else None
            done = store.round_record(round_done)
            eval_last = done.eval_loss_after if done else None
            spend = store.privacy_spend()
        finally:
            store.close()
    fedkseed = config.federation.mode == "fedkseed"
    peft_config = None if fedkseed else trainer.model.peft_config["default"]
    targets = sorted(str(m) for m in (getattr(peft_config, "target_modules", None) or []))
    model_type = getattr(getattr(trainer.model, "config", None), "model_type", None)
    facts = (CardFacts(
        org=config.node.org,
        federation_id=federation_id,
        member_orgs=orgs,
        base_model=config.model.path,
        base_model_type=model_type,
        peft_type=config.lora.peft_type,
        r=config.lora.r,
        alpha=config.lora.alpha,
        dropout=config.lora.dropout,
        target_modules=targets,
        mode=config.federation.mode,
        group_size=config.federation.group_size,
        secure_aggregation=config.federation.secure_aggregation,
        round=round_done,
        rounds_complete=by_status.get("complete", 0),
        rounds_by_status=by_status,
        data_format=trainer.data.format,
        train_rows=trainer.num_train_samples,
        max_length=config.data.max_length,
        local_steps=config.train.local_steps,
        lr=config.train.lr,
        eval_loss_start=eval_start,
        eval_loss_last=eval_last,
        adapter_fingerprint=trainer.adapter_fingerprint(),
        fedswarm_version=fedswarm_version(),
        differential_privacy=_privacy_statement(config, len(trainer.data.train), spend),
    ))
    if not fedkseed:
        return model_card(facts)
    settings = config.fedkseed
    facts.local_steps, facts.lr = settings.steps_per_round, settings.lr
    pro = "on" if settings.pro else "off"
    facts.extra = {"base model sha256": settings.base_model_sha256,
                   "pool": f"K = {settings.k} seeds, FedKSeed-Pro {pro}",
                   "parameters fingerprint": trainer.parameters_fingerprint()}
    return full_model_card(facts)


def _privacy_statement(config: Any, examples: int,
                       spend: list[tuple[int, float, float]]) -> str | None:
    """What this member's DP-SGD spent, from the persisted log; None without [privacy]."""
    if not config.privacy.enabled:
        return None
    from fedswarm.learning.privacy import Spend, epsilon_of

    delta = config.privacy.delta if config.privacy.delta is not None else 1.0 / examples
    accountant = config.privacy.accountant
    epsilon = epsilon_of([Spend(sigma, rate, steps) for steps, sigma, rate in spend], delta,
                         accountant)
    steps = sum(row[0] for row in spend)
    return (f"DP-SGD on {config.node.org}'s data (record level): ε = {epsilon:.3f} of a "
            f"{config.privacy.target_epsilon:g} budget at δ = {delta:.3g}, after {steps} steps "
            f"with per-example clipping at {config.privacy.max_grad_norm:g} (Opacus "
            f"{accountant.upper()} accountant). Other members' data is protected only by "
            "their own [privacy] settings. Not covered: the eval set and generation samples "
            "(docs/privacy.md).")


__all__ = ["CardFacts", "card_for_export", "full_model_card", "model_card"]

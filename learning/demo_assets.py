"""The demo's tiny model and its per-peer data shards, built locally and offline.

``fedswarm demo`` must show a federation that really learns, on a 2-core laptop, with
nothing downloaded. So the base model is built here: a BPE tokenizer trained on the
bundled corpus, a Llama-shaped network a few hundred thousand parameters big, and a
short deterministic pre-training on the corpus's generic part. Without that
pre-training a LoRA on random weights learns little, and the demo would not convince.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from fedswarm.learning.demo_corpus import CORPUS_VERSION, DEMO_DOMAINS
from fedswarm.learning.errors import LearningError
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

__all__ = [
    "DEMO_DOMAINS",
    "DEMO_LORA_TARGETS",
    "DEMO_LR",
    "DEMO_MAX_LENGTH",
    "DEMO_VARIANTS",
    "BuildProgress",
    "DemoShard",
    "PublicSet",
    "build_demo_model",
    "demo_data_dir",
    "write_demo_public_set",
    "write_demo_shards",
]

DEMO_MODEL_VERSION = f"model-3/corpus-{CORPUS_VERSION}"
MARKER = "fedswarm_demo.json"
VOCAB_SIZE = 1024
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
PRETRAIN_STEPS = 300
PRETRAIN_BATCH = 16
PRETRAIN_SEQ = 128
#: Pre-training runs on one torch thread: on a small machine (2 cores, or a box shared with
#: other work) intra-op threads spin-wait on matrices this small, and a cold build took
#: 218 s of CPU with 2 threads against about 50 s with one (docs/learning.md).
BUILD_THREADS = 1

#: Called with one line of what the build is doing now ("pre-training step 40/300 ..."),
#: often (every step); the caller decides how often to show it.
BuildProgress = Callable[[str], None]

# Measured settings for `fedswarm demo` (3 peers, 3 rounds of 15 steps, batch 8, secure
# weighted averaging): the peers' eval loss fell 11-14 % (0.831 -> 0.718, 0.813 -> 0.705,
# 0.759 -> 0.674; docs/learning.md).
# With peft's default q/v targets and lr 2e-3 it fell only 4 %: averaging three different
# domains dilutes a small adapter, so the demo adapts every Linear layer.
DEMO_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEMO_LR = 5e-3
DEMO_MAX_LENGTH = 128


@dataclass(frozen=True)
class _Variant:
    """One demo model family: tokenizer kind, vocabulary and network size."""

    tokenizer: str  # "byte_bpe" or "unigram"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    layers: int
    pretrain_steps: int


# FedMKT's demo needs peers whose models differ in size *and* tokenizer family, so that
# knowledge must cross a vocabulary mapping. "default" is the LoRA-averaging demo's model
# (byte-level BPE, ``Ġ`` word starts); "small-unigram" is a sentencepiece-style Unigram
# tokenizer (``▁`` word starts, a smaller vocabulary) on a narrower network, which also
# keeps its pre-training cheap (about a third of the default's).
DEMO_VARIANTS: dict[str, _Variant] = {
    "default": _Variant("byte_bpe", VOCAB_SIZE, 96, 256, 2, PRETRAIN_STEPS),
    "small-unigram": _Variant("unigram", 768, 64, 160, 2, 200),
    # Offsite-tuning needs depth to split into adapters and an emulated middle
    # (docs/offsite.md): the default's tokenizer and width, eight layers.
    "deep-8": _Variant("byte_bpe", VOCAB_SIZE, 96, 256, 8, PRETRAIN_STEPS),
}

#: How many generic rows form the FedMKT demo's public set.
DEMO_PUBLIC_ROWS = 32


@dataclass(frozen=True)
class DemoShard:
    """One peer's private data: its domain, its training file and its eval file."""

    domain: str
    train_path: Path
    eval_path: Path


def demo_data_dir() -> Path:
    """The bundled corpus (package data)."""
    return Path(str(resources.files("fedswarm.learning") / "demo_data"))


def _read_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def _train_tokenizer(texts: list[str], variant: _Variant | None = None) -> PreTrainedTokenizerFast:
    """Byte-level BPE (default: any input is encodable without <unk>) or Metaspace Unigram."""
    variant = variant or DEMO_VARIANTS["default"]
    if variant.tokenizer == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        unigram = trainers.UnigramTrainer(vocab_size=variant.vocab_size,
                                          special_tokens=SPECIAL_TOKENS, unk_token="<unk>",
                                          show_progress=False)
        tok.train_from_iterator(texts, trainer=unigram)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=variant.vocab_size,
                                      special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                      pad_token="<pad>", unk_token="<unk>",
                                      model_max_length=PRETRAIN_SEQ * 2)
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def _model_config(tokenizer: PreTrainedTokenizerFast, variant: _Variant | None = None
                  ) -> LlamaConfig:
    variant = variant or DEMO_VARIANTS["default"]
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=variant.hidden_size,
        intermediate_size=variant.intermediate_size,
        num_hidden_layers=variant.layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=PRETRAIN_SEQ * 2, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, rms_norm_eps=1e-5,
    )


def _pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, texts: list[str],
              steps: int, seed: int, on_progress: BuildProgress | None = None) -> float:
    """A short next-token pre-training on packed generic text; returns the final loss."""
    ids: list[int] = []
    for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids += [tokenizer.bos_token_id, *encoded, tokenizer.eos_token_id]
    n_blocks = len(ids) // PRETRAIN_SEQ
    blocks = torch.tensor(ids[: n_blocks * PRETRAIN_SEQ]).view(n_blocks, PRETRAIN_SEQ)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    warmup = max(1, steps // 10)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        lr_scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = 3e-3 * max(lr_scale, 0.05)
        batch = blocks[torch.randint(0, n_blocks, (PRETRAIN_BATCH,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if on_progress is not None:
            on_progress(f"pre-training step {step + 1}/{steps} (loss {float(loss.detach()):.2f})")
    model.eval()
    return float(loss.detach())


def _marker_matches(out_dir: Path, seed: int, pretrain_steps: int, variant: str) -> bool:
    try:
        meta = json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(meta.get("version") == DEMO_MODEL_VERSION and meta.get("seed") == seed
                and meta.get("pretrain_steps") == pretrain_steps
                and meta.get("variant", "default") == variant)


@contextlib.contextmanager
def _build_environment() -> Iterator[None]:
    """One torch thread and no tqdm bars while building; the caller's settings after.

    transformers 5 draws a "Writing model shards" bar on save: a stray bar in the
    middle of the demo's output (and of a daemon's JSON log) says nothing useful.
    """
    threads = torch.get_num_threads()
    bars = transformers_logging.is_progress_bar_enabled()
    torch.set_num_threads(BUILD_THREADS)
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if bars:
            transformers_logging.enable_progress_bar()


def build_demo_model(out_dir: Path, *, seed: int = 0, pretrain_steps: int | None = None,
                     variant: str = "default", on_progress: BuildProgress | None = None
                     ) -> Path:
    """Build (or reuse) the demo model in ``out_dir`` and return that path.

    ``variant`` picks one of :data:`DEMO_VARIANTS` (tokenizer family and network size);
    ``pretrain_steps`` defaults to the variant's. ``on_progress`` hears what the build
    is doing, once per phase and once per pre-training step (not called when the model
    is already built).

    The result loads with ``AutoModelForCausalLM`` / ``AutoTokenizer``. It is built in a
    temporary sibling directory and renamed into place, so an interrupted build never
    leaves a half model that a later call would mistake for a finished one. A non-empty
    ``out_dir`` that this function did not write is refused rather than overwritten.
    """
    if variant not in DEMO_VARIANTS:
        raise LearningError(
            f"unknown demo model variant {variant!r} (known: {', '.join(DEMO_VARIANTS)})"
        )
    spec = DEMO_VARIANTS[variant]
    steps = spec.pretrain_steps if pretrain_steps is None else pretrain_steps
    out_dir = Path(out_dir)
    if _marker_matches(out_dir, seed, steps, variant):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise LearningError(f"{out_dir}: exists and is not a fedswarm demo model; not overwriting")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _build_environment():
        return _build(out_dir, spec, variant, seed, steps, on_progress or (lambda _line: None))


def _build(out_dir: Path, spec: _Variant, variant: str, seed: int, steps: int,
           on_progress: BuildProgress) -> Path:
    started = time.monotonic()
    data = demo_data_dir()
    generic = _read_texts(data / "generic.jsonl")
    domain_texts = [t for d in DEMO_DOMAINS for t in _read_texts(data / f"{d}.train.jsonl")[:100]]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        on_progress(f"training the {spec.tokenizer} tokenizer ({spec.vocab_size} tokens)")
        tokenizer = _train_tokenizer(generic + domain_texts, spec)
        model = LlamaForCausalLM(_model_config(tokenizer, spec))
        on_progress(f"pre-training step 0/{steps}")
        final_loss = _pretrain(model, tokenizer, generic, steps, seed, on_progress)
    on_progress("saving the model")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"version": DEMO_MODEL_VERSION, "seed": seed, "pretrain_steps": steps,
                "variant": variant, "tokenizer": spec.tokenizer,
                "pretrain_final_loss": round(final_loss, 4),
                "parameters": sum(p.numel() for p in model.parameters()),
                "build_seconds": round(time.monotonic() - started, 1)}
        (tmp / MARKER).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def write_demo_shards(out_dir: Path, n_peers: int, *, seed: int = 0) -> list[DemoShard]:
    """Give each peer one domain (non-IID); peers that share a domain split its rows.

    Also writes ``out_dir/eval_all.jsonl``, a held-out set covering every domain, to
    measure how well the federation as a whole does.
    """
    if n_peers < 1:
        raise ValueError("n_peers: must be at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = demo_data_dir()
    shards: list[DemoShard] = []
    for peer in range(n_peers):
        domain = DEMO_DOMAINS[(peer + seed) % len(DEMO_DOMAINS)]
        sharing = [p for p in range(n_peers)
                   if DEMO_DOMAINS[(p + seed) % len(DEMO_DOMAINS)] == domain]
        part, parts = sharing.index(peer), len(sharing)
        train_lines = _lines(data / f"{domain}.train.jsonl")[part::parts]
        eval_lines = _lines(data / f"{domain}.eval.jsonl")
        peer_dir = out_dir / f"peer-{peer}-{domain}"
        peer_dir.mkdir(parents=True, exist_ok=True)
        train_path, eval_path = peer_dir / "train.jsonl", peer_dir / "eval.jsonl"
        train_path.write_text("".join(train_lines), encoding="utf-8")
        eval_path.write_text("".join(eval_lines), encoding="utf-8")
        shards.append(DemoShard(domain, train_path, eval_path))
    eval_all = [line for d in DEMO_DOMAINS for line in _lines(data / f"{d}.eval.jsonl")[:10]]
    (out_dir / "eval_all.jsonl").write_text("".join(eval_all), encoding="utf-8")
    return shards


@dataclass(frozen=True)
class PublicSet:
    """The FedMKT demo's public data file and its agreed content hash."""

    path: Path
    sha256: str
    rows: int


def write_demo_public_set(out_path: Path, rows: int = DEMO_PUBLIC_ROWS) -> PublicSet:
    """Write the FedMKT demo's public set: the last ``rows`` rows of the generic corpus.

    The generic part is never in a peer's private shard (shards come from the domain
    files only), so it is public by construction; it mentions every domain's vocabulary,
    which is where one peer's predictions can teach another.
    """
    from fedswarm.learning.fedmkt.public_data import content_sha256

    if rows < 1:
        raise ValueError("rows: must be at least 1")
    lines = _lines(demo_data_dir() / "generic.jsonl")[-rows:]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("".join(lines), encoding="utf-8")
    texts = [json.loads(line)["text"] for line in lines]
    return PublicSet(path=out_path, sha256=content_sha256(texts), rows=len(lines))


def _lines(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]

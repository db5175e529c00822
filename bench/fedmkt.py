"""FedMKT benchmark: bandwidth, alignment cost, distillation memory, and whether it helps.

Run: ``python -m bench.fedmkt --json out.json``. The default (``--shape paper``, issue
#26) is the paper's shape: one larger model on a general domain ("town") and two small
ones with their own tokenizers on their own domains (kitchen, harbour), with four arms of
equal optimiser steps and seeds: FedMKT, public only (alpha 1, no distillation), local
only and centralised; the summary gives, per model, own-domain and union losses over
those arms, and which issue #26 targets are met. ``--shape pair`` is the original toy
federation (``tests/learning/fedmkt/toy_world.py``): a byte-level-BPE model on kitchen
text and a smaller sentencepiece-style model on harbour text, FedMKT (alpha 0.9) against
alpha 1 and local only, plus bandwidth, alignment cost and distillation memory. Prints
a table and writes JSON with machine + versions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import platform
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tokenizers
import torch
import transformers
from fedswarm.learning.fedmkt.alignment import align_tokens
from fedswarm.learning.fedmkt.knowledge import compute_public_knowledge
from fedswarm.learning.fedmkt.public_data import PublicDataset
from fedswarm.learning.fedmkt.settings import FedMKTSettings
from fedswarm.learning.fedmkt.trainer import (
    build_example_targets,
    distill,
    evaluate_lm_loss,
    train_causal_lm,
)
from fedswarm.learning.fedmkt.vocab_mapping import build_vocab_mapping

# The toy world and the in-memory round are test scaffolding; the benchmark measures
# the same world the tests assert on (run from the repository root, like ``bench``).
from tests.learning.fedmkt.in_memory_round import Participant, mutual_round
from tests.learning.fedmkt.toy_world import (
    ToyWorld,
    build_toy_world,
    tiny_llama,
    train_byte_bpe,
    train_metaspace_bpe,
    train_metaspace_unigram,
)


@dataclass(frozen=True)
class BenchConfig:
    rounds: int = 3
    local_steps: int = 20
    distill_steps: int = 20
    learning_rate: float = 3e-3
    top_k: int = 32
    alignment_examples: int = 300
    seed: int = 0


class PeakRss:
    """Samples this process's resident memory every few ms while active."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.baseline = 0
        self.peak = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(0.005)

    def __enter__(self) -> PeakRss:
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _peers(world: ToyWorld, seed: int) -> tuple[list[Participant], dict[str, Any]]:
    kitchen_tok = train_byte_bpe(world.private["kitchen"] + world.public, 600)
    harbour_tok = train_metaspace_unigram(world.private["harbour"] + world.public, 300)
    peers = [
        Participant(
            "kitchen",
            tiny_llama(len(kitchen_tok), 64, 2, seed),
            kitchen_tok,
            world.private["kitchen"],
            0,
        ),
        Participant(
            "harbour",
            tiny_llama(len(harbour_tok), 32, 1, seed + 1),
            harbour_tok,
            world.private["harbour"],
            1,
        ),
    ]
    return peers, {p.name: p.tokenizer for p in peers}


def _eval(peers: list[Participant], world: ToyWorld) -> dict[str, dict[str, float]]:
    return {
        p.name: {
            domain: evaluate_lm_loss(p.model, p.tokenizer, texts)
            for domain, texts in world.evaluation.items()
        }
        for p in peers
    }


def run_federated(
    world: ToyWorld, config: BenchConfig, alpha: float
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    peers, _ = _peers(world, config.seed)
    public = PublicDataset.from_texts(world.public)
    settings = FedMKTSettings(top_k=config.top_k, alpha=alpha)
    sent: dict[str, int] = {p.name: 0 for p in peers}
    for number in range(config.rounds):
        report = mutual_round(
            peers,
            public,
            settings,
            config.local_steps,
            config.distill_steps,
            learning_rate=config.learning_rate,
            round_number=number,
        )
        for name, count in report.bytes_sent.items():
            sent[name] += count
    per_round = {name: count // config.rounds for name, count in sent.items()}
    return _eval(peers, world), per_round


def run_local_only(world: ToyWorld, config: BenchConfig) -> dict[str, dict[str, float]]:
    peers, _ = _peers(world, config.seed)
    steps = config.rounds * (config.local_steps + config.distill_steps)
    for p in peers:
        train_causal_lm(
            p.model, p.tokenizer, p.private_texts, steps, learning_rate=config.learning_rate
        )
    return _eval(peers, world)


def measure_alignment(world: ToyWorld, config: BenchConfig) -> dict[str, float]:
    """Seconds to map vocabularies and DTW-align N examples, scaled to 1,000 examples."""
    big = build_toy_world(private_count=8, public_count=config.alignment_examples, seed=99)
    peers, _ = _peers(world, config.seed)
    own, peer = peers[0], peers[1]
    public = PublicDataset.from_texts(big.public)
    own_k = compute_public_knowledge(
        own.model, own.tokenizer, public.texts, public.sha256, config.top_k
    )
    peer_k = compute_public_knowledge(
        peer.model, peer.tokenizer, public.texts, public.sha256, config.top_k
    )
    start = time.perf_counter()
    build_vocab_mapping(peer_k.tokenizer, own_k.tokenizer)
    mapping_s = time.perf_counter() - start
    own_norm, peer_norm = own_k.tokenizer.normalised(), peer_k.tokenizer.normalised()
    start = time.perf_counter()
    fractions = []
    for a, b in zip(own_k.examples, peer_k.examples, strict=True):
        alignment = align_tokens(
            [own_norm[i] for i in a.input_ids.tolist()],
            [peer_norm[i] for i in b.input_ids.tolist()],
        )
        fractions.append(alignment.one_to_one_fraction())
    dtw_s = time.perf_counter() - start
    start = time.perf_counter()
    build_example_targets(own_k, [peer_k], FedMKTSettings(top_k=config.top_k))
    targets_s = time.perf_counter() - start
    n = len(public)
    tokens = [len(e.input_ids) for e in own_k.examples]
    return {
        "examples": n,
        "mean_own_tokens": float(np.mean(tokens)),
        "vocab_mapping_s": mapping_s,
        "dtw_s_per_1000_examples": dtw_s * 1000 / n,
        "targets_incl_dtw_s_per_1000_examples": targets_s * 1000 / n,
        "one_to_one_fraction": float(np.mean(fractions)),
    }


def measure_distill_memory(world: ToyWorld, config: BenchConfig) -> dict[str, float]:
    peers, _ = _peers(world, config.seed)
    public = PublicDataset.from_texts(world.public)
    own, peer = peers[0], peers[1]
    own_k = compute_public_knowledge(
        own.model, own.tokenizer, public.texts, public.sha256, config.top_k
    )
    peer_k = compute_public_knowledge(
        peer.model, peer.tokenizer, public.texts, public.sha256, config.top_k
    )
    settings = FedMKTSettings(top_k=config.top_k)
    with PeakRss() as rss:
        distill(own.model, own.tokenizer, own_k, [peer_k], settings, config.distill_steps)
    batch, length = 8, max(len(e.input_ids) for e in own_k.examples)
    return {
        "peak_rss_increase_mib": (rss.peak - rss.baseline) / 2**20,
        "peak_rss_mib": rss.peak / 2**20,
        "sparse_target_bytes_per_batch": batch * length * config.top_k * (8 + 4),
        "dense_target_bytes_per_batch_if_built": batch * length * len(own.tokenizer) * 4,
        "dense_target_bytes_per_batch_at_vocab_128k": batch * length * 128_000 * 4,
    }


def measure_distill_memory_fresh(config: BenchConfig) -> dict[str, float]:
    """Run :func:`measure_distill_memory` in a fresh process so earlier arms' allocator
    caches do not hide the distillation's own peak."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_fresh_memory_worker, (config,))


def _fresh_memory_worker(config: BenchConfig) -> dict[str, float]:
    torch.set_num_threads(1)
    return measure_distill_memory(build_toy_world(seed=config.seed), config)


# --- The paper's shape (issue #26): one larger model on a general domain, two small ones.

PAPER_DOMAINS = ("town", "kitchen", "harbour")
LARGE = "town"


@dataclass(frozen=True)
class PaperConfig:
    rounds: int = 3
    local_steps: int = 20
    distill_steps: int = 20
    learning_rate: float = 3e-3
    top_k: int = 32
    # The levers that paid in docs/fedmkt.md "Making the exchange pay" (issue #26):
    # distil only where an aligned teacher beats us (token_min_ce, gold elsewhere, so
    # alpha 0 loses no LM signal) and keep 3/4 of every distillation batch own data.
    alpha: float = 0.0
    temperature: float = 1.0
    selection: str = "token_min_ce"
    replay_fraction: float = 0.75
    large_replay_fraction: float | None = None  # the large model's own, if it differs
    #: The large model's distillation steps per round, if it differs; its local steps make
    #: up the rest, so every model still takes local_steps + distill_steps a round.
    large_distill_steps: int | None = None
    private_count: int = 64
    public_count: int = 48
    seed: int = 0


def paper_world(config: PaperConfig) -> ToyWorld:
    return build_toy_world(
        private_count=config.private_count,
        public_count=config.public_count,
        seed=config.seed,
        domains=PAPER_DOMAINS,
    )


def paper_peers(world: ToyWorld, seed: int, private: str = "own") -> list[Participant]:
    """The large byte-BPE model on town text; small models with their own tokenizers.

    ``private="union"`` gives every model all members' private texts (the centralised arm).
    """
    union = [t for d in PAPER_DOMAINS for t in world.private[d]]
    texts = {d: (union if private == "union" else world.private[d]) for d in PAPER_DOMAINS}
    town_tok = train_byte_bpe(world.private["town"] + world.public, 800)
    kitchen_tok = train_metaspace_bpe(world.private["kitchen"] + world.public, 500)
    harbour_tok = train_byte_bpe(world.private["harbour"] + world.public, 800)
    return [
        Participant("town", tiny_llama(len(town_tok), 128, 3, seed), town_tok, texts["town"], 0),
        Participant(
            "kitchen", tiny_llama(len(kitchen_tok), 64, 2, seed + 1), kitchen_tok,
            texts["kitchen"], 1,
        ),
        Participant(
            "harbour", tiny_llama(len(harbour_tok), 64, 2, seed + 2), harbour_tok,
            texts["harbour"], 2,
        ),
    ]


def _paper_eval(peers: list[Participant], world: ToyWorld) -> dict[str, dict[str, float]]:
    out = _eval(peers, world)
    for losses in out.values():
        losses["union"] = float(np.mean([losses[d] for d in PAPER_DOMAINS]))
    return out


def paper_federated(
    world: ToyWorld, config: PaperConfig, alpha: float
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    peers = paper_peers(world, config.seed)
    public = PublicDataset.from_texts(world.public)
    settings = FedMKTSettings(
        top_k=config.top_k,
        alpha=alpha,
        temperature=config.temperature,
        selection=config.selection,  # type: ignore[arg-type]
        replay_fraction=config.replay_fraction,
    )
    if config.large_replay_fraction is not None:
        for peer in peers:
            if peer.name == LARGE:
                peer.settings = dataclasses.replace(
                    settings, replay_fraction=config.large_replay_fraction
                )
    if config.large_distill_steps is not None:
        for peer in peers:
            if peer.name == LARGE:
                peer.distill_steps = config.large_distill_steps
                peer.local_steps = (config.local_steps + config.distill_steps
                                    - config.large_distill_steps)
    aligned: dict[str, list[float]] = {p.name: [] for p in peers}
    for number in range(config.rounds):
        report = mutual_round(
            peers, public, settings, config.local_steps, config.distill_steps,
            learning_rate=config.learning_rate, round_number=number,
        )
        for name, stats in report.distill.items():
            aligned[name].append(stats.peer_position_fraction)
    return _paper_eval(peers, world), {n: float(np.mean(v)) for n, v in aligned.items()}


def paper_alone(world: ToyWorld, config: PaperConfig, private: str) -> dict[str, dict[str, float]]:
    """Every optimiser step on private text: own (local-only) or everyone's (centralised)."""
    peers = paper_peers(world, config.seed, private)
    steps = config.rounds * (config.local_steps + config.distill_steps)
    for p in peers:
        train_causal_lm(
            p.model, p.tokenizer, p.private_texts, steps,
            learning_rate=config.learning_rate, seed=p.seed,
        )
    return _paper_eval(peers, world)


def paper_benchmark(config: PaperConfig) -> dict[str, Any]:
    started = time.perf_counter()
    world = paper_world(config)
    params = {p.name: sum(x.numel() for x in p.model.parameters())
              for p in paper_peers(world, config.seed)}
    arms = {
        "fedmkt": paper_federated(world, config, config.alpha)[0],
        "public_only_alpha1": paper_federated(world, config, 1.0)[0],
        "local_only": paper_alone(world, config, "own"),
        "centralised": paper_alone(world, config, "union"),
    }
    summary: dict[str, dict[str, float]] = {}
    for name in params:
        fed, pub, loc, cen = (arms[a][name] for a in arms)
        summary[name] = {
            "own_domain_over_local": fed[name] / loc[name],
            "union_over_local": fed["union"] / loc["union"],
            "union_over_public_only": fed["union"] / pub["union"],
            "union_over_centralised": fed["union"] / cen["union"],
        }
    small = [n for n in params if n != LARGE]
    targets = {
        "own_domain_over_local <= 1.02 (all)": all(
            s["own_domain_over_local"] <= 1.02 for s in summary.values()
        ),
        "union_over_local < 1 (all)": all(s["union_over_local"] < 1 for s in summary.values()),
        "union_over_public_only <= 0.95 (small)": all(
            summary[n]["union_over_public_only"] <= 0.95 for n in small
        ),
    }
    return {
        "benchmark": "fedmkt",
        "shape": "paper",
        "machine": machine(),
        "config": config.__dict__,
        "parameters": params,
        "public_examples": len(world.public),
        "eval_loss": arms,
        "summary": summary,
        "targets_met": targets,
        "wall_s": time.perf_counter() - started,
    }


def print_paper(result: dict[str, Any]) -> None:
    arms = result["eval_loss"]
    print(f"{'model':<8} {'params':>8} {'eval':<8} " + " ".join(f"{a[:12]:>12}" for a in arms))
    for name, count in result["parameters"].items():
        for domain in (*PAPER_DOMAINS, "union"):
            print(
                f"{name:<8} {count:>8} {domain:<8} "
                + " ".join(f"{arms[a][name][domain]:>12.3f}" for a in arms)
            )
    for name, ratios in result["summary"].items():
        print(name, " ".join(f"{k}={v:.3f}" for k, v in ratios.items()))
    print(json.dumps(result["targets_met"]))
    print(json.dumps(result["machine"]))


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": psutil.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--shape", choices=("paper", "pair"), default="paper",
        help="paper: one larger model on a general domain + two small ones (issue #26); "
        "pair: the original two same-size models",
    )
    parser.add_argument("--local-steps", type=int, default=PaperConfig.local_steps)
    parser.add_argument("--distill-steps", type=int, default=PaperConfig.distill_steps)
    parser.add_argument("--alpha", type=float, default=PaperConfig.alpha)
    parser.add_argument("--temperature", type=float, default=PaperConfig.temperature)
    parser.add_argument(
        "--selection", choices=("min_ce", "weighted", "token_min_ce"),
        default=PaperConfig.selection,
    )
    parser.add_argument("--replay-fraction", type=float, default=PaperConfig.replay_fraction)
    parser.add_argument("--top-k", type=int, default=PaperConfig.top_k)
    parser.add_argument("--large-replay-fraction", type=float, default=None)
    parser.add_argument("--large-distill-steps", type=int, default=None,
                        help="the large model's distillation steps a round (its local steps "
                        "make up the rest; default: as every model)")
    parser.add_argument("--seed", type=int, default=PaperConfig.seed)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.shape == "paper":
        paper = PaperConfig(
            rounds=args.rounds or PaperConfig.rounds,
            local_steps=args.local_steps,
            distill_steps=args.distill_steps,
            alpha=args.alpha,
            temperature=args.temperature,
            selection=args.selection,
            replay_fraction=args.replay_fraction,
            large_replay_fraction=args.large_replay_fraction,
            large_distill_steps=args.large_distill_steps,
            top_k=args.top_k,
            seed=args.seed,
        )
        result = paper_benchmark(paper)
        print_paper(result)
        if args.json is not None:
            args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return 0
    config = BenchConfig(rounds=args.rounds or BenchConfig.rounds)
    world = build_toy_world(seed=config.seed)

    started = time.perf_counter()
    fedmkt_eval, bytes_per_round = run_federated(world, config, alpha=0.9)
    public_lm_eval, _ = run_federated(world, config, alpha=1.0)
    local_eval = run_local_only(world, config)
    alignment = measure_alignment(world, config)
    memory = measure_distill_memory_fresh(config)

    table = []
    for name in fedmkt_eval:
        for domain in world.evaluation:
            table.append(
                {
                    "model": name,
                    "eval_domain": domain,
                    "fedmkt": fedmkt_eval[name][domain],
                    "public_lm_only_alpha1": public_lm_eval[name][domain],
                    "local_only": local_eval[name][domain],
                }
            )
    summary = {
        "fedmkt_over_local_loss": {
            name: {
                domain: fedmkt_eval[name][domain] / local_eval[name][domain]
                for domain in world.evaluation
            }
            for name in fedmkt_eval
        },
        "fedmkt_over_public_lm_only_loss": {
            name: {
                domain: fedmkt_eval[name][domain] / public_lm_eval[name][domain]
                for domain in world.evaluation
            }
            for name in fedmkt_eval
        },
        "bytes_sent_per_peer_per_round": bytes_per_round,
        "dtw_s_per_1000_examples": alignment["dtw_s_per_1000_examples"],
        "distill_peak_rss_increase_mib": memory["peak_rss_increase_mib"],
    }
    result = {
        "benchmark": "fedmkt",
        "machine": machine(),
        "config": config.__dict__,
        "public_examples": len(world.public),
        "eval_loss": table,
        "alignment": alignment,
        "distill_memory": memory,
        "summary": summary,
        "wall_s": time.perf_counter() - started,
    }
    print(f"{'model':<9} {'eval domain':<12} {'fedmkt':>8} {'alpha=1':>8} {'local':>8}")
    for row in table:
        print(
            f"{row['model']:<9} {row['eval_domain']:<12} {row['fedmkt']:>8.3f} "
            f"{row['public_lm_only_alpha1']:>8.3f} {row['local_only']:>8.3f}"
        )
    print(f"bytes sent per peer per round: {bytes_per_round}")
    print(
        f"DTW: {alignment['dtw_s_per_1000_examples']:.2f} s / 1000 examples "
        f"(~{alignment['mean_own_tokens']:.0f} tokens each); vocab mapping "
        f"{alignment['vocab_mapping_s']:.3f} s; 1:1 fraction {alignment['one_to_one_fraction']:.2f}"
    )
    print(
        f"distillation peak RSS +{memory['peak_rss_increase_mib']:.1f} MiB "
        f"(peak {memory['peak_rss_mib']:.0f} MiB)"
    )
    print(json.dumps(result["machine"]))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
